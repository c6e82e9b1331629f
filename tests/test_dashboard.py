"""The ``/helix`` dashboard page and its JSON API on a real scheduler's HTTP server."""

from __future__ import annotations

import html
import json
import shutil
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


def test_malformed_api_requests_are_client_errors_not_server_errors(dashboard):
    _, base = dashboard
    for path, code in [
        ("/helix/api/versions?limit=abc", 400),
        ("/helix/api/versions?limit=-3", 400),
        ("/helix/api/runs/abc", 400),
        ("/helix/api/runs/0", 400),
        ("/helix/api/runs/-1", 400),
        ("/helix/api/runs/99999999999999999999", 404),
        ("/helix/api/runs/abc/dag", 400),
        ("/helix/api/runs/99/dag", 404),
    ]:
        status, kind, body = get(base + path)
        assert (path, status) == (path, code)
        assert json.loads(body)["status"] == code and kind.startswith("application/json")
    status, kind, body = get(base + "/helix/api/runs/2/dag")
    assert status == 200 and kind.startswith("image/svg+xml")
    assert body.decode().count('<g class="node"') == 3


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_catalog_route_answers_read_queries_and_nothing_else(dashboard, tmp_path):
    _, base = dashboard
    url = base + "/helix/api/catalog"
    status, got = post(
        url, json.dumps({"method": "version_stats", "params": {"limit": 1}}).encode()
    )
    assert status == 200 and [v["id"] for v in got["data"]] == [2]
    status, got = post(url, b'{"method": "run", "params": {"version": 1}}')
    assert {n["name"]: n["decision"] for n in got["data"]["nodes"]}["score"] == "compute"
    status, got = post(url, b'{"method": "info"}')
    assert got["data"] == {"store": str((tmp_path / "store").resolve())}
    key = (tmp_path / "store" / "keys" / "pickle.key").read_bytes()
    for body, code, says in [
        (b'{"method": "run", "params": {"version": 99}}', 404, "version 99 is not in"),
        (b'{"method": "pickle_key"}', 400, "no catalog read 'pickle_key'"),
        (b'{"method": "finish_version", "params": {"version": 1}}', 400, "no catalog read"),
        (b'{"method": "runs", "params": {"versions": "1; DROP TABLE"}}', 400, "not a list"),
        (b'{"method": "version_stats", "params": {"limit": -1}}', 400, "not a count"),
        (b'{"method": "run", "params": [1]}', 400, "not a mapping"),
        (b"[1, 2]", 400, '{"method": NAME'),
        (b"{nope", 400, "not JSON"),
    ]:
        status, got = post(url, body)
        assert (body, status) == (body, code) and says in got["error"], got
        assert key.hex() not in json.dumps(got)
    assert get(url)[0] == 405  # reads change nothing, but a GET with a body is no API


def test_store_urls_are_shown_without_user_and_password():
    from helix_dask._location import public_location

    assert public_location("s3://AKIA:s3cr3t@bucket/store") == "s3://bucket/store"
    assert public_location("https://user@host:8000/a@b") == "https://host:8000/a@b"
    assert public_location("/data/me@work/store") == "/data/me@work/store"


def test_page_polls_the_json_routes_and_is_linked_from_the_dask_dashboard(dashboard):
    _, base = dashboard
    status, kind, body = get(base + "/helix")
    page = body.decode()
    assert status == 200 and kind.startswith("text/html")
    assert "http-equiv" not in page  # no full-page reload: the script polls the API
    assert 'const BASE = "/helix"' in page and '"/api/runs/"' in page
    pytest.importorskip("bokeh", reason="the Dask dashboard's pages need bokeh")
    status, _, body = get(base + "/status")
    assert status == 200 and '<a href="helix">Helix</a>' in body.decode()


def test_routes_follow_the_plugin_registered_last(dashboard, tmp_path):
    client, base = dashboard
    with pytest.warns(hx.HelixConfigWarning, match="store .* -> .*other', budget"):
        hx.setup(client, store=tmp_path / "other", budget="2 GiB")
    info = json.loads(get(base + "/helix/api/info")[2])
    assert info["store"] == str((tmp_path / "other").resolve()) and info["budget"] == 2**31
    assert json.loads(get(base + "/helix/api/versions")[2]) == []


def _dump_dom(url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, from a real headless Chromium."""
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
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@hx.task
def gate(path: str) -> int:
    """Runs until ``path`` exists: a run the test holds open."""
    log_call("gate")
    while not Path(path).exists():
        time.sleep(0.02)
    return 1


@hx.task(metrics=True)
def combine(a: list[int], b: int) -> dict:
    log_call("combine")
    return {"total": float(sum(a) + b)}


def _poll(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_in_a_browser_shows_live_node_states_and_labels_repeated_tasks(dashboard, tmp_path):
    client, base = dashboard
    page = _dump_dom(base + "/helix", tmp_path / "profile-1")
    rows = _node_rows(page)
    assert rows == {"make": "loaded", "double": "computed", "score": "computed"} or rows == {
        "make": "pruned",
        "double": "computed",
        "score": "computed",
    }
    assert "v2 factor 3" in page and "v1" in page
    first = _dump_dom(base + "/helix#v1", tmp_path / "profile-2")  # any version opens
    assert "v1 factor 2" in first and _node_rows(first)["make"] == "computed"
    assert first.count('class="node"') >= 6  # the table's rows and the DAG's boxes

    # a run held open: the page shows where each node is now, repeated tasks by lineage
    release = tmp_path / "release"
    with dask.config.set({"helix.message": "held"}):
        xs = make(7)
        outputs = [score(double(xs, factor=4)), score(xs), combine(xs, gate(str(release)))]
    futures = client.compute(outputs)
    running = _poll(lambda: json.loads(get(base + "/helix/api/info")[2])["running"], "the run")

    def gate_processing():
        run = json.loads(get(base + f"/helix/api/runs/{running[0]}")[2])
        gate_key = next(n["key"] for n in run["nodes"] if n["name"] == "gate")
        return run.get("live", {}).get(gate_key) == "processing"

    _poll(gate_processing, "the gate to run")
    live = _dump_dom(base + "/helix", tmp_path / "profile-3")
    release.write_text("go")
    client.gather(futures)
    hx.last_run(client)
    del futures  # nothing left on the cluster for the fixture's leak check
    assert "held" in live and "running" in live
    gate_row = next(r for r in _rows(live) if r["label"] == "gate")
    assert gate_row["live"] == "processing" and gate_row["state"] == "computed"
    labels = {r["label"] for r in _rows(live)}
    assert {"score(double)", "score(make)", "gate", "combine"} <= labels, labels


def _rows(page: str) -> list[dict[str, str]]:
    """The nodes table of a dumped page: label, state and live state of every row."""
    import re

    out = []
    for m in re.finditer(
        r"<tr class=\"node\"[^>]*data-state=\"([^\"]*)\"[^>]*data-live=\"([^\"]*)\"><td "
        r"class=\"label\">([^<]*)</td>",
        page,
    ):
        out.append({"state": m.group(1), "live": m.group(2), "label": html.unescape(m.group(3))})
    return out


def _node_rows(page: str) -> dict[str, str]:
    return {r["label"]: r["state"] for r in _rows(page)}
