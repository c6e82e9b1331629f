"""Scale: helix's CPU per node on graphs of tiny tasks, against plain ``dask.delayed``.

``python -m benchmarks._scale 1000 10000`` prints, per size, the process CPU seconds of a plain
run, a first helix run and an identical helix re-run (in-process cluster: scheduler, workers and
client share the process, so CPU time covers all of them), and helix's extra microseconds per
node, and the longest call of each helix hook (each blocks the scheduler's event loop while it
runs). Timings belong here, never in tests.
"""

from __future__ import annotations

import sys
import tempfile
import time

import dask
from distributed import Client, LocalCluster

import helix_dask as hx


def _inc(x: int) -> int:
    return x + 1


def _add(*xs: int) -> int:
    return sum(xs)


inc = hx.task(_inc, name="inc")
add = hx.task(_add, name="add")


def graph(n: int, helix: bool):
    """Chains of 10 tiny tasks fanned in by tens: about ``n`` nodes."""
    one, many = (inc, add) if helix else (dask.delayed(_inc), dask.delayed(_add))
    tops = []
    for c in range(max(1, n // 11)):
        x = c
        for _ in range(10):
            x = one(x)
        tops.append(x)
    while len(tops) > 1:
        tops = [many(*tops[i : i + 10]) for i in range(0, len(tops), 10)]
    return tops[0]


def _cpu(fn) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


HOOKS = ("update_graph", "transition", "handle_offer", "handle_written", "_finish")


def _time_hooks(plugin) -> dict[str, list[float]]:
    """Wrap the plugin's hooks and handlers (on the instance) to record each call's seconds:
    each runs on the scheduler's event loop, so its longest call is the longest it blocks."""
    times: dict[str, list[float]] = {h: [] for h in HOOKS}
    for h in HOOKS:
        fn = getattr(plugin, h)

        def timed(*args, _fn=fn, _out=times[h], **kwargs):
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                _out.append(time.perf_counter() - t0)

        setattr(plugin, h, timed)
    return times


def measure(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.submit(_inc, 1).result()
            plain_g = graph(n, helix=False)
            nodes = len(plain_g.dask)
            plain, plain_wall = _cpu(lambda: plain_g.compute())
            hx.setup(client, store=tmp, budget="1 GiB")
            client.run_on_scheduler(lambda dask_scheduler: None)
            times = _time_hooks(cluster.scheduler.plugins["helix"])
            first, first_wall = _cpu(lambda: (graph(n, helix=True).compute(), hx.last_run(client)))
            again, again_wall = _cpu(lambda: (graph(n, helix=True).compute(), hx.last_run(client)))
            blocked = {f"max_ms_{h}": max(t, default=0.0) * 1e3 for h, t in times.items()}
    return {
        "nodes": nodes,
        "plain_cpu": plain,
        "helix_first_cpu": first,
        "helix_rerun_cpu": again,
        "first_us_per_node": (first - plain) / nodes * 1e6,
        "rerun_us_per_node": again / nodes * 1e6,
        "plain_wall": plain_wall,
        "first_wall": first_wall,
        "rerun_wall": again_wall,
        **blocked,
    }


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1000"]:
        row = measure(int(arg))
        print(
            " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )
