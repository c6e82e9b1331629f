"""One iteration of one workflow under one strategy, as a user re-running a script.

Run as ``python -m benchmarks._iteration '<json spec>'`` (a new process per iteration, which
connects to the strategy's running cluster) or in process with :func:`run_iteration`. Prints
one JSON line: the metrics, the timings and, for helix, the run report's nodes.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask
from distributed import Client

import helix_dask as hx

from . import images, tabular, text

WORKFLOWS = {w.name: w for w in (tabular.WORKFLOW, images.WORKFLOW, text.WORKFLOW)}


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of the files under ``path`` (0 if it does not exist)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _dask_op(workflow, params, wrap: Callable[[Callable], Callable]) -> Callable:
    def op(name: str) -> Callable:
        return dask.delayed(wrap(workflow.task(name, params).func), pure=False)

    return op


def _node_rows(report: hx.RunReport) -> list[dict[str, Any]]:
    sig = {n.key: n.signature for n in report.nodes}
    return [
        {
            "name": n.name,
            "signature": n.signature,
            "parents": [sig.get(p, p.rpartition("-")[2]) for p in n.parents],
            "decision": str(n.decision),
            "compute_seconds": n.compute_seconds,
            "load_seconds": n.load_seconds,
            "write_seconds": n.write_seconds,
            "nbytes": n.nbytes,
            "materialization": str(n.materialization) if n.materialization else None,
        }
        for n in report.nodes
    ]


def _time_update_graph(dask_scheduler: Any) -> None:
    """Time the helix scheduler plugin's ``update_graph`` hook (planning and rewriting happen
    there, before anything runs); idempotent, the seconds collect on the plugin."""
    plugin = dask_scheduler.plugins.get("helix")
    if plugin is None or getattr(plugin, "_bench_hook", None) is not None:
        return
    hook = plugin.update_graph
    plugin._bench_seconds = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return hook(*args, **kwargs)
        finally:
            plugin._bench_seconds.append(time.perf_counter() - t0)

    plugin._bench_hook = hook
    plugin.update_graph = timed


def _take_update_graph_seconds(dask_scheduler: Any) -> float:
    plugin = dask_scheduler.plugins.get("helix")
    seconds = getattr(plugin, "_bench_seconds", None) or []
    total = sum(seconds)
    seconds.clear()
    return total


def run_iteration(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run iteration ``spec["index"]`` of ``spec["workflow"]`` with ``spec["strategy"]``.

    Besides the totals, ``phases`` splits the iteration: ``setup`` (``hx.setup``), ``build``
    (building the graph, which signs every helix node), ``plan`` (the helix scheduler hook that
    plans and rewrites the graph; graphchain's ``optimize``), ``run`` (compute until the result
    is back, less ``plan``), ``writes`` (after the result, until the run's last write
    committed, by the scheduler's clock) and ``report`` (the rest of ``hx.last_run``).
    """
    workflow = WORKFLOWS[spec["workflow"]]
    params = workflow.params(spec["index"])
    size = workflow.sizes[spec["size"]]
    strategy = spec["strategy"]
    kind = strategy["kind"]
    workdir = Path(spec["workdir"])
    out: dict[str, Any] = {"index": spec["index"]}
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    with Client(spec["address"]) as client:
        out["connect_seconds"] = time.perf_counter() - t0
        started = time.perf_counter()
        try:
            if kind == "helix":
                hx.setup(
                    client,
                    store=workdir / "store",
                    budget=strategy["budget"],
                    policy=strategy["policy"],
                    workflow=workflow.name,
                )
                client.run_on_scheduler(_time_update_graph)
                phases["setup"] = time.perf_counter() - started
                t = time.perf_counter()
                node = workflow.build(lambda name: workflow.task(name, params), params, size)
                phases["build"] = time.perf_counter() - t
                t = time.perf_counter()
                metrics = node.compute()
                result_at, computed = time.time(), time.perf_counter() - t
                out["result_seconds"] = time.perf_counter() - started
                t = time.perf_counter()
                report = hx.last_run(client)  # waits for the writes to commit
                reported = time.perf_counter() - t
                phases["plan"] = client.run_on_scheduler(_take_update_graph_seconds)
                phases["run"] = computed - phases["plan"]
                finished = report.finished if report.finished is not None else result_at
                phases["writes"] = min(reported, max(0.0, finished - result_at))
                phases["report"] = reported - phases["writes"]
                out["nodes"] = _node_rows(report)
                out["status"] = report.status
            elif kind in ("dask", "joblib"):
                wrap: Callable[[Callable], Callable] = lambda f: f  # noqa: E731
                if kind == "joblib":
                    import joblib

                    wrap = joblib.Memory(workdir / "store", verbose=0).cache
                t = time.perf_counter()
                node = workflow.build(_dask_op(workflow, params, wrap), params, size)
                phases["build"] = time.perf_counter() - t
                t = time.perf_counter()
                metrics = node.compute()
                phases["run"] = time.perf_counter() - t
            else:
                raise ValueError(f"unknown strategy kind {kind!r}")
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            out["error"] = (
                f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno} "
                f"in {frame.name})"
            )
            return out
        out["seconds"] = time.perf_counter() - started
    out["phases"] = phases
    out["metrics"] = metrics
    out["storage_bytes"] = tree_bytes(workdir / "store")
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = run_iteration(spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
