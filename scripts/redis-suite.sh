#!/usr/bin/env bash
# Runs units of Redis's own test suite (7.0.x, from its source tree) against
# `ringkv serve` as an external server, one fresh server per unit, and
# prints per-unit counts of passed, failed and errored tests.
#
#   scripts/redis-suite.sh REDIS_SOURCE_DIR [UNIT...]
#
# Needs tclsh (Debian's `tcl`). Uses target/debug/ringkv (built if missing)
# unless RINGKV_BIN names another binary. Logs go to
# target/redis-suite/<unit>.log; the summary to target/redis-suite/summary.txt.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 REDIS_SOURCE_DIR [UNIT...]" >&2
    exit 2
fi
redis_src=$(cd "$1" && pwd)
shift
units=("$@")
if [[ ${#units[@]} -eq 0 ]]; then
    units=(type/string type/incr keyspace expire scan multi protocol info-command introspection quit)
fi

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${RINGKV_BIN:-$root/target/debug/ringkv}
if [[ ! -x $bin ]]; then
    (cd "$root" && cargo build -p ringkv-cli)
fi
command -v tclsh >/dev/null || { echo "tclsh not found: install Debian's tcl package" >&2; exit 2; }
out=$root/target/redis-suite
mkdir -p "$out"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server_pid=
stop_server() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

summary=$out/summary.txt
printf '%-16s %6s %6s %6s %6s\n' unit passed failed errors skipped | tee "$summary"
total_ok=0 total_err=0 total_exc=0
for unit in "${units[@]}"; do
    port=$(free_port)
    "$bin" serve --listen "127.0.0.1:$port" >"$out/${unit//\//_}.server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
    log=$out/${unit//\//_}.log
    (cd "$redis_src" && ./runtest --host 127.0.0.1 --port "$port" --singledb \
        --tags -needs:debug --single "unit/$unit" --timeout 60 --durable --dont-clean) \
        >"$log" 2>&1 || true
    stop_server
    # The suite colours its verdicts; the counts read the plain text.
    sed -i 's/\x1b\[[0-9;]*m//g' "$log"
    ok=$(grep -c '^\[ok\]' "$log" || true)
    err=$(grep -c '^\[err\]' "$log" || true)
    exc=$(grep -c '^\[exception\]' "$log" || true)
    skip=$(grep -c '^\[skip\]' "$log" || true)
    printf '%-16s %6s %6s %6s %6s\n' "$unit" "$ok" "$err" "$exc" "$skip" | tee -a "$summary"
    total_ok=$((total_ok + ok)) total_err=$((total_err + err)) total_exc=$((total_exc + exc))
done
printf '%-16s %6s %6s %6s\n' total "$total_ok" "$total_err" "$total_exc" | tee -a "$summary"
