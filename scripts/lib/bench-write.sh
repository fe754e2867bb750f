# shellcheck shell=bash disable=SC2153  # sourced by bench-mount.sh, which sets ROUNDS, B, T, ...
# The write section of scripts/bench-mount.sh (`bench-mount.sh write`): sourced by it once its
# helpers (up, down, emit, now, note_rss, cleanup, ...) are defined; runs the rounds, prints the
# table and exits. What each metric is: the header of bench-mount.sh. Not run on its own.

wdir_of() { # the folder a target writes into
  case $1 in
    plain) echo "$B/plainw" ;;
    *) echo "$(mnt_of "$1")/w" ;;
  esac
}

s_since() { python3 -c "import sys,time;print(f'{time.time()-float(sys.argv[1]):.3f}')" "$1"; }

setup_write() {
  mkdir -p "$B"/{data,mnt,logs,gcfs.cipher}
  # A mount an earlier, interrupted run left (its process may be dead: a stale mount).
  local m
  awk -v p="$B/mnt/" 'index($2, p) == 1 {print $2}' /proc/mounts | while read -r m; do
    log "detaching $m, left by an earlier run"
    umount -l "$m"
  done
  if [ ! -f "$B/data/big.bin" ] || [ "$(stat -c %s "$B/data/big.bin")" -lt $((SIZE_MIB << 20)) ]; then
    log "creating the $SIZE_MIB MiB random file"
    head -c $((SIZE_MIB << 20)) /dev/zero \
      | openssl enc -aes-128-ctr -pass pass:peerbench -nosalt -pbkdf2 > "$B/data/big.bin.part"
    mv "$B/data/big.bin.part" "$B/data/big.bin"
  fi
  head -c $((SIZE_MIB << 20)) "$B/data/big.bin" > "$B/data/wsrc.bin"
  SHA=$(sha256sum < "$B/data/wsrc.bin" | cut -d' ' -f1)
  if [ ! -f "$B/data/src-$UNTAR_FILES.tar" ]; then
    log "making a tarball of $UNTAR_FILES source-tree files"
    python3 "$WPROBE" maketar "$B/data/src-$UNTAR_FILES.tar" "$UNTAR_FILES" 1
  fi
  [ -f "$B/key" ] || "$QELTRIX" keygen -o "$B/key" > /dev/null 2>&1
  [ -f "$B/gcfs.pass" ] || head -c 24 /dev/urandom | base64 > "$B/gcfs.pass"
  if [ ! -f "$B/gcfs.cipher/gocryptfs.conf" ]; then
    gocryptfs -init -q -passfile "$B/gcfs.pass" "$B/gcfs.cipher" >&2
  fi
  # Every target starts empty (an earlier run's files removed): the qeltrix vault holds nothing
  # but what this section wrote.
  rm -rf "$B/plainw" "$B/wvault" "$B/wvault-base"
  mkdir -p "$B/plainw" "$B/wvault"
  T=gocryptfs
  up > /dev/null
  rm -rf "$(wdir_of gocryptfs)"
  down
}

dd_write_mib_s() { # src dst -> MiB/s until the final fsync returned
  LC_ALL=C dd if="$1" of="$2" bs=1M conv=fsync 2>&1 \
    | sed -n 's/^\([0-9]*\) bytes.* copied, \([0-9.e+-]*\) s,.*/\1 \2/p' \
    | awk '{printf "%.1f", $1 / $2 / 1048576}'
}

fio_overwrite() { # file -> "iops mib_s fsync_p50_ms fsync_p99_ms"
  fio --name=ow --filename="$1" --rw=randwrite --bs=4k --size="${OW_MIB}M" --number_ios="$OW_N" \
    --ioengine=psync --iodepth=1 --numjobs=1 --direct=0 --invalidate=0 --fallocate=none --overwrite=1 \
    --fsync=100 --end_fsync=1 --norandommap --randrepeat=1 --randseed=1 \
    --lat_percentiles=1 --percentile_list=50:99 --output-format=json 2> /dev/null | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
w, p = j["write"], j["sync"]["lat_ns"]["percentile"]
print("%.1f %.2f %.4f %.4f" % (w["iops"], w["bw_bytes"] / 1048576, p["50.000000"] / 1e6, p["99.000000"] / 1e6))'
}

one_write_round() {
  PEAK_KIB=0
  local w t t0 iops mib p50 p99
  cat "$B/data/wsrc.bin" "$B/data/src-$UNTAR_FILES.tar" > /dev/null
  up > /dev/null
  w=$(wdir_of "$T")
  rm -rf "$w"
  mkdir -p "$w"
  sync

  emit wseq_mib_s "$(dd_write_mib_s "$B/data/wsrc.bin" "$w/seq.bin")" MiB/s
  if [ "$ROUND" = 1 ] && [ "$(sha256sum < "$w/seq.bin" | cut -d' ' -f1)" != "$SHA" ]; then
    log "$T: WRONG CONTENTS written"
    exit 1
  fi
  rm -f "$w/seq.bin"

  head -c $((OW_MIB << 20)) "$B/data/wsrc.bin" > "$w/ow.bin"
  sync
  read -r iops mib p50 p99 < <(fio_overwrite "$w/ow.bin" || echo FAIL)
  [ "$iops" = FAIL ] && { log "$T: fio overwrite failed"; exit 1; }
  emit ow_iops "$iops" IOPS
  emit ow_mib_s "$mib" MiB/s
  emit ow_fsync_p50_ms "$p50" ms
  emit ow_fsync_p99_ms "$p99" ms
  rm -f "$w/ow.bin"

  read -r p50 p99 < <(python3 "$WPROBE" fsync "$w/small.bin" "$FSYNC_N" 1 || echo FAIL)
  [ "$p50" = FAIL ] && { log "$T: fsync probe failed"; exit 1; }
  emit fsync_small_p50_ms "$p50" ms
  emit fsync_small_p99_ms "$p99" ms
  rm -f "$w/small.bin"

  mkdir -p "$w/untar"
  sync
  t0=$(now)
  tar -C "$w/untar" -xf "$B/data/src-$UNTAR_FILES.tar"
  emit untar_s "$(s_since "$t0")" s
  down
  sync
  emit untar_all_s "$(s_since "$t0")" s
  up > /dev/null
  # Wrong contents end the run; other differences (modes, times) are reported and the run goes on.
  if [ "$ROUND" = 1 ] && ! tar -C "$w/untar" -df "$B/data/src-$UNTAR_FILES.tar" > "$B/logs/$T.tar-d" 2>&1; then
    if grep -qv -e 'Mod time differs' -e 'Mode differs' "$B/logs/$T.tar-d"; then
      log "$T: the untarred tree differs from the tarball: $(grep -v -e 'Mod time differs' -e 'Mode differs' "$B/logs/$T.tar-d" | head -5)"
      exit 1
    fi
    log "$T: WARNING: after a remount the untarred files' times or modes differ from the tarball's ($(wc -l < "$B/logs/$T.tar-d") files; $B/logs/$T.tar-d)"
  fi
  rm -rf "$w/untar"
  down
  [ "$T" = plain ] || emit rss_mib "$(awk -v k="$PEAK_KIB" 'BEGIN {printf "%.1f", k / 1024}')" MiB

  # A fresh mount process, so that its peak RSS is this phase's alone.
  PEAK_KIB=0
  up > /dev/null
  mkdir -p "$w/many"
  t=$(python3 "$WPROBE" many "$w/many" "$MANY_N" "$MANY_MIB" 1) || { log "$T: many-files probe failed"; exit 1; }
  emit many_s "$t" s
  rm -rf "$w/many"
  down
  [ "$T" = plain ] || emit rss_many_mib "$(awk -v k="$PEAK_KIB" 'BEGIN {printf "%.1f", k / 1024}')" MiB
}

write_report() {
  python3 - "$RESULTS" "$TARGETS" "$SIZE_MIB" "$OW_MIB" "$OW_N" "$UNTAR_FILES" "$MANY_N" "$MANY_MIB" <<'EOF'
import sys, statistics
from collections import defaultdict
path, targets = sys.argv[1], sys.argv[2].split()
size_mib, ow_mib, ow_n, files, many_n, many_mib = sys.argv[3:9]
vals = defaultdict(list)
for line in open(path):
    t, metric, _round, value, _unit = line.rstrip("\n").split("\t")
    vals[(t, metric)].append(float(value))
med = {k: statistics.median(v) for k, v in vals.items()}
rows = [("wseq_mib_s", f"sequential write {size_mib} MiB + fsync (MiB/s)"),
        ("ow_iops", f"{ow_n} x 4 KiB random overwrites of {ow_mib} MiB, fsync/100 (IOPS)"),
        ("ow_mib_s", "  the same (MiB/s)"),
        ("ow_fsync_p50_ms", "  fsync p50 (ms)"),
        ("ow_fsync_p99_ms", "  fsync p99 (ms)"),
        ("fsync_small_p50_ms", "4 KiB pwrite + fsync of a 64 KiB file: fsync p50 (ms)"),
        ("fsync_small_p99_ms", "  the same, p99 (ms)"),
        ("untar_s", f"untar {files} files, until tar exits (s)"),
        ("untar_all_s", "  until unmounted and synced (s)"),
        ("rss_mib", "peak RSS of the mount process (MiB)"),
        ("many_s", f"{many_n} files of {many_mib} MiB written at once, until closed (s)"),
        ("rss_many_mib", "  peak RSS of a fresh mount process meanwhile (MiB)")]
ours = [t for t in targets if t.startswith("qeltrix")]
bases = [p for p in ("gocryptfs", "plain", "qeltrix-rw-base") if p in targets]
def fmt(x):
    return "-" if x is None else (f"{x:.0f}" if x >= 100 else f"{x:.3g}")
pairs = [(q, p) for q in ours for p in bases if q != p]
head = ["metric"] + targets + [f"{q} / {p}" for q, p in pairs]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for m, label in rows:
    row = [label] + [fmt(med.get((t, m))) for t in targets]
    for q, p in pairs:
        a, b = med.get((q, m)), med.get((p, m))
        row.append(f"{a / b:.2f}x" if a and b else "-")
    print("| " + " | ".join(row) + " |")
print()
rounds = max((len(v) for v in vals.values()), default=0)
print(f"Medians of {rounds} interleaved rounds; ratios of medians from this run.")
print("Targets:")
def check(name, ok, detail):
    print(f"  {'PASS' if ok else 'MISS'}  {name}: {detail}")
g = lambda t, m: med.get((t, m))
for q in ours:
    if "gocryptfs" not in targets:
        break
    r = g(q, "wseq_mib_s") / g("gocryptfs", "wseq_mib_s")
    check(f"{q} sequential write >= 1.5x gocryptfs", r >= 1.5, f"{r:.2f}x")
    r = g(q, "ow_iops") / g("gocryptfs", "ow_iops")
    check(f"{q} 4 KiB random overwrites (fsync every 100) >= gocryptfs", r >= 1.0, f"{r:.2f}x")
    a, b = g(q, "untar_all_s"), g("gocryptfs", "untar_all_s")
    check(f"{q} untar, until on disk, <= gocryptfs", a <= b, f"{a:.2f} s vs {b:.2f} s")
    a, b = g(q, "untar_s"), g("gocryptfs", "untar_s")
    print(f"  info  {q} untar until tar exits: {a:.2f} s vs {b:.2f} s ({a / b:.2f}x)")
    print(f"  info  {q} fsync p50: {g(q, 'ow_fsync_p50_ms'):.3f} ms (after 100 writes to {ow_mib} MiB), "
          f"{g(q, 'fsync_small_p50_ms'):.3f} ms (a 64 KiB file); peak RSS {g(q, 'rss_mib'):.0f} MiB")
EOF
}

trap cleanup EXIT
mkdir -p "$B"
: > "$RESULTS"
T=""
ROUND=0
setup_write
for ROUND in $(seq "$ROUNDS"); do
  for T in $TARGETS; do
    log "write round $ROUND/$ROUNDS: $T"
    one_write_round
  done
done
write_report
log "raw results: $RESULTS"
exit 0
