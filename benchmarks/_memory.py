"""Memory: a worker's peak RSS on a chain of large intermediates, helix against plain Dask.

``python -m benchmarks._memory [MB]`` runs a chain of seven tasks, each passing a ~``MB`` MB
(default 400) float64 array to the next, on a cluster of two one-thread worker
processes: plain ``dask.delayed``, then helix with a budget too small for any result
(100 MB), then helix with a 10 GB budget (the requested output is written). Each
configuration gets a fresh cluster; a thread in the worker samples its RSS every 2 ms. It
prints the worker's RSS before the compute and its peak, and helix's peak over plain's.
Measurements belong here, never in tests.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time

import dask
import numpy as np
from distributed import Client, LocalCluster

import helix_dask as hx

STEPS = 7
WORKERS = 2

_peak = {"rss": 0, "stop": False}


def _sample() -> None:
    import psutil

    proc = psutil.Process()
    while not _peak["stop"]:
        _peak["rss"] = max(_peak["rss"], proc.memory_info().rss)
        time.sleep(0.002)


def _start_sampler() -> int:
    """In the worker: start sampling; its RSS now."""
    import psutil

    _peak["rss"], _peak["stop"] = 0, False
    threading.Thread(target=_sample, name="rss-sampler", daemon=True).start()
    return psutil.Process().memory_info().rss


def _stop_sampler() -> int:
    _peak["stop"] = True
    time.sleep(0.01)
    return _peak["rss"]


def _make(mb: int) -> np.ndarray:
    return np.full(mb * 2**20 // 8, 1.0)


def _step(x: np.ndarray) -> np.ndarray:
    return x + 1.0


make = hx.task(_make, name="mem_make")
step = hx.task(_step, name="mem_step")


def chain(mb: int, helix: bool):
    first, then = (make, step) if helix else (dask.delayed(_make), dask.delayed(_step))
    x = first(mb)
    for _ in range(STEPS - 1):
        x = then(x)
    return x


def peak(mb: int, budget: str | None) -> tuple[int, int]:
    """(RSS before, peak RSS) of the worker over one compute; ``budget`` None: plain Dask."""
    with tempfile.TemporaryDirectory() as tmp:
        with (
            LocalCluster(
                n_workers=WORKERS,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                worker_dashboard_address=":0",
            ) as cluster,
            Client(cluster) as client,
        ):
            if budget is not None:
                hx.setup(client, store=tmp, budget=budget)
            client.submit(_make, 1).result()  # imports and a warm worker
            before = max(client.run(_start_sampler).values())
            out = chain(mb, helix=budget is not None).compute()
            assert out.shape == (mb * 2**20 // 8,)
            del out
            if budget is not None:
                print(budget, hx.last_run(client).summary())  # the run ended: writes committed
            top = max(client.run(_stop_sampler).values())
    return before, top


BUDGETS = ("100 MB", "10 GB")
"""Too small for any intermediate, and large enough for all (only the output is wanted)."""


def measure(mb: int) -> dict[str, object]:
    """The peaks of plain Dask and of helix under each of :data:`BUDGETS`, for the report."""
    rows = [{"config": "plain", "budget": None, **_row(peak(mb, None))}]
    rows += [{"config": f"helix {b}", "budget": b, **_row(peak(mb, b))} for b in BUDGETS]
    return {"mb": mb, "steps": STEPS, "rows": rows}


def _row(sample: tuple[int, int]) -> dict[str, int]:
    return {"before_bytes": sample[0], "peak_bytes": sample[1]}


def main(mb: int) -> None:
    rows = {"plain": peak(mb, None)}
    for budget in BUDGETS:
        rows[f"helix {budget}"] = peak(mb, budget)
    plain = rows["plain"][1]
    for name, (before, top) in rows.items():
        print(
            f"{name:>14}: before {before / 2**30:.2f} GiB, peak {top / 2**30:.2f} GiB, "
            f"x plain {top / plain:.2f}"
        )


if __name__ == "__main__":
    # Through the importable module: worker processes unpickle its functions by reference,
    # so the sampler's state is one module's, not a copy per call.
    from benchmarks._memory import main

    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
