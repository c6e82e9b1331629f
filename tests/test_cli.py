"""``helix`` shows the iteration history of a real store: log, show, diff, metrics, dag, du, gc.

One store is built for the module by five real iterations on an in-process LocalCluster (an
argument edit, a helper edit, a data-file edit, an identical re-run); every command then runs
through the real entry point, ``python -m helix_dask.cli``.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import dask
import pytest
from conftest import CALL_LOG, Calls, helix_client
from distributed import LocalCluster

import helix_dask as hx
from helix_dask import Decision, cli
from helix_dask.catalog import CatalogWriter
from helix_dask.store import ZarrArtifactStore

USER = """
import time

import numpy as np

import helix_dask as hx
from conftest import log_call


def helper(x):
    return {helper}


@hx.task
def read_numbers(path):
    log_call("read_numbers")
    with open(path) as f:
        return np.array([float(v) for v in f.read().split()])


@hx.task
def featurize(x, bins=10):
    log_call("featurize")
    time.sleep(0.05)
    return helper(x) // bins


@hx.task
def train(features):
    log_call("train")
    time.sleep(0.05)
    return float(features.mean())


@hx.task(metrics=True)
def evaluate(model, raw):
    log_call("evaluate")
    return {{"accuracy": model / 20, "n": float(len(raw))}}


def workflow(path, bins):
    raw = read_numbers(hx.File(path))
    return evaluate(train(featurize(raw, bins=bins)), raw)
"""

TASKS = {"read_numbers", "featurize", "train", "evaluate"}


@dataclass(frozen=True)
class History:
    store: Path
    data: Path
    accuracy: dict[int, float]
    """The accuracy each version's evaluate returned."""
    ran: dict[int, Counter[str]]
    """Which task functions each version actually ran."""


def _write_module(root: Path, source: str, edit: int):
    path = root / "cli_userflow.py"
    path.write_text(textwrap.dedent(source))
    st = path.stat()  # a fresh mtime per edit, so neither imports nor linecache reuse old text
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000 * (edit + 1)))
    importlib.invalidate_caches()
    if "cli_userflow" in sys.modules:
        return importlib.reload(sys.modules["cli_userflow"])
    return importlib.import_module("cli_userflow")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, threads_cluster):
    """Five versions: baseline, bins 10 -> 5, helper edited, data file edited, identical re-run."""
    tmp = tmp_path_factory.mktemp("history")
    (tmp / "usercode").mkdir()
    data = tmp / "numbers.txt"
    data.write_text("10 20 30 40")
    calls = Calls(tmp / "calls.log")
    accuracy: dict[int, float] = {}
    ran: dict[int, Counter[str]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CALL_LOG, str(calls.path))
        mp.syspath_prepend(str(tmp / "usercode"))
        with helix_client(threads_cluster, tmp / "store", workflow="cli") as client:
            mod = _write_module(tmp / "usercode", USER.format(helper="x"), 0)
            steps = [("baseline", 10), ("finer bins", 5), ("scaled helper", 5)]
            steps += [("new data", 5), ("re-run", 5)]
            for message, bins in steps:
                if message == "scaled helper":
                    mod = _write_module(tmp / "usercode", USER.format(helper="x * 3 + 1"), 1)
                if message == "new data":
                    data.write_text("10 20 30 50")
                with dask.config.set({"helix.message": message}):
                    node = mod.workflow(str(data), bins)
                result = node.compute()
                run = hx.last_run(client)
                accuracy[run.version] = result["accuracy"]
                ran[run.version] = calls.take()
    sys.modules.pop("cli_userflow", None)
    return History(tmp / "store", data, accuracy, ran)


class Helix:
    """Runs the real ``helix`` entry point (``python -m helix_dask.cli``) in a subprocess.

    Read-only commands are started together by :meth:`prefetch`, so the module pays the
    interpreter start-up once per core rather than once per command.
    """

    def __init__(self) -> None:
        self._done: dict[tuple, subprocess.CompletedProcess] = {}

    @staticmethod
    def _key(args: tuple[str, ...], store: Path | None, env: dict | None) -> tuple:
        return (args, str(store), tuple(sorted((env or {}).items())))

    @staticmethod
    def _popen(args: tuple[str, ...], store: Path | None, env: dict | None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "helix_dask.cli", *args]
        if store is not None:
            argv += ["--store", str(store)]
        return subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    def prefetch(self, calls: list[tuple[tuple[str, ...], Path | None, dict | None]]) -> None:
        started = [(self._key(*c), c[0], self._popen(*c)) for c in calls]
        for key, args, proc in started:
            out, err = proc.communicate(timeout=180)
            self._done[key] = subprocess.CompletedProcess(args, proc.returncode, out, err)

    def __call__(self, *args: str, store: Path | None = None, env: dict | None = None):
        key = self._key(args, store, env)
        if key not in self._done:
            self.prefetch([(args, store, env)])
        return self._done.pop(key)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-out")


@pytest.fixture(scope="module")
def helix(history: History, out_dir: Path) -> Helix:
    runner = Helix()
    s = history.store
    runner.prefetch(
        [
            (("log",), None, {"HELIX_STORE": str(s)}),
            (("log", "--json"), s, None),
            (("diff", "1", "2"), s, None),
            (("diff", "v2", "v3"), s, None),
            (("diff", "2", "3", "--json"), s, None),
            (("diff", "3", "4", "--json"), s, None),
            (("metrics", "--json"), s, None),
            (("metrics", "--sort", "accuracy", "--plot", str(out_dir / "metrics.png")), s, None),
            (("dag", "3", "-o", str(out_dir / "v3.svg")), s, None),
            (("dag", "latest", "-o", str(out_dir / "v5.html")), s, None),
            (("dag", "5", "-o", str(out_dir / "v5.png")), s, None),
            (("show", "v1"), s, None),
            (("show", "v2"), s, None),
            (("du", "--json"), s, None),
            (("log",), out_dir / "nowhere", None),
            (("show", "v99"), s, None),
        ]
    )
    return runner


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_history_fixture_ran_the_iterations_it_claims(history):
    assert history.ran[1] == Counter({t: 1 for t in TASKS})
    for edited in (2, 3):  # read_numbers is cheap: the plan may recompute it rather than load
        assert set(history.ran[edited]) - {"read_numbers"} == {"featurize", "train", "evaluate"}
    assert set(history.ran[4]) == TASKS
    assert history.ran[5] == {}


def test_log_lists_versions_newest_first_with_counts_and_storage(history, helix):
    text = ok(helix("log", env={"HELIX_STORE": str(history.store)}))  # the store from the env
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["VERSION", "STARTED", "STATUS", "MESSAGE"]
    assert [line.split()[0] for line in lines[1:]] == ["v5", "v4", "v3", "v2", "v1"]
    assert "scaled helper" in lines[3] and "baseline" in lines[5]
    rows = json.loads(ok(helix("log", "--json", store=history.store)))
    assert [r["version"] for r in rows] == [5, 4, 3, 2, 1]
    by_version = {r["version"]: r for r in rows}
    assert (by_version[1]["computed"], by_version[1]["loaded"], by_version[1]["pruned"]) == (
        4,
        0,
        0,
    )
    assert by_version[5]["computed"] == 0 and by_version[5]["time_saved"] > 0
    assert by_version[1]["stored_bytes"] > 0 and by_version[1]["wall_seconds"] > 0


def test_diff_names_the_changed_argument_with_both_values(history, helix):
    text = ok(helix("diff", "1", "2", store=history.store))
    assert "argument bins: 10 -> 5" in text
    assert "upstream featurize changed" in text  # train follows featurize
    assert "recomputed in v2: evaluate, featurize, train\n" in text
    assert "read_numbers" not in text.split("recomputed")[0]  # unchanged nodes are not listed


def test_diff_shows_a_unified_diff_of_the_edited_helper_and_what_followed(history, helix):
    text = ok(helix("diff", "v2", "v3", store=history.store))
    assert "code of cli_userflow.helper changed" in text
    assert "--- v2/cli_userflow.helper" in text and "+++ v3/cli_userflow.helper" in text
    assert "-    return x\n" in text and "+    return x * 3 + 1\n" in text
    assert "upstream train changed" in text  # evaluate, as a consequence
    assert "accuracy" in text  # the metric deltas close the diff
    d = json.loads(ok(helix("diff", "2", "3", "--json", store=history.store)))
    direct = [c for c in d["changes"] if c["direct"]]
    assert [c["name"] for c in direct] == ["featurize"]
    acc = next(m for m in d["metrics"] if m["metric"] == "accuracy")
    assert (acc["old"], acc["new"]) == (history.accuracy[2], history.accuracy[3])
    assert acc["delta"] == pytest.approx(history.accuracy[3] - history.accuracy[2])


def test_diff_reports_a_data_file_whose_content_changed_under_the_same_path(history, helix):
    d = json.loads(ok(helix("diff", "3", "4", "--json", store=history.store)))
    causes = {c["name"]: [x["kind"] for x in c["causes"]] for c in d["changes"]}
    assert causes["read_numbers"] == ["data file"]
    assert causes["featurize"] == ["upstream"]
    assert str(history.data) in d["changes"][0]["causes"][0]["subject"]
    assert sorted(d["recomputed"]) == sorted(TASKS)


def test_metrics_table_holds_the_numbers_the_tasks_returned(history, helix, out_dir):
    table = json.loads(ok(helix("metrics", "--json", store=history.store)))
    assert table["columns"] == ["accuracy", "n"]
    got = {r["version"]: r["values"]["accuracy"] for r in table["rows"]}
    assert got == history.accuracy  # v5 loaded evaluate: its metrics come from v4's compute
    plot = out_dir / "metrics.png"
    text = ok(helix("metrics", "--sort", "accuracy", "--plot", str(plot), store=history.store))
    order = [line.split()[0] for line in text.splitlines()[1:]]
    best_first = sorted(history.accuracy, key=lambda v: (-history.accuracy[v], v))
    assert order == [f"v{v}" for v in best_first]
    assert f"{history.accuracy[3]:.4g}" in text
    pytest.importorskip("matplotlib", reason="the PNG plot needs matplotlib")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dag_svg_has_one_node_element_per_task_with_its_state(history, helix, out_dir):
    out = out_dir / "v3.svg"
    ok(helix("dag", "3", "-o", str(out), store=history.store))
    svg = ET.parse(out).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    nodes = svg.findall(".//svg:g[@class='node']", ns)
    run = hx.Catalog(history.store).run(3)
    assert len(nodes) == len(run.nodes) == len(TASKS)
    states = {g.get("data-key").rsplit("-", 1)[0]: g.get("data-state") for g in nodes}
    expected = {"compute": "computed", "load": "loaded", "prune": "pruned"}
    assert states == {n.name: expected[n.decision] for n in run.nodes}
    changed = {
        g.get("data-key").rsplit("-", 1)[0] for g in nodes if g.get("data-changed") == "true"
    }
    assert changed == {"featurize", "train", "evaluate"}
    assert len(svg.findall(".//svg:path[@class='edge']", ns)) == 4


def test_dag_html_embeds_the_svg_and_png_is_an_image(history, helix, out_dir):
    page = out_dir / "v5.html"
    ok(helix("dag", "latest", "-o", str(page), store=history.store))
    text = page.read_text()
    assert "<svg" in text and text.count('class="node"') == len(TASKS)
    assert 'data-state="pruned"' in text  # the re-run pruned everything below evaluate
    pytest.importorskip("matplotlib", reason="PNG export needs matplotlib")
    png = out_dir / "v5.png"
    ok(helix("dag", "5", "-o", str(png), store=history.store))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_lists_every_node_with_state_signature_costs_and_artifact(history, helix):
    text = ok(helix("show", "v1", store=history.store))
    run = hx.Catalog(history.store).run(1)
    assert run.summary() in text
    for n in run.nodes:
        line = next(line for line in text.splitlines() if line.startswith(n.name + " "))
        assert n.signature[:12] in line and "computed" in line
    stored = [n for n in run.nodes if n.materialization is not None and n.signature]
    assert any(f"artifacts/{n.stored_as[:2]}/{n.stored_as}" in text for n in stored)
    assert f"plan predicted {run.predicted_seconds:.3f}s" in text
    assert f"measured {run.measured_seconds:.3f}s" in text


def test_du_accounts_for_every_stored_byte_per_task_and_version(history, helix):
    du = json.loads(ok(helix("du", "--json", store=history.store)))
    assert du["total_bytes"] == hx.Catalog(history.store).stored_bytes() > 0
    assert sum(t["nbytes"] for t in du["by_task"]) == du["total_bytes"]
    assert [v["version"] for v in du["by_version"]] == [5, 4, 3, 2, 1]


def _copy(history, tmp_path: Path) -> Path:
    """A private copy of the history store; the catalog through SQLite's backup API, because
    readers running meanwhile create and remove its WAL files."""
    store = tmp_path / "store"
    shutil.copytree(history.store, store, ignore=shutil.ignore_patterns("catalog.sqlite*"))
    with closing(sqlite3.connect(history.store / "catalog.sqlite")) as src:
        with closing(sqlite3.connect(store / "catalog.sqlite")) as dst:
            src.backup(dst)
    return store


def _unused_by_last(store: Path, keep: int) -> set[str]:
    cat = hx.Catalog(store)
    last = [v.id for v in cat.versions()][:keep]
    used = {n.stored_as for v in last for n in cat.run(v).nodes}
    return {a.signature for a in cat.artifacts()} - used


def test_gc_dry_run_lists_what_would_go_and_deletes_nothing(history, helix, tmp_path):
    store = _copy(history, tmp_path)
    before = sorted(ZarrArtifactStore(store).signatures())
    text = ok(helix("gc", "--keep", "1", "--dry-run", store=store))
    doomed = _unused_by_last(store, 1)
    assert doomed and f"would remove {len(doomed)} artifacts" in text
    for sig in doomed:
        assert sig in text
    assert "older than the last 1 versions" in text
    assert sorted(ZarrArtifactStore(store).signatures()) == before
    assert len(hx.Catalog(store).artifacts()) == len(before)


def test_gc_deletes_artifacts_the_last_versions_do_not_use_and_frees_bytes(
    history, helix, tmp_path
):
    store = _copy(history, tmp_path)
    doomed = _unused_by_last(store, 2)
    before = hx.Catalog(store).stored_bytes()
    proc = helix("gc", "--keep", "2", "--json", store=store)
    result = json.loads(ok(proc))["result"]
    assert set(result["deleted"]) == doomed and result["freed_bytes"] > 0
    assert f"gc: {len(doomed)}/{len(doomed)} artifacts" in proc.stderr  # progress
    cat = hx.Catalog(store)
    assert cat.stored_bytes() < before
    assert not doomed & {a.signature for a in cat.artifacts()}
    assert not doomed & set(ZarrArtifactStore(store).signatures())
    kept = {a.signature for a in cat.artifacts()}
    assert kept and all(ZarrArtifactStore(store).contains(s) for s in kept)


def test_gc_never_deletes_an_artifact_a_running_version_uses(history, helix, tmp_path):
    store = _copy(history, tmp_path)
    cat = CatalogWriter(store)
    old = cat.run(1).node("featurize")
    assert old.stored_as in _unused_by_last(store, 1)
    running = cat.begin_version("cli", "in flight", [old.key])
    cat.record_nodes(running, [old])
    cat.close()
    text = ok(helix("gc", "--keep", "1", store=store))
    assert f"running: v{running}" in text
    assert old.stored_as not in text.split("removing")[1]
    assert ZarrArtifactStore(store).contains(old.stored_as)


def test_commands_without_a_catalog_or_version_fail_with_a_clear_message(history, helix, out_dir):
    proc = helix("log", store=out_dir / "nowhere")
    assert proc.returncode == 2
    assert "no helix catalog at" in proc.stderr and "HELIX_STORE" in proc.stderr
    proc = helix("show", "v99", store=history.store)
    assert proc.returncode == 2 and "helix log" in proc.stderr


def test_catalog_methods_mirror_the_cli_and_render_in_notebooks(history):
    cat = hx.Catalog(history.store)
    d = cat.diff(1, 2)
    assert [c.describe() for c in d.changes[0].causes] == ["argument bins: 10 -> 5"]
    assert "argument bins: 10 -&gt; 5" in d._repr_html_()
    assert [r.version for r in cat.metrics().rows] == [1, 2, 3, 4, 5]
    view = cat.dag(5)
    assert {view.graph.nodes[k]["state"] for k in view.graph} == {"loaded", "pruned"}
    assert view.to_svg() == view._repr_html_() and view.to_svg().startswith("<svg")
    report = cat.run(5)
    assert report.summary() in report._repr_html_() and "<table>" in report._repr_html_()
    assert report.node("evaluate").decision is Decision.LOAD


def test_python_gc_mirrors_the_cli_dry_run_first(history, tmp_path):
    store = _copy(history, tmp_path)
    cat = hx.Catalog(store)
    doomed = _unused_by_last(store, 1)
    plan = cat.gc(keep=1)
    assert {i.signature for i in plan.remove} == doomed
    assert len(cat.artifacts()) == len(list(ZarrArtifactStore(store).signatures()))
    assert doomed <= set(ZarrArtifactStore(store).signatures())
    result = cat.gc(keep=1, dry_run=False)
    assert set(result.deleted) == doomed
    assert not doomed & set(ZarrArtifactStore(store).signatures())


def test_dag_plan_draws_a_graph_not_run_yet(history, out_dir):
    usercode = history.store.parent / "usercode"
    (out_dir / "planned.py").write_text(
        f"import sys\nsys.path[:0] = [{str(usercode)!r}, {str(Path(__file__).parent)!r}]\n"
        "import cli_userflow\n\n\n"
        f"def build():\n    return cli_userflow.workflow({str(history.data)!r}, 5)\n"
    )
    svg = out_dir / "plan.svg"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "helix_dask.cli", "--store", str(history.store), "--json"),
            *("dag", "--plan", "planned:build", "-o", str(svg)),
        ],
        capture_output=True,
        text=True,
        cwd=out_dir,
        # The tasks read the call log's variable: planned with the value the history ran with, what
        # it stored is what they would compute (planning runs nothing, so nothing is logged).
        env={**os.environ, CALL_LOG: str(history.store.parent / "calls.log")},
    )
    assert proc.returncode == 0, proc.stderr
    states = json.loads(proc.stdout)["states"]
    assert states.get("loaded") == 1 and "computed" not in states  # the stored output loads
    root = ET.parse(svg).getroot()
    assert len([g for g in root.iter() if g.get("class") == "node"]) == sum(states.values())
    assert not (out_dir / "plan-calls.log").exists()  # nothing ran


def _planned(history, out_dir: Path) -> None:
    usercode = history.store.parent / "usercode"
    (out_dir / "planned.py").write_text(
        f"import sys\nsys.path[:0] = [{str(usercode)!r}, {str(Path(__file__).parent)!r}]\n"
        "import cli_userflow\n\n\n"
        f"def build():\n    return cli_userflow.workflow({str(history.data)!r}, 5)\n"
    )


def _run_cli(out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "helix_dask.cli", *args],
        capture_output=True,
        text=True,
        cwd=out_dir,
        env={**os.environ, CALL_LOG: str(out_dir / "plan-calls.log")},
    )


def test_dag_plan_writes_a_real_png(history, out_dir):
    pytest.importorskip("matplotlib", reason="PNG export needs matplotlib")
    _planned(history, out_dir)
    png = out_dir / "plan.png"
    proc = _run_cli(
        out_dir, "--store", str(history.store), "dag", "--plan", "planned:build", "-o", str(png)
    )
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no_such_module:build", "cannot import 'no_such_module'"),
        ("planned:no_such_name", "module 'planned' has no 'no_such_name'"),
        ("planned", "is not MODULE:NAME"),
    ],
)
def test_dag_plan_with_a_bad_target_fails_in_one_line(history, out_dir, spec, says):
    _planned(history, out_dir)
    proc = _run_cli(out_dir, "--store", str(history.store), "dag", "--plan", spec, "-o", "x.svg")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr
    assert "Traceback" not in proc.stderr


def test_show_lists_each_node_with_its_label_and_arguments(history, helix):
    text = ok(helix("show", "v2", store=history.store))
    header = text.splitlines()[4]
    assert header.split()[:4] == ["NODE", "TASK", "ARGUMENTS", "STATE"]
    line = next(line for line in text.splitlines() if line.startswith("featurize "))
    assert "bins=5" in line and "x=<read_numbers>" in line


# -- the catalog of a running scheduler -----------------------------------------------------------

READS = [
    ("log",),
    ("log", "--json", "-n", "3"),
    ("show", "v2"),
    ("show", "latest", "--json"),
    ("diff", "1", "2"),
    ("diff", "v2", "v3"),
    ("diff", "3", "4", "--json"),
    ("diff",),
    ("metrics",),
    ("metrics", "--json", "--sort", "accuracy"),
    ("du",),
    ("du", "--json"),
    ("gc", "--keep", "2", "--dry-run"),
]


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return cli.main(list(args), out=out), out.getvalue()


@pytest.fixture(scope="module")
def scheduler(history) -> Iterator[tuple[str, str]]:
    """A running scheduler whose helix plugin holds the history's store: its comm address and
    its dashboard's URL."""
    with (
        LocalCluster(
            n_workers=1,
            processes=False,
            protocol="tcp://",  # a real comm, as from another machine
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        helix_client(cluster, history.store),
    ):
        yield cluster.scheduler_address, f"http://127.0.0.1:{cluster.scheduler.http_server.port}"


@pytest.mark.parametrize("way", ["comm", "http"])
def test_read_commands_asked_of_a_running_scheduler_print_what_they_print_locally(
    history, scheduler, out_dir, way
):
    address = scheduler[way == "http"]
    for args in READS:
        local = _cli(*args, "--store", str(history.store))
        assert local[0] == 0
        assert _cli(*args, "--scheduler", address) == local, args
    for name in ("v3.svg", "v5.html"):
        here, there = out_dir / f"local-{name}", out_dir / f"{way}-{name}"
        assert _cli("dag", name[1], "-o", str(here), "--store", str(history.store))[0] == 0
        assert _cli("dag", name[1], "-o", str(there), "--scheduler", address)[0] == 0
        assert there.read_text() == here.read_text()


def test_the_helix_command_reaches_a_scheduler_through_its_real_entry_point(history, scheduler):
    proc = subprocess.run(
        [sys.executable, "-m", "helix_dask.cli", "log", "--json", "--scheduler", scheduler[0]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert [r["version"] for r in json.loads(ok(proc))] == [5, 4, 3, 2, 1]


def test_commands_that_change_the_store_are_refused_through_a_scheduler_with_what_to_run(
    history, scheduler, out_dir, capsys
):
    tcp, http = scheduler
    stored = len(hx.Catalog(history.store).artifacts())
    refusals = [
        (
            ("gc", "--keep", "1"),
            r"helix gc changes the store .* run `helix gc --store STORE` there",
        ),
        (("verify",), r"helix verify changes the store .* `helix verify --store STORE` there"),
        (("verify", "--repair"), r"helix verify changes the store and its catalog"),
        (("dag", "--plan", "x:y", "-o", str(out_dir / "p.svg")), r"run it where the scheduler"),
        (("log", "--store", str(history.store)), r"pass --store or --scheduler, not both"),
    ]
    for address in (tcp, http):
        for args, says in refusals:
            capsys.readouterr()
            assert _cli(*args, "--scheduler", address) == (2, "")
            assert re.search(says, capsys.readouterr().err), args
        assert _cli("show", "v99", "--scheduler", address)[0] == 2
        err = capsys.readouterr().err
        assert f"version 'v99' is not in the catalog of the scheduler at {address}" in err
    assert len(hx.Catalog(history.store).artifacts()) == stored  # gc deleted nothing


def test_an_address_without_a_helix_scheduler_fails_in_one_line(capsys):
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        http = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
        for address in (cluster.scheduler_address, http):
            assert _cli("log", "--scheduler", address) == (2, "")
            assert "no helix plugin runs there" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening
        assert _cli("log", "--scheduler", closed) == (2, "")
    assert f"cannot reach the scheduler at {closed}" in capsys.readouterr().err


@pytest.mark.parametrize("way", ["comm", "http"])
def test_a_remote_catalog_answers_every_read_as_the_catalog_itself(history, scheduler, way):
    from helix_dask._remote_catalog import RemoteCatalog

    here, there = hx.Catalog(history.store), RemoteCatalog(scheduler[way == "http"])
    try:
        signatures = [a.signature for a in here.artifacts()]
        codes = {n.code for r in here.runs() for n in r.nodes} | {"no such digest"}
        identities = {n.stored_as for r in here.runs() for n in r.nodes}
        assert there.versions() == here.versions()
        assert there.version_stats() == here.version_stats()
        assert there.version_stats(2) == here.version_stats(2)
        assert there.runs() == here.runs() and there.runs([2, 4]) == here.runs([2, 4])
        assert there.run(3) == here.run(3)
        assert {c: there.code(c) for c in codes} == {c: here.code(c) for c in codes}
        assert there.requirements_of(identities) == here.requirements_of(identities)
        assert there.artifacts() == here.artifacts()
        assert there.artifacts_for(signatures[:2]) == here.artifacts_for(signatures[:2])
        assert there.running_versions() == here.running_versions()
        assert there.leased() == here.leased()
        with pytest.raises(KeyError, match="version 99 is not in"):
            there.run(99)
        assert there.root == str(history.store.resolve())
    finally:
        there.close()
        here.close()
