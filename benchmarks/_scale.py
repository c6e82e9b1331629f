"""Scale: helix's cost per node on graphs of tiny tasks, against plain ``dask.delayed``.

``python -m benchmarks._scale 1000 10000`` prints, per size, the wall and process CPU seconds of a
plain run, a first helix run and an identical helix re-run, each building its graph and computing
it (in-process cluster: scheduler, workers and client share the process, so CPU time covers all of
them), and helix's microseconds per node by phase: ``build`` (creating and signing the nodes on the
client), ``plan`` (``plan_update``: catalog look-ups, verification, the min cut), ``rewrite``
(turning loads into load tasks, forgetting pruned ancestors), ``hook`` (the rest of the scheduler
plugin's ``update_graph``), ``run`` (compute until the result is back, less the hook) and
``report`` (``hx.last_run``: writes committed, report built), and the longest call of each helix
hook and handler (each blocks the scheduler's event loop while it runs). The phases are timed by
wrapping helix's functions in this process only; timings belong here, never in tests.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import dask
from distributed import Client, LocalCluster

import helix_dask as hx
from helix_dask import _intake

PHASES = ("build", "plan", "rewrite", "hook", "run", "report")


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


@contextlib.contextmanager
def _timed(owner: Any, name: str, into: dict[str, float]) -> Iterator[None]:
    """Add the seconds spent in ``owner.name`` to ``into[name]`` while inside."""
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - t0

    own = name in vars(owner)  # an attribute of the object itself (e.g. a hook's timer)
    setattr(owner, name, timed)
    try:
        yield
    finally:
        if owner.__dict__.get(name) is timed:
            if not own and (isinstance(owner, type) or hasattr(type(owner), name)):
                delattr(owner, name)  # back to the class's method
            else:
                setattr(owner, name, original)


HOOKS = {
    "update_graph": "update_graph",
    "transition": "transition",
    "handle_offer": "handle_offer",
    "handle_written": "handle_written",
    "_finish": "progress.finish",  # a run's end (named as in earlier results)
}
"""Name in the results -> the plugin's attribute timed."""


def _time_hooks(plugin: Any) -> dict[str, list[float]]:
    """Wrap the plugin's hooks and handlers (on the instance) to record each call's seconds:
    each runs on the scheduler's event loop, so its longest call is the longest it blocks."""
    times: dict[str, list[float]] = {h: [] for h in HOOKS}
    for h, path in HOOKS.items():
        where, _, name = path.rpartition(".")
        owner = getattr(plugin, where) if where else plugin
        fn = getattr(owner, name)

        def timed(*args: Any, _fn: Any = fn, _out: list[float] = times[h], **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                _out.append(time.perf_counter() - t0)

        setattr(owner, name, timed)
    return times


def _helix_run(client: Client, n: int) -> dict[str, float]:
    """One helix compute of the graph, its phases in seconds (wall) and its process CPU."""
    spent: dict[str, float] = {}
    plugin = client.cluster.scheduler.plugins["helix"]
    c0, w0 = time.process_time(), time.perf_counter()
    with (
        _timed(_intake, "plan_update", spent),
        _timed(_intake, "rewrite", spent),
        _timed(plugin, "update_graph", spent),
    ):
        t = time.perf_counter()
        g = graph(n, helix=True)
        build = time.perf_counter() - t
        t = time.perf_counter()
        g.compute()
        computed = time.perf_counter() - t
        t = time.perf_counter()
        hx.last_run(client)
        report = time.perf_counter() - t
    hook = spent.get("update_graph", 0.0)
    return {
        "wall": time.perf_counter() - w0,
        "cpu": time.process_time() - c0,
        "build": build,
        "plan": spent.get("plan_update", 0.0),
        "rewrite": spent.get("rewrite", 0.0),
        "hook": hook - spent.get("plan_update", 0.0) - spent.get("rewrite", 0.0),
        "run": computed - hook,
        "report": report,
    }


def _cpu(fn: Callable[[], object]) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def measure(n: int) -> dict[str, Any]:
    """Plain, first helix and re-run helix on about ``n`` nodes (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.submit(_inc, 1).result()
            nodes = len(graph(n, helix=False).dask)
            # Built inside the measurement, as the helix runs are, and let go before them: a
            # plain graph still held would make every garbage collection of theirs longer.
            plain, plain_wall = _cpu(lambda: graph(n, helix=False).compute())
            hx.setup(client, store=tmp, budget="1 GiB")
            times = _time_hooks(cluster.scheduler.plugins["helix"])
            first = _helix_run(client, n)
            again = _helix_run(client, n)
            blocked = {h: max(t, default=0.0) * 1e3 for h, t in times.items()}
    return {
        "nodes": nodes,
        "plain_wall": plain_wall,
        "plain_cpu": plain,
        "first": first,
        "rerun": again,
        "first_us_per_node": {p: first[p] / nodes * 1e6 for p in PHASES},
        "rerun_us_per_node": {p: again[p] / nodes * 1e6 for p in PHASES},
        "first_extra_cpu_us_per_node": (first["cpu"] - plain) / nodes * 1e6,
        "max_hook_ms": blocked,
    }


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["1000"]:
        row = measure(int(arg))
        print(
            f"nodes={row['nodes']} plain={row['plain_wall']:.2f}s "
            f"first={row['first']['wall']:.2f}s rerun={row['rerun']['wall']:.2f}s"
        )
        for which in ("first", "rerun"):
            us = row[f"{which}_us_per_node"]
            print(f"  {which} µs/node: " + " ".join(f"{p}={us[p]:.0f}" for p in PHASES))
        print(
            "  longest hook call ms: "
            + " ".join(f"{h}={ms:.1f}" for h, ms in row["max_hook_ms"].items())
        )
