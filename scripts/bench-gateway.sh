#!/usr/bin/env bash
# Gateway benchmark: one stream of SIZE bytes (default 4 GiB) through the gateway in forward and
# reflect mode, against a plain loopback TCP copy with socat (the ceiling), all in this run.
# Prints throughput, the ratio to the ceiling and the gateway's peak RSS, with the targets
# (>= 1 GB/s, RSS < 128 MiB).
#
#   scripts/bench-gateway.sh                 # 4 GiB
#   SIZE=1G WORKERS=2 scripts/bench-gateway.sh
#
# SIZE accepts IEC suffixes (1G = 1 GiB). The data is random (incompressible, as video or
# archives are), a 64 MiB random file repeated, read from the page cache by the sending socat.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-4G}
BLOCK_KIB=${BLOCK_KIB:-1024}
WORKERS=${WORKERS:-0}
BYTES=$(numfmt --from=iec "$SIZE")
BUF=1048576 # socat's transfer buffer, the same for every run

if ! command -v socat >/dev/null; then
    echo "installing socat" >&2
    apt-get install -y -qq socat >/dev/null || { apt-get update -qq && apt-get install -y -qq socat >/dev/null; }
fi
cargo build --release --quiet
QELTRIX=$PWD/target/release/qeltrix

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# The source: a file of exactly BYTES bytes, made of one random 64 MiB chunk repeated.
head -c 64M /dev/urandom >"$TMP/chunk"
: >"$TMP/src"
while [ "$(stat -c %s "$TMP/src")" -lt "$BYTES" ]; do cat "$TMP/chunk" >>"$TMP/src"; done
truncate -s "$BYTES" "$TMP/src"
cat "$TMP/src" >/dev/null # into the page cache
"$QELTRIX" keygen -o "$TMP/key" 2>/dev/null

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# Waits for a listening socket on PORT (without connecting: socat's listener takes one connection).
wait_listening() { # PORT
    for _ in $(seq 1 500); do
        ss -ltn "sport = :$1" | grep -q LISTEN && return 0
        sleep 0.01
    done
    echo "socat is not listening on $1" >&2
    exit 1
}

# A receiver that discards what it gets (its PID is the last in PIDS).
start_sink() { # PORT
    socat -b $BUF -u "TCP-LISTEN:$1,reuseaddr" OPEN:/dev/null &
    PIDS+=($!)
    wait_listening "$1"
}

start_gateway() { # PORT [ARGS...]
    local p=$1
    shift
    "$QELTRIX" gateway --listen "127.0.0.1:$p" --key-file "$TMP/key" --block-size "$BLOCK_KIB" \
        --workers "$WORKERS" --stats-interval 0 "$@" 2>"$TMP/gateway-$p.log" &
    GW=$!
    PIDS+=($GW)
    wait_listening "$p"
}

# Waits for the gateway's log to show the whole stream passed through, or fails.
check_passed() { # LOG
    for _ in $(seq 1 1000); do
        grep -q "closed: $BYTES bytes in" "$1" && return 0
        sleep 0.01
    done
    cat "$1" >&2
    exit 1
}

# CPU seconds (user + system) the process has used so far.
cpu_seconds() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }

peak_rss_mib() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

RESULTS=()
record() { # NAME SECONDS RSS CPU
    RESULTS+=("$1|$2|$3|$4")
}

# 1. The ceiling: socat to socat over loopback.
P=$(port)
start_sink "$P"
SINK=${PIDS[-1]}
t0=$(now)
socat -b $BUF -u OPEN:"$TMP/src" "TCP:127.0.0.1:$P"
wait "$SINK"
record "socat loopback copy (ceiling)" "$(echo "$(now) - $t0" | bc -l)" "-" "-"

# 2. Forward: socat -> gateway -> socat.
P=$(port)
start_sink "$P"
SINK=${PIDS[-1]}
G=$(port)
start_gateway "$G" --to "127.0.0.1:$P"
t0=$(now)
socat -b $BUF -u OPEN:"$TMP/src" "TCP:127.0.0.1:$G"
wait "$SINK"
t=$(echo "$(now) - $t0" | bc -l)
record "gateway forward" "$t" "$(peak_rss_mib "$GW")" "$(cpu_seconds "$GW")"
check_passed "$TMP/gateway-$G.log"
kill "$GW"

# 3. Reflect: socat sends the file and reads the container back on the same connection.
G=$(port)
start_gateway "$G"
t0=$(now)
socat -b $BUF -t 600 OPEN:"$TMP/src"\!\!OPEN:/dev/null,wronly "TCP:127.0.0.1:$G"
t=$(echo "$(now) - $t0" | bc -l)
record "gateway reflect" "$t" "$(peak_rss_mib "$GW")" "$(cpu_seconds "$GW")"
check_passed "$TMP/gateway-$G.log"
kill "$GW"

CEILING=$(echo "${RESULTS[0]}" | cut -d'|' -f2)
echo
echo "Gateway benchmark: $SIZE ($BYTES bytes) random data, block ${BLOCK_KIB} KiB, workers ${WORKERS} (0 = one per core), $(nproc) cores"
printf '%-32s %9s %9s %10s %14s %12s\n' "run" "seconds" "GB/s" "vs socat" "peak RSS MiB" "gateway CPU s"
for r in "${RESULTS[@]}"; do
    IFS='|' read -r name secs rss cpu <<<"$r"
    gbs=$(echo "$BYTES / $secs / 1000000000" | bc -l)
    ratio=$(echo "$CEILING / $secs" | bc -l)
    printf '%-32s %9.2f %9.2f %9.0f%% %14s %12s\n' "$name" "$secs" "$gbs" "$(echo "$ratio * 100" | bc -l)" "$rss" "$cpu"
done
echo "targets: >= 1.00 GB/s, peak RSS < 128 MiB. Machine load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
