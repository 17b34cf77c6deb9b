#!/usr/bin/env bash
# Reproduces the "Server after the compatibility work" section of
# docs/BENCHMARKS.md: redis-server, an older and the current `ringkv serve`,
# interleaved, on loopback only, every load bounded by a request count.
#
#   OLD=/path/to/old/target/release/ringkv NEW=target/release/ringkv \
#     scripts/bench-redis-compat.sh [part...]     # parts: tput setex expiry smoke
#
# Raw redis-benchmark CSV lines go to $OUT (default ./bench-out); the medians
# in the doc were taken from them by hand/awk.
set -euo pipefail

OLD=${OLD:?path to the old ringkv binary}
NEW=${NEW:-target/release/ringkv}
REPS=${REPS:-5}
OUT=${OUT:-bench-out}
P_REDIS=6390 P_OLD=6381 P_NEW=6380
PARTS=${*:-tput setex expiry smoke}
mkdir -p "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.1; done; echo "port $1 not up" >&2; exit 1; }
start_redis() { redis-server --port $P_REDIS --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 & pids+=($!); wait_port $P_REDIS; }
start_ringkv() { "$1" serve --listen "127.0.0.1:$2" >"$OUT/ringkv-$2.log" 2>&1 & pids+=($!); wait_port "$2"; }

# bench LABEL PORT ARGS... : one redis-benchmark run, CSV lines prefixed with LABEL
bench() { local label=$1 port=$2; shift 2
  redis-benchmark -h 127.0.0.1 -p "$port" -c 50 --csv "$@" | grep -v '^"test"' | sed "s/^/$label,/"; }

for part in $PARTS; do case $part in
tput)  # 1. SET/GET, -P 1 and -P 16, redis / old / new interleaved
  start_redis; start_ringkv "$OLD" $P_OLD; start_ringkv "$NEW" $P_NEW
  for r in $(seq "$REPS"); do for P in 1 16; do
    for s in redis:$P_REDIS old:$P_OLD new:$P_NEW; do
      bench "$r,${s%:*},P$P" "${s#*:}" -n 200000 -d 100 -r 100000 -t set,get -P "$P"
    done; done; done | tee "$OUT/tput.csv"
  cleanup; pids=() ;;
setex) # 2. SET against SET EX on the new server, interleaved
  start_ringkv "$NEW" $P_NEW
  for r in $(seq "$REPS"); do for P in 1 16; do
    bench "$r,set,P$P"   $P_NEW -n 200000 -r 100000 -P "$P" SET key:__rand_int__ xxxxx
    bench "$r,setex,P$P" $P_NEW -n 200000 -r 100000 -P "$P" SET key:__rand_int__ xxxxx EX 3600
  done; done | tee "$OUT/setex.csv"
  cleanup; pids=() ;;
expiry) # 3. GET latency over 1M keys: no TTLs (idle), then TTLs 15-75 s expiring
  gen() { awk -v ex="$1" 'BEGIN { for (i = 0; i < 1000000; i++) { k = sprintf("exp:%012d", i)
      if (ex) { t = 15 + (i * 7919) % 61; printf "*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$10\r\nvvvvvvvvvv\r\n$2\r\nEX\r\n$%d\r\n%d\r\n", length(k), k, length(t ""), t }
      else printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$10\r\nvvvvvvvvvv\r\n", length(k), k } }'; }
  get() { bench "$1" $P_NEW -n 1000000 -r 1000000 -P 1 --precision 3 GET exp:__rand_int__; }
  gen 0 >"$OUT/plain.resp"; gen 1 >"$OUT/ttl.resp"   # generated before anything is timed
  start_ringkv "$NEW" $P_NEW
  redis-cli -p $P_NEW --pipe <"$OUT/plain.resp"
  for r in $(seq 3); do get "idle$r,dbsize=$(redis-cli -p $P_NEW dbsize)"; done | tee "$OUT/expiry.csv"
  cleanup; pids=()
  start_ringkv "$NEW" $P_NEW
  t0=$(date +%s); redis-cli -p $P_NEW --pipe <"$OUT/ttl.resp"; echo "loaded in $(( $(date +%s) - t0 )) s"
  while [ $(( $(date +%s) - t0 )) -lt 85 ]; do
    get "exp,t=$(( $(date +%s) - t0 ))s,dbsize=$(redis-cli -p $P_NEW dbsize)"
  done | tee -a "$OUT/expiry.csv"
  echo "dbsize at end: $(redis-cli -p $P_NEW dbsize)" | tee -a "$OUT/expiry.csv"
  cleanup; pids=() ;;
smoke) # 4. RESP3 smoke check
  start_ringkv "$NEW" $P_NEW
  { echo "HELLO 3"; echo "SET greeting hello"; echo "GET greeting"; echo "MULTI"; echo "INCR n"
    echo "SET k v"; echo "EXEC"; echo "INFO server"; echo "CONFIG GET maxmemory"; } |
    redis-cli -3 --no-raw -p $P_NEW | tee "$OUT/smoke.txt"
  cleanup; pids=() ;;
esac; done
