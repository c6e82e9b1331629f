"""graphchain, measured on the dask it installs with, in a virtual environment of its own.

graphchain pins ``cloudpickle<3``, so it cannot sit beside the dask and distributed helix
needs. :func:`ensure_venv` creates ``benchmarks/results/.venv-graphchain`` once (cached; delete
it to rebuild) with ``pip install graphchain distributed``, letting pip choose the dask,
distributed and cloudpickle versions graphchain allows; numpy, pandas, scipy and scikit-learn
come from this environment's site-packages (listed after the venv's own). The workflow modules
are imported there with a stand-in for ``helix_dask`` (``stub/helix_dask``) whose ``task``
keeps the plain function: graphchain runs the same functions as every other strategy.

Per workflow and repeat, :func:`run_graphchain` starts a venv process
(``python -m benchmarks._graphchain``) holding a ``LocalCluster(n_workers=2,
threads_per_worker=1)`` and a fork server that has imported the same libraries as the main
driver's; each iteration is a new process forked from it that connects to the cluster, builds
the ``dask.delayed`` graph, calls ``graphchain.optimize`` against a store directory and
``client.get``. Timing starts once connected, as for the other strategies. graphchain's
optimized graph holds its cache filesystem, which does not pickle (``TypeError: cannot pickle
'_thread.RLock' object``), so ``client.get`` fails; the iteration then records that error and
runs the graph on dask's threaded scheduler with 2 threads, graphchain's documented use, in
the iteration process (the time of the failed attempt is not counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / "results" / ".venv-graphchain"
STUB = VENV / "stub"
READY = VENV / "versions.json"
PACKAGES = ("graphchain", "distributed")
STUB_SOURCE = '''"""Stand-in for helix_dask: ``task`` keeps the plain function."""


class HelixTask:
    def __init__(self, func, name=None, **options):
        self.func = func
        self.name = name or func.__name__

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)


def task(func=None, *, name=None, **options):
    if func is None:
        return lambda f: HelixTask(f, name=name, **options)
    return HelixTask(func, name=name, **options)
'''


def _python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv(log: Callable[[str], None] = print) -> dict[str, Any]:
    """The venv's python and package versions, creating it if needed; or ``{"error": ...}``."""
    if READY.exists():
        return json.loads(READY.read_text())
    log(f"graphchain: creating {VENV.relative_to(ROOT)} (pip install {' '.join(PACKAGES)})")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run(
            [str(_python()), "-m", "pip", "install", "-q", *PACKAGES],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or "").strip().splitlines()[-3:]
        return {"error": f"creating the graphchain venv failed: {' | '.join(tail)}"}
    except subprocess.TimeoutExpired:
        return {"error": "pip install graphchain did not finish in 15 minutes"}
    site = subprocess.run(
        [str(_python()), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    # numpy, pandas, scipy, scikit-learn from here; the venv's own packages come first.
    Path(site, "zz_benchmark_libraries.pth").write_text("\n".join(ours) + "\n")
    (STUB / "helix_dask").mkdir(parents=True, exist_ok=True)
    (STUB / "helix_dask" / "__init__.py").write_text(STUB_SOURCE)
    probe = subprocess.run(
        [str(_python()), "-c", _VERSIONS],
        capture_output=True,
        text=True,
        env=_env(),
    )
    if probe.returncode:
        return {"error": f"the graphchain venv cannot import: {probe.stderr.strip()[-300:]}"}
    versions = json.loads(probe.stdout)
    READY.write_text(json.dumps(versions))
    return versions


_VERSIONS = (
    "import json, cloudpickle, dask, distributed, graphchain, importlib.metadata as m;"
    "print(json.dumps({p: m.version(p) for p in "
    "('graphchain', 'dask', 'distributed', 'cloudpickle', 'numpy', 'scikit-learn')}))"
)


def _env() -> dict[str, str]:
    from ._driver import THREAD_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DASK_"))}
    env.update(THREAD_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(STUB), str(ROOT)])
    return env


def run_graphchain(
    name: str, size: str, n_iterations: int, sdir: Path, log: Callable[[str], None]
) -> tuple[float, list[dict[str, Any]]]:
    """Cluster start-up seconds and the iterations of one workflow under graphchain."""
    venv = ensure_venv(log)
    if "error" in venv:
        return 0.0, [{"index": 0, "error": venv["error"]}]
    t0 = time.perf_counter()
    cluster = subprocess.Popen(
        [str(_python()), "-m", "benchmarks._graphchain"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=STUB,  # first on sys.path: the stand-in helix_dask, never the real one
    )
    iterations: list[dict[str, Any]] = []
    assert cluster.stdin is not None and cluster.stdout is not None
    try:
        line = cluster.stdout.readline()
        if not line:
            return 0.0, [{"index": 0, "error": "the graphchain cluster did not start"}]
        address = json.loads(line)["address"]
        startup = time.perf_counter() - t0
        for i in range(n_iterations):
            spec = {
                "workflow": name,
                "size": size,
                "index": i,
                "address": address,
                "workdir": str(sdir),
            }
            t = time.perf_counter()
            cluster.stdin.write(json.dumps(spec) + "\n")
            cluster.stdin.flush()
            line = cluster.stdout.readline()
            try:
                res = json.loads(line)
            except json.JSONDecodeError:
                res = {"index": i, "error": f"no result from the graphchain process: {line!r}"}
            res["process_seconds"] = time.perf_counter() - t
            res["versions"] = {k: v for k, v in venv.items() if k != "error"}
            iterations.append(res)
            if "error" in res:
                log(f"  graphchain iteration {i + 1}: FAILED {res['error']}")
                break
            log(f"  {'graphchain':<22} it {i + 1:>2} {res['seconds']:7.2f}s")
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(60)
        except subprocess.TimeoutExpired:
            cluster.kill()
    return startup, iterations


# -- inside the venv -------------------------------------------------------------------------


def _cluster_main() -> None:
    """Start a fork server that has imported PRELOAD and the cluster; then, per spec line on
    stdin, run that iteration in a new process forked from the server and print its result."""
    import multiprocessing

    from distributed import Client, LocalCluster

    from ._workflow import PRELOAD

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        dashboard_address=None,
        worker_dashboard_address=None,
    ) as cluster:
        with Client(cluster) as client:
            client.run(_import, PRELOAD)
        warm = ctx.Process(target=_import, args=((),))
        warm.start()
        warm.join()
        print(json.dumps({"address": cluster.scheduler_address}), flush=True)
        for line in sys.stdin:  # until the driver closes it
            spec = json.loads(line)
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(spec, send))
            proc.start()
            send.close()
            try:
                result = receive.recv()
            except EOFError:
                result = {"index": spec["index"], "error": "the iteration process died"}
            proc.join()
            print(json.dumps(result, default=str), flush=True)


def _child(spec: dict[str, Any], conn: Any) -> None:
    try:
        conn.send(_iteration_main(spec))
    except BaseException as exc:  # report, never hang the server
        conn.send({"index": spec["index"], "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _import(modules: tuple[str, ...]) -> None:
    import importlib

    for module in modules:
        importlib.import_module(module)


def _iteration_main(spec: dict[str, Any]) -> dict[str, Any]:
    import dask
    import dask.threaded
    import graphchain
    from distributed import Client

    from . import images, tabular, text

    workflows = {w.name: w for w in (tabular.WORKFLOW, images.WORKFLOW, text.WORKFLOW)}
    workflow = workflows[spec["workflow"]]
    params = workflow.params(spec["index"])
    size = workflow.sizes[spec["size"]]
    out: dict[str, Any] = {"index": spec["index"]}
    with Client(spec["address"]) as client:
        started = time.perf_counter()
        try:

            def op(name: str) -> Callable:
                return dask.delayed(workflow.task(name, params).func, pure=False)

            node = workflow.build(op, params, size)
            built = time.perf_counter()
            dsk = graphchain.optimize(
                dict(node.__dask_graph__()),
                keys=[node.key],
                location=str(Path(spec["workdir"]) / "store"),
            )
            optimized = time.perf_counter()
            failed = 0.0
            try:
                metrics = client.get(dsk, node.key)
            except TypeError as exc:  # its graph does not pickle: dask's threads instead
                out["distributed_error"] = f"{type(exc).__name__}: {exc.__cause__ or exc}"
                failed = time.perf_counter() - optimized
                optimized = time.perf_counter()
                metrics = dask.threaded.get(dsk, node.key, num_workers=2)
        except Exception as exc:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            out["error"] = (
                f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno} "
                f"in {frame.name})"
            )
            return out
        done = time.perf_counter()
    out["seconds"] = done - started - failed
    out["phases"] = {
        "build": built - started,
        "plan": optimized - built,
        "run": done - optimized,
    }
    out["metrics"] = metrics
    store = Path(spec["workdir"]) / "store"
    out["storage_bytes"] = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(store) for f in fs
    )
    return out


if __name__ == "__main__":
    _cluster_main()
