#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

need_cargo
need cc build-essential
need pkg-config pkg-config
need curl curl
need fusermount3 fuse3
need rsync rsync
need ffmpeg ffmpeg
need chromium chromium
need groff groff-base
need script bsdutils        # tests/prompts.rs and tests/vault_readers.rs: a real pty
need setsid util-linux      # tests/prompts.rs: a process with no controlling terminal

step "Cargo.lock is current (the README's cargo install --locked needs it)"
cargo metadata --locked --format-version 1 > /dev/null
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
step "cargo test"
cargo test --all-targets
cargo test --doc --quiet
step "the library alone: default features off"
cargo clippy --lib --tests --no-default-features --quiet -- -D warnings
cargo test --no-default-features --quiet
# An embedder of the format pays for none of the front ends' stacks.
heavy=$(cargo tree -e normal --no-default-features --prefix none --format '{p}' \
    | grep -E '^(tokio|hyper|fuser|clap|indicatif|ureq|anyhow|rpassword|tracing-subscriber) ' || true)
if [ -n "$heavy" ]; then
    echo "the library without default features depends on: $heavy" >&2
    exit 1
fi
step "fuzz smoke: every parser, 5 s each (docs/FUZZING.md)"
LIBFUZZER=0 ./scripts/fuzz.sh 5
step "end to end: a browser plays and seeks a served video"
./scripts/e2e-browser.sh
