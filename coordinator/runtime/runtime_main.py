"""The runtime's own goroutine programs (proc.go main, forcegchelper; mgcsweep.go bgsweep;
mgcscavenge.go bgscavenge), written in the op vocabulary of protocol/ops.py plus its RUNTIME_OPS.

Goroutine 1 runs "runtime.main": Go 1.16's runtime.main up to main.main (lockOSThread; the runtime's
init starts forcegchelper; gcenable starts bgsweep and bgscavenge and receives twice from their
channel; a cgo binary starts the template thread and makes one cgo call; unlockOSThread), then the
scenario's "main" program, relocated after it. Its first lines (mainStarted, newm(sysmon)) run in
schedinit. Program names with a dot cannot collide with a scenario's.
"""
from __future__ import annotations

from coordinator.runtime.sched import waitReasonForceGCIdle, waitReasonGCScavengeWait, waitReasonGCSweepWait
from protocol.ops import relocate

GCENABLE_C = "gcenable.c"
#: the runtime's channels and their capacity: gcenable's `c := make(chan int, 2)`
RUNTIME_CHANS = {GCENABLE_C: 2}

RUNTIME_PROGRAMS = {
    # proc.go: func init() { go forcegchelper() }; it parks at once (sysmon would resume it).
    "runtime.forcegchelper": [["gopark", waitReasonForceGCIdle]],
    # mgcsweep.go bgsweep: c <- 1, then goparkunlock(&sweep.lock, waitReasonGCSweepWait)
    "runtime.bgsweep": [["chansend", GCENABLE_C], ["gopark", waitReasonGCSweepWait]],
    # mgcscavenge.go bgscavenge: c <- 1, then goparkunlock(&scavenge.lock, waitReasonGCScavengeWait)
    "runtime.bgscavenge": [["chansend", GCENABLE_C], ["gopark", waitReasonGCScavengeWait]],
}


def runtime_main_prelude(iscgo: bool) -> list:
    """proc.go main from lockOSThread to unlockOSThread (just before fn := main_main; fn())."""
    code = [
        ["lockOSThread"],
        ["go", "runtime.forcegchelper", 1],  # doInit(&runtime_inittask)
        ["go", "runtime.bgsweep", 1],  # gcenable()
        ["go", "runtime.bgscavenge", 1],
        ["chanrecv", GCENABLE_C],
        ["chanrecv", GCENABLE_C],
    ]
    if iscgo:
        code += [["startTemplateThread"],
                 ["cgo", 0]]  # cgocall(_cgo_notify_runtime_init_done, nil)
    code.append(["unlockOSThread"])
    return code


def with_runtime(programs: dict[str, list], iscgo: bool) -> dict[str, list]:
    """The scenario's compiled programs plus the runtime's: what the Ms run."""
    prelude = runtime_main_prelude(iscgo)
    out = dict(programs)
    out.update({name: [list(op) for op in code] for name, code in RUNTIME_PROGRAMS.items()})
    out["runtime.main"] = prelude + relocate(programs["main"], len(prelude))
    return out
