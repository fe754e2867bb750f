# Shared helpers for the project's scripts: install missing system packages, find the binary.
# Sourced, not run.

# need CMD PACKAGE...: install the Debian PACKAGEs if CMD is not on PATH.
APT_UPDATED=${APT_UPDATED:-}
need() {
    local cmd=$1
    shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo ">> installing $* (for $cmd)"
    if [ -z "$APT_UPDATED" ]; then
        $sudo apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
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
