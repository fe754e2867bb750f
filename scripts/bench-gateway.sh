#!/usr/bin/env bash
# Gateway benchmark: one stream of SIZE bytes (default 4 GiB) through the gateway in forward and
# reflect mode, against a plain loopback TCP copy with socat (the ceiling), all in this run.
# Prints throughput, the ratio to the ceiling and the gateway's peak RSS, with the targets
# (>= 1 GB/s, RSS < 128 MiB).
#
#   scripts/bench-gateway.sh                 # 4 GiB, 3 rounds
#   SIZE=1G WORKERS=2 ROUNDS=5 scripts/bench-gateway.sh
#   BASELINE=/path/to/older/qeltrix SIZE=2G scripts/bench-gateway.sh
#
# Rounds are interleaved (ceiling, forward, reflect, and with BASELINE the older build's forward
# and reflect, in each round) and the table shows medians, so a drift of the noisy machine hits
# every row alike. BASELINE names another qeltrix binary (an earlier commit's release build) to
# measure a change against in the same run.
#
# SIZE accepts IEC suffixes (1G = 1 GiB). The data is random (incompressible, as video or
# archives are), a 64 MiB random file repeated, read from the page cache by the sending socat.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-4G}
BLOCK_KIB=${BLOCK_KIB:-1024}
WORKERS=${WORKERS:-0}
ROUNDS=${ROUNDS:-3}
BASELINE=${BASELINE:-}
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

start_gateway() { # BIN PORT [ARGS...]
    local bin=$1 p=$2
    shift 2
    "$bin" gateway --listen "127.0.0.1:$p" --key-file "$TMP/key" --block-size "$BLOCK_KIB" \
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

declare -A RUNS # name -> space-separated "seconds|rss|cpu" of each round
NAMES=()
record() { # NAME SECONDS RSS CPU
    [ -n "${RUNS[$1]+x}" ] || NAMES+=("$1")
    RUNS[$1]="${RUNS[$1]:-} $2|$3|$4"
}

ceiling() {
    local P SINK t0
    P=$(port)
    start_sink "$P"
    SINK=${PIDS[-1]}
    t0=$(now)
    socat -b $BUF -u OPEN:"$TMP/src" "TCP:127.0.0.1:$P"
    wait "$SINK"
    record "socat loopback copy (ceiling)" "$(echo "$(now) - $t0" | bc -l)" "-" "-"
}

forward() { # NAME BIN: socat -> gateway -> socat
    local P SINK G t0 t
    P=$(port)
    start_sink "$P"
    SINK=${PIDS[-1]}
    G=$(port)
    start_gateway "$2" "$G" --to "127.0.0.1:$P"
    t0=$(now)
    socat -b $BUF -u OPEN:"$TMP/src" "TCP:127.0.0.1:$G"
    wait "$SINK"
    t=$(echo "$(now) - $t0" | bc -l)
    record "$1" "$t" "$(peak_rss_mib "$GW")" "$(cpu_seconds "$GW")"
    check_passed "$TMP/gateway-$G.log"
    kill "$GW"
}

reflect() { # NAME BIN: socat sends the file and reads the container back on the same connection
    local G t0 t
    G=$(port)
    start_gateway "$2" "$G"
    t0=$(now)
    socat -b $BUF -t 600 OPEN:"$TMP/src"\!\!OPEN:/dev/null,wronly "TCP:127.0.0.1:$G"
    t=$(echo "$(now) - $t0" | bc -l)
    record "$1" "$t" "$(peak_rss_mib "$GW")" "$(cpu_seconds "$GW")"
    check_passed "$TMP/gateway-$G.log"
    kill "$GW"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    ceiling
    forward "gateway forward" "$QELTRIX"
    [ -z "$BASELINE" ] || forward "baseline forward" "$BASELINE"
    reflect "gateway reflect" "$QELTRIX"
    [ -z "$BASELINE" ] || reflect "baseline reflect" "$BASELINE"
done

# The median of one column (1 seconds, 2 rss, 3 cpu) of a run's rounds.
median() { # NAME COLUMN
    tr ' ' '\n' <<<"${RUNS[$1]}" | grep -v '^$' | cut -d'|' -f"$2" | sort -g |
        awk '{v[NR]=$1} END {if (v[1] == "-") print "-"; else if (NR % 2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'
}

CEILING=$(median "socat loopback copy (ceiling)" 1)
echo
echo "Gateway benchmark: $SIZE ($BYTES bytes) random data, block ${BLOCK_KIB} KiB, workers ${WORKERS} (0 = one per core), $(nproc) cores, medians of $ROUNDS interleaved rounds"
[ -z "$BASELINE" ] || echo "baseline: $BASELINE ($("$BASELINE" --version))"
printf '%-32s %9s %9s %10s %14s %12s\n' "run" "seconds" "GB/s" "vs socat" "peak RSS MiB" "gateway CPU s"
for name in "${NAMES[@]}"; do
    secs=$(median "$name" 1)
    rss=$(median "$name" 2)
    cpu=$(median "$name" 3)
    gbs=$(echo "$BYTES / $secs / 1000000000" | bc -l)
    ratio=$(echo "$CEILING / $secs" | bc -l)
    printf '%-32s %9.2f %9.2f %9.0f%% %14s %12s\n' "$name" "$secs" "$gbs" "$(echo "$ratio * 100" | bc -l)" "$rss" "$cpu"
done
if [ -n "$BASELINE" ]; then
    for mode in forward reflect; do
        printf 'gateway %s / baseline %s, time: %.2fx\n' "$mode" "$mode" \
            "$(echo "$(median "gateway $mode" 1) / $(median "baseline $mode" 1)" | bc -l)"
    done
fi
echo "targets: >= 1.00 GB/s, peak RSS < 128 MiB. Machine load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
