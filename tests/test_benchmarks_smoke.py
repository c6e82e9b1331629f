"""The benchmark's workflows run end to end at the smallest sizes, and every strategy agrees.

Runs ``benchmarks`` in process on threaded clusters, 3 iterations per workflow, every helix
policy plus plain Dask and joblib.Memory (graphchain needs its own virtual environment and runs
only in full mode). Asserts that each iteration's evaluation metrics are identical across
strategies and that the reference bounds are consistent; timings belong in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks.__main__ import WORKFLOW_NAMES, run
from benchmarks._report import verdict

HAS_JOBLIB = importlib.util.find_spec("joblib") is not None


@pytest.mark.timeout(300)  # ~60 s on a quiet machine; a loaded one takes twice that
def test_every_strategy_produces_identical_metrics_at_smoke_size(tmp_path, monkeypatch):
    monkeypatch.setenv("HELIX_BENCH_TMP", str(tmp_path))
    if not HAS_JOBLIB:
        print("joblib is not installed: the joblib.Memory strategy is reported as failed")
    data = run(
        quick=True,
        size="smoke",
        iterations=3,
        repeats=1,
        workflows=WORKFLOW_NAMES,
        micro=False,
        in_process=True,
        processes=False,
        out_dir=None,
        log=lambda line: None,
    )
    for workflow in data["workflows"]:
        rows = workflow["summary"]["rows"]
        ran = {sid for sid, row in rows.items() if "cumulative" in row}
        assert {"dask", "helix:all", "helix:none"} <= ran, rows
        if HAS_JOBLIB:
            assert "joblib" in ran, rows["joblib"]
        assert workflow["identical"]["identical"], workflow["identical"]["mismatches"]
        for sid in ran:
            assert len(rows[sid]["curve"]) == 3, sid
        assert "helix:none@trace" in ran
        assert "graphchain" not in workflow["runs"]  # full mode only
        lb, lb_budget = workflow["lb"], workflow["lb_budget"]
        assert [i["index"] for i in lb["iterations"]] == [0, 1, 2], lb
        # Storing at most the budget can never beat storing everything for free.
        assert lb_budget["total"] >= lb["serial_total"] - 1e-9, (lb_budget, lb)
        assert all(b["optimal"] for b in lb_budget["budgets"]), lb_budget


def test_verdicts_are_met_only_when_every_repeat_meets_the_threshold():
    assert verdict([1.4, 1.5, 1.31], 1.3, at_most=False) == "met"
    assert verdict([1.04, 1.35, 1.5], 1.3, at_most=False) == "noise"
    assert verdict([1.04, 1.06], 1.3, at_most=False) == "**missed**"
    assert verdict([1.02, 1.01], 1.02, at_most=True) == "met"


@pytest.mark.timeout(180)
def test_iterations_as_new_processes_agree_with_plain_dask(tmp_path, monkeypatch):
    # Full mode runs each iteration in a process forked from a server that preloaded the
    # libraries; the code edits must still reach it (it imports helix and the workflow afresh).
    monkeypatch.setenv("HELIX_BENCH_TMP", str(tmp_path))
    data = run(
        quick=False,
        size="smoke",
        iterations=3,
        repeats=1,
        workflows=("tabular",),
        micro=False,
        in_process=False,
        processes=True,
        out_dir=None,
        only=["helix:value", "dask"],
        log=lambda line: None,
    )
    (workflow,) = data["workflows"]
    runs = workflow["runs"]
    assert set(runs) == {"helix:value", "dask"}
    for sid, (r,) in runs.items():
        assert [it.get("error") for it in r["iterations"]] == [None] * 3, sid
        assert all(it["process_seconds"] >= it["seconds"] for it in r["iterations"]), sid
    assert workflow["identical"]["identical"], workflow["identical"]["mismatches"]
    # The PPR code edit of iteration 3 shows in its metrics: it adds log-loss and AUC.
    assert set(runs["dask"][0]["iterations"][2]["metrics"]) == {"accuracy", "log_loss", "auc"}
    helix = runs["helix:value"][0]["iterations"]

    def node(i: int, name: str) -> dict:
        (found,) = [n for n in helix[i]["nodes"] if n["name"] == name]
        return found

    assert node(2, "evaluate")["signature"] != node(1, "evaluate")["signature"]
    assert node(2, "evaluate")["decision"] == "compute"
    assert node(2, "train")["signature"] == node(1, "train")["signature"]


def test_small_artifact_micro_benchmark_reports_both_layouts_in_one_table():
    from benchmarks._micro import SMALL_VALUES, small_artifacts
    from benchmarks._report import _small_artifacts_section

    data = small_artifacts(2)
    assert [r["value"] for r in data["rows"]] == list(SMALL_VALUES)
    verdicts: list[str] = []
    table = _small_artifacts_section(data, verdicts)
    assert sum(line.startswith("| ") for line in table) == 1 + len(SMALL_VALUES)
    assert len(verdicts) == 1 and verdicts[0].startswith("small artifact put/get ≤ 1 ms")
