#!/usr/bin/env bash
# bench-mount.sh -- `qeltrix mount` against the plain file, bindfs (a FUSE passthrough: the FUSE
# ceiling) and gocryptfs, on one 1 GiB random file, in one run, rounds interleaved.
#
# Per target and round:
#   seq_cold / seq_warm   dd bs=1M of the whole file (MiB/s): after a fresh mount + drop_caches,
#                         then again at once
#   r4k_* / r1m_*         fio, 2000 x 4 KiB and 500 x 1 MiB random preads (QD1, buffered, 4 KiB
#                         aligned, fixed seed: the same offsets everywhere): p50/p99 latency (ms),
#                         IOPS, MiB/s; cold (fresh mount + drop_caches) and warm (same offsets again)
#   app4k_p50/p99_ms      small reads as apps do them: fresh mount + drop_caches, then one process
#                         pread()s 4 KiB at APP_N=300 random 4 KiB-aligned offsets (fixed seed: the
#                         same offsets everywhere), no fadvise; scripts/lib/pread_probe.py. It differs
#                         from r4k_cold mostly by its count: fio's 2000 reads land on a 1 MiB block
#                         already read more than half the time (1117 of 2000 on 1 GiB), so its p50
#                         is partly qeltrix's block cache; of these 300 reads 265 are first touches,
#                         as for an app opening a large file. (fio's FADV_RANDOM, measured alone on
#                         qeltrix-1m: no difference beyond noise.)
#   disk_<4k|64k|1024k>   plain only: the raw disk, cold pread p50/p99 of each size over DISK_N=100
#                         random offsets of the plain file, drop_caches before each size
#   ttfb_ms               unmount, drop_caches, mount, then open + 64 KiB pread at 900 MiB
#   mount_ms              mount command until the mount point answers
#   rss_mib               peak RSS (VmHWM) of the mount process over the round
# "Cold" remounts every FUSE target, so qeltrix's block cache starts empty like everyone's.
# Medians over ROUNDS; ratios are of medians from this same run.
#
# Targets: plain bindfs gocryptfs qeltrix-1m qeltrix-64k (format v2, what pack writes) and
# qeltrix-v1-1m (the same file packed with --format 1: whole-block reads, the baseline v2 is
# measured against), and variants qeltrix-<1m|64k>-ra<KIB>
# (the mount's kernel readahead window: --kernel-readahead KIB; the default is 4096, and ra0 keeps
# the kernel's 128 KiB, to measure what the larger window does).
#
# usage: [ROUNDS=3] [TARGETS="..."] [SIZE_MIB=1024] [CACHE_MIB=256] [BENCH=/tmp/qeltrix-bench] \
#        [APP_N=300] [DISK_N=100] [QELTRIX=target/release/qeltrix] scripts/bench-mount.sh
#
# Writes, `scripts/bench-mount.sh write` (scripts/lib/bench-write.sh): `qeltrix mount --read-write`
# of an empty vault against gocryptfs, the plain backing disk as the ceiling; targets plain
# gocryptfs qeltrix-rw, each writing into a folder of its own on the same disk; rounds
# interleaved, medians, ratios within the run:
#   wseq_mib_s          dd bs=1M conv=fsync of the 1 GiB file (from the page cache) into the
#                       target: MiB/s until the final fsync returned
#   ow_iops / ow_mib_s  fio, OW_N x 4 KiB random overwrites (QD1, buffered, fixed seed) of an
#                       existing OW_MIB MiB file, an fsync every 100 writes and one at the end;
#                       the file is written (and closed) before each run, outside the timing
#   ow_fsync_p50/p99_ms fio's fsync latency in that run (an fsync after 100 4 KiB writes)
#   fsync_small_p50_ms  a 64 KiB file, FSYNC_N times a 4 KiB pwrite + fsync: fsync p50/p99 (as an
#                       editor or a database does; scripts/lib/bench-write-probe.py)
#   untar_s             tar x of a tarball of UNTAR_FILES source-tree files (sizes around 4 KiB,
#                       a few up to 1 MiB; made once by bench-write-probe.py) until tar exits
#   untar_all_s         the same until everything is on the backing disk: tar exits, the mount
#                       is unmounted and its process has exited (a qeltrix file is committed on
#                       close, which tar does not wait for), then `sync`
#   rss_mib             peak RSS (VmHWM) of the mount process over the round
#   many_s / rss_many_mib  MANY_N new files of MANY_MIB MiB, all open for writing at once, written
#                       128 KiB to each in turn (bench-write-probe.py many): seconds until the
#                       last close returned, and the peak RSS of a mount process started for it
# Round 1 checks what was written (sha256 of the 1 GiB copy, `tar -d` of the untarred tree).
# usage: [ROUNDS=3] [WRITE_MIB=1024] [OW_MIB=256] [OW_N=10000] [FSYNC_N=200] [UNTAR_FILES=10000] \
#        [MANY_N=100] [MANY_MIB=8] \
#        [QELTRIX_RW_ARGS="..."] [QELTRIX_BASE=path/to/an/older/qeltrix] scripts/bench-mount.sh write
# QELTRIX_BASE adds a target, qeltrix-rw-base: that binary's read-write mount, in the same
# interleaved rounds, with ratios of qeltrix-rw against it (a change measured against its baseline).
# needs: root (drop_caches) and cargo. It makes everything else itself: installs what is missing
#        (Debian: fuse3 bindfs gocryptfs fio python3 openssl, one apt-get update first), builds
#        target/release/qeltrix if it is not there, and makes the data in $BENCH (the 1 GiB file,
#        the two containers, the gocryptfs copy); later runs reuse them.
set -euo pipefail
MODE=${1:-read}
case $MODE in read | write) ;; *) echo "usage: bench-mount.sh [read|write]" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
QELTRIX=${QELTRIX:-$ROOT/target/release/qeltrix}
B=${BENCH:-/tmp/qeltrix-bench}
ROUNDS=${ROUNDS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
CACHE_MIB=${CACHE_MIB:-256}
if [ "$MODE" = write ]; then
  TARGETS=${TARGETS:-"plain gocryptfs qeltrix-rw${QELTRIX_BASE:+ qeltrix-rw-base}"}
  SIZE_MIB=${WRITE_MIB:-1024}
else
  TARGETS=${TARGETS:-"plain bindfs gocryptfs qeltrix-v1-1m qeltrix-1m qeltrix-64k"}
fi
OW_MIB=${OW_MIB:-256}
OW_N=${OW_N:-10000}
FSYNC_N=${FSYNC_N:-200}
UNTAR_FILES=${UNTAR_FILES:-10000}
MANY_N=${MANY_N:-100}
MANY_MIB=${MANY_MIB:-8}
QELTRIX_RW_ARGS=${QELTRIX_RW_ARGS:-}
WPROBE=$ROOT/scripts/lib/bench-write-probe.py
N4K=${N4K:-2000}
N1M=${N1M:-500}
TTFB_OFFSET=943718400 # 900 MiB
RESULTS=$B/results-$MODE.tsv

PROBE=$ROOT/scripts/lib/pread_probe.py
APP_N=${APP_N:-300}
DISK_N=${DISK_N:-100}

log() { echo "[$(date +%T)] $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "run as root: cold reads need drop_caches" >&2; exit 1; }
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# need (common.sh) runs apt-get update once, then installs what is missing; stdout is the table.
{
  need fio fio; need bindfs bindfs; need gocryptfs gocryptfs; need fusermount3 fuse3
  need python3 python3; need openssl openssl; need sha256sum coreutils; need mountpoint util-linux
} >&2
[ -z "${QELTRIX_BASE:-}" ] || [ -x "$QELTRIX_BASE" ] || { echo "no $QELTRIX_BASE" >&2; exit 1; }
if [ ! -x "$QELTRIX" ]; then
  [ "$QELTRIX" = "$ROOT/target/release/qeltrix" ] || { echo "no $QELTRIX" >&2; exit 1; }
  need_cargo
  log "building $QELTRIX (cargo build --release)"
  (cd "$ROOT" && cargo build --release --bin qeltrix >&2)
fi

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
ms_since() { python3 -c "import sys,time;print(f'{(time.time()-float(sys.argv[1]))*1000:.2f}')" "$1"; }
emit() { printf '%s\t%s\t%s\t%s\t%s\n' "$T" "$1" "$ROUND" "$2" "$3" >> "$RESULTS"; }

mnt_of() { echo "$B/mnt/$1"; }
file_of() {
  case $1 in
    plain) echo "$B/data/big.bin" ;;
    *) echo "$(mnt_of "$1")/big.bin" ;;
  esac
}

setup() {
  mkdir -p "$B"/{data,mnt,logs,gcfs.cipher}
  if [ ! -f "$B/data/big.bin" ] || [ "$(stat -c %s "$B/data/big.bin")" != $((SIZE_MIB << 20)) ]; then
    log "creating the $SIZE_MIB MiB random file (the peers' file: same openssl stream)"
    # CTR is a stream cipher: encrypting exactly N zero bytes gives exactly the first N bytes of
    # the peers' `openssl enc < /dev/zero | head -c N`, but every process here ends on its own.
    # (The other way round, head closes the pipe, openssl dies of SIGPIPE, and pipefail + set -e
    # ended this script on any machine that did not have the file yet.)
    head -c $((SIZE_MIB << 20)) /dev/zero \
      | openssl enc -aes-128-ctr -pass pass:peerbench -nosalt -pbkdf2 > "$B/data/big.bin.part"
    [ "$(stat -c %s "$B/data/big.bin.part")" = $((SIZE_MIB << 20)) ] \
      || { log "openssl wrote $(stat -c %s "$B/data/big.bin.part") bytes, not $((SIZE_MIB << 20))"; exit 1; }
    mv "$B/data/big.bin.part" "$B/data/big.bin"
  fi
  SHA=$(sha256sum < "$B/data/big.bin" | cut -d' ' -f1)
  [ -f "$B/key" ] || "$QELTRIX" keygen -o "$B/key" > /dev/null 2>&1
  for bs in 1m 64k v1-1m; do
    local kib format=2
    kib=$([ "${bs#v1-}" = 1m ] && echo 1024 || echo 64)
    [ "${bs#v1-}" = "$bs" ] || format=1
    mkdir -p "$B/vault-$bs"
    # Repacked when missing, older than the data, or of another format version (an earlier run's).
    if [ ! -f "$B/vault-$bs/big.bin.qltx" ] || [ "$B/vault-$bs/big.bin.qltx" -ot "$B/data/big.bin" ] \
      || [ "$(cat "$B/vault-$bs/.format" 2> /dev/null)" != "$format" ]; then
      log "packing with $kib KiB blocks, format $format"
      "$QELTRIX" pack -q -f --key-file "$B/key" --block-size "$kib" --format "$format" \
        "$B/data/big.bin" "$B/vault-$bs/big.bin.qltx"
      echo "$format" > "$B/vault-$bs/.format"
    fi
  done
  [ -f "$B/gcfs.pass" ] || head -c 24 /dev/urandom | base64 > "$B/gcfs.pass"
  if [ ! -f "$B/gcfs.cipher/gocryptfs.conf" ]; then
    gocryptfs -init -q -passfile "$B/gcfs.pass" "$B/gcfs.cipher" >&2
  fi
  T=gocryptfs; up > /dev/null
  if [ "$(stat -c %s "$(file_of gocryptfs)" 2> /dev/null || echo 0)" != $((SIZE_MIB << 20)) ]; then
    log "copying the file into gocryptfs"
    cp "$B/data/big.bin" "$(file_of gocryptfs)"
  fi
  down
  log "checking sha256 through every mount"
  for T in $TARGETS; do
    up > /dev/null
    [ "$(sha256sum < "$(file_of "$T")" | cut -d' ' -f1)" = "$SHA" ] || { log "$T: WRONG CONTENTS"; down; exit 1; }
    down
  done
}

PID=""
up() { # mounts $T, prints the ms it took
  local mnt t0; mnt=$(mnt_of "$T")
  PID=""
  [ "$T" = plain ] && { echo 0; return; }
  mkdir -p "$mnt"
  t0=$(now)
  case $T in
    bindfs) setsid bindfs -f "$B/data" "$mnt" > "$B/logs/$T.log" 2>&1 < /dev/null & ;;
    gocryptfs) setsid gocryptfs -fg -passfile "$B/gcfs.pass" "$B/gcfs.cipher" "$mnt" > "$B/logs/$T.log" 2>&1 < /dev/null & ;;
    qeltrix-rw | qeltrix-rw-base)
      local bin=$QELTRIX vault=$B/wvault
      [ "$T" = qeltrix-rw-base ] && { bin=$QELTRIX_BASE; vault=$B/wvault-base; }
      mkdir -p "$vault"
      # shellcheck disable=SC2086
      setsid "$bin" mount --read-write --key-file "$B/key" --cache-size "$CACHE_MIB" $QELTRIX_RW_ARGS \
        "$vault" "$mnt" > "$B/logs/$T.log" 2>&1 < /dev/null & ;;
    qeltrix-*)
      local bs=${T#qeltrix-} ra=""
      case $bs in *-ra*) ra="--kernel-readahead ${bs#*-ra}"; bs=${bs%%-ra*} ;; esac
      # shellcheck disable=SC2086
      setsid "$QELTRIX" mount --key-file "$B/key" --cache-size "$CACHE_MIB" $ra "$B/vault-$bs" "$mnt" \
        > "$B/logs/$T.log" 2>&1 < /dev/null & ;;
    *) echo "unknown target $T" >&2; exit 2 ;;
  esac
  PID=$!
  python3 - "$mnt" "$PID" <<'EOF' || { log "mount of $T failed: $(cat "$B/logs/$T.log")"; exit 1; }
import os, sys, time
mnt, pid = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while time.time() < deadline:
    if os.path.ismount(mnt):
        sys.exit(0)
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    time.sleep(0.001)
sys.exit(1)
EOF
  ms_since "$t0"
}

PEAK_KIB=0
note_rss() {
  [ -n "$PID" ] || return 0
  local kib; kib=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status" 2> /dev/null || echo 0)
  [ "${kib:-0}" -gt "$PEAK_KIB" ] && PEAK_KIB=$kib
  return 0
}

down() {
  [ "$T" = plain ] && return 0
  note_rss
  local mnt; mnt=$(mnt_of "$T")
  mountpoint -q "$mnt" && { fusermount3 -u "$mnt" 2> /dev/null || umount -l "$mnt"; }
  if [ -n "$PID" ]; then
    for _ in $(seq 200); do kill -0 "$PID" 2> /dev/null || break; sleep 0.05; done
    kill -0 "$PID" 2> /dev/null && { log "$T: killing $PID"; kill -9 "$PID"; }
  fi
  PID=""
}

cold() { down; drop_caches; up > /dev/null; }

dd_mib_s() {
  LC_ALL=C dd if="$1" of=/dev/null bs=1M 2>&1 \
    | sed -n 's/^\([0-9]*\) bytes.* copied, \([0-9.e+-]*\) s,.*/\1 \2/p' \
    | awk '{printf "%.1f", $1 / $2 / 1048576}'
}

fio_json() { # file bs n -> "iops mib_s p50_ms p99_ms"
  fio --name=rr --filename="$1" --readonly --rw=randread --bs="$2" --blockalign=4k \
    --number_ios="$3" --ioengine=psync --mem=mmap --iodepth=1 --numjobs=1 --direct=0 --invalidate=0 \
    --norandommap --randrepeat=1 --randseed=1 --lat_percentiles=1 --percentile_list=50:99 \
    --output-format=json 2> /dev/null | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]["read"]
p = (j.get("lat_ns", {}).get("percentile") or j["clat_ns"]["percentile"])
print("%.1f %.1f %.4f %.4f" % (j["iops"], j["bw_bytes"] / 1048576, p["50.000000"] / 1e6, p["99.000000"] / 1e6))'
}

rand() { # tag bs n phase
  local iops mib p50 p99
  read -r iops mib p50 p99 < <(fio_json "$(file_of "$T")" "$2" "$3")
  emit "$1_$4_p50_ms" "$p50" ms; emit "$1_$4_p99_ms" "$p99" ms
  emit "$1_$4_iops" "$iops" IOPS; emit "$1_$4_mib_s" "$mib" MiB/s
}

ttfb() {
  down; drop_caches
  local mount_ms r; mount_ms=$(up)
  r=$(python3 - "$(file_of "$T")" "$TTFB_OFFSET" "$B/data/big.bin" <<'EOF'
import os, sys, time
f, off, ref = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter(); fd = os.open(f, os.O_RDONLY); d = os.pread(fd, 65536, off); t1 = time.perf_counter()
os.close(fd)
with open(ref, "rb") as r:
    r.seek(off); ok = r.read(65536) == d
print(f"{(t1 - t0) * 1000:.3f}" if ok else "MISMATCH")
EOF
)
  [ "$r" = MISMATCH ] && { log "$T: WRONG BYTES at 900 MiB"; exit 1; }
  emit ttfb_ms "$r" ms
  [ "$T" = plain ] || emit mount_ms "$mount_ms" ms
}

probe() { # metric-prefix file bs n -> emits <prefix>_p50_ms and <prefix>_p99_ms
  local p50 p99 ref=(--ref "$B/data/big.bin")
  [ "$2" = "$B/data/big.bin" ] && ref=()
  read -r p50 p99 _ < <(python3 "$PROBE" "$2" "$3" "$4" --seed 1 "${ref[@]}" \
    || { log "$T: pread probe of $2 failed"; echo FAIL; })
  [ "$p50" = FAIL ] && exit 1
  emit "$1_p50_ms" "$p50" ms; emit "$1_p99_ms" "$p99" ms
}

# The raw disk under everything: the plain file after drop_caches, one size at a time.
disk() {
  local bs
  for bs in 4096 65536 1048576; do
    drop_caches; probe "disk_$((bs >> 10))k" "$B/data/big.bin" "$bs" "$DISK_N"
  done
}

one_round() {
  PEAK_KIB=0
  cold; emit seq_cold "$(dd_mib_s "$(file_of "$T")")" MiB/s
  emit seq_warm "$(dd_mib_s "$(file_of "$T")")" MiB/s
  cold; rand r4k 4k "$N4K" cold; rand r4k 4k "$N4K" warm
  cold; rand r1m 1m "$N1M" cold; rand r1m 1m "$N1M" warm
  cold; probe app4k "$(file_of "$T")" 4096 "$APP_N"
  [ "$T" = plain ] && disk
  ttfb
  down
  [ "$T" = plain ] || emit rss_mib "$(awk -v k="$PEAK_KIB" 'BEGIN {printf "%.1f", k / 1024}')" MiB
}

# The target mounted when the run stopped first (PID is its process), then every other one.
cleanup() {
  down 2> /dev/null || true
  for T in $TARGETS; do down 2> /dev/null || true; done
}
if [ "$MODE" = write ]; then
  # shellcheck source=scripts/lib/bench-write.sh
  . "$ROOT/scripts/lib/bench-write.sh" # runs the write rounds and exits
fi
trap cleanup EXIT

mkdir -p "$B"; : > "$RESULTS"
T=""; ROUND=0
setup
for ROUND in $(seq "$ROUNDS"); do
  for T in $TARGETS; do
    log "round $ROUND/$ROUNDS: $T"
    one_round
  done
done

python3 - "$RESULTS" "$CACHE_MIB" "$TARGETS" <<'EOF'
import sys, statistics
from collections import defaultdict
path, cache_mib, targets = sys.argv[1], float(sys.argv[2]), sys.argv[3].split()
vals = defaultdict(list)
for line in open(path):
    t, metric, _round, value, _unit = line.rstrip("\n").split("\t")
    vals[(t, metric)].append(float(value))
med = {k: statistics.median(v) for k, v in vals.items()}
metrics = ["seq_cold", "seq_warm", "r4k_cold_p50_ms", "r4k_cold_p99_ms", "r4k_cold_iops", "r4k_warm_p50_ms",
           "r1m_cold_mib_s", "r1m_cold_p50_ms", "r1m_cold_p99_ms", "r1m_warm_mib_s",
           "app4k_p50_ms", "app4k_p99_ms", "ttfb_ms", "mount_ms", "rss_mib"]
units = {"seq_cold": "MiB/s", "seq_warm": "MiB/s", "r4k_cold_iops": "IOPS", "r1m_cold_mib_s": "MiB/s",
         "r1m_warm_mib_s": "MiB/s", "rss_mib": "MiB"}
labels = {"app4k_p50_ms": "app 4k pread p50", "app4k_p99_ms": "app 4k pread p99"}
ours = [t for t in targets if t.startswith("qeltrix")]
bases = [p for p in ("gocryptfs", "bindfs", "plain") if p in targets]
def fmt(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.3g}")
head = ["metric"] + targets + [f"{q} / {p}" for q in ours for p in bases]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for m in metrics:
    row = [f"{labels.get(m, m)} ({units.get(m, 'ms')})"] + [fmt(med.get((t, m))) for t in targets]
    for q in ours:
        for p in bases:
            a, b = med.get((q, m)), med.get((p, m))
            row.append(f"{a / b:.2f}x" if a and b else "-")
    print("| " + " | ".join(row) + " |")
print()
n = {k: len(v) for k, v in vals.items()}
if any(t == "plain" and m.startswith("disk_") for t, m in med):
    print("Raw disk: cold os.pread of the plain file after drop_caches (one size at a time, no fadvise)")
    print()
    print("| read size | p50 (ms) | p99 (ms) | rounds |")
    print("|---|---|---|---|")
    for size in ("4k", "64k", "1024k"):
        p50, p99 = med.get(("plain", f"disk_{size}_p50_ms")), med.get(("plain", f"disk_{size}_p99_ms"))
        label = "1 MiB" if size == "1024k" else size.replace("k", " KiB")
        print(f"| {label} | {fmt(p50)} | {fmt(p99)} | {n.get(('plain', f'disk_{size}_p50_ms'), 0)} |")
    print()
print("Targets (ratios of medians from this run):")
def check(name, ok, detail):
    print(f"  {'PASS' if ok else 'MISS'}  {name}: {detail}")
g = lambda t, m: med.get((t, m))
# The format-v2 issue's targets, for the default settings (qeltrix-1m, format v2); the other
# qeltrix targets are shown against the same bars for comparison.
for q in ours:
    if "gocryptfs" in targets:
        a, b = g(q, "app4k_p50_ms"), g("gocryptfs", "app4k_p50_ms")
        check(f"{q} cold 4 KiB pread p50, as apps read, <= gocryptfs", a <= b, f"{a:.3f} ms vs {b:.3f} ms ({a / b:.2f}x)")
        a, b = g(q, "ttfb_ms"), g("gocryptfs", "ttfb_ms")
        check(f"{q} first byte at 900 MiB <= gocryptfs", a <= b, f"{a:.2f} ms vs {b:.2f} ms")
        r = g(q, "r1m_cold_mib_s") / g("gocryptfs", "r1m_cold_mib_s")
        check(f"{q} cold 1 MiB random reads >= 1.2x gocryptfs", r >= 1.2, f"{r:.2f}x")
    if "bindfs" in targets:
        r = g(q, "seq_cold") / g("bindfs", "seq_cold")
        check(f"{q} cold sequential >= 0.9x bindfs", r >= 0.9, f"{r:.2f}x")
    if q != "qeltrix-v1-1m" and "qeltrix-v1-1m" in targets:
        a, b = g(q, "app4k_p50_ms"), g("qeltrix-v1-1m", "app4k_p50_ms")
        print(f"  info  {q} cold 4 KiB pread p50 against format v1: {a:.3f} ms vs {b:.3f} ms ({b / a:.1f}x faster)")
    rss = g(q, "rss_mib")
    check(f"{q} peak RSS <= cache + 64 MiB", rss <= cache_mib + 64, f"{rss:.0f} MiB (cache {cache_mib:.0f})")
EOF
log "raw results: $RESULTS"
