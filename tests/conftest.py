"""Shared fixtures: real in-process clusters, a helix store per test, call logs across processes."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

import helix_dask as hx

CALL_LOG = "HELIX_TEST_CALL_LOG"


def log_call(name: str) -> None:
    """Append ``name`` to the call log (a file, so worker processes can write it too)."""
    with open(os.environ[CALL_LOG], "a") as f:
        f.write(name + "\n")


class Calls:
    """Which task functions actually ran since the last ``take()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def take(self) -> Counter[str]:
        text = self.path.read_text()
        self.path.write_text("")
        return Counter(text.split())


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Calls:
    path = tmp_path / "calls.log"
    monkeypatch.setenv(CALL_LOG, str(path))
    return Calls(path)


def _cluster(processes: bool, *, dashboard: bool = False) -> LocalCluster:
    """Two single-threaded workers; the scheduler's dashboard on a free port when asked."""
    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=":0" if dashboard else None,
        worker_dashboard_address=None,
    )


@pytest.fixture(params=["threads", "processes"])
def client(request, calls: Calls, tmp_path: Path) -> Iterator[Client]:
    """A real LocalCluster (worker threads, then worker processes) with helix set up."""
    with dask.config.set({"distributed.scheduler.validate": True}):
        with _cluster(request.param == "processes") as cluster, Client(cluster) as c:
            hx.setup(c, store=tmp_path / "store", budget="1 GiB")
            yield c
            _assert_no_leaked_tasks(c)


@pytest.fixture
def threaded_client(calls: Calls, tmp_path: Path) -> Iterator[Client]:
    """A threads-only LocalCluster with helix set up (for code edits made inside the test)."""
    with dask.config.set({"distributed.scheduler.validate": True}):
        with _cluster(False) as cluster, Client(cluster) as c:
            hx.setup(c, store=tmp_path / "store", budget="1 GiB")
            yield c
            _assert_no_leaked_tasks(c)


def _assert_no_leaked_tasks(c: Client) -> None:
    import time

    deadline = time.monotonic() + 10
    while True:
        left = c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == 0, c.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))


@pytest.fixture
def module_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable:
    """Write a module into ``tmp_path`` and import it; calling again with new source edits the
    same module in place (same name), as a user editing a file would."""
    root = tmp_path / "usercode"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    names: list[str] = []

    def make(name: str, source: str):
        path = root / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        # A fresh mtime for every edit, so neither the import system nor linecache reuse old text.
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000 * (len(names) + 1)))
        importlib.invalidate_caches()
        names.append(name)
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)

    yield make
    for n in set(names):
        sys.modules.pop(n, None)
