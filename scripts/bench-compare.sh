#!/usr/bin/env bash
# A change against an earlier commit, in one run: builds BASE (default: the commit before the
# issue-9 hardening) and HEAD in release, then times the same workloads with both builds in
# interleaved rounds and prints medians and the paired ratio (HEAD time / BASE time).
#
#   scripts/bench-compare.sh                    # BASE=cca81f9, 512 MiB, 9 rounds
#   BASE=main~5 SIZE=1G ROUNDS=15 scripts/bench-compare.sh
#   GATEWAY=0 scripts/bench-compare.sh          # without the gateway rounds
#
# Workloads (the data is random and made here):
#   serve full GET     curl of the whole container's plaintext from `qeltrix serve`
#   serve 16x4 ranges  16 curl clients at once, each 4 Range GETs of 8 MiB
#   unpack             `qeltrix unpack` to a file (O_TMPFILE + fsync + link)
#   gateway            scripts/bench-gateway.sh with BASELINE= the BASE build (its own rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

BASE=${BASE:-cca81f9}
SIZE=${SIZE:-512M}
ROUNDS=${ROUNDS:-9}
need_cargo
need curl curl
need bc bc

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    git worktree remove --force "$TMP/base-src" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

step "building BASE ($BASE) and HEAD in release"
ROOT=$PWD
git worktree add -q --detach "$TMP/base-src" "$BASE"
# The same target folder: dependencies are built once; only the crate differs.
(cd "$TMP/base-src" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release --quiet)
cp target/release/qeltrix "$TMP/qeltrix-base"
cargo build --release --quiet
cp target/release/qeltrix "$TMP/qeltrix-head"

step "making $SIZE of random data"
head -c "$SIZE" /dev/urandom >"$TMP/data"
"$TMP/qeltrix-head" keygen -o "$TMP/key" 2>/dev/null
"$TMP/qeltrix-head" pack "$TMP/data" "$TMP/c.qltx" --key-file "$TMP/key" -q

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # PORT
    for _ in $(seq 1 500); do
        curl -s -o /dev/null "http://127.0.0.1:$1/health" && return 0
        sleep 0.01
    done
    echo "the server on $1 did not start" >&2
    exit 1
}
declare -A PORT
for build in base head; do
    PORT[$build]=$(port)
    "$TMP/qeltrix-$build" serve "$TMP/c.qltx" --port "${PORT[$build]}" --key-file "$TMP/key" \
        >"$TMP/serve-$build.log" 2>&1 &
    PIDS+=($!)
    wait_http "${PORT[$build]}"
done
# Both servers must give the same bytes before anything is timed.
for build in base head; do
    curl -s "http://127.0.0.1:${PORT[$build]}/" | cmp - "$TMP/data"
done

full_get() { curl -s -o /dev/null "http://127.0.0.1:$1/"; }
DATA_LEN=$(stat -c %s "$TMP/data")
ranges() {
    local clients=()
    for c in $(seq 0 15); do
        (for r in 0 1 2 3; do
            off=$(( ((c * 4 + r) * 8 << 20) % (DATA_LEN - (8 << 20)) ))
            curl -s -o /dev/null -r "$off-$((off + (8 << 20) - 1))" "http://127.0.0.1:$1/"
        done) &
        clients+=($!)
    done
    wait "${clients[@]}" # only the clients: the servers are children of this shell too
}
unpack() { "$TMP/qeltrix-$1" unpack "$TMP/c.qltx" "$TMP/out-$1" --key-file "$TMP/key" -q --force; }

now() { date +%s.%N; }
declare -A TIMES
time_it() { # KEY COMMAND...
    local key=$1 t0
    shift
    t0=$(now)
    "$@"
    TIMES[$key]="${TIMES[$key]:-} $(echo "$(now) - $t0" | bc -l)"
}

step "$ROUNDS interleaved rounds"
for round in $(seq 1 "$ROUNDS"); do
    # Alternate which build goes first, so neither always meets a warmer cache.
    if ((round % 2)); then order="base head"; else order="head base"; fi
    for build in $order; do time_it "full $build" full_get "${PORT[$build]}"; done
    for build in $order; do time_it "ranges $build" ranges "${PORT[$build]}"; done
    for build in $order; do time_it "unpack $build" unpack "$build"; done
done
cmp "$TMP/out-head" "$TMP/data"

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# The median of the per-round ratios head/base (pairing cancels the machine's drift).
paired() { # NAME
    paste <(tr ' ' '\n' <<<"${TIMES[$1 head]}" | grep -v '^$') <(tr ' ' '\n' <<<"${TIMES[$1 base]}" | grep -v '^$') |
        awk '{print $1 / $2}' | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

echo
echo "bench-compare: HEAD $(git rev-parse --short HEAD) vs BASE $(git rev-parse --short "$BASE"), $SIZE, medians of $ROUNDS interleaved rounds, $(nproc) cores"
printf '%-34s %12s %12s %16s\n' "workload" "BASE s" "HEAD s" "HEAD/BASE time"
for w in full ranges unpack; do
    case $w in
        full) name="serve: curl full GET" ;;
        ranges) name="serve: 16 clients x 4 ranges 8 MiB" ;;
        unpack) name="unpack to a file" ;;
    esac
    printf '%-34s %12.3f %12.3f %15.2fx\n' "$name" "$(median "${TIMES[$w base]}")" \
        "$(median "${TIMES[$w head]}")" "$(paired "$w")"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

[ "${GATEWAY:-1}" = 0 ] && exit 0 # GATEWAY=0: skip the gateway rounds
step "gateway (scripts/bench-gateway.sh, BASELINE = BASE)"
BASELINE="$TMP/qeltrix-base" SIZE=${GATEWAY_SIZE:-2G} ROUNDS=${GATEWAY_ROUNDS:-5} ./scripts/bench-gateway.sh
