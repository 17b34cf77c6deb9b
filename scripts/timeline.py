#!/usr/bin/env python3
"""A join's timeline: the probe's requests against the nodes' events.

    scripts/timeline.py OUT [ROUND] [BUCKET_SECONDS]

OUT is the output directory of a run of

    RUST_LOG=warn,ringkv_node=debug,ringkv_node::coord=info \\
      NODE_ARGS="--log-format json" TIMELINE_SECS=7 SYSTEMS=nodes \\
      OUT=bench-out/timeline scripts/bench-nodes.sh rebalance

(a fresh OUT: the nodes' logs are appended to). Times are seconds from
the 4th node's start in round ROUND (1 by default): first the nodes'
rebalance events, then the probe's requests in buckets of BUCKET_SECONDS
(0.25 by default): how many, p50, p99 and max latency in ms, errors.
"""

import csv
import json
import sys
from datetime import datetime
from pathlib import Path

EVENTS = ("pulling", "pulled", "shipping", "committed", "deleted copies", "caught up")


def seconds(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def log(path):
    """The JSON lines of a node's log (other lines are skipped)."""
    for line in path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            yield event


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    rnd = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    width = float(sys.argv[3]) if len(sys.argv) > 3 else 0.25
    probe = out / f"timeline-r{rnd}.csv"
    if not probe.exists():
        sys.exit(f"{probe} is missing: run the rebalance part with TIMELINE_SECS")
    starts = [e for e in log(out / "m4.log") if e.get("message") == "node started"]
    if len(starts) < rnd:
        sys.exit(f"{out}/m4.log has {len(starts)} starts as JSON, not {rnd}: "
                 'run with NODE_ARGS="--log-format json" into a fresh OUT')
    t0 = seconds(starts[rnd - 1]["timestamp"])
    rows = [(int(r["sent_us"]) / 1e6 - t0, int(r["latency_us"]) / 1000, r["error"] == "1")
            for r in csv.DictReader(probe.open())]
    if not rows:
        sys.exit(f"{probe} holds no request")
    first, last = min(r[0] for r in rows), max(r[0] for r in rows)

    print(f"# events, seconds from m4's start (round {rnd})")
    events = []
    for node in ("m1", "m2", "m3", "m4"):
        for e in log(out / f"{node}.log"):
            at = seconds(e["timestamp"]) - t0
            if first <= at <= last and any(k in e.get("message", "") for k in EVENTS):
                fields = {k: v for k, v in e.items()
                          if k not in ("timestamp", "level", "target", "message", "node")}
                events.append((at, node, e["message"], fields))
    for at, node, message, fields in sorted(events, key=lambda e: e[0]):
        print(f"{at:7.3f} {node} {message} {fields}")

    print(f"\n# probe, buckets of {width} s: from, requests, p50 ms, p99 ms, max ms, errors")
    buckets = {}
    for at, latency, error in rows:
        buckets.setdefault(int(at // width), []).append((latency, error))
    for k in sorted(buckets):
        lat = [l for l, _ in buckets[k]]
        errors = sum(e for _, e in buckets[k])
        print(f"{k * width:7.2f} {len(lat):6d} {quantile(lat, .5):6.2f} "
              f"{quantile(lat, .99):6.2f} {max(lat):7.1f} {errors}")


if __name__ == "__main__":
    main()
