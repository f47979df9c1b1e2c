"""What each gmpsim process calls itself in ps and top (setproctitle), written once: the processes
set these, and the bench and the tests find Ms, spares and agents by them."""
from __future__ import annotations

COORDINATOR = "gmpsim coordinator"
M_PREFIX = "gmpsim M"  # + the M's id: `gmpsim M7`


def m_title(m: int) -> str:
    return f"{M_PREFIX}{m}"


def agent_title(host: str) -> str:
    return f"gmpsim agent {host}"


def forker_title(host: str) -> str:
    return f"gmpsim forker {host}"


def spare_title(host: str) -> str:
    return f"gmpsim spare {host}"


def is_m_title(title: str) -> bool:
    """`gmpsim M<id>`: an M, not a spare, the forker or the agent."""
    return title.startswith(M_PREFIX) and title[len(M_PREFIX):].isdigit()
