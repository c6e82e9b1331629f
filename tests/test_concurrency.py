"""Several processes, each with its own cluster, iterating on one store while gc runs."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import helix_client, log_call

import helix_dask as hx
from helix_dask import _intake
from helix_dask import store as store_module
from helix_dask._owner import HOST, Owner, new_owner, retire
from helix_dask._store_repair import verify_store
from helix_dask.catalog import ArtifactRow, CatalogWriter
from helix_dask.cli import main as helix
from helix_dask.store import ZarrArtifactStore
from helix_dask.usage import apply_gc, gc_plan

SCRIPT = Path(__file__).with_name("_concurrent_iteration.py")
SIG = "0123456789abcdef0123456789abcdef"


def _dead_owner() -> Owner:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return Owner(f"{process.pid}@{HOST}/0123abcd", time.time())


def _stored(root: Path) -> tuple[ZarrArtifactStore, CatalogWriter]:
    store, cat = ZarrArtifactStore(root), CatalogWriter(root)
    info = store.put(SIG, np.arange(10), name="x")
    now = time.time()
    cat.add_artifact(
        ArtifactRow(SIG, "x", info.location, info.kind, info.nbytes, 0.1, None, now, now)
    )
    return store, cat


def test_a_lease_keeps_an_artifact_from_eviction_and_gc_until_its_version_finishes(
    tmp_path: Path,
) -> None:
    store, cat = _stored(tmp_path)
    owner = new_owner()
    try:
        plan = gc_plan(cat, keep=0)  # planned before the lease: applied after it
        assert [i.signature for i in plan.remove] == [SIG]
        v = cat.begin_version("w", "", [], owner=owner)
        assert cat.lease(v, [SIG], owner) == set()
        assert cat.leased() == {SIG}
        assert gc_plan(cat, keep=0).remove == ()
        assert cat.remove_unless_leased(SIG, store.delete) is None
        result = apply_gc(cat, plan)
        assert result.deleted == () and result.skipped == (SIG,)
        assert store.contains(SIG) and cat.artifact(SIG) is not None
        cat.finish_version(v, "done", 0.0)  # the run ended: its lease with it
        assert cat.leased() == set()
        assert cat.remove_unless_leased(SIG, store.delete) > 0
        assert not store.contains(SIG) and cat.artifact(SIG) is None
    finally:
        retire(owner)
        cat.close()


def test_leases_of_dead_owners_and_expired_leases_protect_nothing(tmp_path: Path) -> None:
    store, cat = _stored(tmp_path)
    live = new_owner()
    try:
        cat.lease(cat.begin_version("w", "", [], owner=_dead_owner()), [SIG], _dead_owner())
        cat.lease(cat.begin_version("w", "", [], owner=live), [SIG], live, seconds=-1)
        assert cat.leased() == set()
        assert cat.remove_unless_leased(SIG, store.delete) is not None
    finally:
        retire(live)
        cat.close()


def test_versions_of_a_scheduler_that_is_gone_are_interrupted_by_gc_and_plugin_start(
    threads_cluster, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    cat = CatalogWriter(root)
    first = cat.begin_version("w", "", [], owner=_dead_owner())
    elsewhere = cat.begin_version("w", "", [], owner=Owner("1@another-host/0123abcd", 1.0))
    cat.lease(first, [SIG], _dead_owner())
    assert helix(["gc", "--store", str(root), "--keep", "1"], out=open(os.devnull, "w")) == 0
    second = cat.begin_version("w", "", [], owner=_dead_owner())
    with helix_client(threads_cluster, root):
        pass
    status = {v.id: v.status for v in cat.versions()}
    cat.close()
    # Another host's scheduler cannot be checked from here: its version stays running.
    assert status == {first: "interrupted", elsewhere: "running", second: "interrupted"}


@hx.task
def slow(x: int) -> int:
    time.sleep(0.5)
    return x + 1


def test_a_plugin_replaced_by_another_setup_interrupts_its_running_version(
    threads_cluster, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    with helix_client(threads_cluster, root) as client:
        future = client.compute(slow(1))
        cat = hx.Catalog(root)
        try:
            deadline = time.monotonic() + 30
            while not [v for v in cat.versions() if v.status == "running"]:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with pytest.warns(hx.HelixConfigWarning, match="replaces the helix plugin"):
                hx.setup(client, store=root, policy="all")
            assert future.result() == 2
            del future
            (version,) = cat.versions()
            assert version.status == "interrupted"
        finally:
            cat.close()


@hx.task(materialize=True)
def stored_step(x: int) -> np.ndarray:
    log_call("stored_step")
    time.sleep(0.2)  # costly enough that the next plan loads it
    return np.arange(4_000) * x


def test_a_load_removed_by_another_process_before_its_lease_is_planned_again_not_failed(
    threads_cluster, tmp_path: Path, calls, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    # Another process's gc or eviction may remove an artifact between a plan that loads it
    # and that plan's lease: the plan is made again without it, so nothing fails to load.
    root = tmp_path / "store"
    with helix_client(threads_cluster, root) as client:
        np.testing.assert_array_equal(stored_step(3).compute(), np.arange(4_000) * 3)
        hx.last_run(client)
        calls.take()
        plan, removed = _intake.plan_update, []

        def then_removed(*args, **kwargs):
            planned = plan(*args, **kwargs)
            other = CatalogWriter(root)  # the other process's gc, right after the plan
            try:
                for signature in set(planned.loads.values()) - set(removed):
                    removed.append(signature)
                    other.remove_unless_leased(signature, ZarrArtifactStore(root).delete)
            finally:
                other.close()
            return planned

        monkeypatch.setattr(_intake, "plan_update", then_removed)
        with caplog.at_level("INFO", logger="helix_dask"):
            np.testing.assert_array_equal(stored_step(3).compute(), np.arange(4_000) * 3)
        run = hx.last_run(client)
    assert removed, "the first plan loaded the stored result"
    assert run.computed == ["stored_step"] and run.loaded == []
    assert calls.take()["stored_step"] == 1
    assert "planning again" in caplog.text
    assert "could not load artifact" not in caplog.text


def test_a_commit_that_finds_the_other_writers_artifact_gone_commits_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ZarrArtifactStore(tmp_path)
    real, calls = os.rename, []

    def rename(src, dst):  # the first commit meets another writer's, removed at once
        calls.append(dst)
        if len(calls) == 1:
            raise OSError(errno.ENOTEMPTY, "Directory not empty")
        return real(src, dst)

    monkeypatch.setattr(store_module.os, "rename", rename)
    info = store.put(SIG, np.arange(5))
    monkeypatch.undo()
    assert len(calls) == 2 and info.nbytes > 0
    np.testing.assert_array_equal(store.get(SIG), np.arange(5))


def test_one_result_written_by_many_writers_at_once_is_committed_once(tmp_path: Path) -> None:
    store = ZarrArtifactStore(tmp_path)
    infos, start = [], threading.Barrier(6)

    def write() -> None:
        start.wait()
        infos.append(store.put(SIG, np.arange(1000), name="x"))

    threads = [threading.Thread(target=write) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({i.location for i in infos}) == 1 and len(infos) == 6
    assert [p.name for p in (tmp_path / "artifacts" / SIG[:2]).iterdir()] == [SIG]
    np.testing.assert_array_equal(store.get(SIG), np.arange(1000))


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _result(p: subprocess.Popen, timeout: float) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def _run_concurrently(tmp_path: Path, processes: int, rounds: int) -> list[dict]:
    store, stop = tmp_path / "store", tmp_path / "stop"
    hx.Catalog(store).close()  # the processes find the store ready
    iterating = [_spawn("iterate", str(store), str(i), str(rounds)) for i in range(processes)]
    collecting = _spawn("gc", str(store), str(stop))
    try:
        results = [_result(p, timeout=300) for p in iterating]
    finally:
        stop.touch()
        gc = _result(collecting, timeout=60)
        for p in iterating:
            p.kill()
    assert gc["gc_failures"] == 0 and gc["gc_runs"] > 0
    return results


def _assert_consistent(store: Path) -> None:
    with sqlite3.connect(store / "catalog.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)
        statuses = {s for (s,) in db.execute("SELECT DISTINCT status FROM versions")}
        ids = [v for (v,) in db.execute("SELECT id FROM versions ORDER BY id")]
    assert statuses == {"done"}
    assert ids == list(range(1, len(ids) + 1))  # one id per version, none lost to a collision
    cat = hx.Catalog(store)
    try:
        check = verify_store(ZarrArtifactStore(store), cat)
    finally:
        cat.close()
    assert check.corrupt == ()
    assert check.rows_without_artifact == ()
    assert check.artifacts_without_row == ()
    assert not list((store / "artifacts").glob("??/.tmp-*"))


def _check(results: list[dict], rounds: int) -> None:
    for r in results:
        assert r["wrong"] == 0
        assert r["statuses"] == ["done"] * rounds
        assert r["fallbacks"] == 0, r  # nothing a plan loads is removed under it
        assert not [w for w in r["warnings"] if "could not" in w], r["warnings"]


def test_three_processes_iterating_on_one_store_while_gc_loops_stay_correct_and_consistent(
    tmp_path: Path,
) -> None:
    rounds = 10
    results = _run_concurrently(tmp_path, processes=3, rounds=rounds)  # a hang: its timeout
    _check(results, rounds)
    _assert_consistent(tmp_path / "store")


@pytest.mark.slow
def test_four_processes_thirty_rounds_on_one_store_with_gc(tmp_path: Path) -> None:
    results = _run_concurrently(tmp_path, processes=4, rounds=30)
    _check(results, 30)
    _assert_consistent(tmp_path / "store")
