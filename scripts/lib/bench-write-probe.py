#!/usr/bin/env python3
"""Helpers of the write section of scripts/bench-mount.sh.

  bench-write-probe.py maketar OUT.tar FILES SEED
      A tarball of FILES files as a source tree has them: about 20 per folder, folders up to three
      deep, sizes log-normal around 4 KiB (a few of 100 KiB-1 MiB; 3 % empty), text mostly and
      some incompressible, fixed mtimes. The same SEED gives the same bytes.
  bench-write-probe.py fsync FILE N SEED
      Creates FILE (64 KiB), then N times: a 4 KiB pwrite at a random 4 KiB-aligned offset and an
      fsync. Prints the fsync latencies' "p50_ms p99_ms".
  bench-write-probe.py many DIR N MIB SEED
      Opens N new files in DIR and writes MIB MiB into each, 128 KiB to each file in turn (all N
      open for writing at once, as an app copying many files in parallel), then closes them all
      and checks each file's size. Prints the seconds it took.
"""
import io
import os
import random
import statistics
import sys
import tarfile
import time


def maketar(out, files, seed):
    rng = random.Random(seed)
    words = b"fn let mut impl struct match return use pub self where async await loop if else".split()
    with tarfile.open(out + ".part", "w", format=tarfile.PAX_FORMAT) as tar:
        folders = ["src"]
        for i in range(files):
            if i % 20 == 0:
                parent = rng.choice(folders)
                folder = parent + "/m%04d" % (i // 20) if parent.count("/") < 3 else "src/m%04d" % (i // 20)
                folders.append(folder)
            r = rng.random()
            if r < 0.03:
                size = 0
            elif r < 0.98:
                size = min(int(rng.lognormvariate(8.3, 1.0)), 100_000)
            else:
                size = rng.randrange(100_000, 1 << 20)
            if rng.random() < 0.1:
                data = rng.randbytes(size)
                name = "%s/blob%05d.bin" % (folder, i)
            else:
                line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
                data = (line * (size // len(line) + 1))[:size]
                name = "%s/file%05d.rs" % (folder, i)
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 1_700_000_000 + i, 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(out + ".part", out)


def fsync_probe(path, n, seed):
    rng = random.Random(seed)
    size = 64 * 1024
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, rng.randbytes(size))
    os.fsync(fd)
    lat = []
    for _ in range(n):
        os.pwrite(fd, rng.randbytes(4096), rng.randrange(size // 4096) * 4096)
        t0 = time.perf_counter()
        os.fsync(fd)
        lat.append((time.perf_counter() - t0) * 1000)
    os.close(fd)
    lat.sort()
    print("%.4f %.4f" % (statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))]))


def many(folder, n, mib, seed):
    chunk = 128 * 1024
    data = random.Random(seed).randbytes(chunk * 8)
    t0 = time.perf_counter()
    fds = [os.open(os.path.join(folder, f"f{i:03}.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
           for i in range(n)]
    for k in range(mib * 1024 * 1024 // chunk):
        for i, fd in enumerate(fds):
            off = ((k + i) % 8) * chunk
            os.write(fd, data[off:off + chunk])
    for fd in fds:
        os.close(fd)
    took = time.perf_counter() - t0
    for i in range(n):
        size = os.stat(os.path.join(folder, f"f{i:03}.bin")).st_size
        if size != mib << 20:
            sys.exit(f"f{i:03}.bin: {size} bytes, not {mib << 20}")
    print("%.3f" % took)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "maketar":
        maketar(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "fsync":
        fsync_probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "many":
        many(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
