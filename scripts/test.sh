#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

need_cargo
need cc build-essential
need pkg-config pkg-config

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
step "cargo test"
cargo test --all-targets
cargo test --doc --quiet
