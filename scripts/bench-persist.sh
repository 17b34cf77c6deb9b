#!/usr/bin/env bash
# Reproduces the "Persistence against Redis" section of docs/BENCHMARKS.md:
# `ringkv serve --data-dir` against redis-server with its AOF, both started
# by this script, on loopback only, measured interleaved in the same run.
#
#   cargo build --release -p ringkv-cli
#   scripts/bench-persist.sh [part...]   # parts: tput restart overwrite addnode (summary)
#
# tput      redis-benchmark -c 50 -d 100 -r 100000, SET and GET, -P 1 and -P 16,
#           each run about $SECS s; redis --appendfsync always|everysec against
#           ringkv --fsync always|everysec, and both without persistence;
#           $REPS rounds alternating the servers, medians and ratios; before
#           each round, the cost of one fdatasync on that disk (fsync.csv).
# restart   $KEYS keys (100-byte random values) loaded with redis-cli --pipe,
#           then a clean stop (SIGTERM) or kill -9; time from process start to
#           "ready with the data" (redis: INFO persistence loading:0, ringkv:
#           PING answered), DBSIZE checked; bytes on disk after the clean stop.
# overwrite the same 100k keys written 11 times (a load and ten overwrites,
#           new random values each time); disk use after each round, after
#           idling, after a clean stop and after a restart.
# addnode   ringkv --nodes n1,n2,n3 in memory, --fsync everysec and always:
#           load $KEYS keys, time RINGKV.ADDNODE n4, keys moved per second.
#
# Environment: RINGKV (binary, default target/release/ringkv), REPS (5),
# ROUNDS (3: restart and addnode rounds), SECS (5), KEYS (1000000),
# SERVERS ("redis ringkv": either alone checks one half), OUT (raw CSV and
# logs, default bench-out/persist), KEEP=1 keeps the data directories.
# Data directories live in a fresh directory under ${TMPDIR:-/tmp}.
set -euo pipefail

RINGKV=${RINGKV:-target/release/ringkv}
REPS=${REPS:-5}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-5}
KEYS=${KEYS:-1000000}
SERVERS=${SERVERS:-redis ringkv}
OUT=${OUT:-bench-out/persist}
PARTS=${*:-tput restart overwrite addnode}
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringkv-bench-persist.XXXXXX")

declare -A PID PORT
cleanup() {
  local p; for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "data kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

has() { [[ " $SERVERS " == *" $1 "* ]]; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# rec FILE: appends stdin to $OUT/FILE and shows it
rec() { tee -a "$OUT/$1"; }
note() { echo "# $*" | rec notes.txt >&2; }
cli() { local name=$1; shift; redis-cli -h 127.0.0.1 -p "${PORT[$name]}" "$@"; }

# start_redis NAME MODE DIR: MODE none (no AOF, no RDB), always or everysec
start_redis() {
  local name=$1 mode=$2 dir=$3 a
  PORT[$name]=$(free_port); mkdir -p "$dir"
  a=(--port "${PORT[$name]}" --bind 127.0.0.1 --save '' --dir "$dir")
  case $mode in none) a+=(--appendonly no) ;; *) a+=(--appendonly yes --appendfsync "$mode") ;; esac
  redis-server "${a[@]}" >>"$OUT/$name.log" 2>&1 &
  PID[$name]=$!
}
# start_ringkv NAME MODE DIR [serve args...]: MODE none (no --data-dir), always, everysec
start_ringkv() {
  local name=$1 mode=$2 dir=$3 a; shift 3
  PORT[$name]=$(free_port)
  a=(serve --listen "127.0.0.1:${PORT[$name]}" "$@")
  [ "$mode" = none ] || a+=(--data-dir "$dir" --fsync "$mode")
  "$RINGKV" "${a[@]}" >>"$OUT/$name.log" 2>&1 &
  PID[$name]=$!
}
# start KIND NAME MODE DIR [ringkv serve args...]
start() { local kind=$1; shift; "start_$kind" "$@"; }

# ready KIND NAME: answering, with its data loaded
ready() {
  case $1 in
  redis) cli "$2" info persistence 2>/dev/null | grep -q '^loading:0' ;;
  ringkv) [ "$(cli "$2" ping 2>/dev/null)" = PONG ] ;;
  esac
}
wait_ready() {
  local i
  for i in $(seq 30000); do
    ready "$1" "$2" && return
    kill -0 "${PID[$2]}" 2>/dev/null || { echo "$2 exited, see $OUT/$2.log" >&2; exit 1; }
    sleep 0.002
  done
  echo "$2 not ready after a long wait" >&2; exit 1
}
# stop NAME [SIGNAL]: default TERM (a clean shutdown for both servers)
stop() {
  kill -s "${2:-TERM}" "${PID[$1]}"
  wait "${PID[$1]}" 2>/dev/null || true
  unset "PID[$1]"
}
# quiesce KIND NAME: waits for redis's background AOF rewrite, if any, to end
quiesce() {
  [ "$1" = redis ] || return 0
  while cli "$2" info persistence | grep -Eq '^aof_rewrite_(in_progress|scheduled):1'; do sleep 0.1; done
}
# disk DIR: allocated and apparent bytes of a directory
disk() { echo "$(du -s -B1 "$1" | cut -f1),$(du -s -b "$1" | cut -f1)"; }
# data_dir KIND DIR: where the persistent files are (redis: its appendonlydir)
data_dir() { if [ "$1" = redis ]; then echo "$2/appendonlydir"; else echo "$2"; fi; }

# gen_resp FILE COUNT SEED: SET key:%012d <100 random base64 characters>, as RESP
gen_resp() {
  python3 - "$@" <<'EOF'
import base64, random, sys
path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with open(path, "wb", buffering=1 << 20) as f:
    for i in range(count):
        k = b"key:%012d" % i
        v = base64.b64encode(rng.randbytes(75))
        f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
EOF
}
# load NAME FILE COUNT: pipes FILE in, checks every reply was OK; prints ms
load() {
  local t0 t1 res; t0=$(now_ms)
  res=$(cli "$1" --pipe <"$2" 2>&1)
  t1=$(now_ms)
  grep -q "errors: 0, replies: $3" <<<"$res" || { echo "load into $1 failed: $res" >&2; exit 1; }
  echo $((t1 - t0))
}

# fsync_probe LABEL: what an fdatasync costs on the disk under $TMP right now,
# appending 128 bytes before each (as Redis's AOF does) and rewriting 128
# bytes inside a preallocated file; median and 90th percentile in
# microseconds of 100 each, to fsync.csv
fsync_probe() {
  python3 - "$TMP/fsync-probe" "$1" <<'EOF2' | rec fsync.csv
import os, sys, time
path, label = sys.argv[1], sys.argv[2]
def run(prealloc):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    if prealloc:
        os.write(fd, b"\0" * (1 << 20))
        os.fdatasync(fd)
    ts = []
    for i in range(100):
        if prealloc:
            os.pwrite(fd, b"x" * 128, i * 128)
        else:
            os.write(fd, b"x" * 128)
        t = time.perf_counter()
        os.fdatasync(fd)
        ts.append((time.perf_counter() - t) * 1e6)
    os.close(fd)
    os.unlink(path)
    ts.sort()
    return "%s,%s,%d,%d" % (label, "prealloc" if prealloc else "append", ts[50], ts[90])
print(run(False))
print(run(True))
EOF2
}

# rb NAME ARGS...: one redis-benchmark run, CSV without the header
rb() { local name=$1; shift; redis-benchmark -h 127.0.0.1 -p "${PORT[$name]}" -c 50 --csv "$@" | grep -v '^"test"'; }
# calib NAME TEST P: the -n that makes one run last about $SECS s
calib() {
  local n=$((1000 * $3)) rps
  while :; do
    rps=$(rb "$1" -t "$2" -P "$3" -n $n -d 100 -r 100000 | awk -F'"' '{ print $4 }')
    awk -v n=$n -v r="$rps" 'BEGIN { exit !(n / r >= 0.5) }' && break
    n=$((n * 4))
  done
  awk -v r="$rps" -v s="$SECS" 'BEGIN { printf "%d\n", r * s }'
}
# order R: the servers, in an order that alternates with the round
order() { if [ $(($1 % 2)) = 1 ]; then echo "$SERVERS"; else echo "$SERVERS" | awk '{ for (i = NF; i > 0; i--) printf "%s ", $i }'; fi; }

part_tput() {
  local mode s t P r n
  declare -A N
  for mode in always everysec none; do
    for s in $SERVERS; do start "$s" "$s" "$mode" "$TMP/tput-$s-$mode"; done
    for s in $SERVERS; do wait_ready "$s" "$s"; done
    for P in 1 16; do for t in set get; do for s in $SERVERS; do
      N[$s,$t,$P]=$(calib "$s" $t $P)
    done; done; done
    note "tput $mode: -n per run: $(for k in "${!N[@]}"; do printf '%s=%s ' "$k" "${N[$k]}"; done)"
    for r in $(seq "$REPS"); do
      fsync_probe "$mode,$r"
      for P in 1 16; do for t in set get; do for s in $(order "$r"); do
        rb "$s" -t $t -P $P -n "${N[$s,$t,$P]}" -d 100 -r 100000 | sed "s/^/$mode,$r,$s,P$P,/" | rec tput.csv
      done; done; done
    done
    for s in $SERVERS; do stop "$s"; rm -rf "$TMP/tput-$s-$mode"; done
  done
}

# restart.csv: round,server,stop(clean|kill9),load_ms,stop_ms,ready_ms,dbsize,
#              disk allocated,disk apparent (after the stop, before the restart)
part_restart() {
  local r s how dir load_ms stop_ms t0 ready_ms n d
  [ -f "$TMP/load.resp" ] || gen_resp "$TMP/load.resp" "$KEYS" 1
  for r in $(seq "$ROUNDS"); do for s in $(order "$r"); do for how in clean kill9; do
    dir=$TMP/restart-$s; rm -rf "$dir"
    start "$s" "$s" everysec "$dir"; wait_ready "$s" "$s"
    load_ms=$(load "$s" "$TMP/load.resp" "$KEYS")
    quiesce "$s" "$s"; sleep 1
    t0=$(now_ms)
    if [ $how = clean ]; then stop "$s" TERM; else stop "$s" KILL; fi
    stop_ms=$(($(now_ms) - t0))
    d=$(disk "$(data_dir "$s" "$dir")")
    ls -l "$(data_dir "$s" "$dir")" >>"$OUT/restart-files.txt"
    t0=$(now_ms)
    start "$s" "$s" everysec "$dir"; wait_ready "$s" "$s"
    ready_ms=$(($(now_ms) - t0))
    n=$(cli "$s" dbsize)
    echo "$r,$s,$how,$load_ms,$stop_ms,$ready_ms,$n,$d" | rec restart.csv
    [ "$n" = "$KEYS" ] || note "restart: $s after $how has DBSIZE $n, not $KEYS"
    stop "$s"; rm -rf "$dir"
  done; done; done
}

# overwrite.csv: server,step,dbsize,disk allocated,disk apparent
part_overwrite() {
  local i s step
  for i in $(seq 0 10); do [ -f "$TMP/ow$i.resp" ] || gen_resp "$TMP/ow$i.resp" 100000 $((100 + i)); done
  for s in $SERVERS; do start "$s" "$s" everysec "$TMP/ow-$s"; done
  for s in $SERVERS; do wait_ready "$s" "$s"; done
  snap() { for s in $SERVERS; do
    echo "$s,$1,$(cli "$s" dbsize),$(disk "$(data_dir "$s" "$TMP/ow-$s")")" | rec overwrite.csv
  done; }
  for i in $(seq 0 10); do
    for s in $(order "$i"); do load "$s" "$TMP/ow$i.resp" 100000 >/dev/null; done
    snap "round$i"
  done
  sleep 10; snap idle10s
  sleep 20; snap idle30s
  for s in $SERVERS; do cli "$s" info persistence | grep -E '^aof_(rewrites|last_bgrewrite_status)' | sed "s/^/$s /" | rec notes.txt || true; done
  for s in $SERVERS; do stop "$s"; done
  for s in $SERVERS; do echo "$s,stopped,-,$(disk "$(data_dir "$s" "$TMP/ow-$s")")" | rec overwrite.csv; done
  for s in $SERVERS; do start "$s" "$s" everysec "$TMP/ow-$s"; done
  for s in $SERVERS; do wait_ready "$s" "$s"; done
  snap restarted
  for s in $SERVERS; do stop "$s"; rm -rf "$TMP/ow-$s"; done
}

# addnode.csv: round,mode,load_ms,keys_moved,bytes_moved,duration_ms (reply),
#              wall ms of the command, keys/s by the wall time
part_addnode() {
  has ringkv || return 0
  local r mode dir load_ms t0 wall reply moved
  [ -f "$TMP/load.resp" ] || gen_resp "$TMP/load.resp" "$KEYS" 1
  for r in $(seq "$ROUNDS"); do
    for mode in $(if [ $((r % 2)) = 1 ]; then echo none everysec always; else echo always everysec none; fi); do
      dir=$TMP/addnode-$mode; rm -rf "$dir"
      start ringkv an "$mode" "$dir" --nodes n1,n2,n3; wait_ready ringkv an
      load_ms=$(load an "$TMP/load.resp" "$KEYS")
      sleep 1
      t0=$(now_ms)
      reply=$(cli an ringkv.addnode n4)
      wall=$(($(now_ms) - t0))
      moved=$(awk 'NR % 2 { k = $0; next } { v[k] = $0 } END { print v["keys_moved"] "," v["bytes_moved"] "," v["duration_ms"] }' <<<"$reply")
      [ "$(cli an dbsize)" = "$KEYS" ] || note "addnode: DBSIZE after the add is not $KEYS"
      echo "$r,$mode,$load_ms,$moved,$wall,$(awk -v m="${moved%%,*}" -v w=$wall 'BEGIN { printf "%d", m / (w / 1000) }')" | rec addnode.csv
      stop an; rm -rf "$dir"
    done
  done
}

# `scripts/bench-persist.sh summary` prints the summary of what $OUT holds.
part_summary() { :; }

# Medians of what the parts recorded (every CSV in $OUT, this run's or not).
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
summary() {
  local f=$OUT/tput.csv mode t P red rin
  if [ -s "$f" ]; then
    echo "## tput: requests/s, median of $REPS (ratio: of the medians; median of the per-round ratios)"
    for mode in always everysec none; do for P in 1 16; do for t in SET GET; do
      red=$(awk -F, -v m=$mode -v p=P$P -v t="\"$t\"" '$1 == m && $3 == "redis" && $4 == p && $5 == t { gsub(/"/, "", $6); print $6 }' "$f" | median)
      rin=$(awk -F, -v m=$mode -v p=P$P -v t="\"$t\"" '$1 == m && $3 == "ringkv" && $4 == p && $5 == t { gsub(/"/, "", $6); print $6 }' "$f" | median)
      rr=$(awk -F, -v m=$mode -v p=P$P -v t="\"$t\"" '$1 == m && $4 == p && $5 == t { gsub(/"/, "", $6); v[$2, $3] = $6; r[$2] = 1 }
        END { for (i in r) if (v[i, "redis"] && v[i, "ringkv"]) print v[i, "ringkv"] / v[i, "redis"] }' "$f" | median)
      printf '%-8s %-4s P%-2s redis %10s  ringkv %10s  ratio %s; %s\n' $mode $t $P "$red" "$rin" \
        "$(awk -v a="$rin" -v b="$red" 'BEGIN { if (b + 0 && a + 0) printf "%.2f", a / b; else print "-" }')" "$rr"
    done; done; done
  fi
  f=$OUT/fsync.csv
  if [ -s "$f" ]; then
    echo "## fdatasync of 128 bytes before each round, us: median of the rounds' medians (of their p90s)"
    for mode in always everysec none; do
      printf '%-8s append %6s (%s)  preallocated %6s (%s)\n' $mode \
        "$(awk -F, -v m=$mode '$1 == m && $3 == "append" { print $4 }' "$f" | median)" \
        "$(awk -F, -v m=$mode '$1 == m && $3 == "append" { print $5 }' "$f" | median)" \
        "$(awk -F, -v m=$mode '$1 == m && $3 == "prealloc" { print $4 }' "$f" | median)" \
        "$(awk -F, -v m=$mode '$1 == m && $3 == "prealloc" { print $5 }' "$f" | median)"
    done
  fi
  f=$OUT/restart.csv
  if [ -s "$f" ]; then
    echo "## restart: ms to ready (median of $ROUNDS), DBSIZE, bytes/key after a clean stop (allocated, apparent)"
    for s in $SERVERS; do for how in clean kill9; do
      printf '%-6s %-5s ready %6s ms  load %6s ms  stop %5s ms  dbsize %s\n' $s $how \
        "$(awk -F, -v s=$s -v h=$how '$2 == s && $3 == h { print $6 }' "$f" | median)" \
        "$(awk -F, -v s=$s -v h=$how '$2 == s && $3 == h { print $4 }' "$f" | median)" \
        "$(awk -F, -v s=$s -v h=$how '$2 == s && $3 == h { print $5 }' "$f" | median)" \
        "$(awk -F, -v s=$s -v h=$how '$2 == s && $3 == h { print $7 }' "$f" | sort -u | tr '\n' ' ')"
    done
      printf '%-6s bytes/key %s allocated, %s apparent\n' $s \
        "$(awk -F, -v s=$s -v k="$KEYS" '$2 == s && $3 == "clean" { print $8 / k }' "$f" | median)" \
        "$(awk -F, -v s=$s -v k="$KEYS" '$2 == s && $3 == "clean" { print $9 / k }' "$f" | median)"
    done
  fi
  f=$OUT/overwrite.csv
  if [ -s "$f" ]; then
    echo "## overwrite: MB allocated (apparent) after each step"
    awk -F, '{ printf "%-6s %-10s dbsize %-7s %8.1f MB (%.1f)\n", $1, $2, $3, $4 / 1e6, $5 / 1e6 }' "$f"
  fi
  f=$OUT/addnode.csv
  if [ -s "$f" ]; then
    echo "## addnode: median of $ROUNDS: keys moved, wall ms, keys/s (wall), keys/s (reply's duration)"
    for mode in none everysec always; do
      printf '%-8s moved %8s  wall %6s ms  %9s keys/s  %9s keys/s by duration_ms\n' $mode \
        "$(awk -F, -v m=$mode '$2 == m { print $4 }' "$f" | median)" \
        "$(awk -F, -v m=$mode '$2 == m { print $7 }' "$f" | median)" \
        "$(awk -F, -v m=$mode '$2 == m { print $8 }' "$f" | median)" \
        "$(awk -F, -v m=$mode '$2 == m && $6 > 0 { printf "%d\n", $4 / ($6 / 1000) }' "$f" | median)"
    done
  fi
}

note "$(date -u +%FT%TZ) parts: $PARTS; servers: $SERVERS; $(redis-server --version | cut -d' ' -f3); ringkv $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(uptime)"
for part in $PARTS; do
  note "$(date -u +%T) part $part starts; $(uptime)"
  [ "$part" = summary ] || rm -f "$OUT/$part.csv"
  [ "$part" != tput ] || rm -f "$OUT/fsync.csv"
  "part_$part"
done
note "$(date -u +%T) done; $(uptime)"
summary | rec summary.txt
