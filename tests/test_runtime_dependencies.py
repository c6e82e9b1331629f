"""Run-time dependencies: code reached only while a task runs is verified before reuse.

Each iteration is a fresh Python process against one persistent store, as a user re-running a
script would be. After every edit, each task's result must equal a plain call of the current
code (never an old stored result), and the edited task must have run again. What is particular
to worker processes is checked on the run's shared cluster of them (a script connecting to it,
or this process as the client); the variants that start a cluster of worker processes in every
run are in the slow profile (``-m slow``).
"""

from __future__ import annotations

import glob
import importlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

import helix_dask as hx
from helix_dask import cli

MODULES = {
    "helpers_a.py": """
        def weight(x):
            return x + 1
    """,
    "models.py": """
        def linear(x):
            return 2 * x

        def tree(x):
            return x * x
    """,
    "shapes.py": """
        class Scaler:
            def __init__(self, k):
                self.k = k

            def apply(self, x):
                return self.k * x
    """,
    "plugins/__init__.py": "",
    "plugins/boost.py": """
        def run(x):
            return x + 100
    """,
    "registry.py": """
        REGISTRY = {}

        def register(name):
            def add(f):
                REGISTRY[name] = f
                return f
            return add

        @register("cube")
        def cube(x):
            return x ** 3
    """,
    "pipeline.py": """
        import importlib

        import helix_dask as hx

        import models


        @hx.task
        def local_import(x):
            from helpers_a import weight
            return weight(x)


        @hx.task
        def by_name(x, name):
            return getattr(models, name)(x)


        @hx.task
        def method_of_argument(x, scaler):
            return scaler.apply(x)


        @hx.task
        def imported_by_string(x, name):
            return importlib.import_module("plugins." + name).run(x)


        @hx.task
        def from_registry(x, name):
            import registry
            return registry.REGISTRY[name](x)


        @hx.task
        def total(*parts):
            return sum(parts)


        def nodes():
            from shapes import Scaler
            parts = {
                "local_import": local_import(3),
                "by_name": by_name(3, "tree"),
                "method_of_argument": method_of_argument(3, Scaler(5)),
                "imported_by_string": imported_by_string(3, "boost"),
                "from_registry": from_registry(3, "cube"),
            }
            parts["total"] = total(*parts.values())
            return parts
    """,
}

EDITS = [
    ("local_import", "helpers_a.py", "return x + 1", "return x + 2"),
    ("by_name", "models.py", "return x * x", "return x * x * 10"),
    ("method_of_argument", "shapes.py", "return self.k * x", "return self.k * x + 7"),
    ("imported_by_string", "plugins/boost.py", "return x + 100", "return x + 1000"),
    ("from_registry", "registry.py", "return x ** 3", "return x ** 3 - 1"),
]

SCRIPT = """
import json, sys
import helix_dask as hx
from distributed import Client, LocalCluster
import pipeline


def plain():
    # Each task called directly with the code this process imported: what a fresh run computes.
    import shapes
    f = {n: getattr(pipeline, n).func for n in
         ["local_import", "by_name", "method_of_argument", "imported_by_string", "from_registry"]}
    parts = {"local_import": f["local_import"](3), "by_name": f["by_name"](3, "tree"),
             "method_of_argument": f["method_of_argument"](3, shapes.Scaler(5)),
             "imported_by_string": f["imported_by_string"](3, "boost"),
             "from_registry": f["from_registry"](3, "cube")}
    parts["total"] = sum(parts.values())
    return parts


if __name__ == "__main__":
    parts = pipeline.nodes()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=sys.argv[2] == "processes",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        policy = sys.argv[3] if len(sys.argv) > 3 else "all"
        hx.setup(client, store=sys.argv[1], budget="1 GiB", policy=policy)
        import dask
        values = dict(zip(parts, dask.compute(*parts.values())))
        run = hx.last_run(client)
    print(json.dumps({"values": values, "computed": run.computed, "plain": plain()}))
"""


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def _python(root: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    proc = subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _iterate(root: Path, store: Path, mode: str) -> dict:
    return json.loads(_python(root, "run.py", str(store), mode).strip().splitlines()[-1])


@pytest.mark.parametrize(
    "mode",
    [
        "threads",
        # Its own cluster of worker processes per run; the default run has
        # test_an_edited_method_of_an_argument_recomputes_on_new_worker_processes.
        pytest.param("processes", marks=pytest.mark.slow),
    ],
)
def test_edits_reached_only_at_run_time_recompute_and_never_load_a_stale_result(tmp_path, mode):
    root = tmp_path / "project"
    for name, text in MODULES.items():
        _write(root, name, text)
    _write(root, "run.py", SCRIPT)
    store = tmp_path / "store"
    first = _iterate(root, store, mode)
    assert first["values"] == first["plain"]
    again = _iterate(root, store, mode)
    assert again["values"] == first["values"]
    assert again["computed"] == [], "an identical re-run must load, not compute"
    # Worker processes: one edit of each kind a process changes (a method of an argument is
    # unpickled there); threads: every edit.
    edits = EDITS if mode == "threads" else EDITS[2:3]
    for task, module, old, new in edits:
        path = root / module
        path.write_text(path.read_text().replace(old, new))
        result = _iterate(root, store, mode)
        assert result["values"] == result["plain"], f"stale result after editing {module}"
        assert task in result["computed"], f"{task} was not recomputed after editing {module}"
        assert "total" in result["computed"]


MAIN_SCRIPT = """
import json, sys
import numpy as np
import helix_dask as hx
from distributed import Client


class Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


@hx.task
def transform(x, scaler):
    return scaler.apply(x)


if __name__ == "__main__":
    with Client(sys.argv[2]) as client:  # a long-lived cluster of worker processes
        hx.setup(client, store=sys.argv[1], budget="1 GiB", policy="all")
        out = transform(np.arange(3), Scaler(2)).compute()
        run = hx.last_run(client)
    print(json.dumps({"values": out.tolist(), "computed": run.computed, "loaded": run.loaded}))
"""


def test_a_script_class_passed_to_worker_processes_is_reused_until_its_method_changes(
    tmp_path, processes_cluster_address
):
    # The class lives in the script's __main__, pickled by value to worker processes: its
    # code counts through the argument, so the trace of its method needs no digest there.
    # Each run is a new process of the script, connecting to the same worker processes.
    root = tmp_path / "project"
    _write(root, "main.py", MAIN_SCRIPT)
    store = str(tmp_path / "store")
    address = processes_cluster_address
    run = lambda: json.loads(_python(root, "main.py", store, address).splitlines()[-1])  # noqa: E731
    assert run() == {"values": [0, 2, 4], "computed": ["transform"], "loaded": []}
    assert run() == {"values": [0, 2, 4], "computed": [], "loaded": ["transform"]}
    path = root / "main.py"
    path.write_text(path.read_text().replace("return x * self.k", "return x * self.k + 1"))
    assert run() == {"values": [1, 3, 5], "computed": ["transform"], "loaded": []}


DISPATCH = """
import importlib, json, sys
import helix_dask as hx
from distributed import Client, LocalCluster


@hx.task
def run_plugin(x, name):
    return importlib.import_module("plugins." + name).run(x)


if __name__ == "__main__":
    names = sys.argv[2].split(",")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        policy = sys.argv[3] if len(sys.argv) > 3 else "all"
        hx.setup(client, store=sys.argv[1], budget="1 GiB", policy=policy)
        import dask
        values = dask.compute(*[run_plugin(1, n) for n in names])
        run = hx.last_run(client)
    print(json.dumps({"values": list(values), "computed": run.computed}))
"""


def test_a_later_call_of_traced_code_that_reaches_other_code_is_traced_too(tmp_path):
    # The first run traces run_plugin reaching plugins.a; a later call reaches plugins.b,
    # which no earlier trace saw. Editing plugins.b must still recompute that call.
    root = tmp_path / "project"
    _write(root, "plugins/__init__.py", "")
    _write(root, "plugins/a.py", "def run(x):\n    return x + 1\n")
    _write(root, "plugins/b.py", "def run(x):\n    return x + 2\n")
    _write(root, "dispatch.py", DISPATCH)
    store = str(tmp_path / "store")

    def run(names: str) -> tuple[list, list]:
        out = json.loads(_python(root, "dispatch.py", store, names).strip().splitlines()[-1])
        return out["values"], out["computed"]  # repeated tasks are named by their arguments

    assert run("a") == ([2], ["run_plugin"])
    assert run("a,b") == ([2, 3], ["run_plugin(name='b', x=1)"])
    (root / "plugins/b.py").write_text("def run(x):\n    return x + 20\n")
    assert run("a,b") == ([2, 21], ["run_plugin(name='b', x=1)"])
    assert run("a,b") == ([2, 21], [])
    # helix diff names the dependency that changed although the signature did not.
    out = io.StringIO()
    assert cli.main(["diff", "2", "3", "--store", store], out=out) == 0
    assert "run-time dependency plugins.b.run" in out.getvalue(), out.getvalue()
    # gc keeps what the last version used, found under the identities it was stored as.
    assert cli.main(["gc", "--keep", "1", "--store", store], out=io.StringIO()) == 0
    assert run("a,b") == ([2, 21], [])


def test_runs_that_store_nothing_trace_nothing_and_later_storing_runs_still_verify(tmp_path):
    # Under policy 'none' no result is stored, so nothing needs verifying later and nothing is
    # traced; the first run that stores traces the code then, and an edit of the module it
    # reached only at run time recomputes.
    root = tmp_path / "project"
    _write(root, "plugins/__init__.py", "")
    _write(root, "plugins/a.py", "def run(x):\n    return x + 1\n")
    _write(root, "dispatch.py", DISPATCH)
    store = str(tmp_path / "store")

    def run(policy: str) -> tuple[list, list]:
        printed = _python(root, "dispatch.py", store, "a", policy).strip().splitlines()[-1]
        out = json.loads(printed)
        return out["values"], out["computed"]

    assert run("none") == ([2], ["run_plugin"])
    assert hx.Catalog(store).artifacts() == []
    with sqlite3.connect(str(tmp_path / "store" / "catalog.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM traces").fetchone() == (0,)
    assert run("all") == ([2], ["run_plugin"])
    assert run("all") == ([2], [])
    (root / "plugins/a.py").write_text("def run(x):\n    return x + 10\n")
    assert run("none") == ([11], ["run_plugin"])
    assert run("all") == ([11], ["run_plugin"])
    assert run("all") == ([11], [])


def _add_path(path: str) -> None:
    if path not in sys.path:
        sys.path.insert(0, path)


def test_a_worker_running_an_old_module_never_stores_its_result(
    processes_cluster, tmp_path, module_factory
):
    # A long-lived worker imported the module before the user edited it: it runs the old code
    # for the new signature. Plain Dask returns that too; helix must not keep it for later.
    from conftest import helix_client

    import helix_dask as hx

    source = """
        import helix_dask as hx

        def factor():
            return {k}

        @hx.task
        def double(x):
            return x * factor()
    """
    mod = module_factory("stale_worker_mod", source.format(k=2))
    with helix_client(processes_cluster, tmp_path / "store", policy="all") as client:
        client.run(_add_path, str(tmp_path / "usercode"))
        client.run(importlib.import_module, "stale_worker_mod")  # every worker holds v1
        assert mod.double(5).compute() == 10
        mod = module_factory("stale_worker_mod", source.format(k=3))  # edited, reloaded
        stale = mod.double(5).compute()  # the workers still hold the old module
        run = hx.last_run(client)
        assert stale == 10, "the workers were expected to hold the old module"
        assert run.node("double").materialization is not hx.Materialization.STORED
        assert "stale_worker_mod.factor in another version" in run.node("double").reason


READER = """
import glob, json, os, sys
import numpy as np
import helix_dask as hx
from distributed import Client, LocalCluster


@hx.task
def load_table(path):
    return np.loadtxt(path, delimiter=",")


@hx.task
def count_parts(folder):
    return len(sorted(glob.glob(os.path.join(folder, "*.csv"))))


@hx.task
def total(table, parts):
    return float(table.sum()) + parts


if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=sys.argv[2] == "processes",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        hx.setup(client, store=sys.argv[1], budget="1 GiB", policy="all")
        value = total(load_table("data/table.csv"), count_parts("data/parts")).compute()
        run = hx.last_run(client)
    print(json.dumps({"value": value, "computed": run.computed}))
"""


@pytest.mark.parametrize(
    "mode",
    [
        "threads",
        # Its own cluster of worker processes per run; the default run has
        # test_data_files_read_by_path_in_worker_processes_are_verified_before_reuse.
        pytest.param("processes", marks=pytest.mark.slow),
    ],
)
def test_data_files_read_by_path_are_verified_before_reuse(tmp_path, mode):
    # The task receives a path string, not hx.File: only the trace sees the file it reads
    # and the directory it lists. Changing either recomputes; nothing else does.
    root = tmp_path / "project"
    _write(root, "reader.py", READER)
    _write(root, "data/table.csv", "1,2\n3,4\n")
    _write(root, "data/parts/a.csv", "x\n")
    store = str(tmp_path / "store")

    def run() -> tuple[float, list[str]]:
        out = json.loads(_python(root, "reader.py", store, mode).strip().splitlines()[-1])
        return out["value"], out["computed"]

    assert run() == (11.0, ["count_parts", "load_table", "total"])
    assert run() == (11.0, [])
    # (An unchanged cheap node may be recomputed rather than loaded: the plan's choice.)
    (root / "data/table.csv").write_text("1,2\n3,5\n")
    value, computed = run()
    assert (value, {"load_table", "total"} <= set(computed)) == (12.0, True)
    _write(root, "data/parts/b.csv", "y\n")
    value, computed = run()
    assert (value, {"count_parts", "total"} <= set(computed)) == (13.0, True)
    assert run() == (13.0, [])


def test_a_result_the_worker_lets_go_unstored_still_records_what_it_required(
    threads_cluster, tmp_path, module_factory
):
    # Larger than the whole budget, the result is decided on the worker and never held; its
    # trace still tells later plans what the code reaches at run time.
    from conftest import helix_client

    import helix_dask as hx

    module_factory("unstored_helper", "def factor():\n    return 3\n")
    mod = module_factory(
        "unstored_task",
        """
        import importlib

        import numpy as np

        import helix_dask as hx

        @hx.task
        def scaled(n, helper):
            return np.full(n, importlib.import_module(helper).factor())
        """,
    )
    store = tmp_path / "store"
    with helix_client(threads_cluster, store, budget="1 KiB", policy="all") as c:
        assert mod.scaled(1 << 14, "unstored_helper").compute().sum() == 3 << 14
        node = hx.last_run(c).node("scaled")
        assert node.materialization is hx.Materialization.NO_SPACE
        assert "exceed the whole budget" in node.reason
    (requires,) = hx.Catalog(store).requirements([node.signature]).values()
    assert any("unstored_helper" in dep for dep in requires), requires


@hx.task
def _stored_or_not(x: int) -> int:
    return x * 3


@pytest.mark.parametrize(
    ("policy", "trace", "traced"),
    [("none", "new-code", False), ("all", "new-code", True), ("none", "always", True)],
)
def test_only_runs_that_may_store_ask_workers_to_trace(
    threads_cluster, tmp_path, monkeypatch, policy, trace, traced
):
    from conftest import helix_client

    from helix_dask import _intake

    asked: list[object] = []
    real = _intake._ask_trace
    monkeypatch.setattr(
        _intake,
        "_ask_trace",
        lambda ts, known, **kw: (asked.append(known), real(ts, known, **kw)),
    )
    x = 5 + len(policy + trace)
    with (
        dask.config.set({"helix.trace": trace}),
        helix_client(threads_cluster, tmp_path / "store", policy=policy) as c,
    ):
        assert _stored_or_not(x).compute() == 3 * x
        hx.last_run(c)
    assert asked == ([None] if traced else [])  # None: trace it (never traced)


@hx.task
def _library_mean(values: Any) -> float:
    return float(values.mean())  # numpy's code, which only a trace sees


def _count_traces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of the calls traced from now on (in-process workers)."""
    from helix_dask._trace import NodeCall

    traced: list[str] = []
    real = NodeCall.traced

    def counting(self: NodeCall, args: tuple, kwargs: dict) -> object:
        traced.append(self.key)
        return real(self, args, kwargs)

    monkeypatch.setattr(NodeCall, "traced", counting)
    return traced


def test_many_calls_of_new_library_code_in_one_graph_are_traced_once_per_worker(
    threads_cluster, tmp_path, monkeypatch
):
    # A search runs one task's code in hundreds of nodes of its first graph: a worker that
    # traced the code reuses what it found (libraries only), as later graphs do.
    from conftest import helix_client

    traced = _count_traces(monkeypatch)
    store = tmp_path / "store"
    calls = [_library_mean(np.arange(i, i + 2)) for i in range(12)]
    with helix_client(threads_cluster, store, policy="all") as c:
        assert dask.compute(*calls) == tuple(i + 0.5 for i in range(12))
        first = hx.last_run(c)
        assert 1 <= len(traced) <= 2  # two single-threaded workers: at most one trace each
        assert {n.materialization for n in first.nodes} == {hx.Materialization.STORED}
        found = hx.Catalog(store).requirements(n.signature for n in first.nodes)
        assert len(found) == 12 and len({json.dumps(r) for r in found.values()}) == 1, found
        assert "dist:numpy" in next(iter(found.values()))
        traced.clear()
        assert dask.compute(*calls) == tuple(i + 0.5 for i in range(12))
        assert {n.decision for n in hx.last_run(c).nodes} == {hx.Decision.LOAD}
        assert traced == []


@hx.task
def _call_by_name(module: str, name: str, x: int) -> int:
    return getattr(importlib.import_module(module), name)(x)


def test_calls_of_new_code_that_reaches_project_code_are_each_traced(
    threads_cluster, tmp_path, monkeypatch, module_factory
):
    # Each call may reach other project code: none reuses another's trace, so an edit of the
    # code only some calls reached recomputes those calls.
    from conftest import helix_client

    source = "def a(x):\n    return x + 1\n\ndef b(x):\n    return x + {b}\n"
    module_factory("run_time_targets", source.format(b=2))
    traced = _count_traces(monkeypatch)
    names = ["a", "b"] * 4
    calls = [_call_by_name("run_time_targets", name, i) for i, name in enumerate(names)]
    with helix_client(threads_cluster, tmp_path / "store", policy="all") as c:
        assert dask.compute(*calls) == tuple(i + {"a": 1, "b": 2}[n] for i, n in enumerate(names))
        assert len(traced) == 8
        module_factory("run_time_targets", source.format(b=20))
        assert dask.compute(*calls) == tuple(i + {"a": 1, "b": 20}[n] for i, n in enumerate(names))
        run = hx.last_run(c)
    computed = sorted(n.key for n in run.nodes if n.decision is hx.Decision.COMPUTE)
    assert computed == sorted(call.key for call, n in zip(calls, names, strict=True) if n == "b")


@hx.task
def _call_then_edit(module: str, name: str, edited: str, x: int) -> int:
    """Calls ``module.name``, then the user's edit lands (the module file rewritten and
    reloaded) before the call returns, as an edit saved while a long task runs would."""
    mod = importlib.import_module(module)
    result = getattr(mod, name)(x)
    path = Path(mod.__file__)
    path.write_text(edited)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    importlib.invalidate_caches()
    importlib.reload(mod)
    return result


def test_an_edit_that_lands_right_after_a_call_is_never_recorded_as_what_it_ran(
    threads_cluster, tmp_path, module_factory
):
    # What a result required is digested in the task's own thread as its call returns, and a
    # definition found redefined by then keeps the result from being stored: the new code's
    # digest is never recorded next to the old code's result.
    from conftest import helix_client

    old, new = "def b(x):\n    return x + 2\n", "def b(x):\n    return x + 20\n"
    module_factory("edited_while_running", old)
    call = _call_then_edit("edited_while_running", "b", new, 1)
    with helix_client(threads_cluster, tmp_path / "store", policy="all") as c:
        assert call.compute() == 3  # what ran: the old code
        first = hx.last_run(c)
        assert [n.materialization for n in first.nodes] != [hx.Materialization.STORED]
        module_factory("edited_while_running", new)
        assert call.compute() == 21  # the new code, never the old result
        assert [n.decision for n in hx.last_run(c).nodes] == [hx.Decision.COMPUTE]


def test_requirements_of_a_call_are_unknown_when_its_code_was_replaced():
    # The pure check under the worker path: a trace's code objects against the definitions
    # its dependency ids resolve to now.
    from helix_dask._requirements import settle

    scope: dict[str, Any] = {"__name__": "replaced_scope"}
    exec("def helper(x):\n    return x + 1\n", scope)
    ran = {"replaced_scope.helper": [scope["helper"].__code__]}
    ann: dict[str, Any] = {"code": "", "sources": {}}
    trace = {"replaced_scope.helper": scope}
    same = settle("k", ann, trace, ran)
    assert same.requires is not None and set(same.requires) == {"replaced_scope.helper"}
    exec("def helper(x):\n    return x + 2\n", scope)  # redefined in place, as a reload does
    assert settle("k", ann, trace, ran).requires is None


@hx.task
def load_table(path: str) -> np.ndarray:
    return np.loadtxt(path, delimiter=",")


@hx.task
def count_parts(folder: str) -> int:
    return len(sorted(glob.glob(os.path.join(folder, "*.csv"))))


@hx.task
def total(table: np.ndarray, parts: int) -> float:
    return float(table.sum()) + parts


def test_data_files_read_by_path_in_worker_processes_are_verified_before_reuse(
    processes_cluster, tmp_path
):
    # READER's tasks on long-lived worker processes: the traces that see the file read and
    # the directory listed are taken there. Changing either recomputes; nothing else does.
    from conftest import helix_client

    data = tmp_path / "data"
    _write(data, "table.csv", "1,2\n3,4\n")
    _write(data, "parts/a.csv", "x\n")
    with helix_client(processes_cluster, tmp_path / "store", policy="all") as client:

        def run() -> tuple[float, list[str]]:
            node = total(load_table(str(data / "table.csv")), count_parts(str(data / "parts")))
            return node.compute(), sorted(hx.last_run(client).computed)

        assert run() == (11.0, ["count_parts", "load_table", "total"])
        assert run() == (11.0, [])
        (data / "table.csv").write_text("1,2\n3,5\n")
        value, computed = run()
        assert (value, {"load_table", "total"} <= set(computed)) == (12.0, True)
        _write(data, "parts/b.csv", "y\n")
        value, computed = run()
        assert (value, {"count_parts", "total"} <= set(computed)) == (13.0, True)
        assert run() == (13.0, [])


@hx.task
def scaled(x: int, scaler: Any) -> int:
    return scaler.apply(x)


def test_an_edited_method_of_an_argument_recomputes_on_new_worker_processes(
    processes_cluster, tmp_path, module_factory
):
    # The argument's class lives in a project module: worker processes import that module to
    # unpickle the argument, and only the trace taken there sees the method the task calls.
    # After the edit the workers are restarted: new processes, which import the edited
    # module, as the worker processes of a new cluster would.
    from conftest import helix_client

    shapes = module_factory("rtdep_shapes", MODULES["shapes.py"])
    with helix_client(processes_cluster, tmp_path / "store", policy="all") as client:
        client.run(_add_path, str(tmp_path / "usercode"))
        assert scaled(3, shapes.Scaler(5)).compute() == 15
        assert hx.last_run(client).computed == ["scaled"]
        assert scaled(3, shapes.Scaler(5)).compute() == 15
        assert hx.last_run(client).computed == [], "an identical re-run must load, not compute"
        edited = MODULES["shapes.py"].replace("return self.k * x", "return self.k * x + 7")
        shapes = module_factory("rtdep_shapes", edited)
        client.restart()
        client.run(_add_path, str(tmp_path / "usercode"))
        assert scaled(3, shapes.Scaler(5)).compute() == 22, "a stale result after the edit"
        assert hx.last_run(client).computed == ["scaled"]
