# Garage (the S3 server of tests/remote_cluster.rs): find it or install it. Sourced, not run.

GARAGE_VERSION=2.5.0

# need_garage: export QELTRIX_GARAGE, the path of a Garage $GARAGE_VERSION binary: the one
# QELTRIX_GARAGE already names, else `garage` on PATH, else one installed with cargo (about
# 9 minutes on 2 cores; from crates.io, with bundled SQLite and LMDB: no system libraries).
need_garage() {
    local bin=${QELTRIX_GARAGE:-}
    if [ -z "$bin" ] && command -v garage >/dev/null 2>&1; then
        bin=$(command -v garage)
    fi
    if [ -n "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$GARAGE_VERSION\|:$GARAGE_VERSION\| $GARAGE_VERSION"; then
        export QELTRIX_GARAGE=$bin
        return 0
    fi
    echo ">> installing garage $GARAGE_VERSION with cargo (for tests/remote_cluster.rs; about 9 min)"
    local root=${GARAGE_INSTALL_ROOT:-$HOME/.cargo}
    cargo install garage --locked --version "$GARAGE_VERSION" --root "$root" --quiet
    export QELTRIX_GARAGE=$root/bin/garage
}

# in_quickack_netns CMD...: run CMD in a network namespace of its own, where loopback has
# delayed ACKs off. Garage sets no TCP_NODELAY, so on the host's loopback every small request
# waits ~40 ms for a delayed ACK; `quickack 1` on the /32 local route removes that. Nothing in
# the namespace reaches the outside network (build and install first). Needs root or an
# unprivileged user namespace (then `unshare -rn`).
in_quickack_netns() {
    local setup='ip link set lo up && ip route change local 127.0.0.1 dev lo table local proto kernel scope host src 127.0.0.1 quickack 1 && exec "$@"'
    if [ "$(id -u)" -eq 0 ]; then
        unshare -n sh -c "$setup" sh "$@"
    else
        unshare -rn sh -c "$setup" sh "$@"
    fi
}
