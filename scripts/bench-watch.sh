#!/usr/bin/env bash
# bench-watch.sh -- `qeltrix watch`: the time from a file's close in the inbox to its container
# being readable in the vault (issue 13), against the floor of a plain `cp` into a plain folder on
# the same file system.
#
# Data (made by the script, deterministic pseudorandom bytes, in a temp dir removed on exit):
#   small/fNNNN.bin   SMALL_N=1000 files of SMALL_KIB=4 KiB
#   big.bin           one file of BIG_MIB=1024 MiB, made in memory by each measurement (written
#                     into the inbox by the writer, or as cp's source), deleted after it: the
#                     disk needs 2 x BIG_MIB free at most, not 4
# Per round, each on a fresh inbox, vault and plain folder (scripts/lib/bench-watch-probe.py):
#   watch-paced   a fresh `qeltrix watch INBOX --vault VAULT --recipient R --settle SETTLE_MS
#                 --json`; once it has `scanned`, the writer writes the small files into INBOX, one
#                 every PACE_MS=20 ms, and notes each close time (wall clock, the clock of the
#                 watcher's `time` field). Latency of a file = the `time` of its `packed` event
#                 (emitted after the commit: fsync, rename, fsync of the folder) - its close time;
#                 p50 and p99 over the files. Every container is checked on disk.
#   watch-burst   the same, the files written back to back (a burst: queueing included)
#   watch-big     the same with big.bin
#   cp-small      the floor: `cp SRC PLAIN/NAME` of each small file, one process per file, each
#                 timed alone (the copy is complete when cp exits); p50 and p99. Also timed:
#                 cp followed by `sync PLAIN/NAME` (the copy's fsync), the durable floor;
#                 and, without a process per file, the probe's own open/read/write/close (+ fsync)
#   cp-big        the same for big.bin
#   pack-big      `qeltrix pack big.bin big.bin.qltx --recipient R` of the file written just before,
#                 timed: the watcher's own work without the watcher, for the reading
# Rounds are interleaved (round 1: watch then cp; round 2: cp then watch; ...), `sync` between
# measurements, medians over ROUNDS=3. The settle time is in the latency by design (the watcher
# waits that long after the close); the table shows the latency with and without it.
#
# usage: [ROUNDS=3] [SMALL_N=1000] [SMALL_KIB=4] [BIG_MIB=1024] [SETTLE_MS=50] [PACE_MS=20] \
#        [JOBS=] [BUILD=1] [QELTRIX=target/release/qeltrix] [TMPDIR=/tmp] scripts/bench-watch.sh
#   A quick dry run: ROUNDS=1 SMALL_N=100 BIG_MIB=64 scripts/bench-watch.sh
# needs: python3, coreutils, and cargo unless BUILD=0 or QELTRIX=path (a built binary, not rebuilt).
# JOBS, when set, is the watcher's --jobs (its default: 4). About 3 minutes with the defaults
# on 2 cores; the disk needs 2 x BIG_MIB + 256 MiB free (checked first).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROBE=$ROOT/scripts/lib/bench-watch-probe.py
ROUNDS=${ROUNDS:-3}
SMALL_N=${SMALL_N:-1000}
SMALL_KIB=${SMALL_KIB:-4}
BIG_MIB=${BIG_MIB:-1024}
SETTLE_MS=${SETTLE_MS:-50}
PACE_MS=${PACE_MS:-20}
JOBS=${JOBS:-}
CARGO_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
QELTRIX=${QELTRIX:-$CARGO_TARGET/release/qeltrix}

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

command -v python3 > /dev/null || die "python3 is needed"
# A QELTRIX other than the build's own binary is used as it is, as with BUILD=0.
if [ "${BUILD:-1}" = 1 ] && [ "$QELTRIX" = "$CARGO_TARGET/release/qeltrix" ]; then
  need_cargo
  log "building $QELTRIX (cargo build --release)"
  (cd "$ROOT" && cargo build --release --bin qeltrix >&2)
fi
[ -x "$QELTRIX" ] || die "no binary $QELTRIX (build it, or give QELTRIX=path)"
QELTRIX=$(cd "$(dirname "$QELTRIX")" && pwd)/$(basename "$QELTRIX")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qeltrix-bench-watch.XXXXXX")
cleanup() {
  local rc=$?
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The watcher's hash key and anything else it keeps per user stay in the temp dir.
export XDG_STATE_HOME=$WORK/state
DATA=$WORK/data
RUN=$WORK/run
RESULTS=$WORK/results.tsv
mkdir -p "$DATA" "$RUN" "$XDG_STATE_HOME"
: > "$RESULTS"

log "qeltrix: $QELTRIX ($("$QELTRIX" --version 2>&1 | head -1))"
"$QELTRIX" keygen --x25519 -o "$WORK/id.key" > "$WORK/keygen.out" 2>&1 \
  || die "keygen failed: $(cat "$WORK/keygen.out")"
RECIPIENT=$(grep -o 'qeltrix-x25519:[A-Za-z0-9+/=_-]*' "$WORK/keygen.out" | head -1)
[ -n "$RECIPIENT" ] || die "no recipient in keygen's output: $(cat "$WORK/keygen.out")"

# The big file twice (inbox and container, or source and copy) and some room.
need_kib=$(((2 * BIG_MIB + 256) * 1024 + 2 * SMALL_N * (SMALL_KIB + 8)))
free_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
[ "$free_kib" -ge "$need_kib" ] \
  || die "$((free_kib / 1024)) MiB free on the file system of $WORK, $((need_kib / 1024)) MiB needed (TMPDIR=elsewhere, or a smaller BIG_MIB)"

log "making the data: $SMALL_N x $SMALL_KIB KiB in $DATA ($BIG_MIB MiB made in memory when used)"
python3 "$PROBE" data --data "$DATA" --small-n "$SMALL_N" --small-kib "$SMALL_KIB"

COMMON=(--data "$DATA" --work "$RUN" --qeltrix "$QELTRIX" --recipient "$RECIPIENT"
  --settle "$SETTLE_MS" --big-mib "$BIG_MIB")
[ -z "$JOBS" ] || COMMON+=(--jobs "$JOBS")

# measure ROUND NAME ARGS...: run the probe, append its numbers to the results as
# ROUND<TAB>NAME<TAB>KEY<TAB>VALUE.
measure() {
  local round=$1 name=$2 out
  shift 2
  sync
  out=$(python3 "$PROBE" "$@" "${COMMON[@]}") || die "$name (round $round) failed"
  log "round $round $name: $out"
  python3 -c '
import json, sys
for k, v in json.loads(sys.argv[3]).items():
    print(f"{sys.argv[1]}\t{sys.argv[2]}\t{k}\t{v}")' "$round" "$name" "$out" >> "$RESULTS"
}

watch_all() {
  measure "$1" watch-paced watch-small --pace-ms "$PACE_MS"
  measure "$1" watch-burst watch-small --pace-ms 0
  measure "$1" watch-big watch-big
}
cp_all() {
  measure "$1" cp-small cp-small
  measure "$1" cp-big cp-big
  measure "$1" pack-big pack-big
}

log "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPU(s)"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then
    watch_all "$r"
    cp_all "$r"
  else
    cp_all "$r"
    watch_all "$r"
  fi
done
log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "qeltrix watch: close to readable; settle ${SETTLE_MS} ms, jobs ${JOBS:-4 (default)}, $(nproc) CPU(s)"
echo
python3 "$PROBE" report "$RESULTS" --settle "$SETTLE_MS" --pace-ms "$PACE_MS" \
  --small-n "$SMALL_N" --small-kib "$SMALL_KIB" --big-mib "$BIG_MIB"
