"""A store that cannot be written: a full disk, a read-only one, a catalog locked by another
process. Every run still returns correct results, warns, and leaves the store consistent."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dask
import numpy as np
import pytest
from conftest import helix_client, log_call

import helix_dask as hx
from helix_dask import Decision
from helix_dask._store_repair import verify_store
from helix_dask.store import ZarrArtifactStore

ROWS = 40_000  # 320 kB of incompressible floats


@hx.task(materialize=True)
def block(seed: int) -> np.ndarray:
    log_call("block")
    return np.random.default_rng(seed).random(ROWS)


@hx.task(materialize=True)
def mean(x: np.ndarray) -> float:
    log_call("mean")
    return float(x.mean())


def expected(seed: int) -> float:
    return float(np.random.default_rng(seed).random(ROWS).mean())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (mounting needs root: skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _assert_consistent(root: Path) -> None:
    cat = hx.Catalog(root)
    try:
        check = verify_store(ZarrArtifactStore(root), cat)
        assert cat._query("PRAGMA integrity_check") == [("ok",)]
    finally:
        cat.close()
    assert check.corrupt == () and check.rows_without_artifact == ()
    assert not list((root / "artifacts").glob("??/.tmp-*"))


def test_a_store_on_a_disk_that_fills_up_warns_and_every_run_returns_correct_results(
    threads_cluster, small_disk: Path, calls, caplog
) -> None:
    root = small_disk / "store"
    with caplog.at_level(logging.WARNING, logger="helix_dask"):
        with helix_client(threads_cluster, root, budget="1 GiB") as client:
            for seed in range(14):  # about 4.5 MiB of results for a 4 MiB disk
                assert mean(block(seed)).compute() == expected(seed)
                assert hx.last_run(client).status in ("done", "plan_failed")
            for seed in range(3):  # the results the store kept are loaded, the rest computed
                assert mean(block(seed)).compute() == expected(seed)
                hx.last_run(client)
    full = [r.getMessage() for r in caplog.records if "No space left" in r.getMessage()]
    assert full, [r.getMessage() for r in caplog.records]
    _assert_consistent(root)


def test_artifacts_on_a_read_only_filesystem_are_loaded_and_new_ones_skipped_with_a_warning(
    threaded_client, tmp_path: Path, calls, caplog
) -> None:
    root = tmp_path / "store"
    assert mean(block(1)).compute() == expected(1)
    hx.last_run(threaded_client)
    artifacts = str(root / "artifacts")
    done = subprocess.run(["mount", "--bind", artifacts, artifacts], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {done.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", artifacts], check=True)
        calls.take()
        with caplog.at_level(logging.WARNING, logger="helix_dask"):
            assert mean(block(1)).compute() == expected(1)  # loaded
            assert hx.last_run(threaded_client).status == "done"
            assert mean(block(2)).compute() == expected(2)  # computed, not stored
            run = hx.last_run(threaded_client)
    finally:
        subprocess.run(["umount", artifacts], check=True)
    assert calls.take() == {"block": 1, "mean": 1}
    assert run.status == "done" and not run.stored
    assert any("Read-only file system" in r.getMessage() for r in caplog.records)
    _assert_consistent(root)


def test_a_catalog_locked_past_the_timeout_runs_the_graph_unrewritten_and_records_it_later(
    threaded_client, tmp_path: Path, calls, caplog
) -> None:
    root = tmp_path / "store"
    assert mean(block(1)).compute() == expected(1)
    first = hx.last_run(threaded_client)
    assert first.status == "done"
    calls.take()
    other = sqlite3.connect(root / "catalog.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with dask.config.set({"helix.catalog-timeout": 0.2}), caplog.at_level(logging.WARNING):
            assert mean(block(1)).compute() == expected(1)  # stored, but not loaded now
    finally:
        other.execute("ROLLBACK")
        other.close()
    run = hx.last_run(threaded_client)
    assert run.version > first.version and run.status == "plan_failed"
    assert {n.decision for n in run.nodes} == {Decision.COMPUTE}
    assert calls.take() == {"block": 1, "mean": 1}
    assert any("could not record a new version" in r.getMessage() for r in caplog.records)
    cat = hx.Catalog(root)
    try:
        recorded = cat.run(run.version)
    finally:
        cat.close()
    assert recorded.status == "plan_failed" and len(recorded.nodes) == 2
    # Then the catalog is writable again: the next run loads.
    assert mean(block(1)).compute() == expected(1)
    assert hx.last_run(threaded_client).status == "done" and not calls.take()
