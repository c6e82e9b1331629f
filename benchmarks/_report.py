"""Summaries of a benchmark run: the JSON file, one PNG per workflow and RESULTS.md.

RESULTS.md is generated from one results JSON and nothing else; hand-written findings live in
``benchmarks/FINDINGS.md``, which this module never writes. A target's verdict is taken per
repeat (ratios paired by repeat): **met** when every repeat meets it, **missed** when none
does, **noise** when the repeats straddle the threshold.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helix_dask import _config

TARGETS = {
    "lb": 1.15,
    "peer_speedup": 1.5,
    "first_overhead": 1.05,
    "none_overhead": 1.02,
    "tight_speedup": 1.3,
    "planner_1k": 0.010,
    "planner_100k": 0.5,
    "transparency": 1.02,
    "zarr_vs_npy": 1.0,
}
PHASES = ("setup", "build", "plan", "run", "writes", "report")


def default_policy() -> str:
    return str(_config.get("policy"))


def _cumulative(run: dict[str, Any]) -> list[float] | None:
    """Cumulative iteration seconds, or None if the run failed."""
    total, out = 0.0, []
    for it in run["iterations"]:
        if "error" in it:
            return None
        total += it["seconds"]
        out.append(total)
    return out or None


def _task_seconds(run: dict[str, Any]) -> float | None:
    nodes = [n for it in run["iterations"] for n in it.get("nodes", ())]
    if not nodes:
        return None
    return sum(
        (n["compute_seconds"] or 0) if n["decision"] == "compute" else (n["load_seconds"] or 0)
        for n in nodes
    )


def _compute_seconds(run: dict[str, Any]) -> float | None:
    nodes = [n for it in run["iterations"] for n in it.get("nodes", ())]
    if not nodes:
        return None
    return sum(n["compute_seconds"] or 0 for n in nodes if n["decision"] == "compute")


def _phases(run: dict[str, Any]) -> dict[str, float]:
    """Seconds per phase summed over the run's iterations."""
    out: dict[str, float] = {}
    for it in run["iterations"]:
        for k, v in it.get("phases", {}).items():
            out[k] = out.get(k, 0.0) + v
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per strategy: the median (over repeats) cumulative time and its per-repeat values,
    storage, first iteration, phases."""
    lb = result.get("lb", {})
    lb_total = lb.get("total")
    rows: dict[str, dict[str, Any]] = {}
    for sid, runs in result["runs"].items():
        ok = [r for r in runs if _cumulative(r)]
        if not ok:
            errors = [it["error"] for r in runs for it in r["iterations"] if "error" in it]
            rows[sid] = {"error": errors[0] if errors else "no iterations ran"}
            continue
        curves = [_cumulative(r) for r in ok]
        n = min(len(c) for c in curves)  # type: ignore[arg-type]
        curve = [statistics.median(c[i] for c in curves) for i in range(n)]  # type: ignore[index]
        task = [t for t in (_task_seconds(r) for r in ok) if t is not None]
        phases = [_phases(r) for r in ok]
        rows[sid] = {
            "curve": curve,
            "cumulative": curve[-1],
            "per_repeat": {r["repeat"]: c[-1] for r, c in zip(ok, curves, strict=True)},  # type: ignore[index]
            "first_per_repeat": {r["repeat"]: r["iterations"][0]["seconds"] for r in ok},
            "to_result": statistics.median(
                sum(it.get("result_seconds", it["seconds"]) for it in r["iterations"]) for r in ok
            ),
            "first": statistics.median(r["iterations"][0]["seconds"] for r in ok),
            "storage_bytes": statistics.median(r["iterations"][-1]["storage_bytes"] for r in ok),
            "cluster_startup": statistics.median(r["cluster_startup_seconds"] for r in ok),
            "process": statistics.median(
                [
                    it["process_seconds"] - it["seconds"]
                    for r in ok
                    for it in r["iterations"]
                    if "process_seconds" in it
                ]
                or [float("nan")]
            ),
            "budget": ok[0]["strategy"].get("budget"),
            "task_seconds": statistics.median(task) if task else None,
            "compute_per_repeat": {r["repeat"]: _compute_seconds(r) for r in ok},
            "phases": {
                k: statistics.median(p.get(k, 0.0) for p in phases)
                for k in PHASES
                if any(k in p for p in phases)
            },
            "iterations": n,
            "repeats": len(ok),
            "failed_repeats": len(runs) - len(ok),
        }
        if lb_total:
            rows[sid]["vs_lb"] = curve[-1] / lb_total
    return {"rows": rows, "lb_total": lb_total}


def identical_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """Whether every strategy's every iteration produced the same evaluation metrics."""
    reference: dict[int, Any] = {}
    mismatches = []
    for sid, runs in result["runs"].items():
        for r in runs:
            for it in r["iterations"]:
                if "metrics" not in it:
                    continue
                ref = reference.setdefault(it["index"], (sid, it["metrics"]))
                if it["metrics"] != ref[1]:
                    mismatches.append(f"iteration {it['index'] + 1}: {sid} != {ref[0]}")
    return {"identical": not mismatches, "mismatches": mismatches}


def plot(result: dict[str, Any], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for sid, row in summary["rows"].items():
        if "curve" in row:
            x = range(1, len(row["curve"]) + 1)
            ax.plot(x, row["curve"], marker="o", label=sid, linestyle="--" if "@" in sid else "-")
    lb = result.get("lb", {}).get("iterations")
    if lb:
        total, curve = 0.0, []
        for i in lb:
            total += i["cost"]
            curve.append(total)
        ax.plot(range(1, len(curve) + 1), curve, color="black", linewidth=2, label="LB∞")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cumulative run time (s)")
    ax.set_title(result["title"])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- verdicts ----------------------------------------------------------------------------------


def verdict(values: Sequence[float], threshold: float, *, at_most: bool) -> str:
    """'met' if every value meets the threshold, 'missed' if none does, else 'noise'."""
    meets = [(v <= threshold) if at_most else (v >= threshold) for v in values]
    if not meets:
        return "not measured"
    if all(meets):
        return "met"
    if not any(meets):
        return "**missed**"
    return "noise"


def _spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}-{fmt.format(max(values))}]"
    )


def _target(
    what: str, values: Sequence[float], threshold: float, *, at_most: bool, unit: str = "x"
) -> str:
    sign = "≤" if at_most else "≥"
    per = f" (per repeat: {', '.join(f'{v:.2f}' for v in values)})" if len(values) > 1 else ""
    return (
        f"{what}: {_spread(values)}{unit} ({sign} {threshold:g}): "
        f"{verdict(values, threshold, at_most=at_most)}{per}"
    )


def _paired(
    rows: dict[str, Any], a: str, b: str, key: str = "per_repeat"
) -> list[float]:  # a / b per repeat
    ra, rb = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
    if not ra or not rb:
        return []
    return [ra[r] / rb[r] for r in sorted(ra) if rb.get(r)]


# -- markdown ----------------------------------------------------------------------------------


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _ok(met: bool) -> str:
    return "met" if met else "**missed**"


def _header(data: dict[str, Any]) -> list[str]:
    m = data["machine"]
    g = data.get("git", {})
    mode = data.get("size", "quick" if data["quick"] else "full")
    cmd = "python -m benchmarks" + (" --quick" if data["quick"] else "")
    if mode not in ("quick", "full"):
        cmd += f" --size {mode}"
    commit = (
        f"commit `{g['commit'][:10]}` ({g.get('subject', '')})"
        + (" **with uncommitted changes** (`--allow-dirty`)" if g.get("dirty") else "")
        if g.get("commit")
        else "an unknown commit"
    )
    return [
        "# helix_dask benchmark results",
        "",
        "Generated from `results/"
        + data["file"]
        + "` by `benchmarks/_report.py`; do not edit by hand (hand-written findings: "
        "[FINDINGS.md](FINDINGS.md)).",
        "",
        f"Measured {commit} on {data['date']} with `{cmd}`: mode **{mode}**, "
        f"{data['repeats']} repeat(s), {data['seconds'] / 60:.1f} min. Tables show medians over "
        "repeats, with [min-max] where there were several.",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']:.0f} GB RAM, {m['platform']}, "
        f"Python {m['python']}; dask {m['dask']}, distributed {m['distributed']}, "
        f"scikit-learn {m['sklearn']}, zarr {m['zarr']}, joblib {m['joblib']}. **Load average** "
        f"(1, 5, 15 min) at start {m['load_start']}, at end {m.get('load_end', '?')}; a load "
        "above 2 means other work shared the two cores.",
        "",
        "Method: " + data["method"],
        "",
        f"`helix_dask` below means the default policy `{data['default_policy']}`; every "
        "registered policy runs (`helix:<policy>`); `@tight` runs use a budget of "
        f"{data['tight_fraction']:.0%} of what policy `all` stored in the first repeat; "
        "`helix:none@trace` is `helix:none` with `helix.trace: always` (every compute traced). "
        "Diagnostics no target is judged on (unbounded policies other than the default and "
        "`none`, and `helix:none@trace`) run in the first repeat only.",
        "",
        "Reference costs (`benchmarks/_oracle.py`): per-node compute costs are the fastest "
        "computes measured in the `helix:none` runs (they write nothing, so no write competed "
        "with them, and trace nothing), load costs the fastest measured loads. **LB∞** assumes "
        "every earlier result is stored for free and takes, per iteration, max(optimal plan's "
        "summed task seconds / 2 workers, cheapest critical path): no helix strategy's wall "
        "time can be lower, since it leaves out every overhead, tracing and writes included "
        "(a run that may store traces a task whose code first runs there). **LB∞ serial** is "
        "the optimal plans' summed task seconds (compare with the 'task s' column). "
        "**LB-budget** is the exact optimum (0/1 integer program over the known iteration "
        "sequence, writes free) of summed task seconds when at most the tight budget is "
        "stored: what any policy, even one knowing every future edit, must at least spend "
        "(compare with the `@tight` rows' 'task s').",
        "",
    ]


def _workflow_section(w: dict[str, Any], default: str, png: str, verdicts: list[str]) -> list[str]:
    s = w["summary"]
    rows = s["rows"]
    helix_id = f"helix:{default}"
    helix = rows.get(helix_id, {})
    lines = [f"## {w['title']}", "", f"Size: {w['size']}. Iterations:", ""]
    lines += [f"{i + 1}. {it['kind']}: {it['what']}" for i, it in enumerate(w["iterations"])]
    lines += [
        "",
        f"![cumulative time]({png})" if png else "",
        "",
        "| strategy | cumulative (s) | to result (s) | x LB∞ | x helix_dask | first it. (s) | "
        "storage | task s (Σ compute+load) | cluster start (s) | process start (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sid, row in rows.items():
        if "error" in row:
            lines.append(f"| {sid} | failed: `{row['error']}` | | | | | | | | |")
            continue
        vs_helix = (
            f"{row['cumulative'] / helix['cumulative']:.2f}" if "cumulative" in helix else "-"
        )
        task = f"{row['task_seconds']:.1f}" if row["task_seconds"] is not None else "-"
        vs_lb = f"{row['vs_lb']:.2f}" if "vs_lb" in row else "-"
        process = f"{row['process']:.1f}" if row["process"] == row["process"] else "-"  # NaN
        failed = f" ({row['failed_repeats']} repeat(s) failed)" if row["failed_repeats"] else ""
        lines.append(
            f"| {sid} | {_spread(list(row['per_repeat'].values()), '{:.1f}')}{failed} | "
            f"{row['to_result']:.1f} | {vs_lb} | {vs_helix} | {row['first']:.2f} | "
            f"{_fmt_bytes(row['storage_bytes'])} | {task} | {row['cluster_startup']:.1f} | "
            f"{process} |"
        )
    lb = w.get("lb", {})
    if "total" in lb:
        lines.append(f"| LB∞ | {lb['total']:.1f} | | 1.00 | | | | | | |")
        lines.append(f"| LB∞ serial | | | | | | | {lb['serial_total']:.1f} | | |")
    elif "error" in lb:
        lines.append(f"| LB∞ | not computed: {lb['error']} | | | | | | | | |")
    lbb = w.get("lb_budget", {})
    if lbb.get("total") is not None:
        budgets = ", ".join(_fmt_bytes(b["budget"]) for b in lbb["budgets"])
        lines.append(f"| LB-budget (budget {budgets}) | | | | | | | {lbb['total']:.1f} | | |")
    elif lbb:
        lines.append(f"| LB-budget | not computed: {lbb.get('error') or lbb.get('budgets')} |")
    same = w["identical"]
    lines += [
        "",
        "Evaluation metrics identical across strategies: "
        + ("yes" if same["identical"] else "**no**: " + "; ".join(same["mismatches"])),
        "",
    ]
    gc = [
        it.get("versions")
        for r in w["runs"].get("graphchain", ())
        for it in r["iterations"]
        if it.get("versions")
    ]
    if gc:
        errors = {
            it["distributed_error"]
            for r in w["runs"]["graphchain"]
            for it in r["iterations"]
            if it.get("distributed_error")
        }
        lines += [
            "graphchain ran in its own virtual environment: "
            + ", ".join(f"{k} {v}" for k, v in gc[0].items())
            + "."
            + (
                f" On the distributed cluster its graph fails to serialize (`{errors.pop()}`), "
                "so its iterations ran on dask's threaded scheduler with 2 threads, in the "
                "iteration process (the failed attempt is not counted)."
                if errors
                else ""
            ),
            "",
        ]
    # Overhead: phases per iteration.
    lines += [
        "Where the time goes: seconds per iteration by phase (mean over the iterations, median "
        "over repeats). setup: `hx.setup`; build: building the graph (helix signs each node "
        "here); plan: the helix scheduler hook that plans and rewrites (graphchain: its "
        "`optimize`); run: compute until the result is back, less plan; writes: after the "
        "result until the last write committed; report: the rest of `hx.last_run`.",
        "",
        "| strategy | " + " | ".join(PHASES) + " | total |",
        "|---" * (len(PHASES) + 2) + "|",
    ]
    for sid, row in rows.items():
        if "phases" not in row:
            continue
        n = row["iterations"]
        cells = [f"{row['phases'][p] / n:.3f}" if p in row["phases"] else "-" for p in PHASES]
        lines.append(f"| {sid} | " + " | ".join(cells) + f" | {row['cumulative'] / n:.3f} |")
    runs = w["runs"].get(helix_id)
    if runs:
        lines += [
            "",
            f"Per iteration, `{helix_id}` (median over repeats, seconds):",
            "",
            "| iteration | kind | " + " | ".join(PHASES) + " | total |",
            "|---" * (len(PHASES) + 3) + "|",
        ]
        for i, it in enumerate(w["iterations"]):
            done = [r["iterations"][i] for r in runs if len(r["iterations"]) > i]
            done = [d for d in done if "error" not in d]
            if not done:
                continue
            cells = [
                f"{statistics.median(d.get('phases', {}).get(p, 0.0) for d in done):.3f}"
                for p in PHASES
            ]
            total = statistics.median(d["seconds"] for d in done)
            lines.append(f"| {i + 1} | {it['kind']} | " + " | ".join(cells) + f" | {total:.3f} |")
    # Tracing.
    traced, plain = rows.get("helix:none@trace", {}), rows.get("helix:none", {})
    wall = _paired(rows, "helix:none@trace", "helix:none")
    compute = _paired(rows, "helix:none@trace", "helix:none", "compute_per_repeat")
    if wall:
        lines += [
            "",
            f"Tracing: with every compute traced, cumulative time {_spread(wall)}x and summed "
            f"compute seconds {_spread(compute)}x those of `helix:none` (which traces a task's "
            f"code on its first compute only); per repeat {', '.join(f'{v:.2f}' for v in wall)} "
            f"and {', '.join(f'{v:.2f}' for v in compute)}. ({traced['cumulative']:.1f} s vs "
            f"{plain['cumulative']:.1f} s.)",
        ]
    lines.append("")
    # Verdicts.
    wf = w["workflow"]
    if "per_repeat" in helix:
        if lb.get("total"):
            values = [v / lb["total"] for v in helix["per_repeat"].values()]
            verdicts.append(_target(f"{wf}: cumulative vs LB∞", values, 1.15, at_most=True))
        for peer in ("joblib", "graphchain"):
            p = rows.get(peer, {})
            if "per_repeat" in p:
                verdicts.append(
                    _target(
                        f"{wf}: {peer} time / helix_dask time",
                        _paired(rows, peer, helix_id),
                        TARGETS["peer_speedup"],
                        at_most=False,
                    )
                )
            elif "error" in p:
                verdicts.append(f"{wf}: vs {peer}: not measurable, {peer} failed: `{p['error']}`")
            else:
                verdicts.append(f"{wf}: vs {peer}: not run in this mode")
        if "per_repeat" in rows.get("dask", {}):
            verdicts.append(
                _target(
                    f"{wf}: first iteration, helix_dask / plain Dask",
                    _paired(rows, helix_id, "dask", "first_per_repeat"),
                    TARGETS["first_overhead"],
                    at_most=True,
                )
            )
            if "per_repeat" in plain:
                verdicts.append(
                    _target(
                        f"{wf}: helix:none / plain Dask, cumulative",
                        _paired(rows, "helix:none", "dask"),
                        TARGETS["none_overhead"],
                        at_most=True,
                    )
                )
        a, b = f"{helix_id}@tight", "helix:helix2x@tight"
        if default != "helix2x" and "per_repeat" in rows.get(a, {}):
            verdicts.append(
                _target(
                    f"{wf}: tight budget, helix2x time / {default} time",
                    _paired(rows, b, a),
                    TARGETS["tight_speedup"],
                    at_most=False,
                )
            )
    return lines


def _micro_section(micro: dict[str, Any], verdicts: list[str]) -> list[str]:
    lines = ["## Micro-benchmarks", "", "### Planner latency", ""]
    lines += ["| nodes | scipy (s) | networkx (s) |", "|---|---|---|"]
    by_n: dict[int, dict[str, Any]] = {}
    for r in micro["planner"]["rows"]:
        by_n.setdefault(r["nodes"], {})[r["solver"]] = r["seconds"]
    for n, solvers in by_n.items():
        cells = [
            f"{solvers[s]:.4f}" if solvers.get(s) is not None else "not run"
            for s in ("scipy", "networkx")
        ]
        lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        f"Hotspots of one scipy plan at {micro['planner']['hotspots_at']} nodes "
        "(cProfile, own time):",
        "",
    ]
    lines += [
        f"- `{h['function']}`: {h['own_seconds']:.3f} s own, {h['cumulative']:.3f} s cumulative"
        for h in micro["planner"]["hotspots"][:5]
    ]
    if 1000 in by_n:
        t = by_n[1000]["scipy"]
        verdicts.append(f"planner at 1k nodes {t * 1e3:.1f} ms (≤ 10 ms): {_ok(t <= 0.010)}")
    if 100_000 in by_n:
        t = by_n[100_000]["scipy"]
        verdicts.append(f"planner at 100k nodes {t:.3f} s (≤ 0.5 s): {_ok(t <= 0.5)}")
    if micro.get("scale"):
        lines += _scale_section(micro["scale"])
    tr = micro["transparency"]
    pairs = [h / p for p, h in zip(tr["samples"]["plain"], tr["samples"]["helix"], strict=True)]
    lines += [
        "",
        "### Plugin transparency",
        "",
        f"A {tr['tasks']}-task dask.array graph without helix tasks, {len(pairs)} alternated "
        f"runs per side (the side that goes first alternates): plain cluster "
        f"{_spread(tr['samples']['plain'])} s, cluster with the helix plugins "
        f"{_spread(tr['samples']['helix'])} s; helix / plain per pair "
        f"{', '.join(f'{r:.3f}' for r in pairs)}. Time inside the helix hooks during the helix "
        f"runs: scheduler {tr['scheduler_hook_seconds']:.3f} s, workers "
        f"{tr['worker_hook_seconds']:.3f} s per run (summed), "
        f"{tr['hook_fraction'] * 100:.2f}% of its wall time.",
    ]
    verdicts.append(
        f"plugin transparency by time inside the hooks: {1 + tr['hook_fraction']:.4f}x "
        f"(≤ 1.02): {_ok(tr['hook_fraction'] <= 0.02)}"
    )
    verdicts.append(_target("plugin transparency by wall clock", pairs, 1.02, at_most=True))
    sg = micro["signatures"]
    lines += [
        "",
        "### Signatures",
        "",
        f"`fingerprint_value` on a {_fmt_bytes(sg['array_bytes'])} float64 array: "
        f"{sg['fingerprint_seconds']:.3f} s ({sg['gb_per_second']:.1f} GB/s). Creating a node "
        "downstream of an upstream result of growing size (lazy, or persisted on the cluster):",
        "",
        "| upstream size | upstream | bytes hashed | creation (ms) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {_fmt_bytes(r['upstream_bytes'])} | {r['upstream']} | {r['hashed_bytes']} | "
        f"{r['create_seconds'] * 1e3:.2f} |"
        for r in sg["node_creation"]
    ]
    al = micro["artifact_load"]
    lines += [
        "",
        "### Artifact load, with and without checksum verification",
        "",
        f"A {_fmt_bytes(al['array_bytes'])} float64 array: ZarrArtifactStore.put "
        f"{al['put_seconds']:.2f} s, np.save {al['np_save_seconds']:.2f} s. Reads alternate "
        "between the three readers, 5 each, medians. 'unverified' is the same "
        "`ZarrArtifactStore.get` with the per-chunk xxh3 check switched off in the benchmark "
        "process (the store has no such switch): the difference is what verification costs.",
        "",
        "| cache | get, verified (s) | get, unverified (s) | verification cost | np.load (s) | "
        "np.load / verified get |",
        "|---|---|---|---|---|---|",
    ]
    for c in ("warm", "cold"):
        if f"unverified_{c}_seconds" in al:
            lines.append(
                f"| {c} | {al[f'zarr_{c}_seconds']:.3f} | {al[f'unverified_{c}_seconds']:.3f} | "
                f"{al[f'{c}_verify_cost'] * 100:+.0f}% | {al[f'npy_{c}_seconds']:.3f} | "
                f"{al[f'{c}_ratio']:.2f} |"
            )
    lines += ["", f"Cold cache by: {al['cold_method']}."]
    for c in ("warm", "cold"):
        r = al[f"{c}_ratio"]
        verdicts.append(f"Zarr load {c}: {r:.2f}x np.load speed (≥ 1.0): {_ok(r >= 1.0)}")
    if "small_artifacts" in micro:
        lines += _small_artifacts_section(micro["small_artifacts"], verdicts)
    if "memory" in micro:
        lines += _memory_section(micro["memory"], verdicts)
    return lines


def _memory_section(memory: dict[str, Any], verdicts: list[str]) -> list[str]:
    lines = [
        "",
        "### Peak worker memory on large intermediates",
        "",
        f"`benchmarks/_memory.py`: a chain of {memory['steps']} tasks passing "
        f"{memory['mb']} MB float64 arrays on two worker processes of one thread, a fresh "
        "cluster per row; the larger worker RSS, sampled every 2 ms. Under 100 MB no result can be "
        "stored; under 10 GB the requested output is.",
        "",
        "| configuration | RSS before (GiB) | peak RSS (GiB) | peak / plain |",
        "|---|---|---|---|",
    ]
    plain = next(r["peak_bytes"] for r in memory["rows"] if r["budget"] is None)
    for r in memory["rows"]:
        lines.append(
            f"| {r['config']} | {r['before_bytes'] / 2**30:.2f} | {r['peak_bytes'] / 2**30:.2f} "
            f"| {r['peak_bytes'] / plain:.2f} |"
        )
        if r["budget"] is not None:
            ratio = r["peak_bytes"] / plain
            verdicts.append(
                f"peak worker memory, helix {r['budget']} / plain: {ratio:.2f}x (≤ 1.15): "
                f"{_ok(ratio <= 1.15)}"
            )
    return lines


def _small_artifacts_section(small: dict[str, Any], verdicts: list[str]) -> list[str]:
    lines = [
        "",
        "### Small artifacts, one by one",
        "",
        f"{small['count']} puts then gets of each value into a fresh local store, medians of 3 "
        "alternated passes: the packed layout (one checked file beside the manifest) and, in "
        "the same run, the same values forced into Zarr groups.",
        "",
        "| value | put (µs) | get (µs) | Zarr group put (µs) | Zarr group get (µs) | "
        "put speed-up | get speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for r in small["rows"]:
        worst = max(worst, r["packed_put_us"], r["packed_get_us"])
        lines.append(
            f"| {r['value']} | {r['packed_put_us']:.0f} | {r['packed_get_us']:.0f} | "
            f"{r['zarr_put_us']:.0f} | {r['zarr_get_us']:.0f} | "
            f"{r['zarr_put_us'] / r['packed_put_us']:.1f}x | "
            f"{r['zarr_get_us'] / r['packed_get_us']:.1f}x |"
        )
    verdicts.append(f"small artifact put/get ≤ 1 ms: worst {worst:.0f} µs: {_ok(worst <= 1000)}")
    return lines


def _scale_section(scale: list[dict[str, Any]]) -> list[str]:
    from ._scale import PHASES as SCALE_PHASES

    lines = [
        "",
        "### Scale: per-node overhead on graphs of tiny tasks",
        "",
        "`benchmarks/_scale.py`: chains of 10 trivial tasks fanned in by tens, in-process "
        "cluster (2 worker threads). Wall seconds of a plain `dask.delayed` run, a first helix "
        "run (stores within 1 GiB) and an identical re-run; helix microseconds per node by "
        "phase (build: creating and signing nodes; plan: `plan_update`; rewrite; hook: the rest "
        "of the scheduler hook; run: compute less the hook; report: `hx.last_run`).",
        "",
        "| nodes | plain (s) | helix first (s) | helix re-run (s) | which | "
        + " | ".join(f"{p} µs" for p in SCALE_PHASES)
        + " |",
        "|---" * (5 + len(SCALE_PHASES)) + "|",
    ]
    failed = [r for r in scale if "error" in r]
    scale = [r for r in scale if "error" not in r]
    for r in scale:
        for which in ("first", "rerun"):
            us = r[f"{which}_us_per_node"]
            lead = (
                f"| {r['nodes']} | {r['plain_wall']:.2f} | {r['first']['wall']:.2f} | "
                f"{r['rerun']['wall']:.2f}"
                if which == "first"
                else "| | | |"
            )
            lines.append(
                f"{lead} | {which} | " + " | ".join(f"{us[p]:.0f}" for p in SCALE_PHASES) + " |"
            )
    lines += [f"| {r['nodes']} | failed: {r['error']} |" for r in failed]
    if not scale:
        return lines
    big = max(scale, key=lambda r: r["nodes"])
    per10k = big["rerun"]["rewrite"] / big["nodes"] * 10_000
    lines += [
        "",
        f"Rewrite per 10k tasks (re-run at {big['nodes']} nodes, every node loaded or pruned): "
        f"{per10k:.3f} s; plan per 10k tasks {big['rerun']['plan'] / big['nodes'] * 1e4:.3f} s.",
    ]
    blocked = {h: ms for h, ms in big.get("max_hook_ms", {}).items()}
    if blocked:
        lines.append(
            f"Longest helix hook call at {big['nodes']} nodes (blocks the scheduler's event "
            "loop; target ≤ 20 ms): "
            + ", ".join(f"{h} {ms:.0f} ms" for h, ms in sorted(blocked.items()))
            + "."
        )
    return lines


def _search_verdicts(sk: dict[str, Any]) -> list[str]:
    """The scikit-learn issue's goals, per repeat (repeat i of each tool paired)."""

    def per(tool: str, i: int) -> list[float]:
        run = sk[tool][i]
        return list(run.get("per_repeat") or [run["seconds"]])

    names = list(sk["searches"])
    out = []
    if len(names) > 1:
        ratios = [a / b for a, b in zip(per("sklearn", 1), per("helix", 1), strict=True)]
        out.append(_target(f"search, {names[1]}: scikit-learn / helix", ratios, 5, at_most=False))
    if isinstance(sk["dask_ml"], list):
        if len(names) > 1:
            ratios = [a / b for a, b in zip(per("dask_ml", 1), per("helix", 1), strict=True)]
            out.append(_target(f"search, {names[1]}: dask-ml / helix", ratios, 2, at_most=False))
        ratios = [a / b for a, b in zip(per("helix", 0), per("dask_ml", 0), strict=True)]
        out.append(_target(f"search, {names[0]}: helix / dask-ml", ratios, 1, at_most=True))
    return out


def _included_section(included: dict[str, Any], verdicts: list[str] | None = None) -> list[str]:
    lines: list[str] = []
    sk = included.get("sklearn_search")
    if sk:
        names = list(sk["searches"])
        dm = sk["dask_ml"]
        lines += [
            "",
            "### scikit-learn searches (`python -m benchmarks.sklearn_search`, included from "
            "`results/sklearn_search.json`, not re-run by this command)",
            "",
            "| search | scikit-learn (s) | dask-ml (s) | helix (s) | sklearn / helix | "
            "dask-ml / helix |",
            "|---|---|---|---|---|---|",
        ]

        def cell(run: dict[str, Any]) -> str:
            spread = run.get("per_repeat")
            if spread and len(spread) > 1:
                return f"{run['seconds']:.1f} [{min(spread):.1f}-{max(spread):.1f}]"
            return f"{run['seconds']:.1f}"

        for i, name in enumerate(names):
            s_, h = sk["sklearn"][i]["seconds"], sk["helix"][i]["seconds"]
            d = dm[i]["seconds"] if isinstance(dm, list) else None
            sc, hc = cell(sk["sklearn"][i]), cell(sk["helix"][i])
            lines.append(
                f"| {name} | {sc} | {cell(dm[i])} | {hc} | {s_ / h:.1f} | {d / h:.1f} |"
                if d is not None
                else f"| {name} | {sc} | failed | {hc} | {s_ / h:.1f} | - |"
            )
        if verdicts is not None:
            verdicts += _search_verdicts(sk)
        measured = (sk.get("git") or {}).get("commit")
        lines += [
            "",
            f"Scores equal to scikit-learn's: helix {sk.get('helix_scores_equal_sklearn')}, "
            f"dask-ml {sk.get('dask_ml_scores_equal_sklearn')}."
            + (
                f" Measured {sk.get('date')} on commit `{measured[:10]}`, "
                f"{sk.get('repeats')} repeats (medians, [min-max]), load average "
                f"{sk.get('load_start')} at start, {sk.get('load_end')} at end."
                if measured
                else ""
            ),
        ]
    ob = included.get("object_store")
    if ob:
        tp = ob["throughput"]
        lines += [
            "",
            f"### Object store (`python -m benchmarks.object_store`, {ob.get('date', '?')}, "
            "included from `results/object_store.json`, not re-run by this command)",
            "",
            f"Server: {ob.get('server', '?')}.",
            "",
            "| size | S3 write MB/s | S3 load MB/s | local write MB/s | local load MB/s |",
            "|---|---|---|---|---|",
        ]
        for size, s3 in tp["s3"].items():
            loc = tp["local"].get(size, {})
            if "write_MBps" in s3:
                lines.append(
                    f"| {size} | {s3['write_MBps']:.0f} | {s3['load_MBps']:.0f} | "
                    f"{loc.get('write_MBps', float('nan')):.0f} | "
                    f"{loc.get('load_MBps', float('nan')):.0f} |"
                )
            else:
                lines.append(
                    f"| {size} | {s3['write_s'] * 1e3:.0f} ms | {s3['load_s'] * 1e3:.0f} ms | "
                    f"{loc.get('write_s', float('nan')) * 1e3:.0f} ms | "
                    f"{loc.get('load_s', float('nan')) * 1e3:.0f} ms |"
                )
        wf = ob.get("workflow", {})
        if wf:
            lines += [
                "",
                "One small workflow, four iterations, cumulative seconds: "
                + ", ".join(f"{k} {v['cumulative']:.1f}" for k, v in wf.items())
                + ".",
            ]
    return lines


def markdown(data: dict[str, Any], png_names: dict[str, str]) -> str:
    """RESULTS.md from one results JSON."""
    lines = _header(data)
    verdicts: list[str] = []
    for w in data["workflows"]:
        lines += _workflow_section(
            w, data["default_policy"], png_names.get(w["workflow"], ""), verdicts
        )
    micro = data.get("micro")
    if micro:
        lines += _micro_section(micro, verdicts)
    lines += _included_section(data.get("included", {}), verdicts)
    lines += [
        "",
        "## Targets",
        "",
        "Each ratio is taken per repeat (paired by repeat): **met** when every repeat meets "
        "the threshold, **missed** when none does, **noise** when the repeats straddle it."
        + (
            " This run had one repeat: no verdict below can show noise, so read them with the "
            "load average above."
            if data["repeats"] == 1
            else ""
        ),
        "",
    ]
    lines += [f"- {v}" for v in verdicts]
    return "\n".join(lines) + "\n"
