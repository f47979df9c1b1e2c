"""What each gmpsim process calls itself in ps and top (setproctitle), written once: the processes
set these, and the bench and the tests find Ms, spares and agents by them."""
from __future__ import annotations

PREFIX = "gmpsim "
COORDINATOR = PREFIX + "coordinator"
M_PREFIX = PREFIX + "M"  # + the M's id: `gmpsim M7`
HOST_KINDS = ("agent", "forker", "spare")  # + the host: `gmpsim agent local`


def m_title(m: int) -> str:
    return f"{M_PREFIX}{m}"


def agent_title(host: str) -> str:
    return f"{PREFIX}agent {host}"


def forker_title(host: str) -> str:
    return f"{PREFIX}forker {host}"


def spare_title(host: str) -> str:
    return f"{PREFIX}spare {host}"


def kind(title: str) -> str:
    """What a process with this title is: "M", "coordinator", "agent", "forker", "spare", or "other"."""
    if is_m_title(title):
        return "M"
    if title == COORDINATOR:
        return "coordinator"
    word = title[len(PREFIX):].split(" ", 1)[0] if title.startswith(PREFIX) else ""
    return word if word in HOST_KINDS else "other"


def is_m_title(title: str) -> bool:
    """`gmpsim M<id>`: an M, not a spare, the forker or the agent."""
    return title.startswith(M_PREFIX) and title[len(M_PREFIX):].isdigit()
