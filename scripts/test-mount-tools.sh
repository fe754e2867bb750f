#!/usr/bin/env bash
# test-mount-tools.sh -- `qeltrix mount` read by ordinary programs: sha256sum, cmp, tail -c,
# dd skip=, ls -l, find, du, and ffmpeg/ffprobe decoding a frame near the end of a video.
# Every check compares with the same program run on the original file. Exit 0 only if all pass.
#
# usage: [QELTRIX=path/to/qeltrix] scripts/test-mount-tools.sh
#   QELTRIX defaults to target/debug/qeltrix (built with `cargo build`).
#   Needs /dev/fuse (package fuse3); ffmpeg/ffprobe (package ffmpeg) for the video checks: without
#   them those checks are skipped, except under CI (CI=true), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
QELTRIX=${QELTRIX:-$PWD/target/debug/qeltrix}
[ -x "$QELTRIX" ] || { echo "no qeltrix binary at $QELTRIX (run cargo build)" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "/dev/fuse is missing: install fuse3" >&2; exit 1; }

WORK=$(mktemp -d /tmp/qeltrix-tools.XXXXXX)
MNT=$WORK/mnt
cleanup() {
  if mountpoint -q "$MNT" 2>/dev/null; then "$QELTRIX" umount --lazy "$MNT" || umount -l "$MNT" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

passed=0 failed=0
check() { # name command...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"
  else failed=$((failed + 1)); echo "FAIL $name"; fi
}
same() { [ "$(eval "$1")" = "$(eval "$2")" ]; }

mkdir -p "$WORK/plain/media" "$WORK/vault/media" "$MNT"
head -c $((5 * 1024 * 1024 + 12345)) /dev/urandom > "$WORK/plain/random.bin"
seq 1 200000 > "$WORK/plain/numbers.txt"
have_ffmpeg=1
if command -v ffmpeg > /dev/null && command -v ffprobe > /dev/null; then
  ffmpeg -loglevel error -f lavfi -i testsrc=duration=10:size=320x240:rate=25 -pix_fmt yuv420p \
    "$WORK/plain/media/clip.mp4"
elif [ "${CI:-}" = true ]; then
  echo "ffmpeg/ffprobe missing under CI: install the ffmpeg package" >&2; exit 1
else
  have_ffmpeg=0; echo "skipping the video checks: ffmpeg/ffprobe not installed (apt-get install ffmpeg)"
fi

"$QELTRIX" keygen -o "$WORK/key" > /dev/null 2>&1
"$QELTRIX" pack -q --key-file "$WORK/key" --block-size 64 "$WORK/plain/random.bin" "$WORK/vault/random.bin.qltx"
"$QELTRIX" pack -q --key-file "$WORK/key" --cipher chacha "$WORK/plain/numbers.txt" "$WORK/vault/numbers.txt.qltx"
if [ $have_ffmpeg = 1 ]; then
  "$QELTRIX" pack -q --key-file "$WORK/key" "$WORK/plain/media/clip.mp4" "$WORK/vault/media/clip.mp4.qltx"
fi

"$QELTRIX" mount --daemon --key-file "$WORK/key" --log-file "$WORK/mount.log" "$WORK/vault" "$MNT"
check "mounted when --daemon returns" mountpoint -q "$MNT"

P=$WORK/plain
for f in random.bin numbers.txt; do
  check "sha256sum $f" same "sha256sum < $P/$f" "sha256sum < $MNT/$f"
  check "cmp $f" cmp "$P/$f" "$MNT/$f"
  check "tail -c 1000 $f" same "tail -c 1000 $P/$f | sha256sum" "tail -c 1000 $MNT/$f | sha256sum"
  check "dd skip= $f" same "dd if=$P/$f bs=4096 skip=300 count=7 status=none | sha256sum" \
    "dd if=$MNT/$f bs=4096 skip=300 count=7 status=none | sha256sum"
done
check "dd skip= past the end" same "dd if=$P/random.bin bs=1M skip=5 status=none | sha256sum" \
  "dd if=$MNT/random.bin bs=1M skip=5 status=none | sha256sum"
check "ls -l sizes" same "stat -c '%s %n' $P/random.bin $P/numbers.txt | sed 's|$P/||'" \
  "stat -c '%s %n' $MNT/random.bin $MNT/numbers.txt | sed 's|$MNT/||'"
check "ls -l lists" bash -c "ls -l '$MNT' | grep -q ' random.bin$'"
check "find" same "cd $P && find . -type f | sort" "cd $MNT && find . -type f | sort"
# Folders count 4096 bytes on disk and 0 in the mount: compare what du says of the files.
check "du -b of every file" same "cd $P && find . -type f | sort | xargs du -b" "cd $MNT && find . -type f | sort | xargs du -b"
check "du -s counts the data" bash -c "[ \$(du -s -B1 '$MNT' | cut -f1) -ge $((5 * 1024 * 1024)) ]"

if [ $have_ffmpeg = 1 ]; then
  dur() { ffprobe -v error -show_entries format=duration -of csv=p=0 "$1"; }
  frame() { ffmpeg -v error -ss 9.6 -i "$1" -frames:v 1 -f rawvideo -pix_fmt rgb24 - | sha256sum; }
  check "ffprobe duration" same "dur $P/media/clip.mp4" "dur $MNT/media/clip.mp4"
  check "ffmpeg -ss 9.6 decodes the same frame" same "frame $P/media/clip.mp4" "frame $MNT/media/clip.mp4"
  check "the frame is not empty" bash -c "ffmpeg -v error -ss 9.6 -i '$MNT/media/clip.mp4' -frames:v 1 -f rawvideo -pix_fmt rgb24 - | wc -c | grep -qx 230400"
fi

"$QELTRIX" umount "$MNT"
check "unmounted" bash -c "! mountpoint -q '$MNT'"
if [ -s "$WORK/mount.log" ]; then echo "mount log:"; cat "$WORK/mount.log"; fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
