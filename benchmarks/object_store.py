"""``python -m benchmarks.object_store``: the store on an S3-compatible server against local disk.

Starts moto's standalone S3 server on loopback (a Python process on this machine: it measures
helix's request pattern and protocol overhead, not a cloud's network), then measures

- write and load throughput of ``ObjectArtifactStore`` and ``ZarrArtifactStore`` for float64
  arrays of 1 to 64 MiB, and the latency of a tiny artifact (a pickle), median of 3;
- one small workflow iterated four times (first run, identical re-run, a hyperparameter edit,
  a data edit) on ``LocalCluster(processes=True)`` with 2 workers: cumulative seconds with the
  store on S3, on local disk, and plain Dask.

Writes ``benchmarks/results/object_store.json``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np

import helix_dask as hx

HERE = Path(__file__).resolve().parent
SIZES_MIB = (1, 8, 64)
REPEATS = 3
CREDENTIALS = {"key": "bench", "secret": "bench"}


# -- the workflow ----------------------------------------------------------------------------


@hx.task
def load(n, seed=0):
    time.sleep(1.0)  # stands for reading a data set
    return np.random.default_rng(seed).standard_normal((n, 32))


@hx.task
def featurize(x):
    time.sleep(0.5)
    return np.hstack([x, x**2, np.sin(x)])


@hx.task
def train(features, alpha=1.0):
    y = features[:, 0] > 0
    gram = features.T @ features + alpha * np.eye(features.shape[1])
    return np.linalg.solve(gram, features.T @ y)


@hx.task
def evaluate(weights, features):
    return float(((features @ weights > 0.5) == (features[:, 0] > 0)).mean())


def workflow(seed: int, alpha: float) -> Any:
    features = featurize(load(100_000, seed=seed))
    return evaluate(train(features, alpha=alpha), features)


ITERATIONS = [(0, 1.0), (0, 1.0), (0, 0.1), (1, 0.1)]
"""(seed, alpha) per iteration: first run, identical re-run, hyperparameter edit, data edit."""


# -- helpers ---------------------------------------------------------------------------------


def _median(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def start_s3_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto's S3 server did not start")


def throughput(store: Any) -> dict[str, Any]:
    """Write and load MB/s per array size, and the seconds of a tiny artifact's put and get."""
    rows: dict[str, Any] = {}
    counter = iter(range(1, 10**6))
    for mib in SIZES_MIB:
        value = np.random.default_rng(mib).random(mib * 2**20 // 8)
        signatures = []

        def put(value: np.ndarray = value, signatures: list[str] = signatures) -> None:
            signatures.append(f"{next(counter):032x}")
            store.put(signatures[-1], value)

        write = _median(put)
        read = _median(lambda signatures=signatures: store.get(signatures[-1]))
        rows[f"{mib} MiB"] = {
            "write_MBps": round(value.nbytes / write / 1e6, 1),
            "load_MBps": round(value.nbytes / read / 1e6, 1),
            "write_s": round(write, 4),
            "load_s": round(read, 4),
        }
    tiny: list[str] = []

    def put_tiny() -> None:
        tiny.append(f"{next(counter):032x}")
        store.put(tiny[-1], {"a set": {1, 2, 3}})

    rows["tiny pickle"] = {
        "write_s": round(_median(put_tiny), 4),
        "load_s": round(_median(lambda: store.get(tiny[-1])), 4),
    }
    return rows


def iterate(store: str | None, options: dict[str, Any] | None) -> dict[str, Any]:
    """Cumulative seconds of the four iterations on a fresh 2-process cluster."""
    from distributed import Client, LocalCluster

    seconds, summaries = [], []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        if store is not None:
            hx.setup(client, store=store, storage_options=options, budget="2 GiB")
        results = []
        for seed, alpha in ITERATIONS:
            started = time.perf_counter()
            results.append(client.compute(workflow(seed, alpha)).result())
            if store is not None:
                summaries.append(hx.last_run(client).summary())
            seconds.append(round(time.perf_counter() - started, 3))
    return {
        "seconds": seconds,
        "cumulative": round(sum(seconds), 3),
        "results": results,
        "runs": summaries,
    }


def main() -> None:
    server, endpoint = start_s3_server()
    options = {"endpoint_url": endpoint, **CREDENTIALS}
    work = Path(tempfile.mkdtemp(prefix="helix-bench-s3-"))
    os.environ["HOME"] = str(work / "home")  # catalogs and keys of URL stores: not the user's
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "server": "moto standalone S3 server on 127.0.0.1 (same machine)",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    try:
        import s3fs

        from helix_dask._store_access import open_store

        s3fs.S3FileSystem(**options).mkdir("bench-throughput")
        s3fs.S3FileSystem(**options).mkdir("bench-workflow")
        with dask.config.set({"helix.storage-options": options}):
            out["throughput"] = {
                "s3": throughput(open_store("s3://bench-throughput/store")),
                "local": throughput(open_store(work / "local-throughput")),
            }
        out["workflow"] = {
            "s3": iterate("s3://bench-workflow/store", options),
            "local": iterate(str(work / "local-workflow"), None),
            "dask": iterate(None, None),
        }
    finally:
        server.terminate()
        server.wait(30)
    target = HERE / "results" / "object_store.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("throughput", "workflow")}, indent=2))


if __name__ == "__main__":
    main()
