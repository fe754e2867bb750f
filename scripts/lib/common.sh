# Shared helpers for the project's scripts: install missing system packages, find the binary.
# Sourced, not run.

# apt_install PACKAGE...: install Debian packages (one apt-get update per run first).
APT_UPDATED=${APT_UPDATED:-}
apt_install() {
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if [ -z "$APT_UPDATED" ]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# need CMD PACKAGE...: install the Debian PACKAGEs if CMD is not on PATH.
need() {
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    echo ">> installing $* (for $cmd)"
    apt_install "$@"
}

# need_python_venv: python3 able to make a venv with pip (Debian ships venv's ensurepip apart,
# in python3-venv).
need_python_venv() {
    need python3 python3
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && return 0
    echo ">> installing python3-venv (for python3 -m venv)"
    apt_install python3-venv
}

# The Rust toolchain is a prerequisite (rustup); say so plainly if it is missing.
need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo not found: install Rust from https://rustup.rs first" >&2
        exit 1
    fi
}

step() {
    printf '\n\033[1m== %s\033[0m\n' "$*"
}

# run CMD...: print the command, then run it.
run() {
    printf '$ %s\n' "$*"
    "$@"
}
