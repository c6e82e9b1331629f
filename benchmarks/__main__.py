"""``python -m benchmarks [--quick]``: run the workflows and micro-benchmarks, write the results.

Full mode (about 30-35 min on 2 cores): full sizes, 10 iterations per workflow, 3 repeats
(diagnostic strategies in the first only), each iteration a new Python process connected to
a per-strategy LocalCluster(n_workers=2, threads_per_worker=1); graphchain in a virtual
environment of its own (``_graphchain``).
``--size large``: 3-4x the data, one repeat. ``--size paper``: sizes where plain Dask takes
20 s or more per iteration here, one repeat (hours; run once per release). Quick mode
(≤ 3 min): small sizes, 4 iterations per workflow, iterations in the driver process on threaded
clusters, small micro-benchmarks, no graphchain. Each writes ``benchmarks/results/<date>.json``
(``-quick``, ``-large``, ``-paper``), one PNG per workflow, and rewrites
``benchmarks/RESULTS.md`` from that JSON (``--from-json FILE`` regenerates it from a results
file without running anything). The run records the commit it measured and refuses a tree with
uncommitted changes unless ``--allow-dirty``. Hand-written findings live in
``benchmarks/FINDINGS.md``, which nothing here writes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKFLOW_NAMES = ("tabular", "images", "text")


def machine() -> dict[str, Any]:
    import dask
    import distributed
    import sklearn
    import zarr

    try:
        import joblib

        joblib_version = joblib.__version__
    except ImportError:
        joblib_version = "not installed"
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        memory_kb = int(f.readline().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": memory_kb / 2**20,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "sklearn": sklearn.__version__,
        "zarr": zarr.__version__,
        "joblib": joblib_version,
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def commit_state() -> dict[str, Any]:
    """The commit of the checkout being measured and whether its tree has changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "subject": git("log", "-1", "--format=%s"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"commit": None, "dirty": None, "error": str(exc)}


def run(
    *,
    quick: bool,
    size: str,
    iterations: int,
    repeats: int,
    workflows: tuple[str, ...],
    micro: bool,
    in_process: bool,
    processes: bool,
    out_dir: Path | None,
    only: list[str] | None = None,
    log=print,
    scale: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its data; write files when ``out_dir`` is given.
    ``scale``: the node counts of the scale table (the mode's own when None)."""
    from ._driver import TIGHT_FRACTION, run_workflow
    from ._oracle import budget_bound, lower_bound
    from ._report import default_policy, identical_metrics, summarize

    started = time.time()
    data: dict[str, Any] = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d"),
        "quick": quick,
        "size": size,
        "repeats": repeats,
        "default_policy": default_policy(),
        "tight_fraction": TIGHT_FRACTION,
        "machine": machine(),
        "git": commit_state(),
        "method": (
            "one LocalCluster(n_workers=2, threads_per_worker=1) per strategy and repeat, "
            "started by the driver (its start-up time is reported separately); "
            + (
                "each iteration runs in the driver process (quick mode), on "
                + ("worker processes" if processes else "worker threads")
                if in_process
                else "each iteration is a new Python process that connects by address; it is "
                "forked from a server that has imported numpy, pandas, scipy, scikit-learn, "
                "joblib, dask and distributed, never helix_dask or the workflow code, which each "
                "iteration imports afresh (process start reported separately)"
            )
            + ". Iteration time runs from connected to result (graph building, `hx.setup`, "
            "compute and, for helix, the finished run report including artifact writes); "
            "'to result' stops when compute returns, before helix waits for its writes. "
            "BLAS/OpenMP use one thread per worker. joblib.Memory wraps the same functions in "
            "dask.delayed on the same kind of cluster; graphchain wraps them in its own virtual "
            "environment (benchmarks/_graphchain.py)"
            + (", not run in quick mode" if in_process else "")
            + "."
        ),
        "workflows": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="helix-bench-", dir=os.environ.get("HELIX_BENCH_TMP")))
    try:
        if not in_process:
            from ._driver import start_iteration_server

            data["iteration_server_seconds"] = start_iteration_server()
            log(f"iteration fork server ready in {data['iteration_server_seconds']:.1f}s")
        for name in workflows:
            log(f"workflow {name} ({size}, {iterations} iterations, {repeats} repeat(s))")
            result = run_workflow(
                name,
                size,
                iterations,
                repeats,
                workdir,
                in_process=in_process,
                processes=processes,
                only=only,
                log=log,
            )
            result["lb"] = lower_bound(result)
            tight = [
                r["strategy"]["budget"]
                for sid, rs in result["runs"].items()
                if sid.endswith("@tight")
                for r in rs
            ]
            if tight:
                result["lb_budget"] = budget_bound(result, tight)
            result["summary"] = summarize(result)
            result["identical"] = identical_metrics(result)
            data["workflows"].append(result)
        if micro:
            from ._micro import run_micro

            data["micro"] = run_micro(size, log=log, scale=scale)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data["machine"]["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    data["seconds"] = time.time() - started
    data["included"] = included()
    if out_dir is not None:
        write(data, out_dir)
    return data


INCLUDED = ("sklearn_search.json", "object_store.json")
"""Results of the separate benchmarks (``python -m benchmarks.sklearn_search``,
``python -m benchmarks.object_store``), copied into the run's JSON as they stand, with their
own dates: they are not re-run by ``python -m benchmarks``."""


def included() -> dict[str, Any]:
    out = {}
    for name in INCLUDED:
        path = HERE / "results" / name
        if path.exists():
            out[name.removesuffix(".json")] = json.loads(path.read_text())
    return out


def write(data: dict[str, Any], out_dir: Path) -> None:
    from ._report import markdown, plot

    out_dir.mkdir(parents=True, exist_ok=True)
    commit = (data.get("git") or {}).get("commit") or ""
    stem = (
        data["date"]
        + ("" if data["size"] == "full" else f"-{data['size']}")
        + (f"-{commit[:7]}" if commit else "")  # runs of one day on other commits are kept
    )
    data["file"] = f"{stem}.json"
    (out_dir / data["file"]).write_text(json.dumps(data, indent=1, default=str))
    pngs: dict[str, str] = {}
    try:
        for w in data["workflows"]:
            png = f"{stem}-{w['workflow']}.png"
            plot(w, w["summary"], out_dir / png)
            pngs[w["workflow"]] = f"results/{png}"
    except ImportError as exc:
        print(f"no plots: {exc}; pip install helix_dask[bench]", file=sys.stderr)
    (HERE / "RESULTS.md").write_text(markdown(data, pngs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, ≤ 3 minutes")
    parser.add_argument(
        "--size",
        choices=("full", "large", "paper"),
        default="full",
        help="workflow sizes without --quick: full (3 repeats, about half an hour), large (3-4x "
        "the data; one repeat) or paper (plain Dask ≥ 20 s per iteration; one repeat, hours)",
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="measure a tree with uncommitted changes (RESULTS.md then says so)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats (full 3, large 1, quick 1)"
    )
    parser.add_argument("--workflows", nargs="+", choices=WORKFLOW_NAMES, default=WORKFLOW_NAMES)
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-benchmarks")
    parser.add_argument(
        "--scale",
        type=int,
        nargs="+",
        metavar="NODES",
        help="node counts of the scale table (default: 1000 quick; 1000 10000 full; "
        "1000 10000 100000 paper)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="only regenerate RESULTS.md (and the plots) from a results file",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        write(json.loads(args.from_json.read_text()), args.from_json.parent)
        print(f"wrote {HERE / 'RESULTS.md'} from {args.from_json}")
        return
    state = commit_state()
    if state.get("dirty") and not args.allow_dirty:
        parser.error(
            "the tree has uncommitted changes: commit them (RESULTS.md must describe a commit) "
            "or pass --allow-dirty"
        )
    data = run(
        quick=args.quick,
        size="quick" if args.quick else args.size,
        iterations=4 if args.quick else 10,
        repeats=args.repeats or (3 if not args.quick and args.size == "full" else 1),
        workflows=tuple(args.workflows),
        micro=not args.no_micro,
        in_process=args.quick,
        processes=not args.quick,
        out_dir=args.out,
        scale=tuple(args.scale) if args.scale else None,
    )
    print(f"done in {data['seconds']:.0f}s; see {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
