"""report.json (schema gmpsim.report/1) and the summary printed at the end of a run."""
from __future__ import annotations

import json

from coordinator.observe.latency import Latency
from coordinator.runtime.mdead import lost_goroutines

FORKFAIL_CAUSES = ("fault", "clone", "machine")  # newosproc failed: injected, the real fork, the guard

SCHEMA = "gmpsim.report/1"


def build_report(sc, res, out, leaks: dict, wall_s: float) -> dict:
    """res: the run's shell.result.RunResult (None: the run never got a coordinator)."""
    sched = res.sched if res is not None else None
    st = sched.stats if sched is not None else {}
    rec = res.rec if res is not None else None
    created = st.get("goroutines_created", 0)
    completed = st.get("goroutines_completed", 0)
    # A fatal run ends every goroutine with the process, as Go's does: none is lost then.
    lost = lost_goroutines(sched) if sched is not None and out.outcome != "fatal" else []
    by_caller = {k.split(".", 1)[1]: v for k, v in sorted(st.items()) if k.startswith("startm.")}
    return {
        "schema": SCHEMA,
        "scenario": sc.name,
        "source": sc.source,
        "seed": sc.seed,
        "gomaxprocs": sc.gomaxprocs,
        "timescale": sc.timescale,
        "expect": sc.expect,
        "outcome": out.outcome,
        "reason": out.reason,
        "fatal": {"message": out.fatal_message, "lines": out.fatal_lines} if out.outcome == "fatal" else None,
        "goroutines": {"created": created, "completed": completed, "lost": len(lost), "lost_ids": lost[:100],
                       "requeued": st.get("goroutines_requeued", 0),
                       # the runtime's own (forcegchelper, bgsweep, bgscavenge; a cgo binary's
                       # extra M's G): Go's sched.ngsys, never in created/completed, never lost
                       "system": st.get("goroutines_system", 0)},
        "ms": {
            "created": st.get("ms_created", 0),
            # Go's sched.mnext (Ms ever created or reserved: m0, sysmon, the template thread included)
            # and sched.nmfreed (Ms exited, a wedged m0 included); allm: Ms still in allm at the end.
            "mnext": sched.mnext if sched is not None else 0,
            "nmfreed": sched.nmfreed if sched is not None else 0,
            "allm": len(sched.allm) if sched is not None else 0,
            "peak": res.peak_mcount if res is not None else 0,
            "reused": st.get("mget", 0),
            "via_template": st.get("via_template", 0),
            "exited": st.get("ms_exited", 0),
            "stacks_freed": st.get("stacks_freed", 0),
            "died": st.get("ms_died", 0),
            "per_host": _per_host(rec),
            "reforked": st.get("reforked", 0),
            # newosproc's clone failures (Go: fatal), by cause: fault / clone (real) / machine (guard)
            "newosproc_failed": {"total": st.get("newosproc_failed", 0),
                                 **{c: st.get(f"newosproc_failed.{c}", 0) for c in FORKFAIL_CAUSES}},
        },
        "startm": {"calls": st.get("startm", 0), "by_caller": by_caller, "newm": st.get("newm", 0),
                   "mget": st.get("mget", 0)},
        "sysmon": {"retake": st.get("retake", 0), "preempt": st.get("preempt", 0)},
        "latency_us": {
            "newm_to_mstart": rec.newm_to_mstart.summary() if rec else Latency().summary(),
            "newm_to_child": rec.newm_to_child.summary() if rec else Latency().summary(),
            "child_to_hello": rec.child_to_hello.summary() if rec else Latency().summary(),
            "notewakeup_to_running": rec.notewakeup_to_running.summary() if rec else Latency().summary(),
            "notesleep_to_wake": rec.notesleep_to_wake.summary() if rec else Latency().summary(),
        },
        "protocol": {"events": rec.events if rec else 0, "bad_frames": rec.bad_frames if rec else 0,
                     "bad_events": rec.bad_events if rec else 0, "refused": rec.refused if rec else 0,
                     "hello_missing": rec.hello_missing if rec else 0,
                     "resent": res.resent if res else 0,
                     "duplicates": res.duplicates if res else 0},
        "agent_restarts": rec.agent_restarts if rec else [],  # host agents restarted mid-run
        "faults": res.faults if res else [],
        "faults_summary": res.faults_summary if res else {},
        "recovery_policy": "a dead or fenced M's goroutine is requeued on the global run queue and its "
                           "P handed off (gmpsim's policy; Go has no such path)",
        "invariants": {"checked": res.invariants["checked"] if res else 0,
                       "violations": res.invariants["violations"][:20] if res else []},
        "deaths": rec.deaths if rec else [],
        # + unknown_hosts, when some host could not say what it left (cut off, its agent killed)
        "leaks": {"processes": leaks["processes"], "shm_segments": leaks["shm_segments"],
                  **({"unknown_hosts": leaks["unknown_hosts"]} if leaks.get("unknown_hosts") else {})},
        "threads": sorted(rec.threads.values(), key=lambda t: t["m"]) if rec else [],
        "wall_s": round(wall_s, 3),
        "run_s": round(res.run_s, 3) if res is not None else 0.0,
        "busy_s": round(res.run_s - res.idle_s, 3) if res is not None else 0.0,
    }


def _per_host(rec) -> dict:
    """Ms forked on each host (and how many of them are still alive at the end)."""
    out: dict[str, dict] = {}
    if rec is None:
        return out
    for t in rec.threads.values():
        h = out.setdefault(t.get("host", "?"), {"created": 0, "died": 0})
        h["created"] += 1
        h["died"] += 1 if "died" in t else 0
    return dict(sorted(out.items()))


def write_report(report: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def summary(report: dict, out_dir: str) -> str:
    """The short table printed at the end of `gmpsim run`."""
    ms, g, lat = report["ms"], report["goroutines"], report["latency_us"]
    sm = report["startm"]
    callers = ", ".join(f"{k} {v}" for k, v in sm["by_caller"].items()) or "-"

    def p(h):
        return "-" if not h["n"] else (f"p50 {h['p50']:.0f}  p90 {h['p90']:.0f}  p99 {h['p99']:.0f}  "
                                       f"p99.9 {h['p99_9']:.0f}  max {h['max']:.0f}  (n={h['n']})")

    def p50(h):
        return "-" if not h["n"] else f"{h['p50']:.0f}"
    rows = [
        ("scenario", f"{report['scenario']} (seed {report['seed']}, gomaxprocs {report['gomaxprocs']}, "
                     f"timescale {report['timescale']:g})"),
        ("outcome", report["outcome"] + (f": {report['fatal']['message']}" if report["fatal"] else "")
         + (f" ({report['reason']})" if report["outcome"] == "aborted" else "")),
        ("expected", report["expect"]),
        ("goroutines", f"created {g['created']}  completed {g['completed']}  lost {g['lost']}"),
        ("Ms", f"created {ms['created']}  peak {ms['peak']}  reused {ms['reused']}  via template "
               f"{ms['via_template']}  exited {ms['exited']}  stacks freed {ms['stacks_freed']}"),
        *([("Ms per host", "  ".join(f"{h} {v['created']}" for h, v in ms["per_host"].items()))]
          if len(ms["per_host"]) > 1 else []),
        ("startm", f"{sm['calls']} calls ({callers}); newm {sm['newm']}, mget {sm['mget']}"),
        ("newm→mstart µs", p(lat["newm_to_mstart"])),
        ("  its two parts", f"p50 {p50(lat['newm_to_child'])} µs to the child's mstart, "
                            f"p50 {p50(lat['child_to_hello'])} µs from there to its hello"),
        ("wake→running µs", p(lat["notewakeup_to_running"])),
        ("leaks", f"processes {report['leaks']['processes']}  shm {report['leaks']['shm_segments']}"
                  + (f"  unknown on {', '.join(report['leaks']['unknown_hosts'])}"
                     if report["leaks"].get("unknown_hosts") else "")),
        ("wall", f"{report['wall_s']:.2f} s"),
        ("output", out_dir),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
