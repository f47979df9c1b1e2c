"""How the invariants' lines name the records (M3, P1, G7; nil for none) and their statuses (Go's names)."""
from __future__ import annotations

_STATUS_G = {0: "_Gidle", 1: "_Grunnable", 2: "_Grunning", 3: "_Gsyscall", 4: "_Gwaiting", 6: "_Gdead"}
_STATUS_P = {0: "_Pidle", 1: "_Prunning", 2: "_Psyscall", 3: "_Pgcstop", 4: "_Pdead"}


def _pn(p) -> str:
    return "nil" if p is None else f"P{p.id}"


def _mn(mp) -> str:
    return "nil" if mp is None else f"M{mp.id}"


def _gn(gp) -> str:
    return "nil" if gp is None else f"G{gp.goid}"
