"""Run every strategy through every workflow's scripted iterations and collect the results.

One LocalCluster(n_workers=2, threads_per_worker=1) per strategy and repeat, started here and
timed separately; each iteration is a new Python process (``python -m benchmarks._iteration``)
that connects to it by address, so a code edit is a new import as for a user re-running a
script. Iteration time is measured inside that process, from connecting to having the result
(and, for helix, the finished run report): it includes building the graph and ``hx.setup``.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import multiprocessing.context
import os
import shutil
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import dask
from distributed import Client, LocalCluster

from helix_dask.materializer import POLICIES

from ._iteration import WORKFLOWS, run_iteration
from ._workflow import PRELOAD

ROOT = Path(__file__).resolve().parent.parent
TIGHT_FRACTION = 0.3
"""A tight budget is this fraction of what policy 'all' stored in the first repeat."""
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""One BLAS/OpenMP thread per worker: two single-threaded workers on two cores."""


def strategies(default: str | None = None) -> list[dict[str, Any]]:
    """Every helix policy (unbounded budget), then the peers; 'all' first (it sizes the tight
    budgets), tight-budget runs of the other storing policies, and ``helix:none@trace`` (every
    compute traced, ``helix.trace: always``: against ``helix:none`` it shows what tracing
    costs) last. Strategies marked ``first_repeat`` are diagnostics no target is judged on
    (unbounded policies other than the default and ``none``, and ``helix:none@trace``): they
    run in the first repeat only, which keeps three repeats of the full run near 30 minutes."""
    default = default or _default_policy()
    names = sorted(POLICIES, key=lambda n: (n != "all", n))
    out = [
        {
            "id": f"helix:{p}",
            "kind": "helix",
            "policy": p,
            "budget": None,
            "first_repeat": p not in (default, "none"),
        }
        for p in names
    ]
    out += [{"id": kind, "kind": kind} for kind in ("dask", "joblib", "graphchain")]
    out += [
        {"id": f"helix:{p}@tight", "kind": "helix", "policy": p, "budget": "tight"}
        for p in names
        if p not in ("all", "none")
    ]
    out.append(
        {
            "id": "helix:none@trace",
            "kind": "helix",
            "policy": "none",
            "budget": None,
            "trace": True,
            "first_repeat": True,
        }
    )
    return out


def _default_policy() -> str:
    from ._report import default_policy

    return default_policy()


def _cluster(processes: bool) -> LocalCluster:
    """The cluster of one strategy, its workers warmed up: they import the libraries in PRELOAD
    (part of the cluster start-up time), so the first task to use scikit-learn on each worker
    does not add a second or two of imports to whichever iteration it falls in."""
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    with Client(cluster) as client:
        client.run(_import_preload)
    return cluster


def _import_preload() -> None:
    for module in PRELOAD:
        importlib.import_module(module)


def _iteration_context() -> multiprocessing.context.ForkServerContext:
    """A fork server that has imported the libraries in PRELOAD once. Importing scikit-learn,
    pandas and distributed takes about 3 s here; forking a process that already has them makes
    running 10 iterations x 8 strategies x 3 workflows x 3 repeats fit the time budget."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def start_iteration_server() -> float:
    """Start the fork server (it imports PRELOAD) before anything is timed; its seconds.

    Bytecode of helix_dask and of the workflows is compiled first: each iteration imports them
    afresh, and where ``PYTHONDONTWRITEBYTECODE`` is set (or the checkout is read-only) nothing
    else would ever cache it, so every iteration would compile them from source (~0.1 s) — a
    cost users with a bytecode cache do not pay, and the preloaded libraries never do."""
    import compileall

    import helix_dask

    for package in (Path(helix_dask.__file__).parent, Path(__file__).parent):
        compileall.compile_dir(package, quiet=1, maxlevels=0)
    t0 = time.perf_counter()
    proc = _iteration_context().Process(target=_noop, name="warm-up")
    proc.start()
    proc.join()
    return time.perf_counter() - t0


def _noop() -> None:
    pass


def _child(spec: dict[str, Any], conn: Connection) -> None:
    from ._iteration import run_iteration as run_in_child  # imported here, in the new process

    try:
        conn.send(run_in_child(spec))
    except BaseException as exc:  # report, never hang the driver
        conn.send({"index": spec["index"], "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _subprocess_iteration(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one iteration in a new process forked from the fork server; wait for its result."""
    ctx = _iteration_context()
    receive, send = ctx.Pipe(duplex=False)
    t0 = time.perf_counter()
    proc = ctx.Process(target=_child, args=(spec, send), name=f"iteration-{spec['index']}")
    proc.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = {"index": spec["index"], "error": "the iteration process died without a result"}
    proc.join()
    if proc.exitcode not in (0, None) and "error" not in result:
        result = {"index": spec["index"], "error": f"exit code {proc.exitcode}"}
    result["process_seconds"] = time.perf_counter() - t0
    return result


def _run_strategy(
    name: str,
    size: str,
    n_iterations: int,
    strategy: dict[str, Any],
    sdir: Path,
    in_process: bool,
    processes: bool,
    log: Callable[[str], None],
) -> tuple[float, list[dict[str, Any]]]:
    """Cluster start-up seconds and the iterations of one strategy on its own cluster."""
    workflow = WORKFLOWS[name]
    t0 = time.perf_counter()
    cluster = _cluster(processes)
    startup = time.perf_counter() - t0
    iterations = []
    try:
        for i in range(n_iterations):
            spec = {
                "workflow": name,
                "size": size,
                "index": i,
                "strategy": strategy,
                "address": cluster.scheduler_address,
                "workdir": str(sdir),
            }
            res = run_iteration(spec) if in_process else _subprocess_iteration(spec)
            iterations.append(res)
            if "error" in res:
                log(f"  {strategy['id']} iteration {i + 1}: FAILED {res['error']}")
                break
            log(
                f"  {strategy['id']:<22} it {i + 1:>2} "
                f"{workflow.iterations[i].kind:<5} {res['seconds']:7.2f}s "
                f"store {res['storage_bytes'] / 1e6:8.1f} MB"
            )
    finally:
        cluster.close()
    return startup, iterations


def run_workflow(
    name: str,
    size: str,
    n_iterations: int,
    repeats: int,
    workdir: Path,
    *,
    in_process: bool = False,
    processes: bool = True,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run all strategies on workflow ``name``; return per-strategy, per-repeat iterations."""
    os.environ.update(THREAD_ENV)
    workflow = WORKFLOWS[name]
    if size not in workflow.sizes:
        raise ValueError(f"workflow {name} has no size {size!r}")
    runs: dict[str, list[dict[str, Any]]] = {}
    all_bytes: int | None = None  # what 'all' stored in the first repeat sizes every tight budget
    for repeat in range(repeats):
        for strategy in strategies():
            if only and not any(strategy["id"].startswith(o) for o in only):
                continue
            if repeat and strategy.get("first_repeat"):
                continue
            strategy = dict(strategy)
            if strategy.get("budget") == "tight":
                if not all_bytes:
                    log(f"  {strategy['id']}: no 'all' run to size the tight budget; skipped")
                    continue
                strategy["budget"] = int(all_bytes * TIGHT_FRACTION)
            sdir = workdir / name / f"r{repeat}" / strategy["id"].replace(":", "_")
            shutil.rmtree(sdir, ignore_errors=True)
            sdir.mkdir(parents=True)
            if strategy["kind"] == "graphchain":
                if in_process:
                    continue  # its own venv, its own cluster: full mode only
                from ._graphchain import run_graphchain

                startup, iterations = run_graphchain(name, size, n_iterations, sdir, log)
            else:
                trace = (
                    dask.config.set({"helix.trace": "always"}) if strategy.get("trace") else None
                )
                with trace or contextlib.nullcontext():  # read by the scheduler, in this process
                    startup, iterations = _run_strategy(
                        name, size, n_iterations, strategy, sdir, in_process, processes, log
                    )
            if (
                strategy["id"] == "helix:all"
                and all_bytes is None
                and iterations
                and "error" not in iterations[-1]
            ):
                all_bytes = iterations[-1]["storage_bytes"]
            runs.setdefault(strategy["id"], []).append(
                {
                    "repeat": repeat,
                    "strategy": strategy,
                    "cluster_startup_seconds": startup,
                    "iterations": iterations,
                }
            )
            shutil.rmtree(sdir, ignore_errors=True)
    return {
        "workflow": name,
        "title": workflow.title,
        "size": dict(workflow.sizes[size]),
        "iterations": [
            {"kind": it.kind, "what": it.what} for it in workflow.iterations[:n_iterations]
        ],
        "runs": runs,
    }
