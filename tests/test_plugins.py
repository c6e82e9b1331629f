"""The plugin pair as users meet it: setup paths, key names, failure handling, the catalog."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask
import numpy as np
import pytest
from conftest import log_call
from distributed import Client

import helix_dask as hx
import helix_dask.rewrite as helix_rewrite
from helix_dask import Decision


@hx.task
def make(n: int) -> np.ndarray:
    log_call("make")
    time.sleep(0.1)
    return np.ones(n)


@hx.task(metrics=True)
def score(x: np.ndarray) -> dict:
    log_call("score")
    return {"mean": float(x.mean()), "n": len(x), "label": "not a number"}


@hx.task
def slow_total(x: np.ndarray) -> float:
    time.sleep(0.5)  # far costlier than a load: the plan loads it, even on a busy machine
    return float(x.sum())


def test_keys_name_the_user_function_and_loads_have_their_own_prefix(threaded_client):
    node = slow_total(make(3))
    assert node.key == f"slow_total-{node.signature}"
    node.compute()
    hx.last_run(threaded_client)
    seen = []

    def record_keys(dask_scheduler):
        return sorted(str(k) for k in dask_scheduler.tasks)

    fut = threaded_client.compute(node)
    fut.result()
    seen = threaded_client.run_on_scheduler(record_keys)
    assert f"load-{node.key}" in seen
    del fut


def test_metrics_and_the_message_set_at_compute_are_recorded_with_the_version(
    threaded_client, tmp_path
):
    node = score(make(4))
    with dask.config.set({"helix.message": "first try"}):
        assert node.compute()["mean"] == 1.0
    run = hx.last_run(threaded_client)
    assert run.message == "first try"
    assert run.node("score").metrics == {"mean": 1.0, "n": 4.0}
    assert run.node("make").arg_values == {"n": "4"}
    stored = hx.Catalog(tmp_path / "store").run(run.version)
    assert stored.node("score").metrics == {"mean": 1.0, "n": 4.0}
    assert stored.message == "first try"
    # Set when the node was built and not at compute: the build-time message is kept.
    with dask.config.set({"helix.message": "built"}):
        again = score(make(5))
    again.compute()
    assert hx.last_run(threaded_client).message == "built"
    with dask.config.set({"helix.message": "second compute"}):
        again.compute()
    assert hx.last_run(threaded_client).message == "second compute"


def test_planning_failure_logs_a_warning_runs_the_graph_unchanged_and_records_it(
    threaded_client, calls, caplog
):
    def break_planner(dask_scheduler):
        dask_scheduler.plugins["helix"].solver = "no-such-solver"

    threaded_client.run_on_scheduler(break_planner)
    caplog.set_level(logging.WARNING, logger="helix_dask")
    assert score(make(2)).compute()["mean"] == 1.0
    assert calls.take() == {"make": 1, "score": 1}
    assert any("could not plan" in r.getMessage() for r in caplog.records)
    run = hx.last_run(threaded_client)
    assert run.status == "plan_failed" and run.computed == ["make", "score"]
    assert run.stored == [] and "plan_failed" in run.summary()


def test_a_rewrite_failing_midway_is_undone_and_the_graph_runs_as_plain_dask(
    threaded_client, calls, caplog, monkeypatch
):
    outputs = [score(make(3)), score(make(4))]
    dask.compute(*outputs)
    assert len(hx.last_run(threaded_client).stored) >= 2  # the outputs at least
    calls.take()
    rewritten: list[str] = []

    def fail_at_the_second_load(scheduler, ts, lts):
        rewritten.append(ts.key)
        if len(rewritten) == 2:
            raise RuntimeError("injected failure in the middle of the rewrite")

    monkeypatch.setattr(helix_rewrite, "_same_span", fail_at_the_second_load)
    caplog.set_level(logging.WARNING, logger="helix_dask")
    results = dask.compute(*outputs)
    assert [r["n"] for r in results] == [3, 4]
    assert len(rewritten) == 2  # the first load was applied before the failure
    assert calls.take() == {"make": 2, "score": 2}  # nothing of the half rewrite ran
    assert any("could not rewrite" in r.getMessage() for r in caplog.records)
    run = hx.last_run(threaded_client)
    assert run.status == "plan_failed" and run.loaded == []
    assert len(run.computed) == 4
    left = threaded_client.run_on_scheduler(
        lambda dask_scheduler: [k for k in dask_scheduler.tasks if str(k).startswith("load-")]
    )
    assert left == []


def test_a_node_held_by_a_future_is_used_as_is(threaded_client, calls):
    held = threaded_client.persist(make(5))
    held.compute()
    calls.take()
    assert score(held).compute()["n"] == 5
    run = hx.last_run(threaded_client)
    assert run.node("make").decision is Decision.IN_CLUSTER
    assert calls.take() == {"score": 1}
    del held


def test_setup_without_a_client_starts_an_embedded_cluster(tmp_path, calls):
    client = hx.setup(store=tmp_path / "embedded")
    try:
        assert Client.current() is client
        assert score(make(2)).compute()["n"] == 2
        assert hx.last_run(client).computed == ["make", "score"]
        assert hx.setup(store=tmp_path / "embedded") is client
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def test_setup_again_with_the_same_settings_keeps_the_plugin_and_new_settings_replace_it(
    threaded_client, tmp_path, calls
):
    def installed(dask_scheduler):
        plugin = dask_scheduler.plugins["helix"]
        return id(plugin), plugin.budget, plugin.policy_name

    first = threaded_client.run_on_scheduler(installed)
    assert first[1:] == (2**30, "value")
    score(make(3)).compute()
    hx.setup(threaded_client, store=tmp_path / "store", budget="1 GiB")
    assert threaded_client.run_on_scheduler(installed) == first
    assert hx.last_run(threaded_client).computed == ["make", "score"]  # its runs are kept
    with pytest.warns(hx.HelixConfigWarning, match=r"budget '1 GiB' -> '2 GiB', policy"):
        hx.setup(threaded_client, store=tmp_path / "store", budget="2 GiB", policy="helix2x")
    again = threaded_client.run_on_scheduler(installed)
    assert again[0] != first[0] and again[1:] == (2 * 2**30, "helix2x")
    assert score(make(3)).compute()["n"] == 3
    assert hx.last_run(threaded_client).loaded == ["score"]  # same store, new plugin
    assert calls.take() == {"make": 1, "score": 1}


def test_scheduler_started_from_the_command_line_loads_the_plugin_by_preload(tmp_path, calls):
    tests_dir = os.path.dirname(__file__)  # the graph refers to this module's helpers
    env = {
        **os.environ,
        "DASK_HELIX__STORE": str(tmp_path / "cli-store"),
        "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])),
    }
    port_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--scheduler-file",
            str(port_file),
            "--preload",
            "helix_dask",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert time.monotonic() < deadline, "scheduler did not start"
            assert scheduler.poll() is None, "scheduler exited"
            time.sleep(0.1)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(port_file),
                "--nthreads",
                "1",
                "--no-dashboard",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with Client(scheduler_file=str(port_file), timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            hx.setup(client)  # no settings: the cluster's store (resolved there) is kept
            info = client.sync(client.scheduler.helix_info)
            assert info["store"] == str((tmp_path / "cli-store").resolve())
            for _ in range(2):
                assert make(3).compute().sum() == 3.0
                run = hx.last_run(client)
            assert run.loaded == ["make"]
            assert (tmp_path / "cli-store" / "catalog.sqlite").exists()
            with pytest.warns(hx.HelixConfigWarning, match=r"store '.*cli-store' -> '.*other'"):
                hx.setup(client, store=tmp_path / "other")
            assert client.sync(client.scheduler.helix_info)["store"].endswith("other")
    finally:
        for p in (worker, scheduler):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


@hx.task
def load(n: int) -> np.ndarray:
    log_call("load")
    time.sleep(0.1)
    return np.arange(n)


def test_a_task_named_load_is_planned_like_any_other(threaded_client, calls):
    node = score(load(3))
    assert node.compute()["mean"] == 1.0
    assert hx.last_run(threaded_client).computed == ["load", "score"]
    held = threaded_client.compute(load(3))
    np.testing.assert_array_equal(held.result(), np.arange(3))
    assert hx.last_run(threaded_client).loaded == ["load"]
    assert calls.take() == {"load": 1, "score": 1}
    del held


def test_recomputing_over_a_held_loaded_output_leaves_no_orphaned_tasks(threaded_client, calls):
    @hx.task(name="twice")
    def twice(d: dict) -> float:
        log_call("twice")
        return 2 * d["mean"]

    score(make(6)).compute()
    hx.last_run(threaded_client)
    held = threaded_client.compute(score(make(6)))  # loaded: its key now aliases a load task
    held.result()
    assert hx.last_run(threaded_client).loaded == ["score"]
    calls.take()
    assert twice(score(make(6))).compute() == 2.0
    assert calls.take() == {"twice": 1}
    run = hx.last_run(threaded_client)
    assert run.node("score").decision is Decision.IN_CLUSTER
    assert run.node("make").decision is Decision.PRUNE
    del held
    # the fixture then asserts that the scheduler forgets every task


def test_dask_progress_bar_follows_a_helix_compute(threaded_client, capsys):
    from distributed import progress

    fut = threaded_client.compute(score(make(7)))
    progress(fut, notebook=False)
    assert fut.result()["n"] == 7
    assert "100% Completed" in capsys.readouterr().out
    hx.last_run(threaded_client)
    del fut


def test_preview_shows_the_plan_of_a_graph_before_it_runs(threaded_client, tmp_path, calls):
    score(make(8)).compute()
    hx.last_run(threaded_client)
    calls.take()
    view = hx.preview(score(make(8)), make(9), store=tmp_path / "store")
    states = {d["name"] + str(d["arg_values"]): d["state"] for _, d in view.graph.nodes(data=True)}
    assert states == {
        "score{'x': '<make>'}": "loaded",
        "make{'n': '8'}": "pruned",
        "make{'n': '9'}": "computed",
    }
    assert calls.take() == {}  # nothing ran
    assert view.to_svg().count('class="node"') == 3


def test_last_run_on_a_cluster_without_the_plugin_is_a_clear_error(threads_cluster):
    with Client(threads_cluster) as c:
        with pytest.raises(hx.HelixError, match=r"no helix plugin; call hx.setup\(client\)"):
            hx.last_run(c)


@pytest.mark.parametrize("budget", [1.5, True, 1e9, [1]])
def test_a_budget_that_is_not_whole_bytes_is_rejected(budget):
    with pytest.raises(hx.HelixConfigError, match=f"budget {re.escape(repr(budget))}"):
        hx.HelixSchedulerPlugin(budget=budget)


def test_settings_have_code_defaults_when_dask_config_lost_helix(tmp_path, monkeypatch):
    # distributed's own test fixtures reset dask.config to a snapshot taken before helix's
    # YAML defaults were added; a preloaded plugin must still start.
    from helix_dask import _config
    from helix_dask._settings import Settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        dask.config, "config", {k: v for k, v in dask.config.config.items() if k != "helix"}
    )
    resolved = Settings().resolve()
    assert resolved.store == str(tmp_path / ".helix") and resolved.policy == "value"
    assert resolved.bytes > 0 and _config.get("read-bandwidth") == "500MB"


def test_yaml_defaults_and_code_defaults_agree():
    import yaml

    from helix_dask import _config

    with open(Path(_config.__file__).with_name("helix.yaml")) as f:
        assert yaml.safe_load(f)["helix"] == _config.DEFAULTS


def _load_tasks(client: Client, outputs: list) -> list[str]:
    """Keys of the load tasks that ran while ``outputs`` were computed."""
    from distributed import get_task_stream

    with get_task_stream(client) as stream:
        dask.compute(*outputs)
    return sorted(str(t["key"]) for t in stream.data if str(t["key"]).startswith("load-"))


def test_small_artifacts_a_graph_loads_are_read_by_one_task(threaded_client, calls, tmp_path):
    outputs = [score(make(n)) for n in (3, 4, 5)]
    dask.compute(*outputs)
    calls.take()
    assert _load_tasks(threaded_client, outputs) == [helix_rewrite.batch_key(outputs_keys(outputs))]
    run = hx.last_run(threaded_client)
    loaded = [n for n in run.nodes if n.decision is Decision.LOAD]
    assert [n.name for n in loaded] == ["score"] * 3 and calls.take() == {}
    assert all(n.load_seconds is not None for n in loaded)
    # One artifact gone: that one is computed again, the other two still read together.
    gone = hx.Catalog(tmp_path / "store").artifact(loaded[0].stored_as)
    assert gone is not None
    shutil.rmtree(tmp_path / "store" / gone.location)
    (shared,) = _load_tasks(threaded_client, outputs)  # with the input it recomputes from
    assert shared.startswith("load-batch-")
    assert calls.take()["score"] == 1
    assert [r["n"] for r in dask.compute(*outputs)] == [3, 4, 5]


def outputs_keys(outputs: list) -> list[str]:
    return [o.key for o in outputs]
