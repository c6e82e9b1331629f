"""Shared fixtures: real in-process clusters, a helix store per test, call logs across processes."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

import helix_dask as hx

CALL_LOG = "HELIX_TEST_CALL_LOG"
weak_results: list = []
"""Weak references to results made by tasks on worker threads (whether anything keeps them)."""
task_gate = threading.Event()
"""Set by a test to let a task it holds up on a worker thread of this process finish."""


def log_call(name: str) -> None:
    """Append ``name`` to the call log (a file, so worker processes can write it too)."""
    with open(os.environ[CALL_LOG], "a") as f:
        f.write(name + "\n")


class Calls:
    """Which task functions actually ran since the last ``take()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def take(self) -> Counter[str]:
        text = self.path.read_text()
        self.path.write_text("")
        return Counter(text.split())


@pytest.fixture(scope="session")
def call_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One call log for the whole run, set before any shared cluster starts: worker processes
    inherit the environment they were started with."""
    path = tmp_path_factory.mktemp("calls") / "calls.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CALL_LOG, str(path))
        yield path


@pytest.fixture
def calls(call_log: Path) -> Calls:
    return Calls(call_log)


def _cluster(processes: bool, *, dashboard: bool = False) -> LocalCluster:
    """Two single-threaded workers; the scheduler's dashboard on a free port when asked."""
    with dask.config.set({"distributed.scheduler.validate": True}):
        return LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=":0" if dashboard else None,
            worker_dashboard_address=None,
        )


@pytest.fixture(scope="session")
def threads_cluster(call_log: Path) -> Iterator[LocalCluster]:
    """One cluster of worker threads shared by the whole run (each test brings its own store)."""
    with _cluster(False) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def processes_cluster(call_log: Path) -> Iterator[LocalCluster]:
    """One cluster of worker processes shared by the whole run."""
    with _cluster(True) as cluster:
        yield cluster


@contextmanager
def helix_client(cluster: LocalCluster, store: str | Path, **settings: object) -> Iterator[Client]:
    """A new client of ``cluster`` with helix set up on ``store``; on exit, checks that the
    scheduler and the plugin drained (no tasks, reservations, unfinished runs or writes)."""
    with Client(cluster) as c:
        hx.setup(c, store=store, **{"budget": "1 GiB", **settings})
        try:
            yield c
            _assert_no_leaked_tasks(c)
        finally:
            c.unregister_scheduler_plugin("helix")  # the next test installs its own


@pytest.fixture(params=["threads", "processes"])
def client(request, calls: Calls, tmp_path: Path) -> Iterator[Client]:
    """A client of a shared LocalCluster (worker threads, then worker processes), helix set up
    on a store of this test's own."""
    cluster = request.getfixturevalue(f"{request.param}_cluster")
    with helix_client(cluster, tmp_path / "store") as c:
        yield c


@pytest.fixture
def threaded_client(threads_cluster, calls: Calls, tmp_path: Path) -> Iterator[Client]:
    """A client of the shared threads cluster (for code edits made inside the test)."""
    with helix_client(threads_cluster, tmp_path / "store") as c:
        yield c


@pytest.fixture
def processes_cluster_address(
    request: pytest.FixtureRequest, processes_cluster: LocalCluster
) -> Iterator[str]:
    """The address of the shared worker-process cluster, for scripts run as fresh client
    processes against it (a user re-running a script on a long-lived cluster). The helix
    plugin such a script installs is checked for leftovers, then removed for the next test."""
    yield processes_cluster.scheduler_address
    with Client(processes_cluster) as c:
        if not c.run_on_scheduler(_has_helix):
            return
        try:
            if request.node.stash.get(_passed, False):
                _assert_no_leaked_tasks(c)
        finally:
            c.unregister_scheduler_plugin("helix")


def _has_helix(dask_scheduler) -> bool:
    return "helix" in dask_scheduler.plugins


def _leftovers(dask_scheduler) -> dict:
    """What the scheduler and the helix plugin still hold: empty once a test has drained."""
    out = {}
    if dask_scheduler.tasks:
        out["tasks"] = sorted(map(str, dask_scheduler.tasks))[:20]
    plugin = dask_scheduler.plugins.get("helix")
    if plugin is not None:
        out.update(plugin.leftovers())
    return out


def _assert_no_leaked_tasks(c: Client) -> None:
    """Poll (no sleeping on a guess) until nothing is left, for at most 10 seconds."""
    deadline = time.monotonic() + 10
    while (left := c.run_on_scheduler(_leftovers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, left


SHARED_CLUSTERS = ("threads_cluster", "processes_cluster")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    report = yield
    if report.when == "call":
        item.stash[_passed] = report.passed
    return report


_passed = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def _shared_clusters_drained(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that passed on a shared cluster: the scheduler and its helix plugin (one
    a module shares, see ``test_differential``) drained, as the next test expects."""
    yield
    if not request.node.stash.get(_passed, False):
        return
    for name in SHARED_CLUSTERS:
        if name in request.fixturenames:
            cluster = request.getfixturevalue(name)
            deadline = time.monotonic() + 10
            while (left := cluster.sync(_leftovers_of, cluster)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not left, f"{name}: {left}"


async def _leftovers_of(cluster: LocalCluster) -> dict:
    return _leftovers(cluster.scheduler)  # on the scheduler's event loop


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
