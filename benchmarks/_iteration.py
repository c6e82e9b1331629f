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


def run_iteration(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run iteration ``spec["index"]`` of ``spec["workflow"]`` with ``spec["strategy"]``."""
    workflow = WORKFLOWS[spec["workflow"]]
    params = workflow.params(spec["index"])
    size = workflow.sizes[spec["size"]]
    strategy = spec["strategy"]
    kind = strategy["kind"]
    workdir = Path(spec["workdir"])
    out: dict[str, Any] = {"index": spec["index"]}
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
                node = workflow.build(lambda name: workflow.task(name, params), params, size)
                metrics = node.compute()
                out["result_seconds"] = time.perf_counter() - started
                report = hx.last_run(client)  # waits for the writes to commit
                out["nodes"] = _node_rows(report)
                out["status"] = report.status
            elif kind == "dask":
                node = workflow.build(_dask_op(workflow, params, lambda f: f), params, size)
                metrics = node.compute()
            elif kind == "joblib":
                import joblib

                memory = joblib.Memory(workdir / "store", verbose=0)
                node = workflow.build(_dask_op(workflow, params, memory.cache), params, size)
                metrics = node.compute()
            elif kind == "graphchain":
                import graphchain

                node = workflow.build(_dask_op(workflow, params, lambda f: f), params, size)
                dsk = graphchain.optimize(
                    dict(node.__dask_graph__()), keys=[node.key], location=str(workdir / "store")
                )
                metrics = client.get(dsk, node.key)
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
    out["metrics"] = metrics
    out["storage_bytes"] = tree_bytes(workdir / "store")
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = run_iteration(spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
