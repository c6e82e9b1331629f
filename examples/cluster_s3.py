"""helix on a real (loopback) deployment: an S3-compatible server, a scheduler started with
``--preload helix_dask`` and two ``dask worker`` processes, iterated on by a client.

    pip install -e ".[s3,ml]" "moto[server]"
    python examples/cluster_s3.py

Everything listens on 127.0.0.1 and is stopped at the end. On a real cluster, replace the moto
server by your bucket and its credentials, and start the same two commands on your machines
(or through dask-jobqueue / dask-kubernetes; see "Running on a cluster" in the README).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from distributed import Client

import helix_dask as hx
from helix_dask import cli

HERE = Path(__file__).resolve().parent
CREDENTIALS = {"key": "example", "secret": "example"}


@hx.task
def load(n):
    time.sleep(1.0)  # stands for reading a data set
    return np.random.default_rng(0).standard_normal((n, 16))


@hx.task
def featurize(x, degree=2):
    time.sleep(1.0)
    return np.hstack([x**d for d in range(1, degree + 1)])


@hx.task
def train(features, alpha=1.0):
    y = features[:, 0] > 0
    gram = features.T @ features + alpha * np.eye(features.shape[1])
    return np.linalg.solve(gram, features.T @ y)


@hx.task
def evaluate(weights, features):
    return float(((features @ weights > 0.5) == (features[:, 0] > 0)).mean())


def workflow(n=20_000, degree=2, alpha=1.0):
    features = featurize(load(n), degree=degree)
    return evaluate(train(features, alpha=alpha), features)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")
        time.sleep(0.1)


def start_s3_server() -> tuple[subprocess.Popen, str]:
    """moto's standalone S3 server on a free loopback port."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait(listening, "moto's S3 server")
    return proc, f"http://127.0.0.1:{port}"


def start_cluster(
    env: dict[str, str], scheduler_env: dict[str, str], workdir: Path
) -> tuple[list[subprocess.Popen], Path]:
    """``dask scheduler --preload helix_dask`` and two ``dask worker`` processes."""
    scheduler_file = workdir / "scheduler.json"
    where = ["--host", "127.0.0.1", "--scheduler-file", str(scheduler_file)]
    dask_cli = [sys.executable, "-m", "dask"]
    scheduler = [*dask_cli, "scheduler", "--preload", "helix_dask", *where, "--port", "0"]
    procs = [
        subprocess.Popen([*scheduler, "--dashboard-address", "127.0.0.1:0"], env=scheduler_env)
    ]
    _wait(scheduler_file.exists, "the scheduler")
    for _ in range(2):
        procs.append(
            subprocess.Popen(
                [*dask_cli, "worker", *where, "--nthreads", "1", "--no-dashboard"], env=env
            )
        )
    return procs, scheduler_file


def main() -> None:
    import s3fs

    server, endpoint = start_s3_server()
    procs: list[subprocess.Popen] = []
    try:
        options = {"endpoint_url": endpoint, **CREDENTIALS}
        s3fs.S3FileSystem(**options).mkdir("helix-example")
        workdir = Path(tempfile.mkdtemp(prefix="helix-cluster-"))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            # The settings every process of the deployment reads: scheduler and workers.
            "DASK_HELIX__STORE": "s3://helix-example/store",
            "DASK_HELIX__STORAGE_OPTIONS": repr(options),
        }
        # Catalog and pickle key stay on the scheduler's local disk; workers get the key from
        # the scheduler, and the helix command asks the scheduler for the catalog.
        scheduler_env = {
            **env,
            "DASK_HELIX__CATALOG": str(workdir / "catalog"),
            "DASK_HELIX__KEY_FILE": str(workdir / "keys" / "pickle.key"),
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith("DASK_HELIX")})
        procs, scheduler_file = start_cluster(env, scheduler_env, workdir)
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(2, timeout=60)
            for label, kwargs in [
                ("first run", {}),
                ("identical re-run", {}),
                ("alpha=0.1", {"alpha": 0.1}),
                ("degree=3", {"degree": 3, "alpha": 0.1}),
            ]:
                started = time.perf_counter()
                accuracy = client.compute(workflow(**kwargs)).result()
                run = hx.last_run(client)
                print(
                    f"{label:>17}: accuracy {accuracy:.3f} in {time.perf_counter() - started:.2f}s"
                    f"  {run.summary()}  computed {run.computed}, loaded {run.loaded}"
                )
            print(f"\n$ helix log --scheduler {client.scheduler.address}")
            cli.main(["log", "--scheduler", client.scheduler.address])
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
