#!/usr/bin/env bash
# Reproduces the "Node processes against Redis Cluster" section of
# docs/BENCHMARKS.md: three `ringkv node` processes against a Redis Cluster
# of three masters (no replicas), with `ringkv serve` (one process, three
# in-process nodes) and a lone redis-server as references; all started by
# this script, in memory, on loopback only, measured in the same run.
#
#   cargo build --release -p ringkv-cli
#   scripts/bench-nodes.sh [part...]    # parts: tput rebalance keyspace (summary)
#
# tput      redis-benchmark -c 50 -d 100 -r 100000, SET and GET, -P 1 and
#           -P 16, each run about $SECS s (or $REQUESTS requests); $REPS
#           rounds, the systems in an order that alternates between rounds;
#           medians.
#             nodes    three ringkv node processes, driven as Redis Cluster
#                      is: redis-benchmark --cluster reads CLUSTER NODES and
#                      sends each key to the node serving its hash slot.
#             nodes-fwd  the same three processes, driven by three
#                      redis-benchmark processes in parallel without
#                      --cluster, one per node (-c 17/17/16, -n split alike):
#                      any node serves any key by forwarding it to its
#                      owner, as for a client that does not know the slot
#                      map. rps = the sum of the three (tput.csv also keeps
#                      -n and the wall time of the three). Before the first
#                      run, 300 requests through each node with one client
#                      open its peer connections.
#             cluster  redis-benchmark --cluster (one client thread per
#                      master, each sending only keys of its master's slots).
#             serve    ringkv serve, one redis-benchmark.
#             redis    redis-server alone, one redis-benchmark.
#           Besides: the share of the benchmark's 100k keys each ringkv node
#           owns (RINGKV.LOCATE), so the share of requests forwarded, and the
#           CPU seconds the servers' processes used in each run.
# rebalance $KEYS keys (key:%012d, 100-byte random values) loaded into 3
#           ringkv nodes (a third piped to each node with redis-cli --pipe),
#           then a 4th node started with --join: the time from its start
#           until RINGKV.NODES shows 4 members up and no change in flight,
#           and the keys it then holds. The same keys in a 3-master Redis
#           Cluster (each key piped to its slot's master), then an empty
#           4th master (redis-cli --cluster add-node) and
#           `redis-cli --cluster rebalance --cluster-use-empty-masters`,
#           timed. And `ringkv serve --nodes n1,n2,n3` + RINGKV.ADDNODE n4 as
#           a reference. Each stopped after $LIMIT s. $ROUNDS rounds. For
#           the nodes, also when the members' keys add up to $KEYS again
#           (the sources drop what they gave away after the change), and
#           client latency: $PROBE_N GETs of random loaded keys through
#           the first node (redis-benchmark -c 10), once idle and once
#           started just before the 4th node (rebalance-latency.csv: rps,
#           p50, p99, max; "complete" when no error reply came, as
#           redis-benchmark stops at the first). With TIMELINE_SECS, the
#           probe during the move is instead the `probe` example
#           (crates/cli/examples/probe.rs: 10 connections, each request's
#           send time and latency in timeline-rROUND.csv), started 3 s
#           before the 4th node, for TIMELINE_SECS s; with the nodes' JSON
#           logs (NODE_ARGS="--log-format json"), scripts/timeline.py
#           lines the requests up with the nodes' events. PROBE_N=0: no
#           probe, so that the CPU the processes spent on the join
#           (rebalance.csv's last two columns: the three sources', then
#           the 4th node's, each until the sources' cleanup is done) is
#           the join's alone.
#
# keyspace  $KEYS keys loaded as for rebalance into 3 ringkv nodes, into
#           `ringkv serve --nodes n1,n2,n3` and into a lone redis-server;
#           then through one of them (the second node): a whole
#           `redis-cli --scan`, one with COUNT 1000, `KEYS *`, and
#           DBSIZE's latency (redis-benchmark -c 1). $ROUNDS rounds.
#
# Takes about 7 minutes for tput and 3 for rebalance, plus up to $LIMIT s
# for an add that does not finish (at e290c5e, 600k keys or more: see the
# section).
#
# Environment: RINGKV (binary, default target/release/ringkv), REPS (3),
# SECS (6), REQUESTS (-n of every run, total over the processes; default:
# calibrated per system and load to last about $SECS s), SYSTEMS ("nodes
# nodes-fwd cluster serve redis"), KEYS (1000000), ROUNDS (1), LIMIT (600), PROBE_N (40000),
# PARTITIONS (ringkv node --partitions; default: ringkv's own default),
# TIMELINE_SECS (see rebalance; PROBE: the probe example's binary, default
# target/release/examples/probe),
# NODE_ARGS (more arguments of every ringkv node, e.g. "--rebalance-rate 300000"),
# OUT (raw CSV and logs, default bench-out/nodes).
# Redis Cluster config files and the load files live in a fresh directory
# under ${TMPDIR:-/tmp}, removed at exit.
set -euo pipefail

RINGKV=${RINGKV:-target/release/ringkv}
REPS=${REPS:-3}
SECS=${SECS:-6}
REQUESTS=${REQUESTS:-}
SYSTEMS=${SYSTEMS:-nodes nodes-fwd cluster serve redis}
KEYS=${KEYS:-1000000}
ROUNDS=${ROUNDS:-1}
PROBE_N=${PROBE_N:-40000}
DBSIZE_N=${DBSIZE_N:-2000}
LIMIT=${LIMIT:-600}
PARTITIONS=${PARTITIONS:-}
TIMELINE_SECS=${TIMELINE_SECS:-}
PROBE=${PROBE:-target/release/examples/probe}
if [ -n "$TIMELINE_SECS" ] && [ ! -x "$PROBE" ]; then
  echo "TIMELINE_SECS needs the probe at $PROBE: cargo build --release -p ringkv-cli --example probe" >&2
  exit 2
fi
NODE_ARGS=${NODE_ARGS:-}
OUT=${OUT:-bench-out/nodes}
PARTS=${*:-tput rebalance}
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-bench-nodes.XXXXXX")
export RINGKV_CLUSTER_SECRET=${RINGKV_CLUSTER_SECRET:-bench-nodes-$$}
export RUST_LOG=${RUST_LOG:-warn}

declare -A PID PORT PEER RESERVED
# The work runs in a background subshell (`main` at the end) that this
# shell waits for, so that a signal is handled at once (bash defers traps
# while a command substitution runs). On exit, whatever way, every process
# started under this script is stopped by its id, parents first (the
# subshell, then servers, redis-benchmark and redis-cli --pipe).
descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
cleanup() {
  local p; for p in $(descendants $$); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}

has() { [[ " $SYSTEMS " == *" $1 "* ]]; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# rec FILE: appends stdin to $OUT/FILE and shows it
rec() { tee -a "$OUT/$1"; }
note() { echo "# $*" | rec notes.txt >&2; }
cli() { local name=$1; shift; redis-cli -h 127.0.0.1 -p "${PORT[$name]}" "$@"; }
alive() { kill -0 "${PID[$1]}" 2>/dev/null || { echo "$1 exited, see $OUT/$1.log" >&2; exit 1; }; }
# stop NAME...: SIGTERM, then wait
stop() {
  local n; for n in "$@"; do kill -TERM "${PID[$n]}" 2>/dev/null || true; done
  for n in "$@"; do wait "${PID[$n]}" 2>/dev/null || true; unset "PID[$n]"; done
}
# cpu_ticks NAME...: user + system clock ticks used so far by these processes
cpu_ticks() { ticks "$@"; echo "$TICKS"; }
# ticks NAME...: TICKS= the same, without a process (for the probe's window)
ticks() {
  local n f
  TICKS=0
  for n in "$@"; do
    read -r -a f <"/proc/${PID[$n]}/stat" 2>/dev/null || continue
    TICKS=$((TICKS + f[13] + f[14]))
  done
}
# nap SECONDS: sleeps without a process (a read that times out on a pipe
# this shell holds both ends of)
exec {NAP_FD}<> <(:)
nap() { read -rt "$1" -u "$NAP_FD" || true; }

# --- ringkv node processes -------------------------------------------------
# start_node NAME ID (init | PEER_NAME): a node process, in memory
start_node() {
  local name=$1 id=$2 how=$3 a
  # ports chosen beforehand (ports NAME) are used: not timed with the start
  [ -n "${RESERVED[$name]:-}" ] || ports "$name"
  unset "RESERVED[$name]"
  a=(node --id "$id" --listen "127.0.0.1:${PORT[$name]}" --peer-listen "127.0.0.1:${PEER[$name]}")
  if [ "$how" = init ]; then
    a+=(--init); [ -z "$PARTITIONS" ] || a+=(--partitions "$PARTITIONS")
  else
    a+=(--join "127.0.0.1:${PEER[$how]}")
  fi
  # shellcheck disable=SC2206 # NODE_ARGS is split into words on purpose
  a+=($NODE_ARGS)
  if [ -n "${HOLD_FD:-}" ]; then
    # held: forked now, started (exec) when a line is written to HOLD_FD
    { read -r -u "$HOLD_FD" _; exec {HOLD_FD}>&- {NAP_FD}>&-; exec "$RINGKV" "${a[@]}"; } >>"$OUT/$name.log" 2>&1 &
  else
    "$RINGKV" "${a[@]}" >>"$OUT/$name.log" 2>&1 &
  fi
  PID[$name]=$!
}
# ports NAME: free ports for NAME's next start (start_node takes them)
ports() { PORT[$1]=$(free_port); PEER[$1]=$(free_port); RESERVED[$1]=1; }
# settled NAME COUNT: RINGKV.NODES at NAME shows COUNT members up and no change
settled() {
  local out; out=$(cli "$1" ringkv.nodes 2>/dev/null) || return 1
  [ "$(grep -c 'state=up' <<<"$out")" = "$2" ] && ! grep -q '^change' <<<"$out"
}
# wait_settled NAME COUNT SECONDS [WATCHED...]: 0 when settled, 1 on timeout
wait_settled() {
  local name=$1 count=$2 deadline=$(($(now_ms) + $3 * 1000)) w; shift 3
  while [ "$(now_ms)" -lt $deadline ]; do
    settled "$name" "$count" && return 0
    for w in "$name" "$@"; do alive "$w"; done
    sleep 0.05
  done
  return 1
}
# start_nodes PREFIX COUNT: PREFIX1 (--init) .. PREFIXCOUNT (--join PREFIX1)
start_nodes() {
  local i
  start_node "${1}1" "${1}1" init
  wait_for_port "${1}1"
  for i in $(seq 2 "$2"); do
    start_node "$1$i" "$1$i" "${1}1"
    wait_for_port "$1$i"
    wait_settled "${1}1" "$i" 120 "$1$i" || { echo "$1$i did not join" >&2; exit 1; }
  done
}
wait_for_port() {
  local i
  for i in $(seq 5000); do
    cli "$1" ping >/dev/null 2>&1 && return
    alive "$1"; sleep 0.01
  done
  echo "$1 does not answer" >&2; exit 1
}
# warm_nodes PREFIX COUNT: one client at a time on each node, so that each
# node opens its connection to every peer before the benchmark's 50 clients
# arrive (50 first forwards at once each open their own connection and
# handshake, the peer closes those over 8 per source address, and the
# client gets -TRYAGAIN ... cannot be reached: seen at e290c5e)
warm_nodes() {
  local i
  for i in $(seq "$2"); do
    redis-benchmark -h 127.0.0.1 -p "${PORT[$1$i]}" -c 1 -n 300 -t get -r 100000 -q >/dev/null 2>&1 || true
  done
}
# nodes_keys NAME: the keys= of every member, "id=keys ..."
# (view_members: the same from VIEW, without a process)
nodes_keys() { cli "$1" ringkv.nodes | awk '/keys=/ { for (i = 1; i <= NF; i++) if ($i ~ /^keys=/) printf "%s=%s ", $1, substr($i, 6) }'; }

# --- Redis Cluster ---------------------------------------------------------
# start_rc NAME: a redis-server with cluster mode, no persistence
start_rc() {
  local name=$1
  PORT[$name]=$(free_port); PEER[$name]=$(free_port); mkdir -p "$TMP/$name"
  redis-server --port "${PORT[$name]}" --cluster-port "${PEER[$name]}" --bind 127.0.0.1 \
    --cluster-enabled yes --cluster-config-file "$TMP/$name/nodes.conf" --dir "$TMP/$name" \
    --appendonly no --save '' >>"$OUT/$name.log" 2>&1 &
  PID[$name]=$!
  wait_for_port "$name"
}
# rc_ok NAME...: every node says cluster_state:ok and knows them all
rc_ok() {
  local n
  for n in "$@"; do
    cli "$n" cluster info | tr -d '\r' | grep -q '^cluster_state:ok' || return 1
    cli "$n" cluster info | tr -d '\r' | grep -q "^cluster_known_nodes:$#\$" || return 1
  done
}
wait_rc() {
  local i
  for i in $(seq 600); do rc_ok "$@" && return; sleep 0.1; done
  echo "the Redis Cluster did not converge" >&2; exit 1
}
# start_rcs PREFIX COUNT: COUNT masters, slots spread, no replicas
start_rcs() {
  local i addrs=()
  for i in $(seq "$2"); do start_rc "$1$i"; addrs+=("127.0.0.1:${PORT[$1$i]}"); done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >>"$OUT/$1-create.log" 2>&1
  wait_rc $(for i in $(seq "$2"); do echo "$1$i"; done)
}
start_single() {
  local name=$1; shift
  PORT[$name]=$(free_port)
  case $name in
  serve) "$RINGKV" serve --listen "127.0.0.1:${PORT[$name]}" "$@" >>"$OUT/$name.log" 2>&1 & ;;
  *) redis-server --port "${PORT[$name]}" --bind 127.0.0.1 --appendonly no --save '' >>"$OUT/$name.log" 2>&1 & ;;
  esac
  PID[$name]=$!
  wait_for_port "$name"
}

# --- throughput ------------------------------------------------------------
# servers SYSTEM: the process names of a system
servers() {
  case $1 in
  nodes | nodes-fwd) echo n1 n2 n3 ;;
  cluster) echo rc1 rc2 rc3 ;;
  *) echo "$1" ;;
  esac
}
# bench SYSTEM TEST P N: one run; prints "rps,wall_ms,server_cpu_ms,p50,p99"
# (p50 and p99 in ms; for nodes-fwd, of the process with most clients)
bench() {
  local sys=$1 t=$2 P=$3 n=$4 t0 t1 c0 c1 rps i
  local common=(-c 50 -t "$t" -P "$P" -d 100 -r 100000 --csv)
  # shellcheck disable=SC2046
  c0=$(cpu_ticks $(servers "$sys")); t0=$(now_ms)
  case $sys in
  nodes) redis-benchmark --cluster -h 127.0.0.1 -p "${PORT[n1]}" "${common[@]}" -n "$n" >"$TMP/rb1.out" 2>&1 || true ;;
  nodes-fwd)
    local clients=(17 17 16) pids=()
    for i in 1 2 3; do
      redis-benchmark -h 127.0.0.1 -p "${PORT[n$i]}" "${common[@]}" -c "${clients[$((i - 1))]}" \
        -n $((n * clients[i - 1] / 50)) >"$TMP/rb$i.out" 2>&1 &
      pids+=($!)
    done
    for i in 0 1 2; do wait "${pids[$i]}" || true; done
    ;;
  cluster) redis-benchmark --cluster -h 127.0.0.1 -p "${PORT[rc1]}" "${common[@]}" -n "$n" >"$TMP/rb1.out" 2>&1 || true ;;
  *) redis-benchmark -h 127.0.0.1 -p "${PORT[$sys]}" "${common[@]}" -n "$n" >"$TMP/rb1.out" 2>&1 || true ;;
  esac
  t1=$(now_ms)
  # shellcheck disable=SC2046
  c1=$(cpu_ticks $(servers "$sys"))
  local files=("$TMP/rb1.out"); [ "$sys" != nodes-fwd ] || files=("$TMP"/rb[123].out)
  for i in "${files[@]}"; do
    if grep -qiE 'error|exception' "$i" || ! grep -q "^\"${t^^}\"" "$i"; then
      note "$sys $t -P $P -n $n: redis-benchmark did not finish cleanly: $(tr '\r\n' '  ' <"$i" | cut -c1-300)"
      echo "0,$((t1 - t0)),0,0,0"; return
    fi
  done
  rps=$(cat "${files[@]}" | awk -F'"' -v t="${t^^}" '$2 == t { s += $4 } END { printf "%d", s }')
  echo "$rps,$((t1 - t0)),$(((c1 - c0) * 1000 / $(getconf CLK_TCK))),$(awk -F'"' -v t="${t^^}" '$2 == t { print $10 "," $14 }' "${files[0]}")"
}
# calib SYSTEM TEST P: the -n that makes a run last about $SECS s
calib() {
  [ -z "$REQUESTS" ] || { echo "$REQUESTS"; return; }
  local n=$((3000 * $3)) rps failed=0
  while :; do
    rps=$(bench "$1" "$2" "$3" $n | cut -d, -f1)
    if [ "$rps" = 0 ]; then
      failed=$((failed + 1))
      [ $failed -lt 3 ] || { echo "$1 $2 -P $3: calibration failed 3 times" >&2; exit 1; }
      continue
    fi
    awk -v n=$n -v r="$rps" 'BEGIN { exit !(n / r >= 1) }' && break
    n=$((n * 4))
  done
  awk -v r="$rps" -v s="$SECS" 'BEGIN { printf "%d\n", r * s }'
}
# order R: the systems, reversed in even rounds
order() { if [ $(($1 % 2)) = 1 ]; then echo "$SYSTEMS"; else echo "$SYSTEMS" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }'; fi; }

# forwarded: the share of the benchmark's keys (key:000000000000 ..
# key:000000099999) each ringkv node owns, and so the share of the
# three-process run's requests that are forwarded; to forward.csv
forwarded() {
  local i owners
  seq -f 'RINGKV.LOCATE key:%012g' 0 99999 >"$TMP/locate.txt"
  owners=$(cli n1 <"$TMP/locate.txt" | awk 'NR % 2 == 0 { c[$1]++ } END { for (n in c) printf "%s=%d ", n, c[n] }')
  echo "owners,$owners" | rec forward.csv
  # clients 17/17/16 on n1/n2/n3: a request is forwarded unless its key's owner is the node it reached
  echo "forwarded_share,$(awk -v o="$owners" 'BEGIN { split(o, kv, " "); for (i in kv) { split(kv[i], p, "="); c[p[1]] = p[2] }
    printf "%.4f", (17 * (100000 - c["n1"]) + 17 * (100000 - c["n2"]) + 16 * (100000 - c["n3"])) / 5000000 }')" | rec forward.csv
}

# tput.csv: round,system,P1|P16,SET|GET,-n,requests/s,wall ms,server CPU ms,
#           p50 ms,p99 ms (nodes: p50 and p99 of the first of the three)
part_tput() {
  local s t P r n
  declare -A N
  for s in $SYSTEMS; do
    case $s in
    nodes | nodes-fwd) [ -n "${PID[n1]:-}" ] || { start_nodes n 3; warm_nodes n 3; } ;;
    cluster) start_rcs rc 3 ;;
    serve) start_single serve ;;
    redis) start_single redis ;;
    *) echo "unknown system $s" >&2; exit 1 ;;
    esac
  done
  if has nodes-fwd; then rm -f "$OUT/forward.csv"; forwarded; fi
  for P in 1 16; do for t in set get; do for s in $SYSTEMS; do
    N[$s,$t,$P]=$(calib "$s" $t $P)
  done; done; done
  note "tput: -n per run: $(for k in "${!N[@]}"; do printf '%s=%s ' "$k" "${N[$k]}"; done)"
  for r in $(seq "$REPS"); do
    note "tput round $r; $(uptime)"
    for P in 1 16; do for t in set get; do for s in $(order "$r"); do
      echo "$r,$s,P$P,${t^^},${N[$s,$t,$P]},$(bench "$s" $t $P "${N[$s,$t,$P]}")" | rec tput.csv
    done; done; done
  done
  if has nodes || has nodes-fwd; then
    note "tput: ringkv nodes' keys after the runs: $(nodes_keys n1)"
    note "tput: 'too many peer handshakes' warnings in the nodes' logs: $(cat "$OUT"/n[123].log | grep -c 'too many peer handshakes' || true)"
  fi
  # shellcheck disable=SC2046
  stop $(for s in $SYSTEMS; do servers "$s"; done | tr ' ' '\n' | sort -u)
}

# --- rebalance -------------------------------------------------------------
# gen_load DIR COUNT SLOTMAP: SET key:%012d <100 random base64 characters>
# as RESP, into DIR/rr1..3.resp (round robin) and DIR/slot1..3.resp (by the
# key's Redis Cluster slot; SLOTMAP lines "first last index")
gen_load() {
  python3 - "$@" <<'EOF'
import base64, random, sys
out, count, slotmap = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tab = []
for i in range(256):
    c = i << 8
    for _ in range(8):
        c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
    tab.append(c & 0xFFFF)
def slot(k):
    c = 0
    for b in k:
        c = ((c << 8) & 0xFF00) ^ tab[((c >> 8) ^ b) & 0xFF]
    return c & 16383
owner = [0] * 16384
for line in slotmap.strip().splitlines():
    a, b, i = map(int, line.split())
    for s in range(a, b + 1):
        owner[s] = i
rr = [open("%s/rr%d.resp" % (out, i), "wb", buffering=1 << 20) for i in (1, 2, 3)]
sl = [open("%s/slot%d.resp" % (out, i), "wb", buffering=1 << 20) for i in (1, 2, 3)]
rng = random.Random(1)
counts = [0, 0, 0]
for i in range(count):
    k = b"key:%012d" % i
    v = base64.b64encode(rng.randbytes(75))
    cmd = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v)
    rr[i % 3].write(cmd)
    o = owner[slot(k)]
    sl[o - 1].write(cmd)
    counts[o - 1] += 1
for f in rr + sl:
    f.close()
with open("%s/counts" % out, "w") as f:
    f.write("%d %d %d %d %d %d\n" % (count // 3 + (count % 3 > 0), count // 3 + (count % 3 > 1), count // 3, *counts))
EOF
}
# slotmap PREFIX: "first last index" for each slot range of the masters PREFIX1..3
slotmap() {
  local i
  for i in 1 2 3; do
    cli "$1$i" cluster nodes | tr -d '\r' | awk -v i=$i '$3 ~ /myself/ { for (f = 9; f <= NF; f++) { split($f, r, "-"); print r[1], (r[2] == "" ? r[1] : r[2]), i } }'
  done
}
# pipe_load KIND PREFIX: the three files into PREFIX1..3 in parallel, replies checked; prints ms
pipe_load() {
  local kind=$1 prefix=$2 i t0 pids=() want
  read -r -a want <"$TMP/counts"
  t0=$(now_ms)
  for i in 1 2 3; do cli "$prefix$i" --pipe <"$TMP/$kind$i.resp" >"$TMP/pipe$i.out" 2>&1 & pids+=($!); done
  for i in 0 1 2; do wait "${pids[$i]}" || true; done
  local t1; t1=$(now_ms)
  for i in 1 2 3; do
    local c=${want[$((i - 1))]}
    [ "$kind" = rr ] || c=${want[$((i + 2))]}
    grep -q "errors: 0, replies: $c" "$TMP/pipe$i.out" ||
      note "load into $prefix$i: $(tr '\r\n' '  ' <"$TMP/pipe$i.out" | cut -c1-300)"
  done
  echo $((t1 - t0))
}

# rebalance.csv: round,system,load_ms,keys_moved,ms,keys/s,total keys after,outcome
#                (nodes: then ms until m4 answered PING, until its change was seen,
#                until the members' keys added up to $KEYS again, after the sources'
#                cleanup; the total is taken when the change is no longer listed;
#                then CPU ms of the three sources and of the 4th node until then)
# probe NAME ROUND PHASE: $PROBE_N GETs of random loaded keys through NAME
# (redis-benchmark -c 10); appends
# round,phase,rps,p50_ms,p99_ms,max_ms,outcome,started_ms,ended_ms,steal_ms
# to rebalance-latency.csv. redis-benchmark 7 exits at the first error
# reply, so outcome "complete" means none; otherwise the output's last
# line. steal_ms: CPU time the hypervisor gave other guests during the
# probe, both CPUs (/proc/stat): on this machine it sets the p99 as much as
# anything ringkv does (docs/BENCHMARKS.md, node section 19).
probe() {
  local name=$1 r=$2 phase=$3 out t0 t1 line outcome=complete s0
  [ "$PROBE_N" != 0 ] || return 0
  out="$TMP/probe-$phase.out"
  t0=$(now_ms); s0=$(steal_ms)
  redis-benchmark -h 127.0.0.1 -p "${PORT[$name]}" -t get -c 10 -n "$PROBE_N" -r "$KEYS" --csv >"$out" 2>&1 || true
  t1=$(now_ms)
  line=$(grep '^"GET"' "$out" | tail -1 | tr -d '"')
  [ -n "$line" ] || outcome="failed: $(tail -1 "$out" | tr ',' ' ')"
  # "GET",rps,avg,min,p50,p95,p99,max
  echo "$r,$phase,$(awk -F, '{ printf "%s,%s,%s,%s", $2, $5, $7, $8 }' <<<"$line"),$outcome,$t0,$t1,$(($(steal_ms) - s0))" | rec rebalance-latency.csv
}

# steal_ms: CPU ms stolen from this guest so far, all CPUs (/proc/stat's 8th field)
steal_ms() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%d", $9 * 1000 / hz }' /proc/stat
}

# view: VIEW= the lines of RINGKV.NODES, asked on fd 7 (a connection this
# shell opened with `exec 7<>/dev/tcp/...`); no process started, so that
# polling during the move takes no CPU from the probe (a redis-cli, grep
# and date every 50 ms did: about 4 processes a poll).
view() {
  local n i line
  printf '*1\r\n$12\r\nRINGKV.NODES\r\n' >&7 || return 1
  IFS= read -r -u 7 line || return 1
  [[ $line == \** ]] || return 1
  n=${line:1}; n=${n%$'\r'}; VIEW=
  for ((i = 0; i < n; i++)); do
    IFS= read -r -u 7 line && IFS= read -r -u 7 line || return 1
    VIEW+=${line%$'\r'}$'\n'
  done
}
# view_up: UP= members with state=up in VIEW; CHANGE=1 if a change is listed
view_up() {
  local rest=${VIEW//state=up/}
  UP=$(((${#VIEW} - ${#rest}) / 8)); CHANGE=0
  [[ $VIEW != change* && $VIEW != *$'\n'change* ]] || CHANGE=1
}
# view_keys: SUM= the members' keys= in VIEW added up
view_keys() {
  local line; SUM=0
  while IFS= read -r line; do
    [[ $line =~ \ keys=([0-9]+) ]] && SUM=$((SUM + BASH_REMATCH[1]))
  done <<<"$VIEW"
  return 0
}
# view_members: MEMBERS= "id=keys ..." of the members in VIEW
view_members() {
  local line; MEMBERS=
  while IFS= read -r line; do
    [[ $line =~ ^([^ ]+)\ .*keys=([0-9]+) ]] && MEMBERS+="${BASH_REMATCH[1]}=${BASH_REMATCH[2]} "
  done <<<"$VIEW"
  return 0
}
# pong NAME: whether NAME answers PING, asked through a connection of this
# shell's own (no process)
pong() {
  local line
  exec 9<>"/dev/tcp/127.0.0.1/${PORT[$1]}" 2>/dev/null || return 1
  printf 'PING\r\n' >&9 && IFS= read -r -t 1 -u 9 line
  exec 9>&-
  [[ $line == +PONG* ]]
}
# now: NOW= ms since the epoch, without a process (now_ms starts `date`)
now() { NOW=${EPOCHREALTIME/./}; NOW=${NOW:0:-3}; }

rebalance_nodes() {
  local r=$1 load t0 ms moved total outcome=ok
  start_nodes m 3
  load=$(pipe_load rr m)
  note "rebalance $r nodes: keys before: $(nodes_keys m1)"
  # m4's process (forked now, held until its start: forking this shell
  # takes both cores for 2-3 ms), its ports and the connection that
  # watches the change, before the probe
  exec {HOLD_FD}<> <(:)
  start_node m4 m4 m1
  exec 7<>"/dev/tcp/127.0.0.1/${PORT[m1]}"
  # client latency: GETs of the loaded keys through m1, idle, then while
  # m4 joins (started just before it; $PROBE_N requests last about as long
  # as the move)
  probe m1 "$r" idle >/dev/null
  if [ -n "$TIMELINE_SECS" ]; then
    { "$PROBE" --addr "127.0.0.1:${PORT[m1]}" --conns 10 --secs "$TIMELINE_SECS" --keys "$KEYS" \
        --out "$OUT/timeline-r$r.csv" || note "rebalance $r nodes: the timeline probe failed"; } &
    sleep 3
  else
    probe m1 "$r" move >"$TMP/probe-move" &
  fi
  local probing=$!
  # the time from m4's start until: it answers PING, the change adding it
  # is first seen in RINGKV.NODES, 4 members are up and no change is left
  local t_ping=- t_change=- deadline cpu0
  ticks m1 m2 m3; cpu0=$TICKS
  now; t0=$NOW; deadline=$((t0 + LIMIT * 1000))
  echo start >&"$HOLD_FD"
  exec {HOLD_FD}>&-
  unset HOLD_FD
  while :; do
    now
    [ "$NOW" -lt $deadline ] || { outcome=timeout; break; }
    alive m4; alive m1
    [ "$t_ping" != - ] || { pong m4 && t_ping=$((NOW - t0)); }
    view || { nap 0.05; continue; }
    view_up
    [ "$t_change" != - ] || [ $CHANGE = 0 ] || t_change=$((NOW - t0))
    [ "$UP" = 4 ] && [ $CHANGE = 0 ] && break
    nap 0.05
  done
  now; ms=$((NOW - t0))
  # the members' keys in the view that showed the change done (with no
  # process: the probe still runs)
  local keys; view_members; keys=$MEMBERS
  # the sources drop the keys they gave away after the change: until when
  # the members' keys= add up to $KEYS again (at most 60 s more)
  local t_clean=-
  if [ $outcome = ok ]; then
    while [ $((NOW - t0)) -lt $((ms + 60000)) ]; do
      view && view_keys && [ "$SUM" = "$KEYS" ] && { t_clean=$((NOW - t0)); break; }
      nap 0.05; now
    done
  fi
  exec 7>&-
  wait "$probing" || true
  note "rebalance $r nodes: m4 answered PING after $t_ping ms, its change was first seen after $t_change ms, settled after $ms ms"
  note "rebalance $r nodes: keys after: $keys"
  [ $outcome != ok ] || note "rebalance $r nodes: keys add up to $KEYS after $t_clean ms: $(nodes_keys m1)"
  local hz cpu_src cpu_m4; hz=$(getconf CLK_TCK)
  cpu_src=$((($(cpu_ticks m1 m2 m3) - cpu0) * 1000 / hz)); cpu_m4=$(($(cpu_ticks m4) * 1000 / hz))
  cli m1 ringkv.nodes >>"$OUT/rebalance-nodes.txt"
  moved=$(tr ' ' '\n' <<<"$keys" | awk -F= '$1 == "m4" { print $2 }')
  total=$(tr ' ' '\n' <<<"$keys" | awk -F= '{ s += $2 } END { print s }')
  echo "$r,nodes,$load,$moved,$ms,$(awk -v m="$moved" -v t=$ms 'BEGIN { printf "%d", m / (t / 1000) }'),$total,$outcome,$t_ping,$t_change,$t_clean,$cpu_src,$cpu_m4" | rec rebalance.csv
  stop m1 m2 m3 m4
}
rebalance_cluster() {
  local r=$1 load t0 ms moved total outcome=ok i rc=0
  start_rcs rb 3
  load=$(pipe_load slot rb)
  note "rebalance $r cluster: keys before: $(for i in 1 2 3; do printf '%s ' "$(cli rb$i dbsize)"; done)"
  start_rc rb4
  redis-cli --cluster add-node "127.0.0.1:${PORT[rb4]}" "127.0.0.1:${PORT[rb1]}" >>"$OUT/rebalance-cluster.log" 2>&1
  wait_rc rb1 rb2 rb3 rb4
  until redis-cli --cluster check "127.0.0.1:${PORT[rb1]}" >/dev/null 2>&1; do sleep 0.1; done
  t0=$(now_ms)
  timeout "$LIMIT" redis-cli --cluster rebalance "127.0.0.1:${PORT[rb1]}" --cluster-use-empty-masters \
    >>"$OUT/rebalance-cluster.log" 2>&1 || rc=$?
  ms=$(($(now_ms) - t0))
  [ $rc = 0 ] || outcome=$([ $rc = 124 ] && echo timeout || echo "exit $rc")
  moved=$(cli rb4 dbsize)
  total=$(for i in 1 2 3 4; do cli rb$i dbsize; done | awk '{ s += $1 } END { print s }')
  note "rebalance $r cluster: keys after: $(for i in 1 2 3 4; do printf '%s ' "$(cli rb$i dbsize)"; done)"
  echo "$r,cluster,$load,$moved,$ms,$(awk -v m="$moved" -v t=$ms 'BEGIN { printf "%d", m / (t / 1000) }'),$total,$outcome" | rec rebalance.csv
  stop rb1 rb2 rb3 rb4; rm -rf "$TMP"/rb?
}
rebalance_serve() {
  local r=$1 load t0 ms reply moved total
  start_single serve --nodes n1,n2,n3
  PORT[serve1]=${PORT[serve]}; PORT[serve2]=${PORT[serve]}; PORT[serve3]=${PORT[serve]}
  load=$(pipe_load rr serve)
  t0=$(now_ms)
  reply=$(cli serve ringkv.addnode n4)
  ms=$(($(now_ms) - t0))
  moved=$(awk 'NR % 2 { k = $0; next } k == "keys_moved" { print }' <<<"$reply")
  total=$(cli serve dbsize)
  echo "$r,serve,$load,$moved,$ms,$(awk -v m="$moved" -v t=$ms 'BEGIN { printf "%d", m / (t / 1000) }'),$total,ok" | rec rebalance.csv
  stop serve
}
part_rebalance() {
  local r s
  rm -f "$OUT/rebalance-nodes.txt" "$OUT/rebalance-cluster.log" "$OUT/rebalance-latency.csv"
  if [ ! -f "$TMP/counts" ]; then
    # the slot map of a fresh 3-master cluster (redis-cli --cluster create
    # always splits the slots the same way)
    start_rcs sm 3; slotmap sm >"$TMP/slotmap"; stop sm1 sm2 sm3; rm -rf "$TMP"/sm?
    gen_load "$TMP" "$KEYS" "$(cat "$TMP/slotmap")"
  fi
  for r in $(seq "$ROUNDS"); do
    note "rebalance round $r; $(uptime)"
    for s in $(order "$r"); do
      case $s in
      nodes) rebalance_nodes "$r" ;;
      cluster) rebalance_cluster "$r" ;;
      serve) rebalance_serve "$r" ;;
      esac
    done
  done
}

# keyspace.csv: round,system,what,ms,result: reading the whole key space of
# $KEYS keys through one server: `redis-cli --scan` (COUNT 10, its
# default), a SCAN with COUNT 1000 (redis-py's scan_iter; the redis-cli
# of Redis 7.0 has no --count), `KEYS *` (keys counted), and DBSIZE
# (redis-benchmark -c 1, $DBSIZE_N requests: ms is the p50 latency,
# result the rps)
keyspace_run() {
  local r=$1 sys=$2 name=$3 t0 n line
  t0=$(now_ms); n=$(cli "$name" --scan | wc -l)
  echo "$r,$sys,scan,$(($(now_ms) - t0)),$n" | rec keyspace.csv
  t0=$(now_ms)
  n=$(python3 -c 'import redis, sys; print(sum(1 for _ in redis.Redis(port=int(sys.argv[1])).scan_iter(count=1000)))' "${PORT[$name]}")
  echo "$r,$sys,scan-count-1000,$(($(now_ms) - t0)),$n" | rec keyspace.csv
  t0=$(now_ms); n=$(cli "$name" keys '*' | wc -l)
  echo "$r,$sys,keys,$(($(now_ms) - t0)),$n" | rec keyspace.csv
  line=$(redis-benchmark -h 127.0.0.1 -p "${PORT[$name]}" -c 1 -n "$DBSIZE_N" --csv dbsize 2>&1 | grep -i '^"dbsize' | tail -1 | tr -d '"')
  echo "$r,$sys,dbsize,$(awk -F, '{ print $5 }' <<<"$line"),$(awk -F, '{ print $2 }' <<<"$line")" | rec keyspace.csv
}
part_keyspace() {
  local r s
  if [ ! -f "$TMP/counts" ]; then
    start_rcs sm 3; slotmap sm >"$TMP/slotmap"; stop sm1 sm2 sm3; rm -rf "$TMP"/sm?
    gen_load "$TMP" "$KEYS" "$(cat "$TMP/slotmap")"
  fi
  for r in $(seq "$ROUNDS"); do
    for s in $(order "$r"); do
      case $s in
      nodes)
        start_nodes k 3; pipe_load rr k >/dev/null
        keyspace_run "$r" nodes k2
        stop k1 k2 k3 ;;
      serve | redis)
        if [ $s = serve ]; then start_single serve --nodes n1,n2,n3; else start_single redis; fi
        PORT[${s}1]=${PORT[$s]}; PORT[${s}2]=${PORT[$s]}; PORT[${s}3]=${PORT[$s]}
        pipe_load rr "$s" >/dev/null
        keyspace_run "$r" "$s" "$s"
        stop "$s" ;;
      esac
    done
  done
}

# `scripts/bench-nodes.sh summary` prints the summary of what $OUT holds.
part_summary() { :; }

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# col SYSTEM P TEST FIELD: the median of a tput.csv column
col() { awk -F, -v s="$1" -v p="P$2" -v t="$3" -v f="$4" '$2 == s && $3 == p && $4 == t && $6 > 0 { print $f }' "$OUT/tput.csv" | median; }
fmt() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else { s = sprintf("%d", v); r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } print s r } }'; }
summary() {
  local f=$OUT/tput.csv P t s nodes cl
  if [ -s "$f" ]; then
    echo "## requests/s, median of $(cut -d, -f1 "$f" | sort -u | wc -l) rounds (ratio: ringkv nodes / Redis Cluster of the medians)"
    echo
    echo "| load | ringkv nodes, --cluster | Redis Cluster (3 masters) | ratio | ringkv nodes, forwarding | ringkv serve | redis-server alone |"
    echo "|---|---|---|---|---|---|---|"
    for P in 1 16; do for t in SET GET; do
      nodes=$(col nodes $P $t 6); cl=$(col cluster $P $t 6)
      printf '| %s -P %s | %s | %s | %s | %s | %s | %s |\n' $t $P "$(fmt "$nodes")" "$(fmt "$cl")" \
        "$(awk -v a="$nodes" -v b="$cl" 'BEGIN { if (a + 0 && b + 0) printf "**%.2f**", a / b; else print "-" }')" \
        "$(fmt "$(col nodes-fwd $P $t 6)")" "$(fmt "$(col serve $P $t 6)")" "$(fmt "$(col redis $P $t 6)")"
    done; done
    echo
    echo "## server CPU seconds per 100k requests (median), p99 ms (median)"
    echo
    for P in 1 16; do for t in SET GET; do for s in $SYSTEMS; do
      printf '%-4s -P %-2s %-8s cpu %s s/100k  p99 %s ms\n' $t $P $s \
        "$(awk -F, -v s=$s -v p=P$P -v t=$t '$2 == s && $3 == p && $4 == t && $6 > 0 { printf "%.3f\n", $8 / 1000 / ($5 / 100000) }' "$f" | median)" \
        "$(col "$s" $P $t 10)"
    done; done; done
    failed=$(awk -F, '$6 == 0' "$f" | wc -l)
    [ "$failed" = 0 ] || echo "($failed runs failed, see notes.txt)"
  fi
  [ ! -s "$OUT/forward.csv" ] || { echo; sed 's/^/forward: /' "$OUT/forward.csv"; }
  f=$OUT/rebalance.csv
  if [ -s "$f" ]; then
    echo
    echo "## rebalance: adding a 4th node to 3 holding $KEYS keys (median of the rounds)"
    echo
    echo "| system | keys moved | time | keys/s | keys after | outcome | nodes: PING / change seen / cleanup done after |"
    echo "|---|---|---|---|---|---|---|"
    for s in nodes cluster serve; do
      grep -q ",$s," "$f" || continue
      printf '| %s | %s | %s s | %s | %s | %s | %s |\n' $s \
        "$(fmt "$(awk -F, -v s=$s '$2 == s { print $4 }' "$f" | median)")" \
        "$(awk -F, -v s=$s '$2 == s { print $5 / 1000 }' "$f" | median)" \
        "$(fmt "$(awk -F, -v s=$s '$2 == s { print $6 }' "$f" | median)")" \
        "$(awk -F, -v s=$s '$2 == s { print $7 }' "$f" | sort -u | tr '\n' ' ')" \
        "$(awk -F, -v s=$s '$2 == s { print $8 }' "$f" | sort -u | tr '\n' ' ')" \
        "$([ $s != nodes ] || echo "$(awk -F, '$2 == "nodes" { print $9 / 1000 }' "$f" | median) s / $(awk -F, '$2 == "nodes" { print $10 / 1000 }' "$f" | median) s / $(awk -F, '$2 == "nodes" && $11 != "-" && $11 != "" { print $11 / 1000 }' "$f" | median) s")"
    done
  fi
}

latency_summary() {
  local f=$OUT/rebalance-latency.csv
  [ -s "$f" ] || return 0
  echo
  echo "## probe through m1, per round: p99 ms idle / during the move (ratio), max during the move, CPU ms stolen by the hypervisor per second of probe idle / move"
  echo
  echo "| round | p99 idle | p99 move | ratio | max move | steal idle | steal move |"
  echo "|---|---|---|---|---|---|---|"
  awk -F, '{ k = $1 SUBSEP $2; p99[k] = $5; mx[k] = $6; st[k] = ($10 == "" ? "-" : sprintf("%.0f", $10 / (($9 - $8) / 1000))); r[$1] = 1 }
    END { for (i in r) { a = i SUBSEP "idle"; b = i SUBSEP "move"; if (!(a in p99) || !(b in p99)) continue
      printf "| %s | %s | %s | %.1fx | %s | %s | %s |\n", i, p99[a], p99[b], (p99[a] > 0 ? p99[b] / p99[a] : 0), mx[b], st[a], st[b] } }' "$f" | sort -t'|' -k2n
}

keyspace_summary() {
  local f=$OUT/keyspace.csv s w
  [ -s "$f" ] || return 0
  echo
  echo "## the whole key space of $KEYS keys through one server (median of the rounds: ms, and keys returned; DBSIZE: p50 ms and rps)"
  echo
  echo "| system | --scan (COUNT 10) | SCAN COUNT 1000 | KEYS * | DBSIZE |"
  echo "|---|---|---|---|---|"
  for s in nodes serve redis; do
    grep -q ",$s," "$f" || continue
    printf '| %s |' $s
    for w in scan scan-count-1000 keys dbsize; do
      printf ' %s ms (%s) |' "$(awk -F, -v s=$s -v w=$w '$2 == s && $3 == w { print $4 }' "$f" | median)" \
        "$(awk -F, -v s=$s -v w=$w '$2 == s && $3 == w { print $5 }' "$f" | median)"
    done
    echo
  done
}

main() {
  local part
  note "$(date -u +%FT%TZ) parts: $PARTS; systems: $SYSTEMS; $(redis-server --version | cut -d' ' -f3); ringkv $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(uptime)"
  for part in $PARTS; do
    note "$(date -u +%T) part $part starts; $(uptime)"
    [ "$part" = summary ] || rm -f "$OUT/$part.csv"
    "part_$part"
  done
  note "$(date -u +%T) done; $(uptime)"
  # shellcheck disable=SC2046
  stop $(echo "${!PID[@]}")
  { summary; latency_summary; keyspace_summary; } | rec summary.txt
}
trap cleanup EXIT
trap 'exit 130' INT TERM
main &
wait $!
