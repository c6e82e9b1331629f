"""Micro-benchmarks: planner latency, plugin transparency, signature throughput, artifact loads
(large arrays, and small results one by one)."""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import statistics
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import helix_dask as hx
from helix_dask.planner import PlanNode, plan


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_dag(n: int, seed: int = 0) -> list[PlanNode]:
    """A layered operator DAG: 1-3 parents among the previous 50 nodes, half loadable, the
    nodes nobody depends on are outputs."""
    rng = np.random.default_rng(seed)
    parents = [
        tuple(sorted({int(i - 1 - j) for j in rng.integers(0, min(i, 50), rng.integers(1, 4))}))
        if i
        else ()
        for i in range(n)
    ]
    has_child = {p for ps in parents for p in ps}
    compute = rng.exponential(1.0, n)
    load = rng.exponential(0.2, n)
    loadable = rng.random(n) < 0.5
    return [
        PlanNode(
            f"n{i}",
            tuple(f"n{p}" for p in parents[i]),
            float(compute[i]),
            float(load[i]) if loadable[i] else None,
            i not in has_child,
        )
        for i in range(n)
    ]


def planner_latency(sizes: list[int], networkx_max: int) -> dict[str, Any]:
    rows = []
    for n in sizes:
        nodes = random_dag(n)
        for solver in ("scipy", "networkx"):
            if solver == "networkx" and n > networkx_max:
                rows.append({"nodes": n, "solver": solver, "seconds": None, "note": "skipped"})
                continue
            repeats = 5 if n <= 10_000 else 2
            seconds = _median_seconds(lambda nodes=nodes, s=solver: plan(nodes, solver=s), repeats)
            rows.append({"nodes": n, "solver": solver, "seconds": seconds})
    biggest = random_dag(max(sizes))
    profiler = cProfile.Profile()
    profiler.enable()
    plan(biggest)
    profiler.disable()
    stats = pstats.Stats(profiler)
    hot = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:8]  # own time
    hotspots = [
        {"function": f"{Path(f).name}:{line}({fn})", "own_seconds": s[2], "cumulative": s[3]}
        for (f, line, fn), s in hot
    ]
    return {"rows": rows, "hotspots_at": max(sizes), "hotspots": hotspots}


def _time_hooks(plugin: Any, names: tuple[str, ...]) -> None:
    """Wrap ``plugin``'s hook methods so the seconds spent inside them add up in
    ``plugin.hook_seconds``."""
    plugin.hook_seconds = 0.0
    for name in names:
        hook = getattr(plugin, name)

        def timed(*args: Any, _hook: Callable = hook, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                plugin.hook_seconds += time.perf_counter() - t0

        setattr(plugin, name, timed)


def _time_scheduler_hooks(dask_scheduler: Any) -> None:
    _time_hooks(dask_scheduler.plugins["helix"], ("update_graph", "transition"))


def _time_worker_hooks(dask_worker: Any) -> None:
    _time_hooks(dask_worker.plugins["helix"], ("transition",))


def _scheduler_hook_seconds(dask_scheduler: Any) -> float:
    return dask_scheduler.plugins["helix"].hook_seconds


def _worker_hook_seconds(dask_worker: Any) -> float:
    return dask_worker.plugins["helix"].hook_seconds


def transparency(n_chunks: int, repeats: int) -> dict[str, Any]:
    """The same dask.array graph (no helix task) on a plain cluster and on one with helix;
    and the seconds the helix hooks themselves took, summed over the scheduler and workers."""
    import dask.array as da
    from distributed import Client, LocalCluster

    def graph():
        return ((da.ones(n_chunks * 10, chunks=10) + 1) * 2).sum()

    n_tasks = len(graph().__dask_graph__())
    times: dict[str, list[float]] = {"plain": [], "helix": []}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        clients = {}
        for label in times:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=2,
                    threads_per_worker=1,
                    dashboard_address=None,
                    worker_dashboard_address=None,
                )
            )
            clients[label] = stack.enter_context(Client(cluster, set_as_default=False))
        hx.setup(clients["helix"], store=Path(tmp) / "store")
        for client in clients.values():  # warm up both on a small graph
            client.compute(((da.ones(1000, chunks=10) + 1) * 2).sum()).result()
        clients["helix"].run_on_scheduler(_time_scheduler_hooks)
        clients["helix"].run(_time_worker_hooks)
        for r in range(repeats):
            order = list(clients.items()) if r % 2 == 0 else list(clients.items())[::-1]
            for label, client in order:  # alternated, in turn first (ABBA...)
                g = graph()
                t0 = time.perf_counter()
                client.compute(g).result()
                times[label].append(time.perf_counter() - t0)
        scheduler_hooks = clients["helix"].run_on_scheduler(_scheduler_hook_seconds) / repeats
        worker_hooks = sum(clients["helix"].run(_worker_hook_seconds).values()) / repeats
    plain, helix = statistics.median(times["plain"]), statistics.median(times["helix"])
    return {
        "tasks": n_tasks,
        "scheduler_hook_seconds": scheduler_hooks,
        "worker_hook_seconds": worker_hooks,
        "hook_fraction": (scheduler_hooks + worker_hooks) / helix,
        "plain_seconds": plain,
        "helix_seconds": helix,
        "ratio": helix / plain,
        "samples": times,
    }


@contextlib.contextmanager
def _count_hashed_bytes() -> Iterator[list[int]]:
    """Count the bytes fed to xxh3_128 by helix's fingerprint and signature code."""
    import xxhash

    import helix_dask
    from helix_dask import _fingerprint, signature  # noqa: F401  (load the hashing modules)

    counter = [0]

    class Counting:
        def __init__(self, *args: Any) -> None:
            self._h = xxhash.xxh3_128(*args)

        def update(self, b: Any) -> None:
            counter[0] += memoryview(b).nbytes
            self._h.update(b)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._h, name)

    class Shim:
        xxh3_128 = Counting

        def __getattr__(self, name: str) -> Any:
            return getattr(xxhash, name)

    # Every helix module that hashes holds xxhash as a module attribute; shim each one.
    modules = [m for m in vars(helix_dask).values() if isinstance(m, types.ModuleType)]
    modules = [m for m in modules if getattr(m, "xxhash", None) is xxhash]
    for m in modules:
        m.xxhash = Shim()  # type: ignore[attr-defined]
    try:
        yield counter
    finally:
        for m in modules:
            m.xxhash = xxhash  # type: ignore[attr-defined]


@hx.task
def _make(n: int) -> np.ndarray:
    return np.ones(n)


@hx.task
def _summary(x: np.ndarray, scale: float = 1.0) -> float:
    return float(x.sum() * scale)


def signatures(array_bytes: int, client: Any) -> dict[str, Any]:
    """Throughput of fingerprint_value on a large array, and node creation downstream of
    lazy and persisted upstream results of growing size (no data is hashed)."""
    from helix_dask.signature import fingerprint_value

    array = np.random.default_rng(0).random(array_bytes // 8)
    fingerprint_value(array[:1000])
    seconds = _median_seconds(lambda: fingerprint_value(array), 3)
    array = None
    rows = []
    for n in (1_000, 1_000_000, array_bytes // 8):
        upstream = _make(n)
        persisted = client.persist(upstream)
        from distributed import wait

        wait(persisted)
        for label, parent in (("lazy", upstream), ("persisted", persisted)):
            _summary(parent, scale=2.0)
            with _count_hashed_bytes() as counter:
                t0 = time.perf_counter()
                node = _summary(parent, scale=2.0)
                created = time.perf_counter() - t0
            rows.append(
                {
                    "upstream_bytes": n * 8,
                    "upstream": label,
                    "create_seconds": created,
                    "hashed_bytes": counter[0],
                    "signature": node.signature,
                }
            )
        del persisted
    return {
        "array_bytes": array_bytes,
        "fingerprint_seconds": seconds,
        "gb_per_second": array_bytes / seconds / 1e9,
        "node_creation": rows,
    }


def _drop_caches(paths: list[Path]) -> str:
    """Evict ``paths`` from the page cache: drop_caches if permitted, else fadvise."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError as exc:
        reason = f"echo 3 > /proc/sys/vm/drop_caches failed ({type(exc).__name__}: {exc})"
    for path in paths:
        files = (
            [path] if path.is_file() else [Path(d) / f for d, _, fs in os.walk(path) for f in fs]
        )
        for file in files:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return f"posix_fadvise(DONTNEED) per file; {reason}"


def _unverified(read: Callable[[], object]) -> object:
    """``read()`` with the chunk checksums off: each chunk file is read as ``store.get`` reads
    it (same page-aligned buffer, same block loop), but not hashed. Patched in this process for
    the measurement only; the store has no switch for it."""
    from helix_dask import _codec_raw

    original = _codec_raw.read_into
    _codec_raw.read_into = lambda path, target, expected: original(path, target, None)
    try:
        return read()
    finally:
        _codec_raw.read_into = original


def artifact_load(array_bytes: int, repeats: int) -> dict[str, Any]:
    """ZarrArtifactStore.get vs np.load of the same float64 array, warm and cold cache."""
    from helix_dask.store import ZarrArtifactStore

    array = np.random.default_rng(1).random(array_bytes // 8)
    sig = "0" * 32
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        store = ZarrArtifactStore(Path(tmp) / "store")
        t0 = time.perf_counter()
        store.put(sig, array)
        put_seconds = time.perf_counter() - t0
        npy = Path(tmp) / "array.npy"
        t0 = time.perf_counter()
        np.save(npy, array)
        save_seconds = time.perf_counter() - t0
        del array
        readers = {
            "zarr": lambda: store.get(sig),
            "unverified": lambda: _unverified(lambda: store.get(sig)),
            "npy": lambda: np.load(npy),
        }
        paths = {"zarr": store.root / "artifacts", "unverified": store.root / "artifacts"}
        paths["npy"] = npy
        out: dict[str, Any] = {
            "array_bytes": array_bytes,
            "put_seconds": put_seconds,
            "np_save_seconds": save_seconds,
        }
        # Flush both files first: reading one while the other's dirty pages are written back
        # would time the disk's writeback, not the read. Then alternate, so both see the same
        # machine state.
        os.sync()
        warm: dict[str, list[float]] = {name: [] for name in readers}
        for read in readers.values():
            read()
        for _ in range(repeats):
            for name, read in readers.items():
                t0 = time.perf_counter()
                read()
                warm[name].append(time.perf_counter() - t0)
        for name in readers:
            out[f"{name}_warm_seconds"] = statistics.median(warm[name])
        cold: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(repeats):
            for name, read in readers.items():
                out["cold_method"] = _drop_caches([paths[name]])
                t0 = time.perf_counter()
                read()
                cold[name].append(time.perf_counter() - t0)
        for name in readers:
            out[f"{name}_cold_seconds"] = statistics.median(cold[name])
        profiler = cProfile.Profile()
        profiler.enable()
        store.get(sig)
        profiler.disable()
        hot = sorted(pstats.Stats(profiler).stats.items(), key=lambda kv: kv[1][2], reverse=True)
        out["zarr_hotspots"] = [
            {"function": f"{Path(f).name}:{line}({fn})", "own_seconds": st[2]}
            for (f, line, fn), st in hot[:6]
        ]
        out["warm_ratio"] = out["npy_warm_seconds"] / out["zarr_warm_seconds"]
        out["cold_ratio"] = out["npy_cold_seconds"] / out["zarr_cold_seconds"]
        out["samples"] = {"warm": warm, "cold": cold}
        for c in ("warm", "cold"):
            out[f"{c}_verify_cost"] = out[f"zarr_{c}_seconds"] / out[f"unverified_{c}_seconds"] - 1
    return out


SMALL_VALUES: dict[str, Callable[[], object]] = {
    "float": lambda: 0.8125,
    "metrics dict": lambda: {"accuracy": 0.91, "f1": 0.88, "n": 1797},
    "small array": lambda: np.arange(256, dtype="float64"),
    "fitted scaler": lambda: _fitted_scaler(),
}


def _fitted_scaler() -> object:
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(np.arange(640, dtype="float64").reshape(-1, 64))


def small_artifacts(count: int) -> dict[str, Any]:
    """Put then get ``count`` small results of each kind, in the packed layout (one file
    beside the manifest) and, in the same run, as Zarr groups (the layout they had before):
    microseconds per put and per get, medians of three alternated passes."""
    import helix_dask._packed as packed
    from helix_dask.store import ZarrArtifactStore

    def one_pass(limit: int, make: Callable[[], object]) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            store, value = ZarrArtifactStore(tmp), make()
            sigs = [os.urandom(16).hex() for _ in range(count)]
            real, packed.LIMIT = packed.LIMIT, limit  # type: ignore[misc]
            try:
                store.get(store.put(os.urandom(16).hex(), value).signature)  # the key, made once
                t = time.perf_counter()
                for sig in sigs:
                    store.put(sig, value)
                put = (time.perf_counter() - t) / count
                t = time.perf_counter()
                for sig in sigs:
                    store.get(sig)
                get = (time.perf_counter() - t) / count
            finally:
                packed.LIMIT = real  # type: ignore[misc]
        return put * 1e6, get * 1e6

    rows = []
    for name, make in SMALL_VALUES.items():
        runs: dict[str, list[tuple[float, float]]] = {"packed": [], "zarr": []}
        for _ in range(3):
            runs["packed"].append(one_pass(packed.LIMIT, make))
            runs["zarr"].append(one_pass(-1, make))
        row: dict[str, Any] = {"value": name}
        for layout, samples in runs.items():
            row[f"{layout}_put_us"] = statistics.median(p for p, _ in samples)
            row[f"{layout}_get_us"] = statistics.median(g for _, g in samples)
        rows.append(row)
    return {"count": count, "rows": rows}


def run_micro(
    size: str, log: Callable[[str], None] = print, scale: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """The micro-benchmarks at the sizes of a run mode (``quick``, ``full``/``large``,
    ``paper``); ``scale``: the scale table's node counts instead of the mode's."""
    from distributed import Client, LocalCluster

    from ._scale import measure

    quick, paper = size in ("quick", "smoke"), size == "paper"
    sizes = [100, 1_000, 10_000] if quick else [100, 1_000, 10_000, 100_000]
    gb = 2**28 if quick else 2**30
    out: dict[str, Any] = {}
    log("micro: planner latency")
    out["planner"] = planner_latency(sizes, networkx_max=1_000 if quick else 10_000)
    chunks = 500 if quick else 25_000 if paper else 5_000
    log(f"micro: plugin transparency ({chunks} chunks, 3 alternated runs per side)")
    out["transparency"] = transparency(chunks, 3)
    default = [1_000] if quick else [1_000, 10_000, 100_000] if paper else [1_000, 10_000]
    scale_sizes = list(scale) if scale else default
    out["scale"] = []
    for n in scale_sizes:
        log(f"micro: scale at {n} nodes")
        try:
            out["scale"].append(measure(n))
        except Exception as e:  # a size that fails is reported, the run goes on
            log(f"micro: scale at {n} nodes failed: {e!r}")
            out["scale"].append({"nodes": n, "error": repr(e)})
    log("micro: signatures")
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        out["signatures"] = signatures(gb, client)
    log("micro: artifact load")
    out["artifact_load"] = artifact_load(gb, 5)
    log("micro: small artifacts")
    out["small_artifacts"] = small_artifacts(100 if quick else 200)
    mb = 100 if quick else 400
    log(f"micro: peak worker memory, a chain of {mb} MB intermediates")
    from . import _memory

    out["memory"] = _memory.measure(mb)
    return out
