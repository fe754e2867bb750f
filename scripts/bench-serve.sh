#!/usr/bin/env bash
# bench-serve.sh -- `qeltrix serve` against nginx serving the plaintext (the ceiling) and
# `rclone serve http` of an rclone crypt remote (the peer), in one run, on the same 1 GiB file:
#
#   * wrk, 1 MiB `Range` GETs at random 4 KiB-aligned offsets (the shared bench's range.lua),
#     1, 4 and 16 connections, DURATION seconds each: MiB/s, p50 and p99 latency;
#   * curl full-file GET, cold (after drop_caches) and warm (file in the page cache): MiB/s;
#     the range runs are warm too (each server's backing file is read into the page cache first);
#   * peak RSS (VmHWM) of `qeltrix serve` (default 256 MiB cache) during a full GET of a 4 GiB
#     container, and that GET's speed.
#
# Rounds are interleaved (every server in each round) and the table shows medians over ROUNDS
# with ratios of the medians. Loopback only; client and servers share the machine's cores, so
# these are CPU-bound comparisons, not network numbers.
#
# usage: scripts/bench-serve.sh
# env:   WORK=/tmp/qeltrix-bench-serve  ROUNDS=3  DURATION=5  CONNS="1 4 16"  SIZE_MIB=1024
#        BIG_GIB=4 (0 skips the RSS run)  BASE_PORT=9181  KEEP=0 (1 keeps the 4 GiB container)
# needs: wrk nginx rclone curl openssl python3 (Debian: apt-get install wrk nginx-light rclone)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/tmp/qeltrix-bench-serve}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-1 4 16}
SIZE_MIB=${SIZE_MIB:-1024}
BIG_GIB=${BIG_GIB:-4}
BASE_PORT=${BASE_PORT:-9181}
KEEP=${KEEP:-0}
CACHE_MIB=256
Q_PORT=$BASE_PORT
N_PORT=$((BASE_PORT + 1))
R_PORT=$((BASE_PORT + 2))
B_PORT=$((BASE_PORT + 3))

log() { echo "[$(date +%T)] $*" >&2; }
for tool in wrk nginx rclone curl openssl python3; do
  command -v "$tool" > /dev/null || { log "missing $tool (apt-get install wrk nginx-light rclone curl openssl python3)"; exit 1; }
done

log "building qeltrix (release)"
(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/qeltrix

mkdir -p "$WORK/data" "$WORK/nginx/tmp" "$WORK/rclone.base"
RESULTS=$WORK/results.tsv
: > "$RESULTS"
PIDS=()

cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2> /dev/null || true
  done
  if [ -f "$WORK/nginx/nginx.pid" ]; then kill -QUIT "$(cat "$WORK/nginx/nginx.pid")" 2> /dev/null || true; fi
  if [ "$KEEP" != 1 ]; then rm -f "$WORK/big4.qltx"; fi
}
trap cleanup EXIT

port_free() { ! (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
for p in $Q_PORT $N_PORT $R_PORT $B_PORT; do
  port_free "$p" || { log "port $p is in use (set BASE_PORT)"; exit 1; }
done

wait_http() { # url
  for _ in $(seq 600); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
  log "$1 did not come up"; exit 1
}

drop_caches() { sync; (echo 3 > /proc/sys/vm/drop_caches) 2> /dev/null; }

# --- data: the same deterministic 1 GiB file as the shared peer benchmark
PLAIN=$WORK/data/big.bin
SIZE=$((SIZE_MIB << 20))
if [ ! -s "$PLAIN" ] || [ "$(stat -c %s "$PLAIN")" != "$SIZE" ]; then
  log "writing $SIZE_MIB MiB of test data"
  { openssl enc -aes-128-ctr -pass pass:peerbench -nosalt -pbkdf2 < /dev/zero 2> /dev/null || true; } \
    | head -c "$SIZE" > "$PLAIN"
fi
[ -s "$WORK/key" ] || "$BIN" keygen -o "$WORK/key" 2> /dev/null
if [ ! -s "$WORK/big.bin.qltx" ] || [ "$PLAIN" -nt "$WORK/big.bin.qltx" ]; then
  log "packing"
  "$BIN" pack "$PLAIN" "$WORK/big.bin.qltx" --key-file "$WORK/key" -q -f
fi

# --- rclone crypt remote holding the same file
CONF=$WORK/rclone.conf
if [ ! -s "$CONF" ]; then
  cat > "$CONF" << EOF
[crypt]
type = crypt
remote = $WORK/rclone.base
password = $(rclone obscure "bench-$RANDOM-$RANDOM")
password2 = $(rclone obscure "bench-$RANDOM-$RANDOM")
EOF
  rm -rf "$WORK/rclone.base" && mkdir -p "$WORK/rclone.base"
fi
if [ "$(rclone size crypt: --config "$CONF" --json 2> /dev/null | python3 -c 'import json,sys;print(json.load(sys.stdin)["bytes"])' 2> /dev/null || echo 0)" != "$SIZE" ]; then
  log "copying into the rclone crypt remote"
  rclone copyto "$PLAIN" crypt:big.bin --config "$CONF"
fi

# --- servers
log "starting qeltrix serve :$Q_PORT, nginx :$N_PORT, rclone serve http :$R_PORT"
"$BIN" serve "$WORK/big.bin.qltx" --key-file "$WORK/key" --listen "127.0.0.1:$Q_PORT" \
  --cache-size "$CACHE_MIB" 2> "$WORK/qeltrix.log" &
PIDS+=($!)
cat > "$WORK/nginx/nginx.conf" << EOF
user root;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/tmp; proxy_temp_path $WORK/nginx/tmp;
  fastcgi_temp_path $WORK/nginx/tmp; uwsgi_temp_path $WORK/nginx/tmp; scgi_temp_path $WORK/nginx/tmp;
  server { listen 127.0.0.1:$N_PORT; root $WORK/data; }
}
EOF
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/"
rclone serve http crypt: --addr "127.0.0.1:$R_PORT" --config "$CONF" --vfs-cache-mode off \
  --log-file "$WORK/rclone.log" < /dev/null > /dev/null 2>&1 &
PIDS+=($!)

declare -A URL=(
  [qeltrix]="http://127.0.0.1:$Q_PORT/big.bin"
  [nginx]="http://127.0.0.1:$N_PORT/big.bin"
  [rclone]="http://127.0.0.1:$R_PORT/big.bin"
)
SERVERS="qeltrix nginx rclone"
# What each server reads from disk: warmed into the page cache before its range runs, since
# another server's cold GET (drop_caches) would otherwise leave it cold.
declare -A BACKING=(
  [qeltrix]="$WORK/big.bin.qltx"
  [nginx]="$PLAIN"
  [rclone]="$(find "$WORK/rclone.base" -type f | head -n 1)"
)
for s in $SERVERS; do wait_http "${URL[$s]}"; done

# --- the answers must be right before they are timed
OFF=943718400
[ "$SIZE" -gt $((OFF + (1 << 20))) ] || OFF=0
for s in $SERVERS; do
  got=$(curl -s -H "Range: bytes=$OFF-$((OFF + 1048575))" "${URL[$s]}" | sha256sum)
  want=$({ tail -c +$((OFF + 1)) "$PLAIN" || true; } | head -c 1048576 | sha256sum)
  [ "$got" = "$want" ] || { log "$s: a 1 MiB range differs from the plaintext"; exit 1; }
done
curl -s "${URL[qeltrix]}" | cmp -s - "$PLAIN" || { log "qeltrix: full GET differs from the plaintext"; exit 1; }
log "byte checks passed"

# --- measurements
LUA=$WORK/range.lua
cat > "$LUA" << 'EOF'
-- The shared bench's range.lua: a GET with "Range: bytes=X-Y" for RANGE_LEN bytes at a random
-- 4 KiB-aligned offset within FILE_SIZE; done() prints one WRKJSON line.
local size = tonumber(os.getenv("FILE_SIZE") or "0")
local len = tonumber(os.getenv("RANGE_LEN") or "1048576")
local nblocks = math.floor((size - len) / 4096)
local counter = 0
function setup(thread) counter = counter + 1; thread:set("tid", counter) end
function init(args) math.randomseed(1000 + (tid or 0)) end
function request()
  local off = math.random(0, nblocks) * 4096
  return wrk.format("GET", nil, { ["Range"] = string.format("bytes=%d-%d", off, off + len - 1) })
end
function done(summary, latency, requests)
  local dur = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"bytes":%d,"duration_s":%.3f,"rps":%.2f,"mib_s":%.2f,' ..
    '"p50_ms":%.3f,"p99_ms":%.3f,"non2xx":%d,"errors":%d}\n',
    summary.requests, summary.bytes, dur, summary.requests / dur,
    summary.bytes / dur / 1048576, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
export FILE_SIZE=$SIZE RANGE_LEN=1048576

emit() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RESULTS"; } # server metric round value

for round in $(seq "$ROUNDS"); do
  for s in $SERVERS; do
    cat "${BACKING[$s]}" > /dev/null
    for c in $CONNS; do
      t=2; [ "$c" -lt 2 ] && t=1
      log "round $round: $s wrk -c $c"
      js=$(wrk -t "$t" -c "$c" -d "${DURATION}s" --timeout 10s -s "$LUA" "${URL[$s]}" | sed -n 's/^WRKJSON //p')
      for k in mib_s p50_ms p99_ms non2xx errors; do
        emit "$s" "range_c${c}_$k" "$round" "$(python3 -c "import json,sys;print(json.loads(sys.argv[1])['$k'])" "$js")"
      done
    done
    log "round $round: $s full GET"
    drop_caches || true
    emit "$s" get_cold "$round" "$(curl -s -o /dev/null -w '%{speed_download}' "${URL[$s]}")"
    cat "${BACKING[$s]}" > /dev/null
    emit "$s" get_warm "$round" "$(curl -s -o /dev/null -w '%{speed_download}' "${URL[$s]}")"
  done
done
emit qeltrix rss_before_mib 1 "$(awk '/VmHWM/{print $2/1024}' "/proc/${PIDS[0]}/status")"

# --- peak RSS during a full GET of a big container
if [ "$BIG_GIB" -gt 0 ]; then
  BIG=$WORK/big4.qltx
  if [ ! -s "$BIG" ]; then
    log "packing a $BIG_GIB GiB container from a stream"
    { openssl enc -aes-128-ctr -pass pass:qeltrix-rss -nosalt -pbkdf2 < /dev/zero 2> /dev/null || true; } \
      | head -c $((BIG_GIB << 30)) | "$BIN" pack - "$BIG" --key-file "$WORK/key" -q
  fi
  "$BIN" serve "$BIG" --key-file "$WORK/key" --listen "127.0.0.1:$B_PORT" --cache-size "$CACHE_MIB" \
    2> "$WORK/qeltrix-big.log" &
  BIG_PID=$!
  PIDS+=("$BIG_PID")
  wait_http "http://127.0.0.1:$B_PORT/health"
  log "full GET of the $BIG_GIB GiB container"
  read -r code bytes speed < <(curl -s -o /dev/null -w '%{http_code} %{size_download} %{speed_download}\n' "http://127.0.0.1:$B_PORT/")
  [ "$code" = 200 ] && [ "$bytes" = $((BIG_GIB << 30)) ] || { log "big GET: status $code, $bytes bytes"; exit 1; }
  emit qeltrix big_get 1 "$speed"
  emit qeltrix big_rss_mib 1 "$(awk '/VmHWM/{print $2/1024}' "/proc/$BIG_PID/status")"
fi

log "done; raw results in $RESULTS"
python3 - "$RESULTS" "$CONNS" "$CACHE_MIB" "$BIG_GIB" "$ROUNDS" << 'EOF'
import statistics, sys
from collections import defaultdict
path, conns, cache_mib, big_gib, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
vals = defaultdict(list)
for line in open(path):
    server, metric, _, value = line.rstrip("\n").split("\t")
    vals[(server, metric)].append(float(value))
med = lambda s, m: statistics.median(vals[(s, m)]) if vals[(s, m)] else None
MIB = 1048576

def fmt(v, unit=""):
    if v is None: return "–"
    return f"{v:.0f}{unit}" if v >= 100 else f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}"

def ratio(a, b):
    return "–" if a is None or not b else f"{a / b:.2f}×"

print(f"\n`qeltrix serve` vs nginx (plaintext) vs `rclone serve http` (crypt remote); medians of {rounds} interleaved rounds, MiB/s = 2^20 B/s\n")
print("| metric | qeltrix | nginx plain | rclone crypt | qeltrix/nginx | qeltrix/rclone | target |")
print("|---|---|---|---|---|---|---|")
for c in conns:
    m = [med(s, f"range_c{c}_mib_s") for s in ("qeltrix", "nginx", "rclone")]
    print(f"| wrk 1 MiB random ranges, {c} conn (MiB/s) | {fmt(m[0])} | {fmt(m[1])} | {fmt(m[2])} | {ratio(m[0], m[1])} | {ratio(m[0], m[2])} | ≥ 0.5× nginx, ≥ 2× rclone |")
    for k, name in (("p50_ms", "p50"), ("p99_ms", "p99")):
        m = [med(s, f"range_c{c}_{k}") for s in ("qeltrix", "nginx", "rclone")]
        print(f"| … {name} latency (ms) | {fmt(m[0])} | {fmt(m[1])} | {fmt(m[2])} | {ratio(m[0], m[1])} | {ratio(m[0], m[2])} | |")
for k, name in (("get_cold", "cold"), ("get_warm", "warm")):
    m = [med(s, k) for s in ("qeltrix", "nginx", "rclone")]
    m = [x / MIB if x is not None else None for x in m]
    print(f"| curl full GET, {name} (MiB/s) | {fmt(m[0])} | {fmt(m[1])} | {fmt(m[2])} | {ratio(m[0], m[1])} | {ratio(m[0], m[2])} | ≥ 1000 MB/s |")
if big_gib:
    rss, speed = med("qeltrix", "big_rss_mib"), med("qeltrix", "big_get")
    print(f"| full GET of a {big_gib} GiB container (MiB/s) | {fmt(speed / MIB if speed else None)} | | | | | |")
    print(f"| peak RSS during it, cache {cache_mib} MiB (MiB) | {fmt(rss)} | | | | | ≤ {cache_mib + 64} |")
bad = [(s, m) for (s, m), v in vals.items() if m.endswith(("non2xx", "errors")) and any(v)]
if bad:
    print(f"\nWARNING: non-2xx answers or socket errors: {bad}")
EOF
