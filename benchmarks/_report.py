"""Summaries of a benchmark run: the JSON file, one PNG per workflow and RESULTS.md."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from helix_dask import _config

TARGETS = {
    "lb": 1.15,
    "peer_speedup": 1.5,
    "first_overhead": 1.05,
    "planner_1k": 0.010,
    "planner_100k": 0.5,
    "transparency": 1.02,
    "zarr_vs_npy": 1.0,
}


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
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Median (over repeats) cumulative time, storage and first iteration per strategy."""
    lb = result.get("lb", {})
    lb_total = sum(i["cost"] for i in lb.get("iterations", ())) if "iterations" in lb else None
    rows: dict[str, dict[str, Any]] = {}
    for sid, runs in result["runs"].items():
        curves = [c for c in (_cumulative(r) for r in runs) if c]
        if not curves:
            errors = [it["error"] for r in runs for it in r["iterations"] if "error" in it]
            rows[sid] = {"error": errors[0] if errors else "no iterations ran"}
            continue
        n = min(len(c) for c in curves)
        curve = [statistics.median(c[i] for c in curves) for i in range(n)]
        first = statistics.median(r["iterations"][0]["seconds"] for r in runs)
        task_seconds = []
        for r in runs:
            nodes = [n for it in r["iterations"] for n in it.get("nodes", ())]
            if nodes:
                task_seconds.append(
                    sum(
                        (n["compute_seconds"] or 0)
                        if n["decision"] == "compute"
                        else (n["load_seconds"] or 0)
                        for n in nodes
                    )
                )
        to_result = [
            sum(it.get("result_seconds", it["seconds"]) for it in r["iterations"])
            for r in runs
            if _cumulative(r)
        ]
        rows[sid] = {
            "curve": curve,
            "cumulative": curve[-1],
            "to_result": statistics.median(to_result),
            "first": first,
            "storage_bytes": statistics.median(r["iterations"][-1]["storage_bytes"] for r in runs),
            "cluster_startup": statistics.median(r["cluster_startup_seconds"] for r in runs),
            "process": statistics.median(
                [
                    it["process_seconds"] - it["seconds"]
                    for r in runs
                    for it in r["iterations"]
                    if "process_seconds" in it
                ]
                or [float("nan")]
            ),
            "budget": runs[0]["strategy"].get("budget"),
            "task_seconds": statistics.median(task_seconds) if task_seconds else None,
            "repeats": len(curves),
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


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _ok(met: bool) -> str:
    return "met" if met else "**missed**"


def markdown(data: dict[str, Any], png_names: dict[str, str]) -> str:
    """RESULTS.md: the machine, per-workflow tables, micro-benchmarks and the targets."""
    m = data["machine"]
    default = data["default_policy"]
    lines = [
        "# helix_dask benchmark results",
        "",
        f"Generated by `python -m benchmarks{' --quick' if data['quick'] else ''}` on "
        f"{data['date']} (results file `results/{data['file']}`). Mode: "
        f"**{'quick' if data['quick'] else 'full'}**, {data['repeats']} repeat(s), medians "
        "over repeats.",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory_gb']:.0f} GB RAM, {m['platform']}, "
        f"Python {m['python']}; dask {m['dask']}, distributed {m['distributed']}, "
        f"scikit-learn {m['sklearn']}, zarr {m['zarr']}, joblib {m['joblib']}. Load average "
        f"at start {m['load_start']}, at end {m.get('load_end', '?')}: other work shared the "
        "machine, so single numbers are noisy.",
        "",
        "Method: " + data["method"],
        "",
        f"`helix_dask` below means the default policy `{default}`; every registered policy "
        "runs (`helix:<policy>`), and `@tight` runs use a budget of "
        f"{data['tight_fraction']:.0%} of what policy `all` stored.",
        "",
    ]
    verdicts: list[str] = []
    for w in data["workflows"]:
        s = w["summary"]
        rows = s["rows"]
        helix = rows.get(f"helix:{default}", {})
        lines += [f"## {w['title']}", "", f"Size: {w['size']}. Iterations:", ""]
        lines += [f"{i + 1}. {it['kind']}: {it['what']}" for i, it in enumerate(w["iterations"])]
        lines += [
            "",
            f"![cumulative time]({png_names.get(w['workflow'], '')})" if png_names else "",
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
            lines.append(
                f"| {sid} | {row['cumulative']:.1f} | {row['to_result']:.1f} | "
                f"{row.get('vs_lb', float('nan')):.2f} | "
                f"{vs_helix} | {row['first']:.2f} | {_fmt_bytes(row['storage_bytes'])} | "
                f"{task} | {row['cluster_startup']:.1f} | {row['process']:.1f} |"
            )
        if s["lb_total"] is not None:
            lines.append(f"| LB∞ | {s['lb_total']:.1f} | | 1.00 | | | | | | |")
        same = w["identical"]
        lines += [
            "",
            "Evaluation metrics identical across strategies: "
            + ("yes" if same["identical"] else "**no**: " + "; ".join(same["mismatches"])),
            "",
        ]
        if "cumulative" in helix:
            wf = w["workflow"]
            if s["lb_total"]:
                r = helix["vs_lb"]
                verdicts.append(f"{wf}: cumulative {r:.2f}x LB∞ (≤ 1.15): {_ok(r <= 1.15)}")
            for peer in ("joblib", "graphchain"):
                p = rows.get(peer, {})
                if "cumulative" in p:
                    r = p["cumulative"] / helix["cumulative"]
                    verdicts.append(f"{wf}: {r:.2f}x faster than {peer} (≥ 1.5): {_ok(r >= 1.5)}")
                elif "error" in p:
                    verdicts.append(f"{wf}: vs {peer}: not measurable, {peer} failed")
            d = rows.get("dask", {})
            if "first" in d:
                r = helix["first"] / d["first"]
                verdicts.append(
                    f"{wf}: first iteration {r:.2f}x plain Dask (≤ 1.05): {_ok(r <= 1.05)}"
                )
            a, b = rows.get(f"helix:{default}@tight", {}), rows.get("helix:helix2x@tight", {})
            if "cumulative" in a and "cumulative" in b and default != "helix2x":
                r = b["cumulative"] / a["cumulative"]
                verdicts.append(
                    f"{wf}: tight budget, helix2x takes {r:.2f}x the time of {default} "
                    f"(> 1): {_ok(r > 1)}"
                )
    micro = data.get("micro")
    if micro:
        lines += ["## Micro-benchmarks", "", "### Planner latency", ""]
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
            for h in micro["planner"]["hotspots"]
        ]
        if 1000 in by_n:
            t = by_n[1000]["scipy"]
            verdicts.append(f"planner at 1k nodes {t * 1e3:.1f} ms (≤ 10 ms): {_ok(t <= 0.010)}")
        if 100_000 in by_n:
            t = by_n[100_000]["scipy"]
            verdicts.append(f"planner at 100k nodes {t:.3f} s (≤ 0.5 s): {_ok(t <= 0.5)}")
        tr = micro["transparency"]
        lines += [
            "",
            "### Plugin transparency",
            "",
            f"A {tr['tasks']}-task dask.array graph without helix tasks: plain cluster "
            f"{tr['plain_seconds']:.2f} s, cluster with the helix plugins "
            f"{tr['helix_seconds']:.2f} s (medians of {len(tr['samples']['plain'])} alternated "
            f"runs), ratio {tr['ratio']:.3f}. Samples: {tr['samples']}.",
        ]
        if "hook_fraction" in tr:
            lines += [
                "",
                f"Time inside the helix hooks during the helix run: scheduler "
                f"{tr['scheduler_hook_seconds']:.3f} s, workers {tr['worker_hook_seconds']:.3f} s "
                f"(summed), {tr['hook_fraction'] * 100:.2f}% of its wall time. The wall-clock "
                "ratio also carries this machine's run-to-run spread; the hook time is what the "
                "plugins add.",
            ]
            verdicts.append(
                f"plugin transparency by time inside the hooks: "
                f"{1 + tr['hook_fraction']:.4f}x (≤ 1.02): {_ok(tr['hook_fraction'] <= 0.02)}"
            )
        verdicts.append(
            f"plugin transparency by wall clock: {tr['ratio']:.3f}x (≤ 1.02): "
            f"{_ok(tr['ratio'] <= 1.02)}"
        )
        sg = micro["signatures"]
        lines += [
            "",
            "### Signatures",
            "",
            f"`fingerprint_value` on a {_fmt_bytes(sg['array_bytes'])} float64 array: "
            f"{sg['fingerprint_seconds']:.3f} s ({sg['gb_per_second']:.1f} GB/s).",
            "",
            "Creating a node downstream of an upstream result of growing size (lazy, or "
            "persisted on the cluster): bytes fed to the hash and creation time.",
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
            "### Artifact load",
            "",
            f"A {_fmt_bytes(al['array_bytes'])} float64 array: ZarrArtifactStore.put "
            f"{al['put_seconds']:.2f} s, np.save {al['np_save_seconds']:.2f} s.",
            "",
            "| cache | ZarrArtifactStore.get (s) | np.load (s) | np.load / zarr |",
            "|---|---|---|---|",
            f"| warm | {al['zarr_warm_seconds']:.3f} | {al['npy_warm_seconds']:.3f} | "
            f"{al['warm_ratio']:.2f} |",
            f"| cold | {al['zarr_cold_seconds']:.3f} | {al['npy_cold_seconds']:.3f} | "
            f"{al['cold_ratio']:.2f} |",
            "",
            f"Cold cache by: {al['cold_method']}.",
            "",
            "Hotspots of one warm ZarrArtifactStore.get (cProfile, own time): "
            + "; ".join(f"`{h['function']}` {h['own_seconds']:.3f} s" for h in al["zarr_hotspots"]),
        ]
        for c in ("warm", "cold"):
            r = al[f"{c}_ratio"]
            verdicts.append(f"Zarr load {c}: {r:.2f}x np.load speed (≥ 1.0): {_ok(r >= 1.0)}")
    lines += ["", "## Targets", ""] + [f"- {v}" for v in verdicts]
    if data.get("notes"):
        lines += ["", "## Findings", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(lines) + "\n"
