"""The benchmark's workflows run end to end at the smallest sizes, and every strategy agrees.

Runs ``benchmarks`` in process on threaded clusters, 3 iterations per workflow, every helix
policy plus plain Dask and joblib.Memory (graphchain too when it is installed; it is expected to
fail on current Dask and is then reported, not compared). Asserts only that each iteration's
evaluation metrics are identical across strategies; timings belong in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks.__main__ import WORKFLOW_NAMES, run

HAS_JOBLIB = importlib.util.find_spec("joblib") is not None


@pytest.mark.timeout(120)
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
