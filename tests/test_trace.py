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

    from helix_dask._trace import UNTRACEABLE

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        key = uuid.uuid4().hex
        assert NodeCall(lambda x: x + 1, key).traced((1,), {}) == 2
        assert sys.getprofile() is profiler  # left as it was
    finally:
        profiler.disable()
    assert take_trace(key) == {UNTRACEABLE: {}}


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
    from helix_dask._trace import dependency_digest

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
