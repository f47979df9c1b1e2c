"""One run of a scenario on real Go: the built interpreter (gosrc/main.go) as a child process,
watched from OUTSIDE so that the watcher adds no M and no timer to the program it measures.

The sampler polls /proc/PID/status (Threads: the peak) and, once the program has said where
runtime.sched is, reads sched.mnext/nmfreed through /proc/PID/mem, so a run that dies (thread
exhaustion) still has its last counts (marked "sampled"). A run that reaches the end of main writes
its exact counts itself (GMPSIM-GO-RESULT), checked against /proc before being trusted.
"""
from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import tempfile
import time

SCHED_MARK = "GMPSIM-GO-SCHED "
RESULT_MARK = "GMPSIM-GO-RESULT "
POLL_S = 0.0005
#: Go 1.19 can hang after its fatal error: with GODEBUG=schedtrace, dopanic_m calls schedtrace(true),
#: which takes sched.lock, already held where checkmcount throws "thread exhaustion". A run still
#: alive this long after its "fatal error:" line is killed and counted as that fatal error.
HUNG_AFTER_FATAL_S = 1.0


def scenario_json(sc) -> dict:
    """What the Go program reads: the compiled programs (protocol.ops) and maxmcount."""
    return {"maxmcount": sc.maxmcount, "programs": sc.programs}


def _threads(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"\nState:\tZ" in data:
        return None  # exited, not yet reaped
    at = data.find(b"\nThreads:")
    return int(data[at + 9:data.index(b"\n", at + 1)]) if at >= 0 else None


def _sched_where(err_path: str) -> dict | None:
    """The program's first line of its own; schedtrace may print a SCHED line before main runs."""
    try:
        with open(err_path, "r", errors="replace") as f:
            head = f.read(64 * 1024)
    except OSError:
        return None
    at = head.find(SCHED_MARK)
    end = head.find("\n", at)
    if at < 0 or end < 0:
        return None
    return json.loads(head[at + len(SCHED_MARK):end])


def _read_counts(mem_fd: int, where: dict) -> tuple[int, int] | None:
    try:
        mnext = os.pread(mem_fd, 8, where["sched"] + where["mnext"])
        nmfreed = os.pread(mem_fd, 8, where["sched"] + where["nmfreed"])
    except OSError:
        return None
    if len(mnext) != 8 or len(nmfreed) != 8:
        return None
    return struct.unpack("<q", mnext)[0], struct.unpack("<q", nmfreed)[0]


def parse_stderr(text: str) -> dict:
    """The program's stderr: its result line, schedtrace's SCHED lines, and Go's fatal lines
    (the `runtime: ...` lines just before `fatal error: ...`, kept verbatim). The program's own
    marker lines may land inside a SCHED line (the runtime writes one in many small writes):
    cut out, they leave the SCHED line whole."""
    text = re.sub(re.escape(SCHED_MARK) + r"\{[^\n]*?\}\n", "", text)
    lines = text.splitlines()
    result = None
    sched_lines = [ln for ln in lines if ln.startswith("SCHED ")]
    fatal_message, fatal_lines = None, []
    for i, ln in enumerate(lines):
        if ln.startswith(RESULT_MARK):
            result = json.loads(ln[len(RESULT_MARK):])
        elif ln.startswith("fatal error: ") and fatal_message is None:
            fatal_message = ln[len("fatal error: "):]
            j = i
            while j > 0 and lines[j - 1].startswith("runtime: "):
                j -= 1
            fatal_lines = lines[j:i + 1]
        elif ln.startswith("panic: ") and fatal_message is None:
            fatal_message, fatal_lines = ln, [ln]
    return {"result": result, "schedtrace": sched_lines, "fatal_message": fatal_message, "fatal_lines": fatal_lines}


def run_go(binary: str, sc, limit_s: float, err_path: str) -> dict:
    """Run the scenario once on real Go, its stderr kept in ``err_path``; returns the figures of that
    run."""
    with tempfile.TemporaryDirectory(prefix="gmpsim-compare-") as tmp:
        spec = os.path.join(tmp, "scenario.json")
        with open(spec, "w") as f:
            json.dump(scenario_json(sc), f)
        env = dict(os.environ, GOMAXPROCS=str(sc.gomaxprocs))
        env.pop("GODEBUG", None)
        if sc.schedtrace_ms > 0:
            env["GODEBUG"] = f"schedtrace={sc.schedtrace_ms}" + (",scheddetail=1" if sc.scheddetail else "")
        with open(err_path, "wb") as err:
            t0 = time.monotonic()
            child = subprocess.Popen([binary, spec], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=err, env=env, start_new_session=True)
        peak, last_threads, where, mem_fd, sampled = 0, None, None, -1, None
        aborted, hung, fatal_seen, next_look = False, False, None, 0.0
        try:
            while child.poll() is None:
                n = _threads(child.pid)
                if n is not None:
                    peak, last_threads = max(peak, n), n
                if where is None:
                    where = _sched_where(err_path)
                    if where is not None and where.get("sched"):
                        try:
                            mem_fd = os.open(f"/proc/{child.pid}/mem", os.O_RDONLY)
                        except OSError:
                            mem_fd = -1
                if mem_fd >= 0:
                    counts = _read_counts(mem_fd, where)
                    if counts is not None:
                        sampled = counts
                now = time.monotonic()
                if fatal_seen is None and now >= next_look:
                    next_look = now + 0.05
                    with open(err_path, "rb") as f:
                        if b"\nfatal error: " in f.read():
                            fatal_seen = now
                if fatal_seen is not None and now - fatal_seen > HUNG_AFTER_FATAL_S:
                    hung = True
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                    break
                if now - t0 > limit_s:
                    aborted = True
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                    break
                time.sleep(POLL_S)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            if mem_fd >= 0:
                os.close(mem_fd)
        wall_s = time.monotonic() - t0
        with open(err_path, "r", errors="replace") as f:
            parsed = parse_stderr(f.read())
    res = parsed["result"]
    if aborted:
        outcome = "aborted"
    elif parsed["fatal_message"] is not None:
        outcome = "fatal"
    elif child.returncode == 0 and res is not None:
        outcome = "ok"
    else:
        outcome = "aborted"
    run = {"outcome": outcome, "fatal_message": parsed["fatal_message"], "fatal_lines": parsed["fatal_lines"],
           "exit_code": child.returncode, "peak_threads": peak, "wall_s": round(wall_s, 4),
           "schedtrace": parsed["schedtrace"], "stderr": err_path, "hung_after_fatal": hung}
    if res is not None:
        peak = max(peak, res["threads"])
        run.update(mnext=res["mnext"], nmfreed=res["nmfreed"], threads_end=res["threads"],
                   peak_threads=peak, threadcreate=res["threadcreate"], cgo=res["cgo"],
                   m0_wedged=res.get("m0_wedged", False),
                   counts="exact" if res["verified"] else "unverified")
    else:
        mnext, nmfreed = sampled if sampled is not None else (None, None)
        run.update(mnext=mnext, nmfreed=nmfreed, threads_end=last_threads, threadcreate=None,
                   cgo=bool(where and where.get("cgo")), m0_wedged=None,
                   counts="sampled" if sampled is not None else "none")
    return run
