#!/usr/bin/env bash
# The demo: builds qeltrix, packs a sample file into ./demo-vault, and shows info, seek, unpack,
# verify and tamper detection on it, step by step. Safe to run again (it starts over).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

step "Setting up"
need_cargo
need cc build-essential
need pkg-config pkg-config
need curl curl
need fusermount3 fuse3
run cargo build --release --quiet
Q=$PWD/target/release/qeltrix
VAULT=$PWD/demo-vault
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    if [ -n "${MNT:-}" ]; then fusermount3 -u "$MNT" 2>/dev/null || true; fi
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# wait_for_line FILE REGEX: print the first match of REGEX in FILE, waiting up to 10 s for it.
wait_for_line() {
    local i
    for i in $(seq 1 100); do
        grep -o -m1 -E "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for /$2/ in $1:" >&2
    cat "$1" >&2
    return 1
}

# The passphrase comes from the environment, never from argv.
export QELTRIX_PASSPHRASE=${QELTRIX_PASSPHRASE:-correct horse battery staple}
rm -rf "$VAULT"
mkdir -p "$VAULT/logs"

step "A sample file: 8 MiB of log lines"
awk 'BEGIN { for (i = 1; i <= 200000; i++)
    printf "2026-11-22T10:%02d:%02d host-%d GET /item/%d?session=%x 200 %d\n", i / 60 % 60, i % 60, i % 7, i, i * 2654435761 % 4294967296, i * 37 % 9973 }' > "$WORK/access.log"
truncate -s 8M "$WORK/access.log"
ls -l "$WORK/access.log"

step "pack (format 2: parallel over 1 MiB blocks, AES-256-GCM, zstd where it pays)"
run "$Q" pack "$WORK/access.log" "$VAULT/logs/access.log.qltx"

step "info (needs no key)"
run "$Q" info "$VAULT/logs/access.log.qltx"

step "seek: 100 bytes at offset 5,000,000 (reads and decrypts only what holds it)"
run "$Q" seek "$VAULT/logs/access.log.qltx" --offset 5000000 --length 100 --output "$WORK/range.bin"
cmp "$WORK/range.bin" <(tail -c +5000001 "$WORK/access.log" | head -c 100)
echo "the range equals the original bytes"
run "$Q" seek "$VAULT/logs/access.log.qltx" --offset 5000000 --length 64

step "unpack (verifies every block)"
run "$Q" unpack "$VAULT/logs/access.log.qltx" "$WORK/access.out"
cmp "$WORK/access.log" "$WORK/access.out" && echo "round trip: identical"

step "verify"
run "$Q" verify "$VAULT/logs/access.log.qltx"

step "verify --no-key: every stored byte checked against the root, with no key at all"
run "$Q" verify --no-key "$VAULT/logs/access.log.qltx"

step "tamper detection: flip one byte in a copy"
cp "$VAULT/logs/access.log.qltx" "$WORK/tampered.qltx"
printf '\x5a' | dd of="$WORK/tampered.qltx" bs=1 seek=300000 conv=notrunc status=none
set +e
"$Q" verify --no-key "$WORK/tampered.qltx"
code=$?
set -e
[ "$code" -eq 3 ] || { echo "expected exit 3, got $code" >&2; exit 1; }
echo "detected (exit $code)"

step "mount: the vault as a plaintext filesystem (FUSE), read with ordinary tools"
MNT="$WORK/mnt"
mkdir -p "$MNT"
run "$Q" mount "$VAULT" "$MNT" --daemon
run ls -l "$MNT/logs"
cmp "$MNT/logs/access.log" "$WORK/access.log" && echo "cmp through the mount: identical"
echo "the last whole line, through the mount:"
tail -n 2 "$MNT/logs/access.log" | head -n 1
run "$Q" umount "$MNT"

step "mount --read-write: what is written in the mount is stored as containers"
run "$Q" mount "$VAULT" "$MNT" --read-write --daemon
echo "written through the mount" > "$MNT/notes.txt"
mkdir "$MNT/copies"
cp "$WORK/access.log" "$MNT/copies/"
run "$Q" umount "$MNT"
run ls "$VAULT" "$VAULT/copies"
run "$Q" unpack "$VAULT/notes.txt.qltx" -
run "$Q" verify "$VAULT/copies/access.log.qltx"

step "serve: the vault over HTTP; a Range request decrypts only the blocks it covers"
"$Q" serve "$VAULT" --listen 127.0.0.1:0 2> "$WORK/serve.log" &
PIDS+=($!)
URL=$(wait_for_line "$WORK/serve.log" 'http://127\.0\.0\.1:[0-9]+/')
run curl -sS -r 5000000-5000099 -o "$WORK/served.bin" -w '%{http_code} %{size_download} bytes\n' "${URL}logs/access.log"
cmp "$WORK/served.bin" <(tail -c +5000001 "$WORK/access.log" | head -c 100) && echo "the served range equals the original bytes"
run curl -sS "${URL}logs/?format=json"
echo

step "watch: an inbox packed into a vault, sealed to a recipient only (the packer cannot decrypt)"
mkdir -p "$WORK/inbox/notes" "$WORK/inbox-vault"
echo "meeting at noon" > "$WORK/inbox/notes/todo.txt"
head -c 100000 "$WORK/access.log" > "$WORK/inbox/excerpt.log"
RECIPIENT=$("$Q" keygen --x25519 -o "$WORK/owner.id" 2>&1 | grep -o 'qeltrix-x25519:[0-9a-f]*')
echo "the owner's public recipient: $RECIPIENT"
export XDG_STATE_HOME="$WORK/state"
run "$Q" watch "$WORK/inbox" --vault "$WORK/inbox-vault" --recipient "$RECIPIENT" --once
run "$Q" unpack "$WORK/inbox-vault/notes/todo.txt.qltx" - --identity "$WORK/owner.id"

step "Done"
echo "The demo vault is in $VAULT (passphrase: \$QELTRIX_PASSPHRASE)."
