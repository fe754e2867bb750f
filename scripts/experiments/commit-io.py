#!/usr/bin/env python3
"""The I/O of one commit of 100 random 4 KiB writes to a 256 MiB file, four patterns (docs/design/format-4.md),
interleaved rounds, p50 times and ratios to the gocryptfs-like pattern `g`. Usage: commit-io.py DIR [ROUNDS=30]."""
import os, random, statistics, sys, time

d = sys.argv[1]; rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
SIZE = 256 << 20; N = 100; rng = random.Random(7)
buf = os.urandom(1 << 20)

def make(name, size):
    p = os.path.join(d, name)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    left = size
    while left:
        n = min(left, len(buf)); os.write(fd, buf[:n]); left -= n
    os.fsync(fd)
    return fd

def g(fd):  # gocryptfs: 4096 + 32 bytes per page, written in place, then fsync
    for _ in range(N):
        page = rng.randrange(SIZE // 4096)
        os.pwrite(fd, buf[:4128], 18 + page * 4128)
    os.fsync(fd)

def append_commit(fd, units, unit_len, footer_len, syncs):
    end = os.lseek(fd, 0, os.SEEK_END)
    data = bytearray()
    for _ in range(units):
        data += buf[:unit_len]
    data += buf[:footer_len]
    os.pwrite(fd, bytes(data), end)
    if syncs == 2:
        os.fdatasync(fd)
    os.pwrite(fd, buf[:64], 72)
    os.fdatasync(fd)

def v3(fd):
    append_commit(fd, N, 64 * 1024 + 188, 4096 * 188 + 72 + 32, 2)

def v4(fd):
    append_commit(fd, N, 4096 + 16, 120 + N * 112, 2)

def v4one(fd):
    append_commit(fd, N, 4096 + 16, 120 + N * 112, 1)

pats = [("g", g), ("v3", v3), ("v4", v4), ("v4one", v4one)]
fds = {}
try:
    for name, _ in pats:
        fds[name] = make("iox-" + name, SIZE + (SIZE // 4096) * 32 if name == "g" else SIZE)
    times = {name: [] for name, _ in pats}
    for r in range(rounds):
        order = pats[r % 4:] + pats[:r % 4]
        for name, f in order:
            t = time.perf_counter(); f(fds[name]); times[name].append(time.perf_counter() - t)
finally:
    # Ctrl-C (KeyboardInterrupt) included: no test file is left in DIR.
    for name in pats:
        path = os.path.join(d, "iox-" + name[0])
        if os.path.exists(path):
            os.unlink(path)
base = statistics.median(times["g"])
print(f"{'pattern':8} {'p50 ms':>8} {'ratio to g':>10}   ({rounds} interleaved rounds, {d})")
for name, _ in pats:
    m = statistics.median(times[name])
    print(f"{name:8} {m * 1000:8.2f} {m / base:10.2f}")
