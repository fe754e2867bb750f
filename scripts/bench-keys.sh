#!/usr/bin/env bash
# Benchmark of the vault keyring: (1) `qeltrix passwd` at the default 600,000 PBKDF2 iterations on
# a vault of 10 and of 1,000 containers (median of 5 each; the ratio should be ~1.0, since passwd
# rewrites only the keyring); (2) opening and reading 1,000 containers through the library after
# one vault unlock, against 1,000 containers with a passphrase slot each (one PBKDF2 per open).
# Containers are made through the library (examples/vault_open.rs), which is setup, not timed.
#
# Environment: BENCH_CONTAINERS (default 1000), BENCH_RUNS (default 5), BENCH_ITERATIONS
# (default 600000), TMPDIR for the scratch folder (removed at exit).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

N=${BENCH_CONTAINERS:-1000}
RUNS=${BENCH_RUNS:-5}
ITERS=${BENCH_ITERATIONS:-600000}

need_cargo
need cc build-essential
step "Building (release)"
cargo build --release --quiet --bin qeltrix --example vault_open
Q=$PWD/target/release/qeltrix
VO=$PWD/target/release/examples/vault_open
WORK=$(mktemp -d "${TMPDIR:-/tmp}/qeltrix-bench-keys.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
printf 'first passphrase\n' > "$WORK/p1"
printf 'second passphrase\n' > "$WORK/p2"
export QELTRIX_PASSPHRASE='first passphrase'

now() { date +%s.%N; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
# median FILE: the median of the numbers in FILE, one a line.
median() { sort -g "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# time_passwd VAULT OUT: RUNS passwd runs, alternating the two passphrases so each run is real.
time_passwd() {
    local vault=$1 out=$2 from=p1 to=p2
    : > "$out"
    for _ in $(seq "$RUNS"); do
        local t0 t1
        t0=$(now)
        "$Q" passwd "$vault" --passphrase-file "$WORK/$from" --new-passphrase-file "$WORK/$to" \
            --kdf-iterations "$ITERS" 2>/dev/null
        t1=$(now)
        awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }' >> "$out"
        local swap=$from; from=$to; to=$swap
    done
    # Leave the vault on the first passphrase.
    if [ "$from" = p2 ]; then
        "$Q" passwd "$vault" --passphrase-file "$WORK/p2" --new-passphrase-file "$WORK/p1" \
            --kdf-iterations "$ITERS" 2>/dev/null
    fi
}

step "Setup: vaults of 10 and $N containers, and $N containers with a passphrase slot each"
for size in 10 "$N"; do
    "$Q" init "$WORK/vault-$size" --passphrase-file "$WORK/p1" --kdf-iterations "$ITERS" 2>/dev/null
    "$VO" make-vault "$WORK/vault-$size" "$size"
done
"$VO" make-passphrase "$WORK/plain-$N" "$N" "$ITERS"
echo "done: $(find "$WORK" -name '*.qltx' | wc -l) containers"

step "passwd, median of $RUNS"
time_passwd "$WORK/vault-10" "$WORK/passwd-10"
time_passwd "$WORK/vault-$N" "$WORK/passwd-$N"
sha_before=$(cat "$WORK/vault-$N"/*.qltx | sha256sum)

step "Opening $N containers (vault: median of $RUNS; passphrase slots: 1 run, it is slow by design)"
: > "$WORK/open-vault"
for _ in $(seq "$RUNS"); do
    "$VO" open-vault "$WORK/vault-$N" | awk -v n="$N" '$1 != n { exit 1 } { print $2 }' >> "$WORK/open-vault"
done
"$VO" open-passphrase "$WORK/plain-$N" | awk -v n="$N" '$1 != n { exit 1 } { print $2 }' > "$WORK/open-plain"
sha_after=$(cat "$WORK/vault-$N"/*.qltx | sha256sum)
[ "$sha_before" = "$sha_after" ] || { echo "error: a container changed" >&2; exit 1; }

p10=$(median "$WORK/passwd-10")
pn=$(median "$WORK/passwd-$N")
ov=$(median "$WORK/open-vault")
op=$(median "$WORK/open-plain")
step "Results ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), PBKDF2 iterations $ITERS)"
{
    printf '%-46s %10s %12s %10s\n' "operation" "containers" "seconds" "ratio"
    printf '%-46s %10s %12.4f %10s\n' "passwd (baseline)" 10 "$p10" "1.00"
    printf '%-46s %10s %12.4f %10.2f\n' "passwd" "$N" "$pn" "$(div "$pn" "$p10")"
    printf '%-46s %10s %12.4f %10s\n' "open+read all: vault unlock, keyring slots" "$N" "$ov" "1.00"
    printf '%-46s %10s %12.4f %10.1f\n' "open+read all: one passphrase slot each" "$N" "$op" "$(div "$op" "$ov")"
} | tee "$WORK/table"
echo
echo "passwd should not grow with the number of containers (ratio ~1.0); the vault opens $N"
echo "containers for one PBKDF2 where passphrase slots pay one each."
