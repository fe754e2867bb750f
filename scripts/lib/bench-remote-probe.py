#!/usr/bin/env python3
"""bench-remote-probe.py -- the measuring and reporting half of scripts/bench-remote.sh.

Subcommands (all print one line on stdout; errors go to stderr with a non-zero exit):
  wait-mount MNT PID [TIMEOUT_S]     block until MNT is a mount point (exit 1 if PID dies first)
  ttfb FILE OFFSET LEN REF           open FILE, pread LEN bytes at OFFSET; prints "open_ms pread_ms"
                                     (the bytes are compared with REF afterwards: exit 3 on mismatch)
  rand FILE BS N SEED REF            N preads of BS bytes at random 4 KiB-aligned offsets drawn from
                                     random.Random(SEED) (same offsets for every file of one size);
                                     prints "p50_ms mib_s"; a sample of 8 reads is compared with REF
  many FILE...                       open every FILE first (all open at once), then read each to the
                                     end in its own thread, 1 MiB at a time; prints "mib_s bytes"
  report RESULTS CACHE_MIB           the markdown table of medians, ratios and pass/fail lines
"""
import os
import random
import statistics
import sys
import threading
import time
from collections import defaultdict


def wait_mount(mnt, pid, timeout=120.0):
    deadline = time.time() + float(timeout)
    pid = int(pid)
    while time.time() < deadline:
        if os.path.ismount(mnt):
            return 0
        try:
            os.kill(pid, 0)
        except OSError:
            print(f"mount daemon {pid} exited before {mnt} was mounted", file=sys.stderr)
            return 1
        time.sleep(0.002)
    print(f"timeout waiting for {mnt}", file=sys.stderr)
    return 1


def same_bytes(ref, off, data):
    with open(ref, "rb") as r:
        r.seek(off)
        return r.read(len(data)) == data


def ttfb(f, off, ln, ref):
    off, ln = int(off), int(ln)
    t0 = time.perf_counter()
    fd = os.open(f, os.O_RDONLY)
    t1 = time.perf_counter()
    d = os.pread(fd, ln, off)
    t2 = time.perf_counter()
    os.close(fd)
    if len(d) != ln or not same_bytes(ref, off, d):
        print(f"{f}: wrong bytes at {off}", file=sys.stderr)
        return 3
    print(f"{(t1 - t0) * 1e3:.3f} {(t2 - t1) * 1e3:.3f}")
    return 0


def rand(f, bs, n, seed, ref):
    bs, n = int(bs), int(n)
    size = os.stat(f).st_size
    rnd = random.Random(int(seed))
    offs = [rnd.randrange(0, (size - bs) // 4096 + 1) * 4096 for _ in range(n)]
    fd = os.open(f, os.O_RDONLY)
    lat, check = [], []
    t0 = time.perf_counter()
    for i, o in enumerate(offs):
        a = time.perf_counter()
        d = os.pread(fd, bs, o)
        lat.append(time.perf_counter() - a)
        if len(d) != bs:
            print(f"{f}: short read at {o}: {len(d)}", file=sys.stderr)
            return 3
        if i % max(1, n // 8) == 0:
            check.append((o, d))
    total = time.perf_counter() - t0
    os.close(fd)
    for o, d in check:
        if not same_bytes(ref, o, d):
            print(f"{f}: wrong bytes at {o}", file=sys.stderr)
            return 3
    print(f"{statistics.median(lat) * 1e3:.3f} {n * bs / total / 1048576:.1f}")
    return 0


def many(files):
    fds = [os.open(f, os.O_RDONLY) for f in files]
    got = [0] * len(fds)
    errs = []

    def reader(i):
        try:
            while True:
                d = os.read(fds[i], 1 << 20)
                if not d:
                    break
                got[i] += len(d)
        except OSError as e:
            errs.append(f"{files[i]}: {e}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(fds))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - t0
    for fd in fds:
        os.close(fd)
    if errs:
        print("\n".join(errs), file=sys.stderr)
        return 3
    for f, g in zip(files, got):
        if g != os.stat(f).st_size:
            print(f"{f}: read {g} bytes of {os.stat(f).st_size}", file=sys.stderr)
            return 3
    print(f"{sum(got) / total / 1048576:.1f} {sum(got)}")
    return 0


# metric -> (label, unit, higher is better)
METRICS = [
    ("seq_mib_s", "cold sequential read of the video", "MiB/s", True),
    ("mount_ms", "mount (command until the mount point answers)", "ms", False),
    ("ttfb_ms", "first byte at 900 MiB after a fresh mount (open + 64 KiB pread)", "ms", False),
    ("open_ms", "  of which open()", "ms", False),
    ("pread_ms", "  of which the 64 KiB pread", "ms", False),
    ("mount_ttfb_ms", "mount + first byte at 900 MiB", "ms", False),
    ("rand_p50_ms", "1 MiB random reads, p50", "ms", False),
    ("rand_mib_s", "1 MiB random reads", "MiB/s", True),
    ("ffmpeg_ms", "ffmpeg -ss 900 -frames:v 1 on a fresh mount", "ms", False),
    ("rss_mib", "peak RSS of the mount (one file at a time)", "MiB", False),
    ("many_mib_s", "N files read at once (aggregate)", "MiB/s", True),
    ("rss_many_mib", "peak RSS with N files open and read at once", "MiB", False),
]


def report(path, cache_mib):
    cache_mib = float(cache_mib)
    vals = defaultdict(list)
    info = {}
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if parts[0] == "info":
            info[parts[1]] = parts[2]
            continue
        t, metric, _round, value = parts[:4]
        vals[(t, metric)].append(float(value))
    med = {k: statistics.median(v) for k, v in vals.items()}
    rounds = max((len(v) for v in vals.values()), default=0)
    nfiles = info.get("many_n", "N")

    def fmt(x):
        if x is None:
            return "-"
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"

    print(f"| metric (median of {rounds} interleaved rounds) | qeltrix | rclone crypt | qeltrix / rclone |")
    print("|---|---|---|---|")
    for m, label, unit, _hib in METRICS:
        q, r = med.get(("qeltrix", m)), med.get(("rclone", m))
        if q is None and r is None:
            continue
        ratio = f"{q / r:.2f}x" if q is not None and r else "-"
        print(f"| {label.replace('N files', nfiles + ' files')} ({unit}) | {fmt(q)} | {fmt(r)} | {ratio} |")
    print()
    if ("garage", "get_mib_s") in med:
        print(f"- S3 ceiling, one GET of the whole video object (rclone cat, no decryption) from this cluster (cold, median): "
              f"{med[('garage', 'get_mib_s')]:.0f} MiB/s")
    if ("garage", "get64k_ms") in med:
        print(f"- S3 floor of a first byte, one signed 64 KiB ranged GET at the same offset (curl, time to first byte, cold, median): "
              f"{med[('garage', 'get64k_ms')]:.1f} ms")
    for k in info:
        if k != "many_n":
            print(f"- {k}: {info[k]}")
    print()
    print("Targets (ratios of medians from this run):")
    results = []

    def check(name, a, b, ok_fn, detail):
        if a is None or b is None:
            print(f"  ----  {name}: not measured")
            results.append(False)
            return
        ok = ok_fn(a, b)
        results.append(ok)
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail(a, b)}")

    g = lambda t, m: med.get((t, m))
    check("first byte after a seek to 900 MiB <= 1/5 of rclone crypt's",
          g("qeltrix", "ttfb_ms"), g("rclone", "ttfb_ms"), lambda a, b: a <= b / 5,
          lambda a, b: f"{a:.2f} ms vs {b:.2f} ms (rclone / qeltrix: {b / a:.1f}x; needs 5x)")
    check("cold sequential >= 2x rclone crypt",
          g("qeltrix", "seq_mib_s"), g("rclone", "seq_mib_s"), lambda a, b: a >= 2 * b,
          lambda a, b: f"{a:.0f} vs {b:.0f} MiB/s ({a / b:.2f}x; needs 2x)")
    check(f"qeltrix peak RSS with {nfiles} files open <= cache + 64 MiB",
          g("qeltrix", "rss_many_mib"), cache_mib, lambda a, b: a <= b + 64,
          lambda a, b: f"{a:.0f} MiB vs {b:.0f} + 64 MiB (rclone crypt: {fmt(g('rclone', 'rss_many_mib'))} MiB)")
    a, b = g("qeltrix", "ffmpeg_ms"), g("rclone", "ffmpeg_ms")
    if a and b:
        print(f"  info  ffmpeg -ss 900: {a:.0f} ms vs {b:.0f} ms (rclone / qeltrix: {b / a:.2f}x)")
    a, b = g("qeltrix", "rand_p50_ms"), g("rclone", "rand_p50_ms")
    if a and b:
        print(f"  info  1 MiB random read p50: {a:.2f} ms vs {b:.2f} ms (rclone / qeltrix: {b / a:.2f}x)")
    a, b = g("qeltrix", "many_mib_s"), g("rclone", "many_mib_s")
    if a and b:
        print(f"  info  {nfiles} files at once: {a:.0f} vs {b:.0f} MiB/s ({a / b:.2f}x)")
    return 0 if all(results) else 1


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "wait-mount":
        return wait_mount(*args)
    if cmd == "ttfb":
        return ttfb(*args)
    if cmd == "rand":
        return rand(*args)
    if cmd == "many":
        return many(args)
    if cmd == "report":
        return report(*args)
    print(f"unknown subcommand {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
