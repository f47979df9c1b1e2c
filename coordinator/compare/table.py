"""The side-by-side figures of `gmpsim compare`: medians and ranges, the tolerance rule, the printed
table, the schedtrace lines paired by Go time, and the README row (--markdown)."""
from __future__ import annotations

import re
import statistics
from collections import Counter

#: (key in a run's figures, label): the figures compared within the tolerance.
FIGURES = (
    ("mnext", "Ms created (sched.mnext)"),
    ("nmfreed", "Ms exited (sched.nmfreed)"),
    ("peak_threads", "peak threads"),
    ("threads_end", "threads at the end"),
)
SMALL = 10  # below this many Ms in Go, the tolerance is ±1 M


def allowed(go: float, tolerance_pct: float) -> float:
    """How far gmpsim may be from Go's median: ±1 M where Go made fewer than 10, else ±tolerance %."""
    return 1.0 if go < SMALL else go * tolerance_pct / 100.0


def summarize(values: list) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def outcome_of(run: dict) -> str:
    return f"fatal: {run['fatal_message']}" if run["outcome"] == "fatal" else run["outcome"]


def common(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0]


def figures(go_runs: list[dict], sim_runs: list[dict], tolerance_pct: float) -> list[dict]:
    """One row per figure: Go's and gmpsim's summaries and whether they agree; then the outcome."""
    rows = []
    for key, label in FIGURES:
        g = summarize([r.get(key) for r in go_runs])
        s = summarize([r.get(key) for r in sim_runs])
        within = (None if g is None or s is None
                  else abs(s["median"] - g["median"]) <= allowed(g["median"], tolerance_pct))
        counts = sorted({r.get("counts", "exact") for r in go_runs}) if key in ("mnext", "nmfreed") else ["exact"]
        rows.append({"figure": key, "label": label, "go": g, "gmpsim": s, "within": within, "go_counts": counts})
    go_out, sim_out = common([outcome_of(r) for r in go_runs]), common([outcome_of(r) for r in sim_runs])
    rows.append({"figure": "outcome", "label": "outcome", "go": go_out, "gmpsim": sim_out,
                 "within": go_out == sim_out, "go_counts": ["exact"]})
    return rows


def _fmt(summary: dict | None) -> str:
    if summary is None:
        return "-"
    med = f"{summary['median']:g}"
    return med if summary["min"] == summary["max"] else f"{med} ({summary['min']:g}–{summary['max']:g})"


_SCHED_MS = re.compile(r"^SCHED (\d+)ms: (.*)$")


def pair_schedtrace(go_lines: list[str], sim_lines: list[str], period_ms: int = 0) -> list[dict]:
    """The SCHED lines of both at the same Go times (ms since start), in Go's time order. Neither
    side prints exactly on the period (sysmon prints at its next tick after it), so each Go line
    is paired with gmpsim's nearest line within half a period, each gmpsim line used once."""
    def by_ms(lines):
        out = {}
        for ln in lines:
            m = _SCHED_MS.match(ln)
            if m:
                out.setdefault(int(m.group(1)), m.group(2))
        return out
    g, s = by_ms(go_lines), by_ms(sim_lines)
    slack = period_ms // 2
    pairs, used = [], set()
    for t in sorted(g):
        near = [u for u in s if abs(u - t) <= slack and u not in used]
        if near:
            u = min(near, key=lambda u: (abs(u - t), u))
            used.add(u)
            pairs.append({"ms": t, "go": g[t], "gmpsim_ms": u, "gmpsim": s[u]})
    return pairs


def _pick(pairs: list, most: int) -> list:
    if len(pairs) <= most:
        return pairs
    step = (len(pairs) - 1) / (most - 1)
    return [pairs[round(i * step)] for i in range(most)]


def render(result: dict, most_sched_rows: int = 12) -> str:
    """The table printed by `gmpsim compare`."""
    rows = [("", f"real Go ({result['go']['version_short']}, {result['runs']} runs)",
             f"gmpsim ({result['runs']} runs)", "within")]
    for f in result["figures"]:
        mark = {True: "yes", False: "NO", None: "-"}[f["within"]]
        if f["figure"] == "outcome":
            rows.append((f["label"], f["go"], f["gmpsim"], mark))
        else:
            note = "" if f["go_counts"] == ["exact"] else f" [{'/'.join(f['go_counts'])}]"
            rows.append((f["label"], _fmt(f["go"]) + note, _fmt(f["gmpsim"]), mark))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = [f"{result['scenario']} ({result['source']}): gomaxprocs {result['gomaxprocs']}, "
           f"maxmcount {result['maxmcount']}, gmpsim timescale {result['timescale']:g}; "
           f"tolerance ±{result['tolerance_pct']:g} % (±1 M below {SMALL})"]
    out += [line for line in result["notes"]]
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    go_runs = result["go"]["runs"]
    tc = summarize([r.get("threadcreate") for r in go_runs])
    exact = sum(1 for r in go_runs if r.get("counts") == "exact")
    out.append(f"real Go: pprof threadcreate (Ms in allm) {_fmt(tc)}; mnext/nmfreed read from runtime.sched and "
               f"checked against /proc in {exact} of {len(go_runs)} runs"
               + ("" if exact == len(go_runs) else " (the others: sampled from outside, or unverified)"))
    for side in ("go", "gmpsim"):
        lines = result[side]["fatal_lines"]
        if lines:
            out.append(f"fatal lines ({'real Go' if side == 'go' else 'gmpsim'}):")
            out += [f"  {ln}" for ln in lines]
    pairs = result["schedtrace"]
    if pairs:
        shown = _pick(pairs, most_sched_rows)
        out.append(f"schedtrace at the same Go times ({len(shown)} of {len(pairs)}; every "
                   f"{result['schedtrace_ms']} ms, first run of each):")
        for p in shown:
            out.append(f"  {p['ms']:>6}ms  go:     {p['go']}")
            at = "" if p.get("gmpsim_ms", p["ms"]) == p["ms"] else f" ({p['gmpsim_ms']}ms)"
            out.append(f"  {'':>6}    gmpsim: {p['gmpsim']}{at}")
    elif result["schedtrace_ms"]:
        out.append("schedtrace: no SCHED lines at a common Go time (the run is shorter than schedtrace_ms)")
    out.append("verdict: " + ("every figure within tolerance" if result["within"] else
                              "NOT within tolerance: " + ", ".join(f["label"] for f in result["figures"]
                                                                 if f["within"] is False)))
    return "\n".join(out)


def markdown_row(result: dict) -> str:
    """The README reference table's row for this scenario."""
    def trio(side):
        vals = []
        for key in ("mnext", "nmfreed", "peak_threads"):
            f = next(x for x in result["figures"] if x["figure"] == key)
            vals.append(f"{f[side]['median']:g}" if f[side] else "-")
        return " / ".join(vals)
    outcome = next(x for x in result["figures"] if x["figure"] == "outcome")
    return (f"| {result['scenario']} | {result['timescale']:g} | {trio('go')} | {trio('gmpsim')} | "
            f"{outcome['go']} | {outcome['gmpsim']} | {'yes' if result['within'] else 'no'} |")


MARKDOWN_HEADER = ("| scenario | timescale | Go mnext / nmfreed / peak | gmpsim mnext / nmfreed / peak "
                   "| Go outcome | gmpsim outcome | within |\n|---|---|---|---|---|---|---|")
