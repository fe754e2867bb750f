#!/usr/bin/env bash
# The Python package (python/, docs/PYTHON.md): builds its abi3 wheel with maturin, installs it
# with pip from the wheel alone (no index: an offline install) into a fresh venv, and runs the
# pytest suite in python/tests against it and the CLI. Run by scripts/test.sh.
# usage: [PROFILE=release] [PYTHONS="python3.9 python3.13 ..."] scripts/test-python.sh [PYTEST_ARGS...]
#   PYTHONS: more interpreters to install the same abi3 wheel into (a venv each) and run the suite
#   under, after the default python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
need_cargo
need cc build-essential
need_python_venv

work=$(mktemp -d /tmp/qeltrix-python.XXXXXX)
trap 'rm -rf "$work"' EXIT
step "a fresh venv with maturin and pytest (from PyPI)"
python3 -m venv "$work/venv"
py=$work/venv/bin/python
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q "maturin>=1.9,<2" "pytest>=7"
step "the wheel (maturin, abi3 for CPython >= 3.9)"
release=()
[ "${PROFILE:-debug}" = release ] && release=(--release)
"$work/venv/bin/maturin" build --quiet "${release[@]}" -m python/Cargo.toml -i "$py" -o "$work/wheels"
ls "$work"/wheels
step "pip install of the wheel, offline"
"$py" -m pip install -q --no-index --no-deps "$work"/wheels/qeltrix-*-abi3-*.whl
step "the CLI, for the interop tests"
cargo build --quiet --bin qeltrix
bin=$PWD/target/debug/qeltrix
step "pytest python/tests"
# Run from outside the source tree, so `import qeltrix` is the installed wheel, not python/qeltrix.
tests=$PWD/python/tests
(cd "$work" && QELTRIX_BIN=$bin "$py" -m pytest -q -p no:cacheprovider "$tests" "$@")
for other in ${PYTHONS:-}; do
    step "the same wheel under $other"
    venv=$work/venv-$(basename "$other")
    "$other" -m venv "$venv"
    "$venv/bin/python" -m pip install -q "pytest>=7"
    "$venv/bin/python" -m pip install -q --no-index --no-deps "$work"/wheels/qeltrix-*-abi3-*.whl
    (cd "$work" && QELTRIX_BIN=$bin "$venv/bin/python" -m pytest -q -p no:cacheprovider "$tests" "$@")
done
