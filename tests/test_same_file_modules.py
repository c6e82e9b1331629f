"""One source file loaded as two modules: the trace names code by the module that holds it.

A script run as ``python -m pkg.script`` that imports ``pkg.script`` (or a worker process that
imports the main module as ``__mp_main__`` and the same file by its import name to unpickle a
task) holds one file as two modules. The code that ran belongs to one of them; the other's
functions are different objects of the same names. Naming the code by the wrong module made a
helper or the task itself look "redefined while it ran", and the result was never stored."""

from __future__ import annotations

import importlib.util
import logging
import sys
import textwrap
from pathlib import Path

import pytest

import helix_dask as hx
from helix_dask._profile_trace import scopes

SOURCE = textwrap.dedent(
    """
    import helix_dask as hx


    def helper(x):
        return x * 10


    def step(x):
        return helper(x) + 1


    task = hx.task(step, name="twin_step", materialize=True)
    """
)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The same file loaded first under another name (as ``__mp_main__`` is), then imported."""
    path = tmp_path / "twin_module.py"
    path.write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    first = _load(path, "twin_module_alias")
    second = _load(path, "twin_module")
    yield first, second
    for name in ("twin_module_alias", "twin_module"):
        sys.modules.pop(name, None)


def test_code_is_scoped_in_the_module_that_holds_it(twins):
    first, second = twins
    for module in (first, second):
        found = scopes([module.step.__code__, module.helper.__code__])
        assert {scope["__name__"] for scope in found.values()} == {module.__name__}


def test_a_task_of_a_file_loaded_twice_is_stored_and_then_loaded(
    twins, threaded_client, caplog: pytest.LogCaptureFixture
):
    _, module = twins
    with caplog.at_level(logging.WARNING, logger="helix_dask"):
        assert module.task(2).compute() == 21
        first = hx.last_run(threaded_client)
    assert "redefined" not in caplog.text
    assert first.stored == ["twin_step"], first.summary()
    assert module.task(2).compute() == 21
    assert hx.last_run(threaded_client).loaded == ["twin_step"]
