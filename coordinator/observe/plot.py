"""threads.png: a run's Ms and Ps over Go time, drawn from its trace.json (`gmpsim plot RUN_DIR`).

Top: threads (mcount(), Go's threads=), idle Ms (nmidle) and spinning Ms (nmspinning). Bottom: Ps
in syscalls and idle Ps (npidle), against gomaxprocs. Injected faults are vertical dashed lines,
a fatal error a red one. matplotlib is an optional dependency (`pip install gmpsim[plot]`).
"""
from __future__ import annotations

import importlib.util
import json
import os

PNG = "threads.png"


class PlotError(Exception):
    """The run cannot be plotted (no trace.json, a bad one, or no matplotlib). One line."""


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def load_trace(run_dir: str) -> dict:
    path = os.path.join(run_dir, "trace.json")
    if not os.path.isfile(path):
        raise PlotError(f"{run_dir}: no trace.json")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise PlotError(f"{path}: not a trace: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise PlotError(f"{path}: not a trace: no traceEvents")
    return doc


def series(doc: dict) -> tuple[list[float], dict[str, list[float]]]:
    """The "sched" counters: times (Go ms) and each counter's values."""
    samples = sorted((e for e in doc["traceEvents"] if e.get("ph") == "C" and e.get("name") == "sched"),
                     key=lambda e: e["ts"])
    names = doc.get("otherData", {}).get("counters") or sorted({k for e in samples for k in e.get("args", {})})
    t = [e["ts"] / 1000 for e in samples]
    vals = {n: [e.get("args", {}).get(n, 0) for e in samples] for n in names}
    return t, vals


def marks(doc: dict) -> list[tuple[float, str]]:
    """Faults and fatal errors: (Go ms, label)."""
    out = []
    for e in doc["traceEvents"]:
        if e.get("ph") == "i" and (e.get("name", "").startswith("fault:") or e.get("name") == "fatal"):
            label = e["name"] if e["name"] != "fatal" else "fatal: " + str(e.get("args", {}).get("message", ""))
            out.append((e["ts"] / 1000, label))
    return sorted(out)


def plot_run(run_dir: str, out: str | None = None) -> str:
    """Draw run_dir/trace.json's counters into run_dir/threads.png (or `out`); returns the path."""
    doc = load_trace(run_dir)  # a bad run directory is the first thing to say
    if not have_matplotlib():
        raise PlotError("matplotlib is not installed (pip install 'gmpsim[plot]')")
    import matplotlib  # noqa: PLC0415 (the plot extra is optional, and heavy)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (the plot extra is optional, and heavy)

    other = doc.get("otherData", {})
    t, vals = series(doc)
    if not t:
        raise PlotError(f"{run_dir}: trace.json has no counters")
    end_ms = max(t[-1], other.get("end_us", 0) / 1000)
    t = t + [end_ms]  # hold the last values to the end of the run
    vals = {k: v + v[-1:] for k, v in vals.items()}

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5), height_ratios=(2.2, 1),
                                      constrained_layout=True)
    for key, label, color in (("threads", "threads (mcount)", "tab:blue"),
                              ("idlethreads", "idle Ms (nmidle)", "tab:green"),
                              ("spinningthreads", "spinning Ms (nmspinning)", "tab:orange")):
        if key in vals:
            top.step(t, vals[key], where="post", label=label, color=color, linewidth=1.6)
    top.set_ylabel("Ms")
    top.set_ylim(bottom=0)
    top.grid(True, alpha=0.3)
    for key, label, color in (("syscallprocs", "Ps in syscalls", "tab:red"),
                              ("idleprocs", "idle Ps (npidle)", "tab:gray")):
        if key in vals:
            bottom.step(t, vals[key], where="post", label=label, color=color, linewidth=1.6)
    gomaxprocs = other.get("gomaxprocs")
    if gomaxprocs:
        bottom.axhline(gomaxprocs, color="black", linestyle=":", linewidth=1, label=f"gomaxprocs={gomaxprocs}")
        bottom.set_ylim(0, gomaxprocs + 0.5)
        bottom.yaxis.get_major_locator().set_params(integer=True)
    bottom.set_ylabel("Ps")
    bottom.set_xlabel("Go time (ms)")
    bottom.grid(True, alpha=0.3)

    seen = set()
    fault_marks = marks(doc)
    for x, label in fault_marks:
        fatal = label.startswith("fatal")
        kind = "fatal error" if fatal else "fault"
        for ax in (top, bottom):
            ax.axvline(x, color="red" if fatal else "purple", linestyle="-" if fatal else "--", linewidth=1,
                       alpha=0.8, label=None if (kind in seen or ax is bottom) else kind)
        if len(fault_marks) <= 20 or fatal:  # many faults: the lines say enough
            top.annotate(label, (x, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         va="top", ha="right", color="red" if fatal else "purple")
        seen.add(kind)
    top.legend(loc="upper left", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    top.set_xlim(0, end_ms if end_ms > 0 else 1)

    title = f"gmpsim {other.get('scenario', os.path.basename(os.path.normpath(run_dir)))}"
    details = [f"{k} {other[k]:g}" if isinstance(other.get(k), float) else f"{k} {other[k]}"
               for k in ("seed", "gomaxprocs", "timescale") if k in other]
    if other.get("outcome"):
        details.append(f"outcome {other['outcome']}")
    fig.suptitle(title + (" (" + ", ".join(details) + ")" if details else ""))
    top.set_title("threads over Go time", fontsize=9)
    path = out or os.path.join(run_dir, PNG)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
