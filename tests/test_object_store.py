"""The store on object storage: the artifact contract against an S3-compatible server (moto's
standalone server on loopback), commit by manifest, faults, and a real deployment: a scheduler
started with ``--preload helix_dask`` and two ``dask worker`` processes iterating on ``s3://``."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
from test_store import SIG, ArtifactStoreContract, Gate, assert_same, sig

import helix_dask as hx
from helix_dask import cli
from helix_dask._errors import HelixCorruptArtifact
from helix_dask._keys import key_path
from helix_dask._location import catalog_dir, is_remote, store_location
from helix_dask._store_access import load_artifact, open_store

ROOT = Path(__file__).resolve().parents[1]
CREDENTIALS = {"key": "testing", "secret": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One moto S3 server on loopback for the module, stopped at its end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        if not _wait_for_port(port, proc, timeout=30):
            pytest.skip(f"moto's S3 server did not start on 127.0.0.1:{port}: {log.read_text()}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def s3_url(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket per test, its options in ``helix.storage-options``, and a home directory
    of its own (where the catalog and key of a URL store go by default)."""
    import s3fs

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    options = {"endpoint_url": s3_endpoint, **CREDENTIALS}
    bucket = f"helix-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    with dask.config.set({"helix.storage-options": options}):
        yield f"s3://{bucket}/store"


def _fs(url: str) -> Any:
    return open_store(url).fs  # type: ignore[attr-defined]


def _objects(url: str) -> list[str]:
    root = url.removeprefix("s3://")
    return sorted(p[len(root) + 1 :] for p in _fs(url).find(root))


def _flip_byte(url: str, path: str) -> None:
    fs = _fs(url)
    data = bytearray(fs.cat_file(path))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(path, bytes(data))


# -- the contract ---------------------------------------------------------------------------------


class TestObjectArtifactStore(ArtifactStoreContract):
    @pytest.fixture
    def store(self, s3_url: str) -> Any:
        return open_store(s3_url)

    def temporaries(self, store: Any) -> list[str]:
        """Write folders that no manifest commits."""
        committed = set(store.signatures())
        return sorted(
            o
            for o in _objects(store.url)
            if o.startswith("artifacts/") and o.split("/")[2] not in committed
        )

    def test_commit_is_a_manifest_naming_the_write_folder(self, store: Any) -> None:
        store.put(SIG, np.arange(10), name="t")
        objects = _objects(store.url)
        manifest = f"artifacts/{SIG[:2]}/{SIG}/helix-manifest.json"
        assert manifest in objects
        import json

        body = json.loads(store.fs.cat_file(f"{store.root}/{manifest}"))
        folder = f"artifacts/{SIG[:2]}/{SIG}/{body['prefix']}/"
        assert {o for o in objects if o != manifest} == {folder + f for f in body["files"]}

    def test_flipped_byte_in_an_object_is_uncommitted_noted_and_never_returned(
        self, store: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        store.put(SIG, np.arange(100_000))
        chunk = next(o for o in _objects(store.url) if o.endswith("/data/c/0"))
        _flip_byte(store.url, f"{store.root}/{chunk}")
        with pytest.raises(HelixCorruptArtifact, match=r"file data/c/0 fails its checksum"):
            store.get(SIG)
        assert not store.contains(SIG)
        assert any(o.startswith("quarantine/") for o in _objects(store.url))
        assert "is unusable (file data/c/0 fails its checksum); uncommitted it" in caplog.text
        store.put(SIG, np.arange(100_000))  # the next run stores it again
        assert_same(np.arange(100_000), store.get(SIG))

    def test_tampered_pickle_is_never_unpickled(self, store: Any) -> None:
        store.put(SIG, {1, 2, 3})
        chunk = next(o for o in _objects(store.url) if "/data/c/" in o)
        _flip_byte(store.url, f"{store.root}/{chunk}")
        assert store.verify(SIG) is not None
        with pytest.raises(HelixCorruptArtifact):
            store.get(SIG)

    def test_verify_finds_extra_and_missing_objects(self, store: Any) -> None:
        store.put(sig(1), np.arange(1000))
        store.put(sig(2), np.arange(1000))
        objects = _objects(store.url)
        chunk1 = next(o for o in objects if sig(1) in o and o.endswith("/c/0"))
        chunk2 = next(o for o in objects if sig(2) in o and o.endswith("/c/0"))
        store.fs.pipe_file(f"{store.root}/{chunk1}.extra", b"x")
        store.fs.rm_file(f"{store.root}/{chunk2}")
        assert "is not in its manifest" in store.verify(sig(1)).reason
        assert "is missing" in store.verify(sig(2), repair=True).reason
        assert sorted(store.signatures()) == [sig(1)]

    def test_killed_writer_leaves_nothing_that_is_read_and_is_swept_by_age(
        self, store: Any, s3_url: str, tmp_path: Path
    ) -> None:
        started = tmp_path / "started"
        script = textwrap.dedent(
            f"""
            import time, dask, numpy as np
            import helix_dask._object_files
            from helix_dask._store_access import open_store
            helix_dask._object_files._FLUSH_BYTES = 1  # upload every file as it is written
            class Slow:
                def __reduce__(self):
                    open({str(started)!r}, "w").close()
                    time.sleep(60)
            options = {dask.config.get("helix.storage-options")!r}
            with dask.config.set({{"helix.storage-options": options}}):
                open_store({s3_url!r}).put({SIG!r}, {{"X": np.arange(2**17), "slow": Slow()}})
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ})
        try:
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert started.exists(), "the writer never reached its pickle"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert self.temporaries(store)  # its array entry was written, its manifest never
        assert not store.contains(SIG) and list(store.signatures()) == []

        class Fallback:
            key = "featurize-" + SIG

            def compute(self) -> str:
                return "recomputed"

        assert load_artifact(s3_url, SIG, Fallback()) == "recomputed"  # type: ignore[arg-type]
        assert store.sweep_temporaries() == 0  # young: may be a live writer elsewhere
        assert store.sweep_temporaries(older_than=0) == 1
        assert self.temporaries(store) == []

    def test_sweep_keeps_committed_writes_and_removes_the_losers_of_a_race(
        self, store: Any
    ) -> None:
        store.put(SIG, np.arange(10))
        folder = next(o for o in _objects(store.url) if "/w-" in o).split("/")[3]
        loser = f"{store.root}/artifacts/{SIG[:2]}/{SIG}/w-{uuid.uuid4().hex}"
        store.fs.pipe_file(f"{loser}/zarr.json", b"{}")
        assert store.sweep_temporaries(older_than=0) == 1
        assert folder in "".join(_objects(store.url))
        assert_same(np.arange(10), store.get(SIG))

    def test_reader_never_sees_a_write_in_progress(self, store: Any) -> None:
        import threading

        gate = Gate()
        writer = threading.Thread(target=store.put, args=(SIG, {"g": gate}))
        writer.start()
        assert gate.reached.wait(10)
        try:
            assert not store.contains(SIG)
        finally:
            gate.release.set()
            writer.join(30)
        assert store.contains(SIG)


# -- where things live ----------------------------------------------------------------------------


def test_urls_are_remote_and_paths_and_file_urls_are_local(tmp_path: Path) -> None:
    assert is_remote("s3://bucket/prefix") and is_remote("gs://b")
    assert not is_remote(tmp_path) and not is_remote(f"file://{tmp_path}")
    assert store_location(f"file://{tmp_path}/s") == str(tmp_path / "s")
    assert store_location("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert type(open_store(f"file://{tmp_path}/s")).__name__ == "ZarrArtifactStore"


def test_catalog_and_key_of_a_url_store_stay_on_local_disk(s3_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home" / ".helix"
    assert Path(catalog_dir(s3_url)).parent == home / "catalogs"
    assert catalog_dir(s3_url) != catalog_dir(s3_url + "-other")
    store = open_store(s3_url)
    store.put(SIG, {1, 2})  # a pickle: signed with the key
    assert key_path(s3_url).parent == home / "keys"
    assert key_path(s3_url).stat().st_mode & 0o777 == 0o600
    assert not [o for o in _objects(s3_url) if "key" in o]
    with dask.config.set({"helix.catalog": str(tmp_path / "cat")}):
        assert catalog_dir(s3_url) == str(tmp_path / "cat")


# -- iterating on a cluster -----------------------------------------------------------------------

WORKFLOW = """
import os
import time

import numpy as np

import helix_dask as hx


def _log(name):
    with open(os.environ["HELIX_TEST_CALL_LOG"], "a") as f:
        f.write(name + "\\n")


@hx.task
def load(n):
    _log("load")
    time.sleep(3.0)  # well above a load from the bucket, however busy the machine
    return np.arange(n, dtype=np.float64)


@hx.task
def featurize(x, scale=1.0):
    _log("featurize")
    time.sleep(1.0)
    return {"X": np.outer(x, np.arange(1.0, 9.0)) * scale, "y": x % 3}


@hx.task
def train(features, C=1.0):
    _log("train")
    time.sleep(0.5)
    X, y = features["X"], features["y"]
    return {"w": np.linalg.lstsq(X, y, rcond=None)[0] * C, "tags": {"C", str(C)}}


@hx.task
def evaluate(model, features):
    _log("evaluate")
    return float(np.abs(features["X"] @ model["w"] - features["y"]).mean())


def workflow(n, scale, C):
    features = featurize(load(n), scale=scale)
    return evaluate(train(features, C=C), features)


def plain(n, scale, C):
    features = featurize.func(load.func(n), scale=scale)
    return evaluate.func(train.func(features, C=C), features)


def plain_model(n, scale, C):
    return train.func(featurize.func(load.func(n), scale=scale), C=C)
"""


class Calls:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def take(self) -> Counter[str]:
        text = self.path.read_text()
        self.path.write_text("")
        return Counter(text.split())


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The workflow as an importable module, on the path of this process and its children."""
    code = tmp_path / "usercode"
    code.mkdir()
    (code / "s3_flow.py").write_text(WORKFLOW)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(code), str(ROOT), str(ROOT / "tests")]))
    monkeypatch.setenv("HELIX_TEST_CALL_LOG", str(tmp_path / "calls.log"))
    import importlib

    sys.modules.pop("s3_flow", None)
    yield importlib.import_module("s3_flow")
    sys.modules.pop("s3_flow", None)


class _NoPause:
    """Stands in for ``time`` in the workflow module while this process computes what a plain
    run returns: the tasks' pauses give them a cost for helix's plans, not their results."""

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


def _plain(flow: Any, what: str, *args: Any) -> Any:
    """``flow.plain(*args)`` (or another plain function of the workflow) without the pauses."""
    real = flow.time
    flow.time = _NoPause
    try:
        return getattr(flow, what)(*args)
    finally:
        flow.time = real


def _io_model(dask_scheduler: Any) -> tuple[str, Any]:
    """What the scheduler's cost model believed, for a failure message."""
    plugin = dask_scheduler.plugins["helix"]
    return str(plugin._model.io), plugin.catalog.io_samples()


def _iterate(client: Any, flow: Any, calls: Calls, url: str, warned: Any) -> None:
    """Versions of the workflow: first run, identical re-run, parameter edits, a corrupt object."""

    def run(n: int, scale: float, C: float) -> tuple[Any, Counter[str]]:
        got = client.compute(flow.workflow(n, scale, C)).result()
        report, ran = hx.last_run(client, timeout=60), calls.take()
        assert got == _plain(flow, "plain", n, scale, C)  # what a plain run computes
        calls.take()  # the plain run's calls
        return report, ran

    # The first load in a fresh worker process imports Zarr and s3fs and opens a session (~1 s
    # on a busy machine), which the cost model would count as load time and then prefer to
    # recompute 1 s tasks: open the store on every worker first, as a long-lived cluster has.
    client.run(open_store, url)
    first, ran = run(2000, 1.0, 1.0)
    assert ran == Counter(load=1, featurize=1, train=1, evaluate=1)
    assert first.stored == ["evaluate", "featurize", "load", "train"]

    again, ran = run(2000, 1.0, 1.0)
    assert ran == Counter() and again.loaded == ["evaluate"]

    edited, ran = run(2000, 1.0, 0.5)  # a hyperparameter: train and what follows
    assert ran == Counter(train=1, evaluate=1)
    assert edited.loaded == ["featurize"]

    features = first.node("featurize").stored_as
    store = open_store(url)
    chunk = next(o for o in _objects(url) if features in o and "/c/" in o)
    _flip_byte(url, f"{store.root}/{chunk}")
    _, ran = run(2000, 1.0, 0.25)  # plans to load the damaged features: recomputes them
    assert ran["featurize"] == 1
    warned("could not load artifact " + features)
    assert not store.contains(features)

    rescaled, ran = run(2000, 2.0, 0.25)  # a data edit: everything below load
    assert ran == Counter(featurize=1, train=1, evaluate=1), client.run_on_scheduler(_io_model)
    assert rescaled.loaded == ["load"]


def test_local_cluster_with_worker_processes_iterates_on_s3(
    s3_url: str,
    s3_endpoint: str,
    user_module: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from distributed import Client, LocalCluster

    calls = Calls(tmp_path / "calls.log")
    options = {"endpoint_url": s3_endpoint, **CREDENTIALS}
    with (
        dask.config.set({"helix.storage-options": {}}),  # only what setup is given
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        hx.setup(client, store=s3_url, storage_options=options, policy="all", budget="1 GiB")
        seen: list[str] = []

        def warned(text: str) -> None:  # worker processes log to the stderr they inherited
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                seen.append(capfd.readouterr().err)
                if text in "".join(seen):
                    return
                time.sleep(0.1)
            raise AssertionError(f"no worker logged {text!r}")

        _iterate(client, user_module, calls, s3_url, warned)
        # The helix command reads a URL store's catalog where the scheduler keeps it.
        out = io.StringIO()
        assert cli.main(["log", "--store", s3_url, "--json"], out=out) == 0
        assert len(json.loads(out.getvalue())) == 5  # one entry per version
        assert cli.main(["verify", "--store", s3_url], out=io.StringIO()) == 0
    assert (tmp_path / "home" / ".helix" / "catalogs").is_dir()  # the catalog: local


def test_object_storage_starts_from_its_own_io_priors_and_budget() -> None:
    from helix_dask._config import REMOTE_BUDGET, resolve_budget
    from helix_dask.costs import IOModel, io_prior

    assert io_prior(False, 0.005, 500e6) == (0.005, 500e6)
    overhead, bandwidth = io_prior(True, 0.005, 500e6)
    assert overhead >= 0.05 and bandwidth <= 100e6
    model = IOModel(overhead, bandwidth, overhead, bandwidth)
    assert model.load_seconds(1000) > 0.05  # a 1 ms result is not worth a round trip
    assert resolve_budget(None, "s3://bucket/store") == REMOTE_BUDGET


def test_preloaded_scheduler_and_dask_workers_with_homes_of_their_own_iterate_on_s3(
    s3_url: str, s3_endpoint: str, user_module: Any, tmp_path: Path
) -> None:
    """A scheduler started with ``--preload helix_dask`` (its settings from the environment)
    and two ``dask worker`` processes iterate on ``s3://``. Scheduler and workers share no home
    directory (as on separate machines): a pickled result the workers wrote is loaded by a
    worker started later elsewhere, and the ``helix`` command here, which has no catalog,
    reads the versions from the scheduler."""
    from distributed import Client

    calls = Calls(tmp_path / "calls.log")
    names = ("scheduler", "worker-0", "worker-1", "reader")
    homes = {name: tmp_path / f"home-{name}" for name in names}
    for home in homes.values():
        home.mkdir()
    env = {
        **os.environ,
        "DASK_HELIX__STORE": s3_url,
        "DASK_HELIX__STORAGE_OPTIONS": repr({"endpoint_url": s3_endpoint, **CREDENTIALS}),
        "DASK_HELIX__POLICY": "all",
        "DASK_HELIX__BUDGET": "1 GiB",
    }
    scheduler_file = tmp_path / "scheduler.json"
    dask_cli = [sys.executable, "-m", "dask"]
    on_loopback = ["--host", "127.0.0.1", "--scheduler-file", str(scheduler_file)]
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, command: list[str]) -> None:
        with (tmp_path / f"{name}.log").open("wb") as out:
            procs[name] = subprocess.Popen(
                command, env={**env, "HOME": str(homes[name])}, stdout=out, stderr=out
            )

    def stop(name: str) -> None:
        proc = procs.pop(name)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    worker = [*dask_cli, "worker", *on_loopback, "--nthreads", "1", "--no-nanny"]
    try:
        start(
            "scheduler",
            [
                *dask_cli,
                "scheduler",
                "--preload",
                "helix_dask",
                *on_loopback,
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
            ],
        )
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        for name in ("worker-0", "worker-1"):
            start(name, [*worker, "--no-dashboard"])
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            logs = [tmp_path / f"{name}.log" for name in ("worker-0", "worker-1")]

            def warned(text: str) -> None:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    if any(text in log.read_text() for log in logs):
                        return
                    time.sleep(0.1)
                raise AssertionError(f"no worker logged {text!r}")

            flow = user_module
            _iterate(client, flow, calls, s3_url, warned)  # its first version stores train:
            # {"w": array, "tags": a set}: the set is pickled
            info = client.run_on_scheduler(
                lambda dask_scheduler: dask_scheduler.plugins["helix"].handle_info()
            )
            assert info["store"] == s3_url

            for name in ("worker-0", "worker-1"):
                stop(name)
            while client.scheduler_info()["workers"]:
                time.sleep(0.1)
            start("reader", [*worker, "--no-dashboard"])
            client.wait_for_workers(1, timeout=60)
            client.run(open_store, s3_url)
            features = flow.featurize(flow.load(2000), scale=1.0)
            model = client.compute(flow.train(features, C=1.0)).result()
            again = hx.last_run(client, timeout=60)
            assert again.loaded == ["train"] and calls.take() == Counter()
            assert model["tags"] == {"C", "1.0"}
            expected = _plain(flow, "plain_model", 2000, 1.0, 1.0)
            np.testing.assert_array_equal(model["w"], expected["w"])
            dashboard = client.scheduler_info()["services"]["dashboard"]

            # Only the scheduler's machine holds a key and a catalog.
            held = sorted(p.name for p in (homes["scheduler"] / ".helix").iterdir())
            assert held == ["catalogs", "keys"]
            for name in ("worker-0", "worker-1", "reader"):
                assert not (homes[name] / ".helix" / "keys").exists(), name
            assert cli.main(["log", "--store", s3_url], out=io.StringIO()) == 2  # none here
            for address in (client.scheduler.address, f"http://127.0.0.1:{dashboard}"):
                out = io.StringIO()
                assert cli.main(["log", "--json", "--scheduler", address], out=out) == 0
                rows = [(r["version"], r["loaded"]) for r in json.loads(out.getvalue())]
                assert len(rows) == 6 and rows[0] == (6, 1) and rows[-1] == (1, 0)
    finally:
        for name in list(procs)[::-1]:
            stop(name)
