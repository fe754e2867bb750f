#!/usr/bin/env python3
"""Probe of scripts/bench-watch.sh: makes the data, runs one measurement, prints the report.

  data DATA --small-n N --small-kib K
      DATA/small/fNNNN.bin (N files of K KiB), deterministic pseudorandom bytes (Python's
      Mersenne Twister from a fixed seed). The big file (--big-mib M) is made in memory by the
      measurements themselves (big_chunks), never kept: disk space is scarce on shared machines.
  watch-small | watch-big   --qeltrix Q --recipient R --data DATA --work DIR --settle MS [...]
      A fresh `qeltrix watch DIR/inbox --vault DIR/vault --json`; once it has `scanned`, the
      writer writes the files into the inbox (small: one every --pace-ms, 0 = back to back; big:
      the big file, written from memory) and notes each close time (time.time(), CLOCK_REALTIME, the clock of
      the watcher's `time` field). Latency of a file = the `time` of its `packed` event (emitted
      after the container's commit: fsync, rename, fsync of the folder) - its close time. Every
      container is checked on disk (size = the event's `stored`). Prints one JSON object.
  cp-small | cp-big   --data DATA --work DIR
      The floor: `cp SRC DIR/plain/NAME` of the same files, one process per file, each timed
      alone (spawn included), then `sync DST` (fsync of the copy) timed too; cp-small also copies
      the files in-process (no spawn), with and without fsync. Prints JSON.
  pack-big   --qeltrix Q --recipient R --work DIR
      `qeltrix pack` of the big file just written, timed: the watcher's work without the watcher.
  --dump FILE (watch-*)   per file: name, close time, latency, appended to FILE.
  report RESULTS.tsv --settle MS ...
      Medians over rounds of the numbers in RESULTS.tsv (round, measure, key, value), the table.
"""
import argparse
import datetime
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

SEED = 20261130


def die(msg):
    print(f"bench-watch-probe.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ------------------------------------------------------------------------------------------ data
def make_data(a):
    small = os.path.join(a.data, "small")
    os.makedirs(small, exist_ok=True)
    rnd = random.Random(SEED)
    size = a.small_kib * 1024
    for i in range(a.small_n):
        with open(os.path.join(small, f"f{i:04d}.bin"), "wb") as f:
            f.write(rnd.randbytes(size))


def big_chunks(big_mib):
    """The big file, 1 MiB at a time, made in memory (disk space is what a shared machine lacks):
    rotations of a 64 MiB pseudorandom pool; each pass over the pool starts at another offset (a
    prime step, not a multiple of 1 MiB), so no 1 MiB block repeats and none compresses."""
    mib = 1 << 20
    pool_mib = min(64, big_mib)
    pool = random.Random(SEED + 1).randbytes(pool_mib * mib)
    doubled = memoryview(pool + pool)
    for i in range(big_mib):
        rot = (i // pool_mib) * 1_048_583 % (pool_mib * mib)
        off = (rot + (i % pool_mib) * mib) % (pool_mib * mib)
        yield doubled[off:off + mib]


def write_big(a, dst):
    with open(dst, "wb") as d:
        for chunk in big_chunks(a.big_mib):
            d.write(chunk)


# ------------------------------------------------------------------------------------- the watcher
def parse_time(s):
    dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


class Watcher:
    """`qeltrix watch --json` in the background; its events gathered by a thread."""

    def __init__(self, a, inbox, vault):
        cmd = [a.qeltrix, "watch", inbox, "--vault", vault, "--recipient", a.recipient,
               "--settle", str(a.settle), "--json"]
        if a.jobs:
            cmd += ["--jobs", str(a.jobs)]
        self.err_path = os.path.join(a.work, "watch.stderr")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err)
        self.cond = threading.Condition()
        self.packed = {}  # path -> (event time, time the line was read, container, stored)
        self.kinds = []
        self.failed = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            got = time.time()
            try:
                e = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.kinds.append(e.get("event"))
                if e.get("event") == "packed":
                    self.packed[e["path"]] = (parse_time(e["time"]), got, e["container"], e["stored"])
                elif e.get("event") == "failed":
                    self.failed.append(e)
                self.cond.notify_all()
        with self.cond:
            self.kinds.append(None)  # end of output
            self.cond.notify_all()

    def wait(self, pred, timeout, what):
        end = time.monotonic() + timeout
        with self.cond:
            while not pred():
                if self.failed:
                    self.proc.kill()
                    die(f"the watcher reported a failure: {self.failed[0]}")
                if None in self.kinds:
                    die(f"the watcher ended while waiting for {what}:\n{self.stderr()}")
                left = end - time.monotonic()
                if left <= 0:
                    self.proc.kill()
                    die(f"timed out after {timeout} s waiting for {what}:\n{self.stderr()}")
                self.cond.wait(left)

    def stderr(self):
        self.err.flush()
        with open(self.err_path, "rb") as f:
            return f.read()[-4000:].decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            die("the watcher did not stop within 60 s of SIGTERM")
        self.thread.join(timeout=10)
        self.err.close()
        # 128 + SIGTERM is how a watcher stopped by SIGTERM exits.
        if rc not in (0, 128 + signal.SIGTERM):
            die(f"the watcher exited with {rc}:\n{self.stderr()}")


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    k = max(1, -(-len(v) * p // 100))  # ceil(n * p / 100)
    return v[int(k) - 1]


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def watch_run(a, names, write):
    """Start a watcher on a fresh inbox and vault, write NAMES with WRITE(name, dst) (which
    returns its close time), wait for every container, return the latencies in ms."""
    inbox, vault = os.path.join(a.work, "inbox"), os.path.join(a.work, "vault")
    fresh(inbox)
    fresh(vault)
    w = Watcher(a, inbox, vault)
    try:
        w.wait(lambda: "scanned" in w.kinds, 60, "the first scan")
        closed = {}
        for i, name in enumerate(names):
            closed[name] = write(i, name, os.path.join(inbox, name))
        w.wait(lambda: all(n in w.packed for n in names), a.timeout, f"{len(names)} packed event(s)")
        w.stop()
        lat, lag = [], []
        for n in names:
            t_event, t_read, container, stored = w.packed[n]
            st = os.stat(container)
            if st.st_size != stored:
                die(f"{container}: {st.st_size} bytes on disk, the packed event said {stored}")
            if container != os.path.join(vault, n + ".qltx"):
                die(f"{n} was packed to {container}")
            lat.append((t_event - closed[n]) * 1000)
            lag.append((t_read - t_event) * 1000)
    finally:
        # Whatever ended the run (a failure, an exception, ^C): no watcher is left behind, and
        # the space is given back.
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
        shutil.rmtree(inbox, ignore_errors=True)
        shutil.rmtree(vault, ignore_errors=True)
    if a.dump:
        # Per file: close time (s, since the first close), latency (ms); for looking at the tail.
        t0 = min(closed.values())
        with open(a.dump, "a") as f:
            for n in names:
                f.write(f"{n}\t{closed[n] - t0:.4f}\t{(w.packed[n][0] - closed[n]) * 1000:.1f}\n")
    if len(w.packed) != len(names):
        die(f"{len(w.packed)} packed events for {len(names)} files")
    last = max(w.packed[n][0] for n in names)
    return {
        "n": len(names),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": max(lat),
        "min_ms": min(lat),
        "mean_ms": statistics.fmean(lat),
        # first close to last packed: the whole batch
        "drain_s": last - min(closed.values()),
        # the event's time is truncated to the millisecond; how much later the line was read
        "read_lag_max_ms": max(lag),
    }


def watch_small(a):
    src = os.path.join(a.data, "small")
    names = sorted(os.listdir(src))
    blobs = {}
    for n in names:
        with open(os.path.join(src, n), "rb") as f:
            blobs[n] = f.read()
    start = time.monotonic()

    def write(i, name, dst):
        if a.pace_ms:
            # One file every pace_ms, on a fixed schedule (not drifting with the write time).
            delay = start + i * a.pace_ms / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        with open(dst, "wb") as f:
            f.write(blobs[name])
        return time.time()

    r = watch_run(a, names, write)
    r["pace_ms"] = a.pace_ms
    print(json.dumps(r))


def watch_big(a):
    def write(_i, _name, dst):
        write_big(a, dst)
        return time.time()

    r = watch_run(a, ["big.bin"], write)
    print(json.dumps({"ms": r["p50_ms"], "read_lag_max_ms": r["read_lag_max_ms"]}))


# --------------------------------------------------------------------------------------- the floor
def cp_files(a, pairs):
    plain = os.path.join(a.work, "plain")
    fresh(plain)
    cp, sync = [], []
    for src, name in pairs:
        dst = os.path.join(plain, name)
        t0 = time.perf_counter()
        subprocess.run(["cp", src, dst], check=True)
        t1 = time.perf_counter()
        subprocess.run(["sync", dst], check=True)
        t2 = time.perf_counter()
        if os.path.getsize(dst) != os.path.getsize(src):
            die(f"{dst}: short copy")
        cp.append((t1 - t0) * 1000)
        sync.append((t2 - t0) * 1000)
    return cp, sync


def copy_in_process(a, pairs):
    """The copy without a process per file: open, read, write, close (then fsync), in Python."""
    plain = os.path.join(a.work, "plain-py")
    fresh(plain)
    copy, sync = [], []
    for src, name in pairs:
        dst = os.path.join(plain, name)
        t0 = time.perf_counter()
        with open(src, "rb") as s, open(dst, "wb") as d:
            d.write(s.read())
        t1 = time.perf_counter()
        fd = os.open(dst, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        t2 = time.perf_counter()
        copy.append((t1 - t0) * 1000)
        sync.append((t2 - t0) * 1000)
    return copy, sync


def cp_small(a):
    src = os.path.join(a.data, "small")
    names = sorted(os.listdir(src))
    pairs = [(os.path.join(src, n), n) for n in names]
    cp, sync = cp_files(a, pairs)
    py, pysync = copy_in_process(a, pairs)
    shutil.rmtree(os.path.join(a.work, "plain"), ignore_errors=True)
    shutil.rmtree(os.path.join(a.work, "plain-py"), ignore_errors=True)
    print(json.dumps({"p50_ms": pct(cp, 50), "p99_ms": pct(cp, 99),
                      "sync_p50_ms": pct(sync, 50), "sync_p99_ms": pct(sync, 99),
                      "total_s": sum(cp) / 1000,
                      "py_p50_ms": pct(py, 50), "py_p99_ms": pct(py, 99),
                      "pysync_p50_ms": pct(pysync, 50), "pysync_p99_ms": pct(pysync, 99)}))


def cp_big(a):
    # The source is written just before (not timed), as the watcher's inbox file is: both are in
    # the page cache, dirty, when read.
    src = os.path.join(a.work, "src")
    fresh(src)
    write_big(a, os.path.join(src, "big.bin"))
    try:
        cp, sync = cp_files(a, [(os.path.join(src, "big.bin"), "big.bin")])
    finally:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(os.path.join(a.work, "plain"), ignore_errors=True)
    print(json.dumps({"ms": cp[0], "sync_ms": sync[0]}))


def pack_big(a):
    """The watcher's work without the watcher: `qeltrix pack SRC DST.qltx --recipient R` of the
    big file written just before, timed from its close to pack's exit (pack syncs and renames
    its output as the watcher's commit does)."""
    src = os.path.join(a.work, "src")
    fresh(src)
    try:
        write_big(a, os.path.join(src, "big.bin"))
        t0 = time.perf_counter()
        subprocess.run([a.qeltrix, "-q", "pack", os.path.join(src, "big.bin"),
                        os.path.join(src, "big.bin.qltx"), "--recipient", a.recipient], check=True)
        t1 = time.perf_counter()
    finally:
        shutil.rmtree(src, ignore_errors=True)
    print(json.dumps({"ms": (t1 - t0) * 1000}))


# -------------------------------------------------------------------------------------- the report
def report(a):
    vals = {}
    rounds = set()
    with open(a.results) as f:
        for line in f:
            rnd, measure, key, value = line.split("\t")
            rounds.add(rnd)
            vals.setdefault((measure, key), []).append(float(value))

    def med(measure, key):
        v = vals.get((measure, key))
        if not v:
            die(f"no {measure} {key} in {a.results}")
        return statistics.median(v)

    s = a.settle

    def fmt(x):
        return f"{x:.0f}" if x >= 100 else f"{x:.3g}"

    n = len(rounds)
    print(f"| measure (median of {n} interleaved round(s)) | watch | cp (floor) | ratio |")
    print("|---|---|---|---|")

    def row(label, w, c):
        print(f"| {label} | {fmt(w)} | {fmt(c)} | {w / c:.0f}x |" if w / c >= 10
              else f"| {label} | {fmt(w)} | {fmt(c)} | {w / c:.2f}x |")

    paced = f"{a.small_n} x {a.small_kib} KiB, one every {a.pace_ms} ms"
    burst = f"{a.small_n} x {a.small_kib} KiB, back to back"
    for label, m in ((paced, "watch-paced"), (burst, "watch-burst")):
        for p in ("p50", "p99"):
            row(f"{label}: close to readable, {p} (ms)", med(m, f"{p}_ms"), med("cp-small", f"{p}_ms"))
            row(f"{label}: the same minus the {s} ms settle, {p} (ms)",
                med(m, f"{p}_ms") - s, med("cp-small", f"{p}_ms"))
    row(f"{burst}: first close to last readable / all cp's (s)",
        med("watch-burst", "drain_s"), med("cp-small", "total_s"))
    row(f"1 x {a.big_mib} MiB: close to readable (ms)", med("watch-big", "ms"), med("cp-big", "ms"))
    row(f"1 x {a.big_mib} MiB: the same minus the {s} ms settle (ms)",
        med("watch-big", "ms") - s, med("cp-big", "ms"))
    print()
    print("With the copy's fsync (`cp` then `sync FILE`; the watcher's commit fsyncs the container "
          "and its folder):")
    print()
    print("| measure | watch minus settle | cp + fsync | ratio |")
    print("|---|---|---|---|")
    for p in ("p50", "p99"):
        row(f"{paced}, {p} (ms)", med("watch-paced", f"{p}_ms") - s, med("cp-small", f"sync_{p}_ms"))
    row(f"1 x {a.big_mib} MiB (ms)", med("watch-big", "ms") - s, med("cp-big", "sync_ms"))
    print()
    print("The watcher against its own work done alone (`qeltrix pack SRC DST.qltx --recipient R` "
          "of the file written just before, timed from its close):")
    print()
    print("| measure | watch minus settle | qeltrix pack | ratio |")
    print("|---|---|---|---|")
    row(f"1 x {a.big_mib} MiB (ms)", med("watch-big", "ms") - s, med("pack-big", "ms"))
    print()
    print("Without a process per file (the small files copied by the probe itself: open, read, "
          "write, close; then fsync):")
    print()
    print("| measure | watch minus settle | copy | ratio | copy + fsync | ratio |")
    print("|---|---|---|---|---|---|")
    for p in ("p50", "p99"):
        w = med("watch-paced", f"{p}_ms") - s
        c, cs = med("cp-small", f"py_{p}_ms"), med("cp-small", f"pysync_{p}_ms")
        print(f"| {paced}, {p} (ms) | {fmt(w)} | {fmt(c)} | {w / c:.1f}x | {fmt(cs)} | {w / cs:.2f}x |")
    print()
    print("Per round (ms unless named):")
    for (m, k), v in sorted(vals.items()):
        if k in ("n", "pace_ms"):
            continue
        print(f"  {m:12} {k:16} " + "  ".join(f"{x:.1f}" for x in v))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["data", "watch-small", "watch-big", "cp-small", "cp-big",
                                   "pack-big", "report"])
    p.add_argument("results", nargs="?")
    p.add_argument("--data")
    p.add_argument("--work")
    p.add_argument("--qeltrix")
    p.add_argument("--recipient")
    p.add_argument("--settle", type=int, default=50)
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--pace-ms", type=int, default=0)
    p.add_argument("--timeout", type=int, default=600)
    p.add_argument("--dump", help="append per-file close times and latencies to this file")
    p.add_argument("--small-n", type=int, default=1000)
    p.add_argument("--small-kib", type=int, default=4)
    p.add_argument("--big-mib", type=int, default=1024)
    a = p.parse_args()
    {"data": make_data, "watch-small": watch_small, "watch-big": watch_big, "cp-small": cp_small,
     "cp-big": cp_big, "pack-big": pack_big, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
