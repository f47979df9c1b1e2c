"""What test_hostile*.py share: the `gmpsim` command line, a tiny run's --set options and a free
loopback port."""
from __future__ import annotations

import socket
import sys

GMPSIM = [sys.executable, "-m", "coordinator.cli"]
TINY = ["--set", 'programs.main.ops=[["run", 10]]', "--set", "timescale=10"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
