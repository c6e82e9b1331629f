"""The trace of a task's run: which code ran and which files it read.

A profile function records the code objects, chained to one already set; it must find code
reached at run time (recursion, comprehensions, generators, code defined by value outside any
module) and leave out what only an import's first execution of a module ran. A C profiler
already holding the thread cannot be chained: the result is marked untraceable.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import helix_dask._profile_trace as profile_trace
from helix_dask._trace import NodeCall, take_trace

SCRIPT = """
import json

def leaf(x):
    return x + 1

def rec(n):
    return leaf(n) if n == 0 else rec(n - 1)

def gen(n):
    for i in range(n):
        yield leaf(i)

class Scaler:
    def apply(self, x):
        return 2 * x

def task(n, fresh_module):
    import importlib
    importlib.import_module(fresh_module)  # an import's first run: not the task's code
    total = rec(n) + sum(gen(n)) + sum([leaf(i) for i in range(n)])
    return total + Scaler().apply(n) + len(json.dumps([n]))
"""


def _by_value() -> dict[str, Any]:
    """Functions defined outside any module, as a script's functions pickled by value are."""
    scope: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(SCRIPT), "<a script never imported>", "exec"), scope)
    return scope


def _fresh_module(tmp_path, name: str) -> str:
    (tmp_path / f"{name}.py").write_text("def body_only(x):\n    return x\n\nbody_only(1)\n")
    return name


@contextmanager
def _other_profiler() -> Iterator[list[str]]:
    events: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        events.append(event)

    sys.setprofile(profile)
    try:
        yield events
    finally:
        sys.setprofile(None)


def _trace(func: Callable[..., Any], *args: Any) -> dict[str, Any]:
    key = uuid.uuid4().hex
    NodeCall(func, key).traced(args, {})
    deps = take_trace(key)
    assert deps is not None
    return deps


def test_the_trace_finds_the_code_that_ran_and_not_what_an_import_ran(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    scope = _by_value()
    alone = _trace(scope["task"], 3, _fresh_module(tmp_path, f"m_{uuid.uuid4().hex}"))
    with _other_profiler() as events:
        chained = _trace(scope["task"], 3, _fresh_module(tmp_path, f"m_{uuid.uuid4().hex}"))
    assert events, "the profile function already set keeps receiving events"
    project = {d for d in alone if not d.startswith("dist:")}
    assert project == {
        "__main__.task",
        "__main__.task.<locals>.<listcomp>",
        "__main__.rec",
        "__main__.leaf",
        "__main__.gen",
        "__main__.Scaler.apply",
    }
    assert set(alone) == set(chained)
    assert not any("body_only" in d for d in alone)
    # Each dependency resolves in the globals the code ran with.
    assert all(alone[d] is scope for d in project)


HIDDEN = """
callbacks = []


def hidden(x):
    return x * 2


callbacks.append(hidden)


def calls_a_callback(x):
    return callbacks[0](x)
"""


@contextmanager
def _heap_scans() -> Iterator[list[int]]:
    """Count the heap scans the trace makes to find the globals of code defined by value."""
    scans: list[int] = []
    real = profile_trace.gc

    class CountingGC:
        @staticmethod
        def get_referrers(*objs: Any) -> list[Any]:
            scans.append(len(objs))
            return real.get_referrers(*objs)

    profile_trace.gc = CountingGC  # type: ignore[assignment]
    try:
        yield scans
    finally:
        profile_trace.gc = real


def test_code_defined_by_value_is_found_from_the_task_without_scanning_the_heap():
    # A script's or a notebook's functions reach a worker by value: a scan of the whole heap
    # for each task's code costs tens of milliseconds, so it is kept for what the task's own
    # globals, closures and classes do not reach.
    scope = _by_value()
    with _heap_scans() as scans:
        deps = _trace(scope["task"], 3, "json")
    assert {"__main__.rec", "__main__.leaf", "__main__.Scaler.apply"} <= set(deps)
    assert all(deps[d] is scope for d in deps if d.startswith("__main__."))
    assert scans == []


def test_code_reached_only_through_a_container_is_still_found():
    scope: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(HIDDEN, "<another script never imported>", "exec"), scope)
    with _heap_scans() as scans:
        deps = _trace(scope["calls_a_callback"], 3)
    assert deps["__main__.hidden"] is scope  # found by the scan of the heap
    assert scans == [1]


def _reads(path: str, listed: str) -> int:
    import glob

    with open(path) as f:
        total = len(f.read())
    with open(path + ".out", "w") as f:  # written by the call itself: not a dependency
        f.write("x")
    with open(path + ".out") as f:
        f.read()
    return total + len(glob.glob(listed + "/*.csv"))


def test_files_read_by_path_and_directories_listed_are_dependencies(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    declared = tmp_path / "declared.csv"
    declared.write_text("c\n")
    deps = _trace(_reads, str(data), str(tmp_path))
    assert f"file:{data}" in deps
    assert f"listing:{tmp_path}" in deps
    assert f"file:{data}.out" not in deps
    assert not any(d.endswith(".py") for d in deps if d.startswith("file:"))


def _reads_metadata(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_package_metadata_read_at_run_time_is_not_a_data_file(tmp_path):
    # importlib.metadata reads entry points of every distribution, also of one installed in
    # development mode from a project directory: its version stands for it.
    meta = tmp_path / "project" / "mypkg.egg-info" / "entry_points.txt"
    meta.parent.mkdir(parents=True)
    meta.write_text("[console_scripts]\n")
    deps = _trace(_reads_metadata, str(meta))
    assert not any(d.startswith("file:") for d in deps), deps


def test_files_passed_as_hx_file_are_covered_by_the_signature(tmp_path):
    import helix_dask as hx

    data = tmp_path / "data.csv"
    data.write_text("a\n")

    def reads(f: hx.File) -> str:
        with open(f) as handle:
            return handle.read()

    deps = _trace(reads, hx.File(data))
    assert not any(d.startswith("file:") for d in deps)


def test_a_c_profiler_holding_the_thread_makes_the_result_untraceable():
    import cProfile

    from helix_dask._requirements import UNTRACEABLE

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        key = uuid.uuid4().hex
        assert NodeCall(lambda x: x + 1, key).traced((1,), {}) == 2
        assert sys.getprofile() is profiler  # left as it was
    finally:
        profiler.disable()
    assert take_trace(key) == {UNTRACEABLE: {}}


def test_a_codes_recorded_traces_only_grow_and_survive_a_rolled_back_write(tmp_path):
    """Most calls of a traced code reach nothing new, and their trace is not rewritten; what a
    rolled-back transaction would have added is written by the next call that reaches it, and
    another writer's additions are merged, not overwritten."""
    import pytest

    from helix_dask.catalog import CatalogWriter

    one, other = CatalogWriter(tmp_path), CatalogWriter(tmp_path)
    one.record_requirements("s1", {}, "code", ["dist:numpy"])
    one.record_requirements("s2", {}, "code", ["dist:numpy"])
    with pytest.raises(RuntimeError), one.batch():
        one.record_requirements("s3", {}, "code", ["project.helper"])
        raise RuntimeError("the batch fails after the trace was merged")
    assert sorted(other.traced(["code"])["code"]) == ["dist:numpy"]
    other.record_requirements("s4", {}, "code", ["dist:scipy"])
    one.record_requirements("s5", {}, "code", ["project.helper"])
    assert sorted(other.traced(["code"])["code"]) == [
        "dist:numpy",
        "dist:scipy",
        "project.helper",
    ]
    one.close()
    other.close()


def _leaf(x: int) -> int:
    return x + 1


def test_threads_tracing_at_once_with_an_audit_hook_all_succeed():
    """With an audit hook in the process (the file-read recorder installs one), installing a
    profile function runs Python code, and CPython 3.11 refuses an install while another
    thread's is under way: traced calls in several threads at once must still all run and
    each record its own code."""
    import threading

    from helix_dask._file_reads import FileReads

    with FileReads((), {}):  # the audit hook is installed once per process
        pass
    failures: list[BaseException] = []
    traced: list[bool] = []

    def work(i: int) -> None:
        call = NodeCall(_leaf, f"threads-{i}-{uuid.uuid4().hex}")
        for j in range(4000):
            try:
                assert call.traced((j,), {}) == j + 1
            except BaseException as e:  # any failure fails the test below
                failures.append(e)
                return
            trace = take_trace(call.key) or {}
            traced.append(any(d.endswith("_leaf") for d in trace))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often, as they would on a busy worker
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert len(traced) == 12000 and all(traced)
    assert sys.getprofile() is None


def _refused() -> RuntimeError:
    return RuntimeError(
        "Cannot install a profile function while another profile function is being installed"
    )


def test_a_c_profiler_that_cannot_be_installed_or_removed_never_claims_a_trace(monkeypatch):
    """The C profiler (the thread has no profile function) cannot be installed when code
    outside helix keeps installing one: the call runs untraced and its result is untraceable
    (never stored). One that cannot be removed is removed by the thread's next trace."""
    import cProfile

    from helix_dask import _profile_trace
    from helix_dask._requirements import UNTRACEABLE

    refuse = {"install": True, "remove": False}
    enable, disable = cProfile.Profile.enable, cProfile.Profile.disable

    def refusing(real: Callable[..., Any], what: str) -> Callable[..., Any]:
        def switch(self: Any, *args: Any) -> Any:
            if refuse[what]:
                raise _refused()
            return real(self, *args)

        return switch

    monkeypatch.setattr(_profile_trace.time, "sleep", lambda s: None)
    monkeypatch.setattr(cProfile.Profile, "enable", refusing(enable, "install"))
    monkeypatch.setattr(cProfile.Profile, "disable", refusing(disable, "remove"))
    call = NodeCall(_leaf, f"refused-{uuid.uuid4().hex}")
    assert call.traced((1,), {}) == 2
    assert take_trace(call.key) == {UNTRACEABLE: {}}
    assert sys.getprofile() is None

    refuse.update(install=False, remove=True)
    assert call.traced((2,), {}) == 3
    assert take_trace(call.key) == {UNTRACEABLE: {}}
    assert isinstance(sys.getprofile(), cProfile.Profile)  # left installed

    refuse["remove"] = False
    assert call.traced((3,), {}) == 4
    assert any(d.endswith("_leaf") for d in take_trace(call.key) or {})
    assert sys.getprofile() is None


def test_a_chained_recorder_that_cannot_be_installed_or_removed_never_claims_a_trace(
    monkeypatch,
):
    """Under a profile function of the user's, the Python recorder chained to it: one that
    cannot be installed leaves the call untraced and its result untraceable; one that cannot
    be removed records nothing more and is replaced by the next traced call."""
    from helix_dask import _profile_trace
    from helix_dask._requirements import UNTRACEABLE

    real = sys.setprofile
    refuse = {"install": True, "remove": False}
    with _other_profiler() as events:
        outer = sys.getprofile()

        def setprofile(func: Any) -> None:
            if refuse["remove" if func is outer else "install"]:
                raise _refused()
            real(func)

        monkeypatch.setattr(_profile_trace.time, "sleep", lambda s: None)
        monkeypatch.setattr(sys, "setprofile", setprofile)
        call = NodeCall(_leaf, f"refused-{uuid.uuid4().hex}")
        assert call.traced((1,), {}) == 2
        assert take_trace(call.key) == {UNTRACEABLE: {}}
        assert sys.getprofile() is outer

        refuse.update(install=False, remove=True)
        assert call.traced((2,), {}) == 3
        assert take_trace(call.key) == {UNTRACEABLE: {}}
        left = sys.getprofile()
        assert left is not outer and left.helix_inert is outer  # inert, chained to the user's

        refuse["remove"] = False
        before = len(events)
        assert call.traced((3,), {}) == 4
        assert any(d.endswith("_leaf") for d in take_trace(call.key) or {})
        assert sys.getprofile() is outer and len(events) > before
        monkeypatch.setattr(sys, "setprofile", real)


def _entry_points(group: str) -> int:
    import importlib.metadata

    return len(importlib.metadata.entry_points(group=group))


def test_directories_listed_by_a_distribution_lookup_are_not_dependencies(tmp_path, monkeypatch):
    # Looking up entry points (narwhals does, inside every scikit-learn input check) lists
    # each sys.path directory; a Dask worker's scratch directory is one, and its names change
    # whenever a worker starts, so counting it would make stored results stale at random.
    listed = tmp_path / f"on_path_{uuid.uuid4().hex}"
    listed.mkdir()
    monkeypatch.syspath_prepend(str(listed))
    deps = _trace(_entry_points, "helix.no.such.group")
    assert not any(d.startswith("listing:") for d in deps), deps
    # The same directory listed by the task itself still is one.
    data = tmp_path / "data.csv"
    data.write_text("a\n")
    deps = _trace(_reads, str(data), str(listed))
    assert f"listing:{listed}" in deps


def _install(site, name: str, version: str) -> None:
    """A distribution's metadata as an installer leaves it (only what a version lookup reads)."""
    for old in site.glob(f"{name}-*.dist-info"):
        (old / "METADATA").unlink()
        old.rmdir()
    meta = site / f"{name}-{version}.dist-info" / "METADATA"
    meta.parent.mkdir()
    meta.write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_a_distribution_version_follows_its_metadata(tmp_path, monkeypatch):
    from helix_dask._dependency_digests import dependency_digest

    name = f"helixfake{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(tmp_path))
    assert dependency_digest(f"dist:{name}") == "not installed"
    _install(tmp_path, name, "1.0")
    assert dependency_digest(f"dist:{name}") == "1.0"
    assert dependency_digest(f"dist:{name}") == "1.0"
    _install(tmp_path, name, "2.0")  # an upgrade: a new metadata directory
    assert dependency_digest(f"dist:{name}") == "2.0"
    meta = tmp_path / f"{name}-2.0.dist-info" / "METADATA"
    meta.write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 2.0.post1\n")  # in place
    assert dependency_digest(f"dist:{name}") == "2.0.post1"


def test_a_distribution_version_follows_an_install_that_shadows_it(tmp_path, monkeypatch):
    from helix_dask._dependency_digests import dependency_digest

    name = f"helixfake{uuid.uuid4().hex[:8]}"
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir(), later.mkdir()
    monkeypatch.syspath_prepend(str(later))
    _install(later, name, "1.0")
    assert dependency_digest(f"dist:{name}") == "1.0"
    monkeypatch.syspath_prepend(str(first))  # a new entry ahead of it: found there first
    _install(first, name, "2.0")
    assert dependency_digest(f"dist:{name}") == "2.0"
    _install(first, name, "3.0")  # an upgrade in the entry ahead, the one behind unchanged
    assert dependency_digest(f"dist:{name}") == "3.0"
    for old in first.glob(f"{name}-*.dist-info"):  # uninstalled ahead: the one behind again
        (old / "METADATA").unlink()
        old.rmdir()
    assert dependency_digest(f"dist:{name}") == "1.0"
    _install(first, name, "4.0")  # into an entry ahead, ``sys.path`` unchanged
    assert dependency_digest(f"dist:{name}") == "4.0"


def test_code_of_a_module_imported_as_another_is_removed_is_found_by_its_file(
    module_factory,
):
    # ``sys.modules`` keeps its size when one module goes and another comes: the new module's
    # code is still found by its file (code of no known module is never digested).
    gone = module_factory("trace_gone_module", "def f():\n    return 1\n")
    came = module_factory("trace_new_module", "def g():\n    return 2\n")
    del sys.modules["trace_new_module"]
    assert profile_trace.scopes([gone.f.__code__])[gone.f.__code__] is vars(gone)
    del sys.modules["trace_gone_module"]
    sys.modules["trace_new_module"] = came  # as an import of it would, with nothing else
    code = came.g.__code__
    del came.g  # no function holds the code any more (a module reloaded since it ran)
    assert profile_trace.scopes([code])[code] is vars(came)


def test_project_code_of_no_known_module_makes_the_trace_untraceable(tmp_path):
    # Its globals could not be found, so what it is cannot be digested: never stored.
    from helix_dask._requirements import UNTRACEABLE, dependencies

    code = compile("def lost():\n    return 1\n", str(tmp_path / "lost.py"), "exec")
    lost = next(c for c in code.co_consts if hasattr(c, "co_qualname"))
    assert UNTRACEABLE in dependencies(profile_trace.scopes([lost]))


def test_a_thread_working_for_a_call_records_its_tests_without_recursing(
    tmp_path, module_factory
) -> None:
    # Finding whether a frame is the project's resolves real paths, which tests paths itself:
    # with cold caches, in a thread that borrows a call's recorder, that must neither recurse
    # nor fail the user's call.
    import threading

    from helix_dask import _env_reads, _origin
    from helix_dask._file_reads import FileReads

    mod = module_factory(
        "trace_borrowed_probe", "import os\n\n\ndef probe(p):\n    return os.path.exists(p)\n"
    )
    path = tmp_path / "flag"
    path.write_text("")
    go, results = threading.Event(), []

    def work() -> None:
        go.wait(10)
        try:
            results.append(mod.probe(str(path)))
        except BaseException as e:  # the test reports what escaped
            results.append(e)

    thread = threading.Thread(target=work)
    thread.start()  # started before the call: it borrows by running project code
    with FileReads((), {}) as files:
        _env_reads._project_file.cache_clear()
        _origin._is_project_path.cache_clear()
        go.set()
        thread.join(10)
    assert results == [True]
    assert str(path) in files.probes
