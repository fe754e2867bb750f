"""pack() releases the GIL while it waits for input.

Two threads each pack() from a named pipe while the main thread feeds both pipes in alternating
1 MiB chunks. Opening a fifo blocks until both ends are open, and each write blocks until the
packer has drained the pipe, so the three threads must run at the same time: if pack() held the
GIL while blocked in open() or read(), the main thread could never open or feed the pipes and
everything would stop.

Such a deadlock would freeze the whole interpreter (the main thread waits for the GIL, so no
timeout in it could fire), so the scenario runs in a child interpreter and this test gives it a
deadline: a hang is then a plain test failure, not a frozen suite. No sleeps, no timing
assertions: only "finished before a generous deadline" and "the bytes are right".
"""

import io
import os
import subprocess
import sys
import textwrap

import pytest

import qeltrix

BS = 1 << 16
MIB = 1 << 20
PER_PIPE = 8 * MIB
DEADLINE = 120  # seconds; the child gives up on its threads a little earlier

CHILD = textwrap.dedent("""
    import os, random, sys, threading
    import qeltrix

    tmp, per_pipe, mib, bs, join_timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \\
        int(sys.argv[4]), float(sys.argv[5])
    key = qeltrix.Key.from_file(os.path.join(tmp, "gil.key"))
    names = ["a", "b"]
    fifos = {n: os.path.join(tmp, n + ".fifo") for n in names}
    for path in fifos.values():
        os.mkfifo(path)
    data = {n: random.Random(i).randbytes(per_pipe) for i, n in enumerate(names)}
    results, errors = {}, {}

    def packer(name):
        try:
            results[name] = qeltrix.pack(fifos[name], os.path.join(tmp, name + ".qltx"), key,
                                         block_size=bs)
        except BaseException as e:  # reported by the main thread
            errors[name] = repr(e)
            # If pack() failed before opening its fifo, the main thread is blocked opening the
            # other end: a passing reader lets it through (its writes then fail with EPIPE).
            try:
                os.close(os.open(fifos[name], os.O_RDONLY | os.O_NONBLOCK))
            except OSError:
                pass

    threads = {n: threading.Thread(target=packer, args=(n,), daemon=True) for n in names}
    for t in threads.values():
        t.start()
    # Blocks until packer a has opened its end, then until packer b has: both must be running.
    fds = {n: os.open(fifos[n], os.O_WRONLY) for n in names}
    try:
        for start in range(0, per_pipe, mib):
            for n in names:
                view = memoryview(data[n])[start:start + mib]
                while view:
                    view = view[os.write(fds[n], view):]
    except BrokenPipeError:  # a packer stopped reading: its error is reported below
        errors.setdefault("feeder", "a fifo's reader went away before all was written")
    for fd in fds.values():
        os.close(fd)
    for t in threads.values():
        t.join(join_timeout)
    alive = [n for n, t in threads.items() if t.is_alive()]
    if alive or errors:
        print("FAILED: threads still running:", alive, "errors:", errors, flush=True)
        os._exit(2)
    for n in names:
        assert results[n].original_size == per_pipe, (n, results[n].original_size)
        with open(os.path.join(tmp, n + ".plain"), "wb") as f:
            f.write(data[n])
    print("OK", flush=True)
""")


def test_pack_from_fifos_releases_the_gil(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes need a POSIX system")
    key = qeltrix.Key.generate()
    key.save(tmp_path / "gil.key")
    script = tmp_path / "gil_child.py"
    script.write_text(CHILD)
    # The child imports the same qeltrix as this process, wherever it was found.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(qeltrix.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    try:
        p = subprocess.run(
            [sys.executable, str(script), str(tmp_path), str(PER_PIPE), str(MIB), str(BS),
             str(DEADLINE - 20)],
            capture_output=True, timeout=DEADLINE, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"two pack() calls reading fifos did not finish in {DEADLINE} s: pack() seems to "
            f"hold the GIL while it blocks on its input (open or read), so the thread feeding "
            f"the fifos could not run (or a pack() stopped reading its fifo without returning). "
            f"Child output: {e.stdout!r} {e.stderr!r}")
    out = p.stdout.decode(errors="replace")
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0 and out.strip().endswith("OK"), (
        f"child exited {p.returncode}\nstdout: {out}\nstderr: {err}")

    # Both containers hold exactly what was written into their fifo.
    for name in ("a", "b"):
        want = (tmp_path / f"{name}.plain").read_bytes()
        assert len(want) == PER_PIPE
        sink = io.BytesIO()
        assert qeltrix.unpack(tmp_path / f"{name}.qltx", sink, key) == PER_PIPE
        assert sink.getvalue() == want
        assert qeltrix.info(tmp_path / f"{name}.qltx")["blocks"] == PER_PIPE // BS
