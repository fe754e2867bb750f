#!/usr/bin/env bash
# Fuzzes every parser of untrusted bytes (see docs/FUZZING.md) for SECONDS per parser:
#
#   scripts/fuzz.sh            # 120 s per parser
#   scripts/fuzz.sh 30         # 30 s per parser
#   PROFILE=release scripts/fuzz.sh 60
#   LIBFUZZER=0 scripts/fuzz.sh 5   # the stable driver only (scripts/test.sh's smoke run)
#
# Always runs the stable in-process driver (examples/fuzz_parsers.rs: random and mutated real
# containers, panics counted, panicking inputs saved under target/fuzz-crashes/). If cargo-fuzz is
# installed (`cargo install cargo-fuzz`), also runs each libFuzzer target in fuzz/ for SECONDS;
# libFuzzer needs nightly features, which RUSTC_BOOTSTRAP=1 enables on the stable toolchain.
# Exits non-zero if any input panicked.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${1:-120}
PROFILE=${PROFILE:-dev}

cargo run --profile "$PROFILE" --example fuzz_parsers -- "$SECONDS_PER"

if [ "${LIBFUZZER:-1}" = 0 ]; then
    echo "LIBFUZZER=0: skipped the libFuzzer targets in fuzz/"
elif cargo fuzz --version >/dev/null 2>&1; then
    # Start libFuzzer from the same real containers and keyring the stable driver mutates.
    cargo run --profile "$PROFILE" --example fuzz_parsers -- --write-seeds fuzz/corpus
    for target in $(cargo fuzz list); do
        echo "== cargo fuzz run $target (${SECONDS_PER} s)"
        RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$SECONDS_PER"
    done
else
    echo "cargo-fuzz is not installed: skipped the libFuzzer targets in fuzz/ (cargo install cargo-fuzz)"
fi
