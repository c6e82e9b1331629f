"""Each kind of edit a user makes recomputes exactly the edited node and its descendants."""

from __future__ import annotations

import os

import pytest

import helix_dask as hx

BASE = '''
import time

import helix_dask as hx
from conftest import log_call

SCALE = {scale}


def helper(x):
    return x + {helper_offset}


def make_closure(k):
    @hx.task(name="closured")
    def closured(x):
        log_call("closured")
        time.sleep(0.1)
        return x * k
    return closured


closured = make_closure({closure_k})


@hx.task
def prepare(path):
    """Read the numbers."""
    log_call("prepare")
    time.sleep(0.1)
    with open(path) as f:
        return [int(v) for v in f.read().split()]


@hx.task
def transform(values, power={power}):
    {comment}
    log_call("transform")
    time.sleep(0.1)
    return [helper(v) ** power * SCALE for v in values]


@hx.task
def summarize(values):
    log_call("summarize")
    time.sleep(0.1)
    return {summarize_body}


def workflow(path):
    t = transform(prepare(hx.File(path)))
    return summarize(t), closured(summarize(t))
'''

DEFAULTS = dict(
    scale=1,
    helper_offset=0,
    closure_k=2,
    power=1,
    comment="# square the values",
    docstring="",
    summarize_body="sum(values)",
)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_text("1 2 3")
    return path


def run(client, mod, data):
    import dask

    result = dask.compute(*mod.workflow(str(data)))
    hx.last_run(client)
    return result


def _expected(values, **kw):
    p = {**DEFAULTS, **kw}
    t = sum((v + p["helper_offset"]) ** p["power"] * p["scale"] for v in values)
    t = t * 10 if p["summarize_body"] != DEFAULTS["summarize_body"] else t
    return t, t * p["closure_k"]


@pytest.mark.parametrize(
    ("edit", "recomputed"),
    [
        ({"helper_offset": 1}, {"transform", "summarize", "closured"}),
        ({"scale": 3}, {"transform", "summarize", "closured"}),
        ({"closure_k": 5}, {"closured"}),
        ({"summarize_body": "10 * sum(values)"}, {"summarize", "closured"}),
        ({"power": 2}, {"transform", "summarize", "closured"}),
        ({"comment": "# cube? no: just the values"}, set()),
        ({"comment": '"""A docstring-like string is not code."""'}, set()),
    ],
    ids=[
        "helper",
        "module-constant",
        "closure-value",
        "task-body",
        "default",
        "comment",
        "string-stmt",
    ],
)
def test_edit_recomputes_exactly_the_edited_node_and_descendants(
    threaded_client, calls, module_factory, data, edit, recomputed
):
    mod = module_factory("userflow", BASE.format(**DEFAULTS))
    assert run(threaded_client, mod, data) == _expected([1, 2, 3])
    calls.take()
    mod = module_factory("userflow", BASE.format(**{**DEFAULTS, **edit}))
    assert run(threaded_client, mod, data) == _expected([1, 2, 3], **edit)
    assert set(calls.take()) == recomputed


def test_file_input_edit_recomputes_its_reader_and_descendants(
    threaded_client, calls, module_factory, data
):
    mod = module_factory("userflow_file", BASE.format(**DEFAULTS))
    run(threaded_client, mod, data)
    calls.take()
    st = data.stat()
    data.write_text("4 5 6")  # same size; mtime restored below: content still decides
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run(threaded_client, mod, data) == _expected([4, 5, 6])
    assert set(calls.take()) == {"prepare", "transform", "summarize", "closured"}


def test_unchanged_workflow_in_a_new_session_runs_nothing(
    threaded_client, calls, module_factory, data
):
    mod = module_factory("userflow_again", BASE.format(**DEFAULTS))
    first = run(threaded_client, mod, data)
    calls.take()
    mod = module_factory("userflow_again", BASE.format(**DEFAULTS))
    assert run(threaded_client, mod, data) == first
    assert calls.take() == {}
