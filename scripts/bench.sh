#!/usr/bin/env bash
# Qeltrix benchmark: pack/unpack throughput and peak RSS, bounded-memory stdin packing, and
# random-seek latency, with baselines measured in the same run (openssl speed, age, cp) and the
# targets from the format issue printed next to the numbers. Markdown tables go to stdout,
# progress to stderr. Not a test: it never fails on a number, only on a wrong result.
#
#   scripts/bench.sh                      # full run: two 1 GiB files
#   BENCH_SIZE_MIB=64 scripts/bench.sh    # quick smoke run
#
# Environment:
#   BENCH_SIZE_MIB    size of each test file in MiB (default 1024)
#   BENCH_DIR         where the scratch directory is made (default /tmp); it is removed at exit
#   BENCH_REPEAT      runs per pack/unpack/copy measurement, fastest kept (default 2)
#   BENCH_BLOCKS_KIB  block sizes to try (default "64 1024 4096")
#   BENCH_CIPHERS     ciphers to try (default "aes chacha")
#   BENCH_SEEK_READS  timed reads per 4 KiB seek measurement (default 1000; 1 MiB reads: a fifth)
#   BENCH_V2_ROUNDS   interleaved rounds of the format v1-vs-v2 comparison, medians reported (default 5)
#   BENCH_ONLY_V2     1: make the inputs and run only the v1-vs-v2 comparison (a quicker run)
#   BENCH_PREWARM     1 (default): just before each timed run, write and delete a scratch file the
#                     size of the output. On VMs with free page reporting (virtio-balloon), memory
#                     left free for ~2 s goes back to the host and re-faulting it costs ~2.5 s per
#                     GiB, which would swamp any 1 GiB write (measured here: dd 1 GiB of zeros
#                     runs at 0.4 GB/s cold, 4-5 GB/s just after such a file). Every tool gets it.
#
# Units: MB/s is 10^6 plaintext bytes per second; sizes and RSS are in MiB.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
REPEAT=${BENCH_REPEAT:-2}
BLOCKS_KIB=${BENCH_BLOCKS_KIB:-"64 1024 4096"}
CIPHERS=${BENCH_CIPHERS:-"aes chacha"}
SEEK_READS=${BENCH_SEEK_READS:-1000}
PREWARM=${BENCH_PREWARM:-1}
NPROC=$(nproc)
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
# The memory target is for a 4 GiB stream; a smoke run streams four times its file size.
if ((SIZE_MIB >= 1024)); then STREAM_MIB=4096; else STREAM_MIB=$((SIZE_MIB * 4)); fi

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "BENCH_REPEAT must be a positive integer"

# ---------------------------------------------------------------- tools (installed only if missing)
missing=()
command -v openssl >/dev/null || missing+=(openssl)
{ command -v age >/dev/null && command -v age-keygen >/dev/null; } || missing+=(age)
[[ -x /usr/bin/time ]] || missing+=(time)
command -v cmp >/dev/null || missing+=(diffutils)
command -v awk >/dev/null || missing+=(mawk)
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing ${missing[*]}; run as root or install them"
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
command -v cargo >/dev/null || die "cargo is needed to build qeltrix"

log "building (release)"
(cd "$ROOT" && cargo build --release --examples --bins >&2)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
QELTRIX=$TARGET/release/qeltrix
SEEK=$TARGET/release/examples/seek_latency
[[ -x $QELTRIX && -x $SEEK ]] || die "build did not produce $QELTRIX and $SEEK"

# ---------------------------------------------------------------- scratch space
mkdir -p "${BENCH_DIR:-/tmp}"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/qeltrix-bench.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT
trap 'exit 130' INT TERM
# Two inputs, one container, one output, age's files, and the stream's container.
need_kib=$(((SIZE_MIB * 7 + STREAM_MIB + 64) * 1024))
free_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
((free_kib > need_kib)) || die "$WORK has $((free_kib / 1024)) MiB free, needs $((need_kib / 1024)) MiB"

RANDOM_FILE=$WORK/random.bin
TEXT_FILE=$WORK/text.log
KEY=$WORK/key
CONTAINER=$WORK/c.qltx
OUT=$WORK/out

# Fast deterministic pseudo-random bytes: AES-CTR over zeros (about 1 GB/s per core).
keystream() {
    { openssl enc -aes-128-ctr -K "$1" -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null || true; }
}

# Log-like text: timestamps, levels, paths, ids, durations. Deterministic (Park-Miller generator,
# exact in awk's doubles); an 8 MiB chunk is generated and repeated, which deflate's 32 KiB window
# cannot see, so every block compresses about as real logs do.
make_text() {
    local chunk=$WORK/chunk.log chunk_bytes=$((8 * 1024 * 1024))
    ((chunk_bytes < SIZE_BYTES)) || chunk_bytes=$SIZE_BYTES
    awk -v target="$chunk_bytes" '
        function r(n) { seed = (seed * 16807) % 2147483647; return seed % n }
        BEGIN {
            seed = 20240501; t = 0; written = 0
            split("INFO INFO INFO INFO DEBUG DEBUG WARN ERROR", level, " ")
            split("GET GET GET POST POST PUT DELETE", method, " ")
            split("/api/v1/items /api/v1/users /api/v2/orders /static/app.js /static/site.css /healthz /api/v1/search /login /api/v2/carts /metrics", path, " ")
            split("200 200 200 200 200 201 204 301 304 400 404 500", status, " ")
            split("Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0|curl/8.5.0|Go-http-client/1.1|Mozilla/5.0 (Macintosh) Safari/605.1.15|python-requests/2.31", agent, "|")
            while (written < target) {
                t += r(250)
                s = int(t / 1000)
                line = sprintf("2024-05-%02d %02d:%02d:%02d.%03d %-5s [worker-%d] %s %s/%d status=%s bytes=%d dur_ms=%d.%d req=%08x user=u%05d ua=\"%s\"\n",
                    1 + int(s / 86400) % 28, int(s / 3600) % 24, int(s / 60) % 60, s % 60, t % 1000,
                    level[1 + r(8)], r(16), method[1 + r(7)], path[1 + r(10)], r(100000), status[1 + r(12)],
                    r(65536), r(900), r(10), r(2147483647), r(50000), agent[1 + r(5)])
                printf "%s", line
                written += length(line)
            }
        }' >"$chunk"
    local copies=$(((SIZE_BYTES + chunk_bytes - 1) / chunk_bytes))
    for ((i = 0; i < copies; i++)); do cat "$chunk"; done | head -c "$SIZE_BYTES" >"$TEXT_FILE"
    rm -f "$chunk"
}

file_size() { stat -c %s "$1"; }

# timed CMD...: runs CMD under /usr/bin/time; sets T_SEC (wall clock), T_CPU (user + system
# seconds) and T_RSS_MIB (peak RSS).
timed() {
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f '%M %U %S' -o "$WORK/time.out" "$@"
    t1=$(date +%s%N)
    T_SEC=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.6f", ns / 1e9 }')
    read -r T_RSS_MIB T_CPU < <(awk 'END { printf "%.1f %.2f\n", $1 / 1024, $2 + $3 }' "$WORK/time.out")
}

# See BENCH_PREWARM above: hands the next command recently freed, host-backed pages.
prewarm() {
    ((PREWARM)) || return 0
    head -c $((SIZE_BYTES + 256 * 1024 * 1024)) /dev/zero >"$WORK/prewarm"
    rm -f "$WORK/prewarm"
}

# best PREP CMD...: runs PREP (untimed, e.g. removing the last output) then CMD, REPEAT times;
# sets B_SEC and B_CPU to the fastest wall and CPU times and B_RSS_MIB to the largest peak RSS.
best() {
    local prep=$1 i
    shift
    B_SEC="" B_CPU="" B_RSS_MIB=0
    for ((i = 0; i < REPEAT; i++)); do
        eval "$prep"
        prewarm
        timed "$@"
        B_SEC=$(awk -v a="${B_SEC:-inf}" -v b="$T_SEC" 'BEGIN { print (a == "inf" || b < a) ? b : a }')
        B_CPU=$(awk -v a="${B_CPU:-inf}" -v b="$T_CPU" 'BEGIN { print (a == "inf" || b < a) ? b : a }')
        B_RSS_MIB=$(awk -v a="$B_RSS_MIB" -v b="$T_RSS_MIB" 'BEGIN { print (b > a) ? b : a }')
    done
}

# "${TO_FILE[@]}" OUT CMD...: CMD with its stdout sent to OUT (exec: /usr/bin/time sees CMD itself).
# shellcheck disable=SC2016 # $1 and $@ are the inner shell's
TO_FILE=(sh -c 'out=$1; shift; exec "$@" >"$out"' sh)

per_gib() { awk -v c="$1" -v b="$SIZE_BYTES" 'BEGIN { printf "%.2f", c * 1073741824 / b }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
# throughput_target_met PACK UNPACK AGE_ENC AGE_DEC (all MB/s)
throughput_target_met() { ge "$1" 1500 && ge "$2" 1500 && lt "$3" "$1" && lt "$4" "$2"; }
verdict() { if "$@"; then echo PASS; else echo FAIL; fi; }
kv() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# openssl_speed ALG [-multi N]: throughput in MB/s over 16 KiB buffers.
openssl_speed() {
    local alg=$1
    shift
    openssl speed -evp "$alg" -bytes 16384 -seconds 3 "$@" 2>/dev/null |
        awk 'NF == 2 && $2 ~ /^[0-9.]+k$/ { v = $2 } END { sub(/k$/, "", v); printf "%.0f", v / 1000 }'
}

# ---------------------------------------------------------------- inputs
log "making a ${SIZE_MIB} MiB random file and a ${SIZE_MIB} MiB log-like text file in $WORK"
keystream 000102030405060708090a0b0c0d0e0f | head -c "$SIZE_BYTES" >"$RANDOM_FILE"
make_text
for f in "$RANDOM_FILE" "$TEXT_FILE"; do
    (($(file_size "$f") == SIZE_BYTES)) || die "$f was not made at full size"
done
"$QELTRIX" keygen -o "$KEY" >/dev/null
age-keygen -o "$WORK/age-id" 2>/dev/null
AGE_RECIPIENT=$(age-keygen -y "$WORK/age-id")
sync

# ---------------------------------------------------------------- format v1 against v2
# One round runs every command once, in the same order; ROUNDS rounds interleave the tools, so a
# noisy minute hits all of them alike. Medians are reported, and ratios are of medians.
V2_ROUNDS=${BENCH_V2_ROUNDS:-5}
[[ $V2_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_V2_ROUNDS must be a positive integer"
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A V2S V2C V2B # seconds and CPU seconds per run ("a b c "), output bytes
v2_time() { # what CMD...: runs CMD with its stdout into $OUT
    local what=$1
    shift
    rm -f "$OUT"
    prewarm
    timed "${TO_FILE[@]}" "$OUT" "$@"
    V2S[$what]+="$T_SEC "
    V2C[$what]+="$T_CPU "
}
v2_compare() {
    local r c1=$WORK/v1.qltx c2=$WORK/v2.qltx
    "$QELTRIX" pack -q -f --format 1 --key-file "$KEY" "$RANDOM_FILE" "$c1"
    "$QELTRIX" pack -q -f --key-file "$KEY" "$RANDOM_FILE" "$c2"
    age -r "$AGE_RECIPIENT" -o "$WORK/r.age" "$RANDOM_FILE"
    for ((r = 1; r <= V2_ROUNDS; r++)); do
        log "format v1 vs v2: round $r/$V2_ROUNDS"
        v2_time cp cat "$RANDOM_FILE"
        v2_time age_enc age -r "$AGE_RECIPIENT" "$RANDOM_FILE"
        v2_time v1_pack "$QELTRIX" pack -q --format 1 --key-file "$KEY" "$RANDOM_FILE" -
        v2_time v2_pack "$QELTRIX" pack -q --key-file "$KEY" "$RANDOM_FILE" -
        v2_time age_dec age -d -i "$WORK/age-id" "$WORK/r.age"
        v2_time v1_unpack "$QELTRIX" unpack -q --key-file "$KEY" "$c1" -
        cmp -s "$OUT" "$RANDOM_FILE" || die "v1 unpack differs"
        v2_time v2_unpack "$QELTRIX" unpack -q --key-file "$KEY" "$c2" -
        cmp -s "$OUT" "$RANDOM_FILE" || die "v2 unpack differs"
        v2_time age_text age -r "$AGE_RECIPIENT" "$TEXT_FILE"
        V2B[age_text]=$(file_size "$OUT")
        v2_time v1_text "$QELTRIX" pack -q --format 1 --key-file "$KEY" "$TEXT_FILE" -
        V2B[v1_text]=$(file_size "$OUT")
        v2_time v2_text "$QELTRIX" pack -q --key-file "$KEY" "$TEXT_FILE" -
        V2B[v2_text]=$(file_size "$OUT")
    done
    "$QELTRIX" unpack -q -f --key-file "$KEY" "$c2" "$OUT"
    cmp -s "$OUT" "$RANDOM_FILE" || die "v2 round trip differs"
    rm -f "$c1" "$c2" "$WORK/r.age" "$OUT"
}
v2_mbps() { mbps "$SIZE_BYTES" "$(tr ' ' '\n' <<<"${V2S[$1]}" | grep . | median)"; }
v2_cpu() { per_gib "$(tr ' ' '\n' <<<"${V2C[$1]}" | grep . | median)"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
both() { "$1" "$2" "$3" && "$4" "$5" "$6"; }
v2_report() {
    local cp age_e age_d age_t p1 p2 u1 u2 t1 t2
    cp=$(v2_mbps cp) age_e=$(v2_mbps age_enc) age_d=$(v2_mbps age_dec) age_t=$(v2_mbps age_text)
    p1=$(v2_mbps v1_pack) p2=$(v2_mbps v2_pack) u1=$(v2_mbps v1_unpack) u2=$(v2_mbps v2_unpack)
    t1=$(v2_mbps v1_text) t2=$(v2_mbps v2_text)
    cat <<EOF

## Format v1 against v2 (1 MiB blocks, AES, key file, output through stdout into a file)

Medians of $V2_ROUNDS interleaved rounds; \`cp\` is \`cat FILE > OUT\` (the same stdout path). MB/s =
10^6 plaintext bytes/s. CPU = user + system seconds per GiB. Text: v1 deflates (level 1), v2 uses
zstd (\`--compress auto\`, level 1).

| measure | v1 | v2 | age | cp | v2 ÷ v1 | v2 ÷ age | v2 ÷ cp | target | verdict |
|---|---:|---:|---:|---:|---:|---:|---:|---|---|
| pack, random, MB/s | $p1 | $p2 | $age_e | $cp | $(ratio "$p2" "$p1") | $(ratio "$p2" "$age_e") | $(ratio "$p2" "$cp") | ≥ 2× age, ≥ 0.8× cp | $(verdict both ge "$(ratio "$p2" "$age_e")" 2 ge "$(ratio "$p2" "$cp")" 0.8) |
| pack CPU, random, s/GiB | $(v2_cpu v1_pack) | $(v2_cpu v2_pack) | $(v2_cpu age_enc) | $(v2_cpu cp) | $(ratio "$(v2_cpu v2_pack)" "$(v2_cpu v1_pack)") | | | | |
| unpack, random, MB/s | $u1 | $u2 | $age_d | | $(ratio "$u2" "$u1") | $(ratio "$u2" "$age_d") | | ≥ 2.5× age | $(verdict ge "$(ratio "$u2" "$age_d")" 2.5) |
| unpack CPU, random, s/GiB | $(v2_cpu v1_unpack) | $(v2_cpu v2_unpack) | $(v2_cpu age_dec) | | $(ratio "$(v2_cpu v2_unpack)" "$(v2_cpu v1_unpack)") | | | | |
| text pack, MB/s | $t1 | $t2 | $age_t | | $(ratio "$t2" "$t1") | $(ratio "$t2" "$age_t") | | ≥ age | $(verdict ge "$t2" "$age_t") |
| text pack output, MiB | $(mib "${V2B[v1_text]}") | $(mib "${V2B[v2_text]}") | $(mib "${V2B[age_text]}") | | $(ratio "${V2B[v2_text]}" "${V2B[v1_text]}") | | | < v1's deflate 1 | $(verdict lt "${V2B[v2_text]}" "${V2B[v1_text]}") |
EOF
}
if ((${BENCH_ONLY_V2:-0})); then
    v2_compare
    v2_report
    log "done"
    exit 0
fi
v2_compare

# ---------------------------------------------------------------- baselines
log "openssl speed (16 KiB buffers, 1 and $NPROC processes)"
declare -A SPEED
for alg in aes-256-gcm chacha20-poly1305 sha256; do
    SPEED[$alg,1]=$(openssl_speed "$alg")
    SPEED[$alg,n]=$(openssl_speed "$alg" -multi "$NPROC")
done

declare -A BASE # BASE[tool,file,op] = MB/s ; BASE_RSS likewise
declare -A BASE_RSS
for name in random text; do
    if [[ $name = random ]]; then in=$RANDOM_FILE; else in=$TEXT_FILE; fi
    log "age and cp of the $name file"
    best "rm -f '$WORK/f.age'" age -r "$AGE_RECIPIENT" -o "$WORK/f.age" "$in"
    BASE[age,$name,pack]=$(mbps "$SIZE_BYTES" "$B_SEC")
    BASE_RSS[age,$name,pack]=$B_RSS_MIB
    best "rm -f '$OUT'" age -d -i "$WORK/age-id" -o "$OUT" "$WORK/f.age"
    BASE[age,$name,unpack]=$(mbps "$SIZE_BYTES" "$B_SEC")
    BASE_RSS[age,$name,unpack]=$B_RSS_MIB
    cmp -s "$in" "$OUT" || die "age round trip of the $name file differs"
    rm -f "$WORK/f.age" "$OUT"
    best "rm -f '$OUT'" cp --reflink=never "$in" "$OUT"
    BASE[cp,$name,pack]=$(mbps "$SIZE_BYTES" "$B_SEC")
    BASE_RSS[cp,$name,pack]=$B_RSS_MIB
    # qeltrix syncs its output before renaming it into place; so does this copy.
    # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
    best "rm -f '$OUT'" sh -c 'cp --reflink=never "$1" "$2" && sync "$2"' sh "$in" "$OUT"
    BASE[cpsync,$name,pack]=$(mbps "$SIZE_BYTES" "$B_SEC")
    rm -f "$OUT"
done

# ---------------------------------------------------------------- qeltrix pack / unpack / seek
declare -A PACK UNPACK PACKS UNPACKS PACK_CPU UNPACK_CPU PACK_RSS UNPACK_RSS STORED SEEK4 SEEK4P99 SEEK1M SEEK1MP99 SEEKCOLD BLOCKS4 BLOCKS1M
for name in random text; do
    if [[ $name = random ]]; then in=$RANDOM_FILE; else in=$TEXT_FILE; fi
    for bs in $BLOCKS_KIB; do
        for cipher in $CIPHERS; do
            k="$name,$bs,$cipher"
            log "qeltrix $name file, ${bs} KiB blocks, $cipher: pack, unpack, seek"
            best "rm -f '$CONTAINER'" "$QELTRIX" pack "$in" "$CONTAINER" --key-file "$KEY" \
                --cipher "$cipher" --block-size "$bs" --quiet
            PACK[$k]=$(mbps "$SIZE_BYTES" "$B_SEC")
            PACK_CPU[$k]=$(per_gib "$B_CPU")
            PACK_RSS[$k]=$B_RSS_MIB
            STORED[$k]=$(awk -v c="$(file_size "$CONTAINER")" -v p="$SIZE_BYTES" 'BEGIN { printf "%.3f", c / p }')
            best "rm -f '$OUT'" "$QELTRIX" unpack "$CONTAINER" "$OUT" --key-file "$KEY" --quiet
            UNPACK[$k]=$(mbps "$SIZE_BYTES" "$B_SEC")
            UNPACK_CPU[$k]=$(per_gib "$B_CPU")
            UNPACK_RSS[$k]=$B_RSS_MIB
            cmp -s "$in" "$OUT" || die "qeltrix round trip of the $name file ($bs KiB, $cipher) differs"
            # The same through stdout into a file: no fsync, as age and cp write.
            best "rm -f '$OUT'" "${TO_FILE[@]}" "$OUT" "$QELTRIX" unpack "$CONTAINER" - --key-file "$KEY" --quiet
            UNPACKS[$k]=$(mbps "$SIZE_BYTES" "$B_SEC")
            cmp -s "$in" "$OUT" || die "qeltrix unpack to stdout of the $name file ($bs KiB, $cipher) differs"
            rm -f "$OUT"
            best "rm -f '$OUT'" "${TO_FILE[@]}" "$OUT" "$QELTRIX" pack "$in" - --key-file "$KEY" \
                --cipher "$cipher" --block-size "$bs" --quiet
            PACKS[$k]=$(mbps "$SIZE_BYTES" "$B_SEC")
            rm -f "$OUT"

            r=$("$SEEK" "$CONTAINER" --key-file "$KEY" --length 4096 --reads "$SEEK_READS" | tail -n1)
            SEEK4[$k]=$(kv "$r" median_ms)
            SEEK4P99[$k]=$(kv "$r" p99_ms)
            BLOCKS4[$k]=$(kv "$r" blocks_per_read)
            r=$("$SEEK" "$CONTAINER" --key-file "$KEY" --length 1048576 \
                --reads $(((SEEK_READS + 4) / 5)) | tail -n1)
            SEEK1M[$k]=$(kv "$r" median_ms)
            SEEK1MP99[$k]=$(kv "$r" p99_ms)
            BLOCKS1M[$k]=$(kv "$r" blocks_per_read)
            r=$("$SEEK" "$CONTAINER" --key-file "$KEY" --length 4096 --cold \
                --reads $(((SEEK_READS + 9) / 10)) --warmup 0 | tail -n1)
            SEEKCOLD[$k]=$(kv "$r" median_ms)
            rm -f "$CONTAINER"
        done
    done
done

# ---------------------------------------------------------------- stdin stream, bounded memory
log "packing a ${STREAM_MIB} MiB stream from stdin"
STREAM_BYTES=$((STREAM_MIB * 1024 * 1024))
t0=$(date +%s%N)
keystream f0e1d2c3b4a5968778695a4b3c2d1e0f | head -c "$STREAM_BYTES" |
    /usr/bin/time -f '%M' -o "$WORK/time.out" "$QELTRIX" pack - "$CONTAINER" --key-file "$KEY" --quiet
t1=$(date +%s%N)
STREAM_RSS=$(awk '{ v = $1 } END { printf "%.1f", v / 1024 }' "$WORK/time.out")
STREAM_MBPS=$(awk -v b="$STREAM_BYTES" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", b / (ns / 1e9) / 1e6 }')
stream_plain=$("$QELTRIX" info "$CONTAINER" --json | tr -d ' \n' | sed -n 's/.*"original_size":\([0-9]*\).*/\1/p')
[[ $stream_plain = "$STREAM_BYTES" ]] || die "the stream container holds ${stream_plain:-?} bytes, not $STREAM_BYTES"
rm -f "$CONTAINER"

# ---------------------------------------------------------------- report
SCALED=""
((SIZE_MIB == 1024)) || SCALED=" (scaled: ${SIZE_MIB} MiB files)"
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
aes_ceiling=$(awk -v a="${SPEED[aes-256-gcm,n]}" -v s="${SPEED[sha256,n]}" 'BEGIN { printf "%.0f", 1 / (1 / a + 1 / s) }')
chacha_ceiling=$(awk -v a="${SPEED[chacha20-poly1305,n]}" -v s="${SPEED[sha256,n]}" 'BEGIN { printf "%.0f", 1 / (1 / a + 1 / s) }')

cat <<EOF
# Qeltrix benchmark$SCALED

- CPU: $cpu, $NPROC cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
- qeltrix $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); files of $SIZE_MIB MiB in $WORK (page cache warm); key file, no KDF
- fastest of $REPEAT runs per number; MB/s = 10^6 plaintext bytes/s; RSS = peak resident set (MiB)
- prewarm before each timed run: $( ((PREWARM)) && echo on || echo off) (see BENCH_PREWARM in the script)

## Baselines: CPU primitives (openssl speed -evp, 16 KiB buffers)

| primitive | 1 core MB/s | $NPROC processes MB/s |
|---|---:|---:|
| AES-256-GCM | ${SPEED[aes-256-gcm,1]} | ${SPEED[aes-256-gcm,n]} |
| ChaCha20-Poly1305 | ${SPEED[chacha20-poly1305,1]} | ${SPEED[chacha20-poly1305,n]} |
| SHA-256 | ${SPEED[sha256,1]} | ${SPEED[sha256,n]} |
| ceiling for pack/unpack, aes: 1 / (1/AEAD + 1/SHA-256), all cores | | $aes_ceiling |
| ceiling for pack/unpack, chacha | | $chacha_ceiling |

openssl 3.0's AES-GCM is not the fastest on every CPU (ring, which qeltrix uses, has a VAES path),
so the ceiling is a guide, not a bound.

## Baselines: tools on the same files

| file | age encrypt MB/s | age decrypt MB/s | age RSS MiB (enc/dec) | cp MB/s | cp+sync MB/s |
|---|---:|---:|---:|---:|---:|
EOF
for name in random text; do
    echo "| $name | ${BASE[age,$name,pack]} | ${BASE[age,$name,unpack]} | ${BASE_RSS[age,$name,pack]} / ${BASE_RSS[age,$name,unpack]} | ${BASE[cp,$name,pack]} | ${BASE[cpsync,$name,pack]} |"
done

cat <<EOF

## Pack and unpack throughput

Target (issue): random data at 1 MiB blocks, pack and unpack ≥ 1500 MB/s and faster than age.
"file" writes the output file as the CLI does, fsync before rename included; "stdout" writes the
same bytes through stdout into a file without fsync, as age and cp do. The verdict is given for
both. CPU s/GiB (user + system, file mode) does not depend on what else runs on the machine.

| file | block | cipher | pack file MB/s | pack stdout MB/s | unpack file MB/s | unpack stdout MB/s | pack CPU s/GiB | unpack CPU s/GiB | stored/plain | target | verdict (stdout; file) |
|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|
EOF
declare -A VERDICT
for name in random text; do
    for bs in $BLOCKS_KIB; do
        for cipher in $CIPHERS; do
            k="$name,$bs,$cipher"
            target="" v=""
            if [[ $name = random && $bs = 1024 ]]; then
                target="≥ 1500 MB/s, > age"
                v="$(verdict throughput_target_met "${PACKS[$k]}" "${UNPACKS[$k]}" \
                    "${BASE[age,random,pack]}" "${BASE[age,random,unpack]}"); $(verdict throughput_target_met \
                    "${PACK[$k]}" "${UNPACK[$k]}" "${BASE[age,random,pack]}" "${BASE[age,random,unpack]}")"
                VERDICT[$cipher]=$v
            fi
            echo "| $name | $bs KiB | $cipher | ${PACK[$k]} | ${PACKS[$k]} | ${UNPACK[$k]} | ${UNPACKS[$k]} | ${PACK_CPU[$k]} | ${UNPACK_CPU[$k]} | ${STORED[$k]} | $target | $v |"
        done
    done
done

cat <<EOF

## Ratios to the baselines

Like for like: qeltrix through stdout (no fsync) against age and cp; qeltrix's file mode (fsync)
against cp+sync. "of ceiling": pack through stdout against the AEAD + SHA-256 ceiling above.

| file | block | cipher | pack ÷ age | unpack ÷ age | pack ÷ cp | unpack ÷ cp | pack file ÷ cp+sync | unpack file ÷ cp+sync | pack of ceiling |
|---|---:|---|---:|---:|---:|---:|---:|---:|---:|
EOF
for name in random text; do
    for bs in $BLOCKS_KIB; do
        for cipher in $CIPHERS; do
            k="$name,$bs,$cipher"
            if [[ $cipher = aes ]]; then ceil=$aes_ceiling; else ceil=$chacha_ceiling; fi
            echo "| $name | $bs KiB | $cipher | $(ratio "${PACKS[$k]}" "${BASE[age,$name,pack]}") | $(ratio "${UNPACKS[$k]}" "${BASE[age,$name,unpack]}") | $(ratio "${PACKS[$k]}" "${BASE[cp,$name,pack]}") | $(ratio "${UNPACKS[$k]}" "${BASE[cp,$name,pack]}") | $(ratio "${PACK[$k]}" "${BASE[cpsync,$name,pack]}") | $(ratio "${UNPACK[$k]}" "${BASE[cpsync,$name,pack]}") | $(awk -v a="${PACKS[$k]}" -v c="$ceil" 'BEGIN { printf "%.0f%%", 100 * a / c }') |"
        done
    done
done

cat <<EOF

## Memory (peak RSS)

| what | block | cipher | peak RSS MiB | target | verdict |
|---|---:|---|---:|---|---|
EOF
STREAM_VERDICT=$(verdict lt "$STREAM_RSS" 256)
echo "| pack ${STREAM_MIB} MiB from stdin into a file ($STREAM_MBPS MB/s incl. generator) | 1024 KiB | aes | $STREAM_RSS | < 256 MiB | $STREAM_VERDICT |"
for name in random text; do
    for bs in $BLOCKS_KIB; do
        for cipher in $CIPHERS; do
            k="$name,$bs,$cipher"
            echo "| pack $name file | $bs KiB | $cipher | ${PACK_RSS[$k]} | | |"
            echo "| unpack $name file | $bs KiB | $cipher | ${UNPACK_RSS[$k]} | | |"
        done
    done
done

cat <<EOF

## Seek latency (one open container, random offsets, Container::read_at)

Target (issue): 4 KiB read in a 1 GiB container < 2 ms median. Warm = container in the page cache;
cold = its pages dropped (posix_fadvise) before each read. $SEEK_READS reads of 4 KiB, $(((SEEK_READS + 4) / 5)) of 1 MiB, $(((SEEK_READS + 9) / 10)) cold.

| file | block | cipher | 4 KiB median ms | 4 KiB p99 ms | blocks/read | 4 KiB cold median ms | 1 MiB median ms | 1 MiB p99 ms | blocks/read | target (4 KiB median) | verdict |
|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|
EOF
SEEK_VERDICT=""
for name in random text; do
    for bs in $BLOCKS_KIB; do
        for cipher in $CIPHERS; do
            k="$name,$bs,$cipher"
            v=$(verdict lt "${SEEK4[$k]}" 2)
            if [[ $name = random && $bs = 1024 && $cipher = aes ]]; then SEEK_VERDICT=$v; fi
            echo "| $name | $bs KiB | $cipher | ${SEEK4[$k]} | ${SEEK4P99[$k]} | ${BLOCKS4[$k]} | ${SEEKCOLD[$k]} | ${SEEK1M[$k]} | ${SEEK1MP99[$k]} | ${BLOCKS1M[$k]} | < 2 ms | $v |"
        done
    done
done

v2_report

k="random,1024,aes"
cat <<EOF

## Targets$SCALED

| target | measured | verdict |
|---|---|---|
EOF
for cipher in $CIPHERS; do
    k="random,1024,$cipher"
    [[ -n ${PACK[$k]:-} ]] || continue
    echo "| pack and unpack random data, 1 MiB blocks, $cipher: ≥ 1500 MB/s and faster than age | stdout: pack ${PACKS[$k]}, unpack ${UNPACKS[$k]} MB/s; file (fsync): pack ${PACK[$k]}, unpack ${UNPACK[$k]} MB/s; age ${BASE[age,random,pack]} / ${BASE[age,random,unpack]} MB/s | ${VERDICT[$cipher]} (stdout; file) |"
done
echo "| peak RSS packing a 4 GiB stream from stdin < 256 MiB | $STREAM_RSS MiB for $STREAM_MIB MiB | $STREAM_VERDICT |"
k="random,1024,aes"
[[ -z ${SEEK4[$k]:-} ]] || echo "| 4 KiB seek in a 1 GiB container (1 MiB blocks, aes) < 2 ms median | ${SEEK4[$k]} ms | $SEEK_VERDICT |"
log "done"
