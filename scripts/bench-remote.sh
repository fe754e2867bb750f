#!/usr/bin/env bash
# bench-remote.sh -- `qeltrix mount` of a vault on S3 against `rclone mount` of an rclone crypt
# remote, both on the same throwaway 3-node Garage cluster (replication 3, loopback), with the same
# files, in one run, rounds interleaved (qeltrix, rclone, rclone, qeltrix, ...), medians reported.
#
# Data (made by the script, deterministically, kept in $BENCH/data for later runs):
#   video.mp4     a real H.264 video, VIDEO_SECONDS=1000 s of ffmpeg's testsrc2 (640x360, 25 fps,
#                 keyframe every 2 s), CBR with filler so that it is about BENCH_SIZE_MIB=1024 MiB;
#                 single-threaded x264 with bitexact flags, so every run makes the same bytes
#   many/fNN.bin  MANY_N=16 files of MANY_MIB=64 MiB (an AES-CTR stream of zeros, one pass per file)
# Upload: `qeltrix pack FILE s3://$BUCKET/vault/FILE.qltx` and `rclone copy` into the crypt remote
# (an s3 remote with provider Other, path style, region garage, wrapped by crypt).
#
# Per target and round, every measurement on a fresh mount after drop_caches (cold):
#   seq_mib_s        dd bs=1M of the whole video (MiB/s)
#   ttfb_ms          open + 64 KiB pread at 900 MiB (also open_ms and pread_ms alone) (at 900/1024 of the size when BENCH_SIZE_MIB is
#                    smaller), bytes checked; mount_ms = mount command until the mount point answers
#   rand_p50_ms/mib  N1M=200 preads of 1 MiB at random 4 KiB-aligned offsets (fixed seed: the same
#                    offsets for both), one thread, QD1
#   ffmpeg_ms        ffmpeg -ss 900 -i MNT/video.mp4 -frames:v 1 -f null -   (wall time)
#   rss_mib          peak RSS (VmHWM) of the mount process, the largest over the mounts above
#   get64k_ms        (once per round) the S3 floor of a first byte: one cold signed 64 KiB ranged GET
#                    at the first-byte offset (curl, time to first byte), from the cluster itself
#   get_mib_s        (once per round) the S3 ceiling: `rclone cat` of the whole video object (the
#                    qeltrix container) from the plain s3 remote, cold: one GET stream, no decryption
#   many_mib_s       MANY_N files opened at once, then read concurrently (one thread each)
#   rss_many_mib     VmHWM of the mount process that served them
# qeltrix mounts with --cache-size CACHE_MIB (256 MiB); rclone with --vfs-cache-mode off (its
# default buffering: --buffer-size 16M per open file). Targets checked at the end (exit status 1 if
# one is missed): first byte after the seek <= 1/5 of rclone crypt's; sequential >= 2x rclone crypt;
# qeltrix peak RSS with MANY_N files open <= CACHE_MIB + 64 MiB.
#
# Everything after the build runs inside its own network namespace (`unshare -n`: the script
# re-runs itself there) with quickack on the loopback route, because Garage never sets TCP_NODELAY
# and delayed ACKs would otherwise add ~40 ms to small responses. Nothing in there reaches the
# internet, so installing and building happen first.
#
# usage: [ROUNDS=5] [BENCH_SIZE_MIB=1024] [MANY_N=16] [MANY_MIB=64] [CACHE_MIB=256] [N1M=200] \
#        [TARGETS="qeltrix rclone"] [QELTRIX_MOUNT_ARGS=] [RCLONE_MOUNT_ARGS=] [BENCH=/tmp/qeltrix-bench-remote] [QELTRIX=target/release/qeltrix] [GARAGE=garage] \
#        scripts/bench-remote.sh [data]
#   `data` only makes the data. A reduced dry run: BENCH_SIZE_MIB=128 MANY_MIB=8 ROUNDS=1 scripts/bench-remote.sh
# needs: root (drop_caches, FUSE, unshare) and cargo. Installs what is missing (Debian: rclone
#        ffmpeg iproute2 fuse3 python3 openssl; Garage 2.5.0 with `cargo install` if `garage` is not
#        on PATH), builds qeltrix release. The Garage cluster, mounts and rclone config live in
#        $BENCH/run and are removed on exit; $BENCH/data is kept (delete it to regenerate).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROBE=$ROOT/scripts/lib/bench-remote-probe.py
B=${BENCH:-/tmp/qeltrix-bench-remote}
ROUNDS=${ROUNDS:-5}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
VIDEO_SECONDS=${VIDEO_SECONDS:-1000}
SEEK_S=${SEEK_S:-900}
MANY_N=${MANY_N:-16}
MANY_MIB=${MANY_MIB:-64}
CACHE_MIB=${CACHE_MIB:-256}
N1M=${N1M:-200}
TARGETS=${TARGETS:-qeltrix rclone} # either alone is for debugging; the targets need both
QELTRIX_MOUNT_ARGS=${QELTRIX_MOUNT_ARGS:-} # extra flags, word-split (e.g. "--readahead 8")
RCLONE_MOUNT_ARGS=${RCLONE_MOUNT_ARGS:-}   # extra flags, word-split (e.g. "--buffer-size 0")
BUCKET=${BUCKET:-bench}
GARAGE_VERSION=2.5.0
CARGO_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
QELTRIX=${QELTRIX:-$CARGO_TARGET/release/qeltrix}
DATA=$B/data
VIDEO=$DATA/video-${SIZE_MIB}m-${VIDEO_SECONDS}s.mp4 # uploaded as video.mp4
MANY=$DATA/many-${MANY_N}x${MANY_MIB}m                  # uploaded as many/
RUN=$B/run
RESULTS=$B/results.tsv

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: cold reads need drop_caches, the namespace needs unshare"
# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"

# ---------------------------------------------------------------- outside the namespace: prepare
make_video() {
  local br=$((SIZE_MIB * 8 * 1048576 / VIDEO_SECONDS))
  # Single-threaded (x264's threads make the rate control, and so the bytes, vary from run to
  # run) and bitexact (no encoder version strings in the container).
  local cmd=(ffmpeg -nostdin -hide_banner -v error -y -threads 1 -filter_threads 1
    -f lavfi -i "testsrc2=size=640x360:rate=25:duration=$VIDEO_SECONDS"
    -c:v libx264 -threads 1 -preset ultrafast -g 50 -pix_fmt yuv420p
    -b:v "$br" -minrate "$br" -maxrate "$br" -bufsize $((br / 2)) -x264-params nal-hrd=cbr:force-cfr=1
    -bitexact -flags +bitexact -fflags +bitexact -movflags +faststart)
  if [ -f "$VIDEO" ] && [ "$(cat "$VIDEO.cmd" 2> /dev/null)" = "${cmd[*]}" ]; then
    return 0
  fi
  log "making the video: $VIDEO_SECONDS s of testsrc2 at $br bit/s (one x264 thread: a few minutes)"
  rm -f "$VIDEO"
  "${cmd[@]}" -f mp4 "$VIDEO.part"
  mv "$VIDEO.part" "$VIDEO"
  echo "${cmd[*]}" > "$VIDEO.cmd"
}

make_many() {
  local i f
  mkdir -p "$MANY"
  for i in $(seq -w 1 "$MANY_N"); do
    f=$MANY/f$i.bin
    [ -f "$f" ] && [ "$(stat -c %s "$f")" = $((MANY_MIB << 20)) ] && continue
    head -c $((MANY_MIB << 20)) /dev/zero \
      | openssl enc -aes-128-ctr -pass "pass:bench-remote-$i" -nosalt -pbkdf2 > "$f.part"
    mv "$f.part" "$f"
  done
}

prepare() {
  {
    need rclone rclone; need ffmpeg ffmpeg; need ip iproute2; need fusermount3 fuse3
    need python3 python3; need openssl openssl; need unshare util-linux; need mountpoint util-linux
  } >&2
  if [ -n "${GARAGE:-}" ]; then
    [ -x "$GARAGE" ] || GARAGE=$(command -v "$GARAGE") || die "no garage binary $GARAGE"
  elif command -v garage > /dev/null 2>&1; then
    GARAGE=$(command -v garage)
  else
    need_cargo
    need cc gcc >&2
    log "installing Garage $GARAGE_VERSION (cargo install: about 10 minutes on 2 cores)"
    cargo install garage --locked --version "$GARAGE_VERSION" >&2
    GARAGE=$(command -v garage || echo "$HOME/.cargo/bin/garage")
  fi
  "$GARAGE" --version | grep -q "$GARAGE_VERSION" \
    || log "warning: $("$GARAGE" --version | head -1) is not Garage $GARAGE_VERSION"
  if [ ! -x "$QELTRIX" ] || [ "${BUILD:-1}" = 1 ]; then
    [ "$QELTRIX" = "$CARGO_TARGET/release/qeltrix" ] || [ -x "$QELTRIX" ] || die "no $QELTRIX"
    if [ "$QELTRIX" = "$CARGO_TARGET/release/qeltrix" ]; then
      need_cargo
      log "building $QELTRIX (cargo build --release)"
      (cd "$ROOT" && cargo build --release --bin qeltrix >&2)
    fi
  fi
  mkdir -p "$DATA"
  make_video
  make_many
  export GARAGE QELTRIX
}

# ------------------------------------------------------------------- inside: the Garage cluster
gcfg() { echo "$RUN/garage/node$1/garage.toml"; }
g() {
  local i=$1
  shift
  "$GARAGE" -c "$(gcfg "$i")" "$@"
}
port_open() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; }
wait_port() {
  local t0=$SECONDS
  until port_open "$1"; do
    ((SECONDS - t0 > 30)) && die "Garage did not open port $1 (logs in $RUN/garage)"
    sleep 0.05
  done
}

garage_up() {
  local secret admin i
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  admin=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  for i in 1 2 3; do
    local s3=$((3900 + 10 * (i - 1))) d=$RUN/garage/node$i
    mkdir -p "$d/meta" "$d/data"
    # compression off: everything stored is ciphertext; zstd would only spend the 2 cores
    cat > "$(gcfg "$i")" << EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "lmdb"
replication_factor = 3
consistency_mode = "consistent"
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$((s3 + 1))"
rpc_public_addr = "127.0.0.1:$((s3 + 1))"
rpc_secret = "$secret"

[s3_api]
api_bind_addr = "127.0.0.1:$s3"
s3_region = "garage"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((s3 + 3))"
admin_token = "$admin"
EOF
    chmod 600 "$(gcfg "$i")"
    RUST_LOG=garage=warn setsid "$GARAGE" -c "$(gcfg "$i")" server > "$d/log" 2>&1 < /dev/null &
    GARAGE_PIDS+=($!)
  done
  for i in 1 2 3; do wait_port $((3900 + 10 * (i - 1))) && wait_port $((3903 + 10 * (i - 1))); done
  local ids=() try
  for i in 1 2 3; do ids[i]=$(g "$i" node id -q 2> /dev/null); done
  for i in 2 3; do
    for try in $(seq 50); do
      g 1 node connect "${ids[i]}" > /dev/null 2>&1 && break
      [ "$try" = 50 ] && die "garage node connect ${ids[i]} failed"
      sleep 0.1
    done
  done
  for i in 1 2 3; do g 1 layout assign -z "z$i" -c 100G "${ids[i]%@*}" > /dev/null; done
  g 1 layout apply --version 1 > /dev/null
  for try in $(seq 150); do
    g 1 health > /dev/null 2>&1 && g 2 health > /dev/null 2>&1 && g 3 health > /dev/null 2>&1 && break
    [ "$try" = 150 ] && die "the Garage cluster did not become healthy"
    sleep 0.2
  done
  AWS_ACCESS_KEY_ID="GK$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"
  AWS_SECRET_ACCESS_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  g 1 bucket create "$BUCKET" > /dev/null
  g 1 key import --yes -n bench "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > /dev/null
  g 1 bucket allow --read --write --owner "$BUCKET" --key "$AWS_ACCESS_KEY_ID" > /dev/null
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_ENDPOINT_URL=http://127.0.0.1:3900 AWS_REGION=garage
  log "Garage cluster up: 3 nodes, replication 3, bucket $BUCKET"
}

garage_down() {
  local pid
  for pid in "${GARAGE_PIDS[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
  for pid in "${GARAGE_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2> /dev/null || true
  done
  GARAGE_PIDS=()
}

# ------------------------------------------------------------------------- inside: the mounts
rcl() { env -u AWS_CA_BUNDLE rclone --config "$RUN/rclone.conf" "$@"; }

mnt_of() { echo "$RUN/mnt/$1"; }
PID=""
MOUNT_MS=""
up() { # mounts $T (sets PID, and MOUNT_MS: mount command until the mount point answers)
  local mnt t0
  mnt=$(mnt_of "$T")
  mkdir -p "$mnt"
  t0=$EPOCHREALTIME
  case $T in
    qeltrix)
      # shellcheck disable=SC2086 # the extra flags are meant to be split
      setsid "$QELTRIX" mount "s3://$BUCKET/vault" "$mnt" --key-file "$RUN/key" \
        "$CACHE_FLAG" "$CACHE_MIB" $QELTRIX_MOUNT_ARGS > "$RUN/logs/qeltrix.log" 2>&1 < /dev/null & ;;
    rclone)
      # shellcheck disable=SC2086 # the extra flags are meant to be split
      setsid env -u AWS_CA_BUNDLE rclone --config "$RUN/rclone.conf" mount crypt: "$mnt" \
        --read-only --vfs-cache-mode off $RCLONE_MOUNT_ARGS --log-file "$RUN/logs/rclone.log" > /dev/null 2>&1 < /dev/null & ;;
  esac
  PID=$!
  python3 "$PROBE" wait-mount "$mnt" "$PID" 120 \
    || die "mount of $T failed: $(tail -5 "$RUN/logs/$T.log")"
  MOUNT_MS=$(ms_of "$t0" "$EPOCHREALTIME")
}

hwm_mib() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$PID/status" 2> /dev/null || echo 0; }

PEAK=0
down() {
  [ -n "$PID" ] || return 0
  local mnt rss
  mnt=$(mnt_of "$T")
  rss=$(hwm_mib)
  PEAK=$(awk -v a="$PEAK" -v b="${rss:-0}" 'BEGIN {print (b > a) ? b : a}')
  if mountpoint -q "$mnt"; then
    if [ "$T" = qeltrix ]; then
      "$QELTRIX" umount "$mnt" 2> /dev/null || fusermount3 -u "$mnt" 2> /dev/null || fusermount3 -uz "$mnt"
    else
      fusermount3 -u "$mnt" 2> /dev/null || fusermount3 -uz "$mnt"
    fi
  fi
  for _ in $(seq 200); do kill -0 "$PID" 2> /dev/null || break; sleep 0.05; done
  kill -0 "$PID" 2> /dev/null && { log "$T: mount process $PID still there, killing it"; kill -9 "$PID"; }
  PID=""
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
fresh() { down; drop_caches; up; }

emit() { printf '%s\t%s\t%s\t%s\n' "$T" "$1" "$ROUND" "$2" >> "$RESULTS"; }
info() { printf 'info\t%s\t%s\n' "$1" "$2" >> "$RESULTS"; }
ms_of() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) * 1000}'; }

has() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }

upload() {
  local t0 f n
  has qeltrix || return 0
  log "uploading with qeltrix pack"
  "$QELTRIX" keygen -o "$RUN/key" > /dev/null 2>&1
  t0=$EPOCHREALTIME
  "$QELTRIX" pack -q --key-file "$RUN/key" "$VIDEO" "s3://$BUCKET/vault/video.mp4.qltx" >&2
  info "upload of the video, qeltrix pack (one run)" \
    "$(awk -v s="$VIDEO_BYTES" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f MiB/s", s / 1048576 / (b - a)}')"
  for f in "$MANY"/*.bin; do
    n=$(basename "$f")
    "$QELTRIX" pack -q --key-file "$RUN/key" "$f" "s3://$BUCKET/vault/many/$n.qltx" >&2
  done
}

upload_rclone() { # writes the rclone config (the S3 ceiling uses it too), then uploads
  local t0
  cat > "$RUN/rclone.conf" << EOF
[garage]
type = s3
provider = Other
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
endpoint = $AWS_ENDPOINT_URL
region = garage
force_path_style = true

[crypt]
type = crypt
remote = garage:$BUCKET/rclone
password = $(rclone obscure "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')")
password2 = $(rclone obscure "$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')")
EOF
  chmod 600 "$RUN/rclone.conf"
  has rclone || return 0
  log "uploading with rclone (crypt)"
  t0=$EPOCHREALTIME
  rcl copyto "$VIDEO" crypt:video.mp4
  info "upload of the video, rclone copyto (one run)" \
    "$(awk -v s="$VIDEO_BYTES" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f MiB/s", s / 1048576 / (b - a)}')"
  rcl copy "$MANY" crypt:many
}

verify() { # sha256 of the video and of one small file through each mount, once
  local want1 want2 w
  want1=$(sha256sum < "$VIDEO" | cut -c1-64)
  want2=$(sha256sum < "$MANY/f$(printf "%0${#MANY_N}d" 1).bin" | cut -c1-64)
  for T in $TARGETS; do
    up
    w=$(mnt_of "$T")
    [ "$(sha256sum < "$w/video.mp4" | cut -c1-64)" = "$want1" ] || die "$T: video.mp4 reads back WRONG"
    [ "$(sha256sum < "$w/many/f$(printf "%0${#MANY_N}d" 1).bin" | cut -c1-64)" = "$want2" ] \
      || die "$T: many/f01.bin reads back WRONG"
    [ "$(find "$w/many" -name '*.bin' | wc -l)" = "$((10#$MANY_N))" ] || die "$T: many/ does not list $MANY_N files"
    down
    log "sha256 ok through $T"
  done
}

s3_get() { # the S3 ceiling: one plain GET of the whole (encrypted) video object, after drop_caches
  local obj=vault/video.mp4.qltx t0 t1 n
  has qeltrix || obj=rclone/$(rcl lsf --files-only garage:"$BUCKET"/rclone | head -1)
  drop_caches
  t0=$EPOCHREALTIME
  rcl cat "garage:$BUCKET/$obj" > /dev/null || die "rclone cat of s3://$BUCKET/$obj failed"
  t1=$EPOCHREALTIME
  n=$(rcl size --json "garage:$BUCKET/$obj" | python3 -c 'import json, sys; print(json.load(sys.stdin)["bytes"])')
  printf 'garage\tget_mib_s\t%s\t%s\n' "$ROUND" \
    "$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", n / 1048576 / (b - a)}')" >> "$RESULTS"
  # The S3 floor of the first byte after a seek: one cold ranged GET of 64 KiB at the same
  # offset, straight from the cluster (curl, signed; time to its first byte). Neither mount
  # can answer a cold read at 900 MiB faster than this.
  drop_caches
  local ttfb
  ttfb=$(curl -s -o /dev/null -w '%{time_starttransfer}' -r "$TTFB_OFFSET-$((TTFB_OFFSET + 65535))" \
    -H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
    --aws-sigv4 "aws:amz:garage:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    "$AWS_ENDPOINT_URL/$BUCKET/$obj") || die "ranged GET of s3://$BUCKET/$obj failed"
  printf 'garage\tget64k_ms\t%s\t%s\n' "$ROUND" "$(awk -v t="$ttfb" 'BEGIN {printf "%.2f", t * 1000}')" >> "$RESULTS"
}

one_round() {
  local mnt f r open_ms pread_ms p50 mib t0 t1
  mnt=$(mnt_of "$T")
  f=$mnt/video.mp4
  PEAK=0
  fresh
  emit seq_mib_s "$(LC_ALL=C dd if="$f" of=/dev/null bs=1M 2>&1 \
    | sed -n 's/^\([0-9]*\) bytes.* copied, \([0-9.e+-]*\) s,.*/\1 \2/p' \
    | awk '{printf "%.1f", $1 / $2 / 1048576}')"

  fresh
  emit mount_ms "$MOUNT_MS"
  read -r open_ms pread_ms < <(python3 "$PROBE" ttfb "$f" "$TTFB_OFFSET" 65536 "$VIDEO" || echo FAIL)
  [ "$open_ms" = FAIL ] && die "$T: first byte at $TTFB_OFFSET failed"
  emit open_ms "$open_ms"
  emit pread_ms "$pread_ms"
  emit ttfb_ms "$(awk -v a="$open_ms" -v b="$pread_ms" 'BEGIN {printf "%.3f", a + b}')"
  emit mount_ttfb_ms "$(awk -v m="$MOUNT_MS" -v a="$open_ms" -v b="$pread_ms" 'BEGIN {printf "%.3f", m + a + b}')"

  fresh
  read -r p50 mib < <(python3 "$PROBE" rand "$f" 1048576 "$N1M" 1 "$VIDEO" || echo FAIL)
  [ "$p50" = FAIL ] && die "$T: random reads failed"
  emit rand_p50_ms "$p50"
  emit rand_mib_s "$mib"

  fresh
  t0=$EPOCHREALTIME
  ffmpeg -nostdin -hide_banner -v error -ss "$SEEK_S" -i "$f" -frames:v 1 -f null - \
    > "$RUN/logs/ffmpeg.log" 2>&1 || die "$T: ffmpeg -ss $SEEK_S failed: $(tail -3 "$RUN/logs/ffmpeg.log")"
  t1=$EPOCHREALTIME
  emit ffmpeg_ms "$(ms_of "$t0" "$t1")"
  down
  emit rss_mib "$PEAK"

  fresh
  r=$(python3 "$PROBE" many "$mnt"/many/*.bin) || die "$T: reading the $MANY_N files at once failed"
  emit many_mib_s "${r%% *}"
  emit rss_many_mib "$(hwm_mib)"
  down
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$T" ] && { down 2> /dev/null || true; }
  local t
  for t in qeltrix rclone; do
    if mountpoint -q "$(mnt_of "$t")" 2> /dev/null; then fusermount3 -uz "$(mnt_of "$t")" 2> /dev/null || true; fi
  done
  garage_down 2> /dev/null || true
  [ "${KEEP_RUN:-0}" = 1 ] || rm -rf "$RUN"
  exit "$rc"
}

inner() {
  GARAGE_PIDS=()
  T=""
  ip link set lo up
  ip route change local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 quickack 1
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  rm -rf "$RUN"
  mkdir -p "$RUN"/{mnt,logs,garage}
  chmod 700 "$RUN"
  : > "$RESULTS"
  CACHE_FLAG=--cache-size
  VIDEO_BYTES=$(stat -c %s "$VIDEO")
  TTFB_OFFSET=$((VIDEO_BYTES >= (1000 << 20) ? 900 << 20 : (VIDEO_BYTES * 900 / 1024) & ~4095))
  info "video" "$(awk -v s="$VIDEO_BYTES" 'BEGIN {printf "%.1f MiB", s / 1048576}'), $VIDEO_SECONDS s, H.264 640x360; first byte read at $((TTFB_OFFSET >> 20)) MiB; ffmpeg seeks to $SEEK_S s"
  info "many_n" "$((10#$MANY_N))"
  info "files read at once" "$((10#$MANY_N)) x $MANY_MIB MiB"
  info "qeltrix mount" "$CACHE_FLAG $CACHE_MIB${QELTRIX_MOUNT_ARGS:+ $QELTRIX_MOUNT_ARGS}; rclone mount: --vfs-cache-mode off${RCLONE_MOUNT_ARGS:+ $RCLONE_MOUNT_ARGS} (defaults otherwise)"
  info "load average (1/5/15 min) at the start" "$(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
  info "network" "all in one network namespace, quickack 1 on the 127.0.0.1 route; every read is through node 1 (port 3900)"
  info "versions" "$("$QELTRIX" --version | head -1); $(rclone version 2> /dev/null | head -1); $("$GARAGE" --version | head -1)"
  garage_up
  upload
  upload_rclone
  sync
  verify
  for ROUND in $(seq "$ROUNDS"); do
    local order=$TARGETS
    [ $((ROUND % 2)) = 0 ] && order=$(echo "$TARGETS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for T in $order; do
      log "round $ROUND/$ROUNDS: $T"
      one_round
    done
    T=""
    s3_get
  done
  T=""
  info "load average (1/5/15 min) at the end" "$(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  log "raw results (target, metric, round, value): $RESULTS"
  python3 "$PROBE" report "$RESULTS" "$CACHE_MIB"
}

if [ "${BENCH_REMOTE_INNER:-}" = 1 ]; then
  inner
elif [ "${1:-}" = data ]; then # only make (or check) the data
  { need ffmpeg ffmpeg; need openssl openssl; } >&2
  mkdir -p "$DATA"
  make_video
  make_many
  ls -l "$VIDEO" "$MANY" >&2
else
  prepare
  log "entering a private network namespace (unshare -n)"
  BENCH_REMOTE_INNER=1 exec unshare -n -- bash "$0" "$@"
fi
