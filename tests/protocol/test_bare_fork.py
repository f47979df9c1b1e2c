"""protocol/bare_fork.py in real processes: a fork with one thread skips Python's at-fork hooks, and
with more threads `fork` falls back to os.fork, which runs them."""
from __future__ import annotations

import subprocess
import sys

from tests.shell.robust_run import ROOT

pytestmark = __import__("pytest").mark.processes

# The child reports whether an after_in_child hook ran, and its own pid as the parent saw it.
CHILD = """
import os, sys, threading, time
from protocol.bare_fork import bare_fork, fork, one_thread
ran = []
os.register_at_fork(after_in_child=lambda: ran.append(1))
def child_says(do_fork):
    r, w = os.pipe()
    pid = do_fork()
    if pid == 0:
        os.write(w, f"{bool(ran)} {os.getpid()}".encode())
        os._exit(0)
    os.close(w)
    said = os.read(r, 100).decode()
    assert os.waitpid(pid, 0)[1] == 0
    hook, child_pid = said.split()
    assert int(child_pid) == pid, (said, pid)
    return hook
print("one thread", one_thread())
print("bare", child_says(bare_fork))
print("fork", child_says(fork))
stop = threading.Event()
t = threading.Thread(target=stop.wait); t.start()
print("two threads", one_thread())
print("fork", child_says(fork))
stop.set(); t.join()
"""


def test_bare_fork_skips_the_at_fork_hooks_and_fork_uses_os_fork_once_there_are_threads():
    r = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["one thread True", "bare False", "fork False",
                                     "two threads False", "fork True"], r.stdout
