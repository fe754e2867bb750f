#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
. scripts/lib/garage.sh

need_cargo
need cc build-essential
need pkg-config pkg-config
need curl curl
need fusermount3 fuse3
need rsync rsync
need ffmpeg ffmpeg
need sqlite3 sqlite3        # tests/mount_rw.rs: a database written through the read-write mount
need git git                # tests/mount_rw.rs: git clone, commit, gc and fsck in the mount
need python3 python3        # tests/mount_rw.rs: the crash test's sqlite writer
need chromium chromium
need groff groff-base
need script bsdutils        # tests/prompts.rs and tests/vault_readers.rs: a real pty
need setsid util-linux      # tests/prompts.rs: a process with no controlling terminal
need nginx nginx-light      # tests/remote_http.rs: http:// containers from a real web server
need ip iproute2            # tests/remote_cluster.rs: loopback set up in its own namespace
need unshare util-linux
need_garage                 # tests/remote_cluster.rs: a real three-node S3 cluster

step "Cargo.lock is current (the README's cargo install --locked needs it)"
cargo metadata --locked --format-version 1 > /dev/null
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy -p qeltrix-py --all-targets --quiet -- -D warnings   # the Python package (python/)
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
step "the Python package: its wheel in a fresh venv, then python/tests (scripts/test-python.sh)"
./scripts/test-python.sh
step "end to end: a browser plays and seeks a served video"
./scripts/e2e-browser.sh
step "read-write mount: kill -9 at random points of real workloads (tests/mount_rw.rs, ignored in the fast tier)"
cargo test --quiet --test mount_rw -- --ignored --test-threads=1
step "remote storage on a three-node Garage cluster (tests/remote_cluster.rs, in its own network namespace)"
# Built first: nothing inside the namespace reaches crates.io.
cargo test --no-run --quiet --test remote_cluster
in_quickack_netns cargo test --offline --quiet --test remote_cluster -- --ignored --test-threads=1
