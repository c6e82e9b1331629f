"""The history names and pairs nodes by lineage: a task used once per model keeps each model's
metrics in that model's column, diff compares a model with itself, whatever order the calls
were submitted in and whichever models come and go."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import dask
import pytest
from conftest import log_call

import helix_dask as hx
from helix_dask import Decision, NodeRecord
from helix_dask._change_causes import _argument_causes
from helix_dask._lineage import match_nodes, node_names
from helix_dask.catalog import CatalogWriter
from helix_dask.history import diff, estimator_parameters, metrics_table

ACCURACY = {"logreg": 0.71, "tree": 0.82, "svm": 0.93, "knn": 0.64}


@hx.task
def data(n: int) -> list[int]:
    log_call("data")
    return list(range(n))


@hx.task
def train(xs: list[int], kind: str) -> dict:
    log_call(f"train:{kind}")
    return {"kind": kind, "n": len(xs)}


@hx.task(metrics=True)
def score(model: dict) -> dict:
    log_call(f"score:{model['kind']}")
    return {"acc": ACCURACY[model["kind"]] + model["n"] / 1000}


# (data size, models in the order the user submits them)
STEPS = [
    (20, ["logreg", "tree", "svm"]),
    (21, ["svm", "logreg", "tree"]),  # new data: every signature changes; order shuffled
    (21, ["knn", "tree", "logreg", "svm"]),  # a model added, submitted first
    (21, ["svm", "knn", "logreg"]),  # one removed
    (22, ["logreg", "knn", "svm"]),  # new data again
    (22, ["knn", "svm", "logreg"]),  # an identical re-run, shuffled
]


def _column(columns, kind: str) -> str:
    """The metrics column of ``kind``'s score (its lineage names the model)."""
    found = [c for c in columns if f"kind='{kind}'" in c and c.endswith(".acc")]
    assert len(found) == 1, (kind, columns)
    return found[0]


def test_metrics_of_a_repeated_task_stay_with_their_model_across_versions(
    threaded_client, calls, tmp_path
):
    random.seed(10)
    expected: dict[int, dict[str, float]] = {}
    for i, (n, kinds) in enumerate(STEPS):
        with dask.config.set({"helix.message": f"step {i}"}):
            nodes = [score(train(data(n), kind)) for kind in kinds]
        results = dask.compute(*nodes)
        run = hx.last_run(threaded_client)
        expected[run.version] = {k: r["acc"] for k, r in zip(kinds, results, strict=True)}
        assert {r["acc"] for r in results} == {ACCURACY[k] + n / 1000 for k in kinds}
    ran_last = calls.take()
    cat = hx.Catalog(tmp_path / "store")
    table = cat.metrics()
    kinds = sorted(ACCURACY)
    assert len(table.columns) == len(kinds)  # one column per model, across data changes too
    for row in table.rows:
        got = {k: row.values.get(_column(table.columns, k)) for k in kinds}
        assert {k: v for k, v in got.items() if v is not None} == expected[row.version]
    frame = table.to_pandas()
    assert list(frame.index) == sorted(expected)
    assert frame.loc[max(expected), _column(table.columns, "svm")] == pytest.approx(0.93 + 0.022)
    assert ran_last  # the fixture's log saw the runs

    # diff pairs each model with itself, never a model with another
    versions = sorted(expected)
    for old, new in itertools.pairwise(versions):
        d = diff(cat, old, new)
        for m in d.metrics:
            kind = next(k for k in kinds if f"kind='{k}'" in m.node)
            assert (m.old, m.new) == (expected[old].get(kind), expected[new].get(kind))
        added = {c.name for c in d.changes if c.old_key is None}
        removed = {c.name for c in d.changes if c.new_key is None}
        for kind in set(expected[new]) - set(expected[old]):
            assert any(f"kind='{kind}'" in a for a in added if a.startswith("score"))
        for kind in set(expected[old]) - set(expected[new]):
            assert any(f"kind='{kind}'" in r for r in removed if r.startswith("score"))
    last = diff(cat, versions[-2], versions[-1])
    assert last.changes == () and len(last.unchanged) == 1 + 2 * 3

    # the same names in the run report, the DAG and the log
    run = cat.run(versions[-1])
    assert sorted(run.loaded) == sorted(
        f"score(train(kind='{k}', data))" for k in expected[versions[-1]]
    )
    assert len(repr(run).splitlines()) == 1 and repr(run).startswith("<RunReport v6:")
    labels = {a["label"] for _, a in cat.dag(versions[-1]).graph.nodes(data=True)}
    assert "score(train(kind='knn', data))" in labels and "data" in labels
    rows = {r["version"]: r for r in json.loads(_helix(tmp_path / "store", "log", "--json"))}
    assert rows[6]["repeats"] == 5 and rows[5]["repeats"] is None
    assert " = v5" in _helix(tmp_path / "store", "log").splitlines()[1]


def _helix(store: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "helix_dask.cli", "--store", str(store), *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _record(key: str, name: str, parents=(), label="", **args: str) -> NodeRecord:
    return NodeRecord(
        key=key,
        name=name,
        signature=key.replace("-", ""),
        code="c",
        args={k: f"fp-{v}" for k, v in args.items()},
        parents=tuple(parents),
        decision=Decision.COMPUTE,
        arg_values=dict(args),
        label=label,
    )


def test_a_label_names_a_call_and_keeps_it_paired_when_its_arguments_change(tmp_path):
    cat = CatalogWriter(tmp_path)
    metrics = {"lr": [0.5, 0.6], "rf": [0.7, 0.8]}
    for i, C in enumerate(("1.0", "2.0")):
        v = cat.begin_version("w", f"C={C}", [])
        nodes = [_record("data-d", "data")]
        for name in ("rf", "lr") if i else ("lr", "rf"):
            model = _record(f"train-{name}{i}", "train", ["data-d"], name + "-model", C=C)
            s = _record(f"score-{name}{i}", "score", [model.key], name, model="<train>")
            nodes += [model, dataclasses.replace(s, metrics={"acc": metrics[name][i]})]
        cat.record_nodes(v, nodes)
        cat.finish_version(v, "done", 0.0)
    table = metrics_table(cat)
    assert table.columns == ("lr.acc", "rf.acc")
    assert [r.values for r in table.rows] == [
        {"lr.acc": 0.5, "rf.acc": 0.7},
        {"lr.acc": 0.6, "rf.acc": 0.8},
    ]
    d = diff(cat, 1, 2)
    changed = {c.name: [x.describe() for x in c.causes] for c in d.changes}
    assert changed["lr-model"] == ["argument C: 1.0 -> 2.0"]
    assert changed["lr"] == ["upstream lr-model changed"]
    assert sorted(node_names(cat.run(2).nodes).values()) == [
        "data",
        "lr",
        "lr-model",
        "rf",
        "rf-model",
    ]
    assert cat.run(2).node("rf").metrics == {"acc": 0.8}


def test_repeated_calls_whose_arguments_change_are_not_paired_with_another_call():
    """Without a label, replacing model b by d and editing b look alike: never pair them."""
    old = [_record("d-1", "data")] + [
        _record(f"t-{k}", "train", ["d-1"], kind=k) for k in ("a", "b", "c")
    ]
    new = [_record("d-1", "data")] + [
        _record(f"t-{k}", "train", ["d-1"], kind=k) for k in ("a", "c", "d")
    ]
    pairs = {(a and a.key, b and b.key) for a, b in match_nodes(old, new)}
    assert pairs == {
        ("d-1", "d-1"),
        ("t-a", "t-a"),
        ("t-c", "t-c"),
        ("t-b", None),
        (None, "t-d"),
    }
    # the only call of a task stays paired through an argument edit
    edited = [_record("d-2", "data", n="5")]
    assert [(a.key, b.key) for a, b in match_nodes([_record("d-1", "data", n="4")], edited)] == [
        ("d-1", "d-2")
    ]


def test_a_catalog_written_before_labels_opens_with_empty_labels(tmp_path):
    with closing(sqlite3.connect(tmp_path / "catalog.sqlite")) as db:
        db.executescript(
            "CREATE TABLE nodes (version INTEGER NOT NULL, key TEXT NOT NULL, name TEXT NOT "
            "NULL, signature TEXT NOT NULL, code TEXT NOT NULL, args TEXT NOT NULL, parents "
            "TEXT NOT NULL, decision TEXT NOT NULL, compute_seconds REAL, load_seconds REAL, "
            "write_seconds REAL, nbytes INTEGER, materialization TEXT, reason TEXT NOT NULL "
            "DEFAULT '', estimated_compute_seconds REAL NOT NULL DEFAULT 0, arg_values TEXT "
            "NOT NULL DEFAULT '{}', metrics TEXT, PRIMARY KEY (version, key));"
            "CREATE TABLE versions (id INTEGER PRIMARY KEY AUTOINCREMENT, workflow TEXT NOT "
            "NULL, started REAL NOT NULL, finished REAL, status TEXT NOT NULL, message TEXT NOT "
            "NULL DEFAULT '', outputs TEXT NOT NULL DEFAULT '[]', time_saved REAL NOT NULL "
            "DEFAULT 0, predicted_seconds REAL, measured_seconds REAL);"
            "INSERT INTO versions (workflow, started, status) VALUES ('w', 1.0, 'done');"
            "INSERT INTO nodes (version, key, name, signature, code, args, parents, decision) "
            "VALUES (1, 'f-ab', 'f', 'ab', 'c', '{}', '[]', 'compute');"
        )
        db.commit()
    run = hx.Catalog(tmp_path).run(1)
    assert run.nodes[0].label == "" and run.computed == ["f"]
    assert list(hx.Catalog(tmp_path).runs().to_pandas()["computed"]) == [1]


def test_diff_prints_a_code_change_shared_by_several_nodes_once(tmp_path):
    cat = CatalogWriter(tmp_path)
    for i, body in enumerate(("return x", "return x * 2")):
        cat.record_code(f"code{i}", {"flow.helper": f"def helper(x):\n    {body}"}, {})
        v = cat.begin_version("w", "", [])
        nodes = [
            dataclasses.replace(_record(f"{t}-{t}{i}", t, kind=t), code=f"code{i}")
            for t in ("prep", "fit", "score")
        ]
        cat.record_nodes(v, nodes)
        cat.finish_version(v, "done", 0.0)
    text = _helix(tmp_path, "diff", "1", "2")
    assert text.count("--- v1/flow.helper") == 1 and text.count("+    return x * 2") == 1
    assert text.count("code of flow.helper changed") == 3
    assert text.count("code of flow.helper changed (diff above)") == 2
    assert len(diff(cat, 1, 2).code) == 1


def test_diff_names_the_changed_parameters_of_an_estimator_argument(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from helix_dask._argument_text import _argument_values

    cat = CatalogWriter(tmp_path)
    for i, k in enumerate((5, 8)):
        pipe = Pipeline([("pca", PCA(n_components=k)), ("lr", LogisticRegression())])
        shown = _argument_values({"model": pipe, "X": [1, 2]})
        v = cat.begin_version("w", "", [])
        record = _record(f"fit-f{i}", "fit")
        cat.record_nodes(v, [dataclasses.replace(record, arg_values=shown, args={"model": f"{i}"})])
        cat.finish_version(v, "done", 0.0)
    causes = [c.describe() for c in diff(cat, 1, 2).changes[0].causes]
    assert causes == ["argument model: pca__n_components: 5 -> 8"]
    # nested estimators, parameters at their defaults, replaced steps
    before = Pipeline([("pca", PCA(n_components=5)), ("lr", LogisticRegression())])
    after = Pipeline([("pca", PCA(n_components=5, whiten=True)), ("lr", LogisticRegression(C=0.5))])
    assert estimator_parameters(repr(before)) == {
        "": "Pipeline",
        "pca": "PCA",
        "pca__n_components": "5",
        "lr": "LogisticRegression",
    }
    assert [c.describe() for c in _argument_causes("model", repr(before), repr(after))] == [
        "argument model: lr__C: (default) -> 0.5",
        "argument model: pca__whiten: (default) -> True",
    ]


def test_lists_of_upstream_nodes_are_upstream_not_values():
    from helix_dask._lineage import is_upstream

    assert is_upstream("<fit>") and is_upstream("[<a>, <b>]")
    assert is_upstream("[(<columns_ct.num>, [<fit_ct.num.scale>]), (<columns_ct.cat>, [])]")
    assert not is_upstream("[1, <a>]") and not is_upstream("[]") and not is_upstream("<a> + <b>")
