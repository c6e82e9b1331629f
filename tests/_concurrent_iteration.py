"""One process of the concurrency test: its own cluster iterating on a shared store, or gc.

``python _concurrent_iteration.py iterate STORE SEED ROUNDS`` runs ROUNDS edits of a small
workflow and checks each result against plain NumPy; ``... gc STORE STOPFILE`` runs
``helix gc`` until STOPFILE exists. Prints one JSON line of counts; exits 1 on any error.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import helix_dask as hx

N = 4_000  # 32 kB per array


# Each step takes long enough that loading beats computing: the plans load what is stored.
@hx.task(materialize=True)
def base(seed: int) -> np.ndarray:
    time.sleep(0.2)
    return np.random.default_rng(seed).random(N)


@hx.task(materialize=True)
def scale(x: np.ndarray, factor: float) -> np.ndarray:
    time.sleep(0.1)
    return x * factor


@hx.task(materialize=True)
def total(x: np.ndarray, offset: float) -> float:
    time.sleep(0.1)
    return float(x.sum() + offset)


def expected(seed: int, factor: float, offset: float) -> float:
    return float((np.random.default_rng(seed).random(N) * factor).sum() + offset)


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.fallbacks = 0
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "could not load artifact" in message:
            self.fallbacks += 1
        else:
            self.warnings.append(message[:200])


def iterate(store: str, seed: int, rounds: int) -> dict:
    from distributed import Client, LocalCluster

    count = Count()
    logging.getLogger("helix_dask").addHandler(count)
    logging.getLogger("helix_dask.store").propagate = True
    wrong, statuses = 0, []
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
    )
    with cluster, Client(cluster) as client:
        hx.setup(client, store=store, budget=170_000, policy="value")
        for r in range(rounds):
            # Edits: the base every third round, the factor every round, the offset per
            # process (two of them share it): results recur across rounds and processes, and
            # the budget (five arrays) makes them evict one another.
            b, factor, offset = (r // 3) % 2, 1.0 + r % 2, float(seed % 2)
            got = total(scale(base(b), factor), offset).compute()
            wrong += not np.isclose(got, expected(b, factor, offset), rtol=0, atol=1e-9)
            statuses.append(hx.last_run(client).status)
    return {
        "wrong": wrong,
        "statuses": statuses,
        "fallbacks": count.fallbacks,
        "warnings": count.warnings,
    }


def collect(store: str, stop: str) -> dict:
    from helix_dask.cli import main

    runs = failures = 0
    while not Path(stop).exists():
        with open("/dev/null", "w") as out:
            failures += main(["gc", "--store", store, "--keep", "3"], out=out) != 0
        runs += 1
        time.sleep(0.05)
    return {"gc_runs": runs, "gc_failures": failures}


if __name__ == "__main__":
    try:
        if sys.argv[1] == "iterate":
            out = iterate(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        else:
            out = collect(sys.argv[2], sys.argv[3])
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print(json.dumps(out))
