"""Ctrl-C stops a pack that is still reading its input, and leaves nothing at its output.

The pack runs in a child interpreter's main thread (Python delivers SIGINT there), reading a
named pipe that a thread of the child feeds without end. The parent sends SIGINT once the child
says the pack has taken its first MiB; the pack must raise KeyboardInterrupt (it lets Python
handle signals every 4 MiB of input) and leave no file at its destination. A pack that never
looked at signals would read forever: the deadline turns that into a failure, not a hang.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import qeltrix

DEADLINE = 60

CHILD = textwrap.dedent("""
    import os, sys, threading
    import qeltrix

    tmp = sys.argv[1]
    fifo, dst = os.path.join(tmp, "in.fifo"), os.path.join(tmp, "out.qltx")
    os.mkfifo(fifo)
    chunk = os.urandom(1 << 20)

    def feed():
        with open(fifo, "wb") as f:
            try:
                while True:
                    f.write(chunk)
            except BrokenPipeError:
                pass

    threading.Thread(target=feed, daemon=True).start()
    announced = []

    def progress(done, total):
        if not announced:
            announced.append(done)
            print("reading", flush=True)

    try:
        qeltrix.pack(fifo, dst, qeltrix.Key.generate(), block_size=1 << 16, progress_cb=progress)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", "left" if os.path.exists(dst) else "nothing", flush=True)
""")


def test_ctrl_c_stops_a_pack_and_leaves_nothing(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(qeltrix.__file__)))
    env = dict(os.environ, PYTHONPATH=package_root)
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, text=True)
    # A child stuck before its first MiB would block readline: the deadline kills it.
    deadline = threading.Timer(DEADLINE, child.kill)
    deadline.start()
    try:
        first = child.stdout.readline()
        assert first.strip() == "reading", (first, child.stderr.read())
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=DEADLINE)
    finally:
        deadline.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out.strip() == "interrupted nothing", (out, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.py", "in.fifo"]
