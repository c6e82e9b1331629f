"""The ``/helix`` dashboard page and its JSON API on a real scheduler's HTTP server."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dask
import pytest
from conftest import _cluster, helix_client, log_call
from distributed import Client, LocalCluster

import helix_dask as hx

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@hx.task
def make(n: int) -> list[int]:
    log_call("make")
    time.sleep(0.05)
    return list(range(n))


@hx.task
def double(xs: list[int], factor: int = 2) -> list[int]:
    log_call("double")
    time.sleep(0.05)
    return [x * factor for x in xs]


@hx.task(metrics=True)
def score(xs: list[int]) -> dict:
    log_call("score")
    return {"total": float(sum(xs))}


@pytest.fixture(scope="module")
def dashboard_cluster(call_log) -> Iterator[LocalCluster]:
    """A cluster with the scheduler's dashboard on a free port, shared by this module."""
    with _cluster(False, dashboard=True) as cluster:
        yield cluster


@pytest.fixture
def dashboard(dashboard_cluster, calls, tmp_path: Path) -> Iterator[tuple[Client, str]]:
    """A store of its own with two versions: factor 2, then factor 3."""
    with helix_client(dashboard_cluster, tmp_path / "store") as client:
        for factor in (2, 3):
            with dask.config.set({"helix.message": f"factor {factor}"}):
                score(double(make(5), factor=factor)).compute()
            hx.last_run(client)
        port = urlsplit(client.dashboard_link).port
        yield client, f"http://127.0.0.1:{port}"


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def test_json_routes_answer_with_the_versions_runs_and_store_info(dashboard, tmp_path):
    _, base = dashboard
    status, kind, body = get(base + "/helix/api/versions")
    assert status == 200 and kind.startswith("application/json")
    versions = json.loads(body)
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["message"] for v in versions] == ["factor 3", "factor 2"]
    assert versions[1]["computed"] == 3
    run = json.loads(get(base + "/helix/api/runs/2")[2])
    decisions = {n["name"]: n["decision"] for n in run["nodes"]}
    assert decisions["double"] == decisions["score"] == "compute"
    assert run["summary"].startswith("v2: computed 2")
    info = json.loads(get(base + "/helix/api/info")[2])
    assert info["store"] == str((tmp_path / "store").resolve())
    assert info["budget"] == 2**30 and info["stored_bytes"] > 0
    assert get(base + "/helix/api/runs/99")[0] == 404


def test_page_shows_versions_the_latest_dag_and_storage_against_the_budget(dashboard):
    _, base = dashboard
    status, kind, body = get(base + "/helix")
    page = body.decode()
    assert status == 200 and kind.startswith("text/html")
    assert "http-equiv='refresh'" in page  # it follows runs without a reload
    assert "<h2>v2 factor 3</h2>" in page and "factor 2" in page
    assert page.count('<g class="node"') == 3  # the latest run's DAG, inline
    assert 'data-state="computed" data-changed="true"' in page  # double, edited in v2
    assert "of 1.00 GiB" in page


def test_routes_follow_the_plugin_registered_last(dashboard, tmp_path):
    client, base = dashboard
    with pytest.warns(hx.HelixConfigWarning, match="store .* -> .*other', budget"):
        hx.setup(client, store=tmp_path / "other", budget="2 GiB")
    info = json.loads(get(base + "/helix/api/info")[2])
    assert info["store"] == str((tmp_path / "other").resolve()) and info["budget"] == 2**31
    assert json.loads(get(base + "/helix/api/versions")[2]) == []


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_renders_in_a_headless_browser(dashboard, tmp_path):
    _, base = dashboard
    shot = tmp_path / "helix.png"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            f"--screenshot={shot}",
            "--window-size=1200,900",
            base + "/helix",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert _png_size(data) == (1200, 900)
    assert len(data) > 20_000  # text, a table and a coloured DAG; a lone heading is ~7 kB
