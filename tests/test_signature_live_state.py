"""Specifications: between two calls of a task in one process, any change to the state its code
reads changes the next node's signature, and no change keeps it.

Each case builds a node, changes one piece of state in place (the way a notebook user would),
builds the node again; every case starts from a freshly imported module.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

SOURCE = """
import functools
import numpy as np
import helix_dask as hx

THRESHOLDS = [1, 2]
NESTED = {"a": {"b": 1}}
WEIGHTS = np.arange(4.0)
SCALE = functools.partial(lambda x, k: x * k, k=2)


class Config:
    alpha = 0.5

    def __init__(self):
        self.beta = 1


CONFIG = Config()


def helper(x):
    return x + 1


def other(x):
    return x + 2


def with_default(x, opts=[1]):
    return x + len(opts)


def kw_default(x, *, k=1):
    return x + k


@hx.task
def uses_list(x):
    return x + THRESHOLDS[0]


@hx.task
def uses_nested(x):
    return x + NESTED["a"]["b"]


@hx.task
def uses_array(x):
    return x + WEIGHTS.sum()


@hx.task
def uses_partial(x):
    return SCALE(x)


@hx.task
def uses_class_attr(x):
    return x * Config.alpha


@hx.task
def uses_instance(x):
    return x * CONFIG.beta


@hx.task
def uses_helper(x):
    return helper(x)


@hx.task
def uses_default(x):
    return with_default(x)


@hx.task
def uses_kw_default(x):
    return kw_default(x)


def make_counter():
    state = [0]

    @hx.task
    def closed(x):
        return x + state[0]

    return closed, state
"""


@pytest.fixture
def mod(module_factory):
    return module_factory("live_state_mod", SOURCE)


def _changes(mod) -> dict[str, tuple[str, Callable[[], None]]]:
    """task name -> a change of state it reads (in place, no module reload)."""

    def set_attr(obj, name, value):
        return lambda: setattr(obj, name, value)

    def replace_code():
        mod.helper.__code__ = mod.other.__code__

    def exec_redefine():
        exec("def helper(x):\n    return x + 3\n", vars(mod))

    return {
        "list item": ("uses_list", lambda: mod.THRESHOLDS.__setitem__(0, 5)),
        "list append": ("uses_list", lambda: mod.THRESHOLDS.append(9)),
        "nested dict": ("uses_nested", lambda: mod.NESTED["a"].__setitem__("b", 2)),
        "array in place": ("uses_array", lambda: mod.WEIGHTS.__setitem__(0, 7.0)),
        "partial keywords": ("uses_partial", lambda: mod.SCALE.keywords.__setitem__("k", 3)),
        "global rebound": ("uses_list", set_attr(mod, "THRESHOLDS", [4, 2])),
        "class attribute": ("uses_class_attr", set_attr(mod.Config, "alpha", 0.7)),
        "instance attribute": ("uses_instance", set_attr(mod.CONFIG, "beta", 3)),
        "helper code replaced": ("uses_helper", replace_code),
        "helper redefined by exec": ("uses_helper", exec_redefine),
        "helper rebound": ("uses_helper", set_attr(mod, "helper", mod.other)),
        "default mutated": ("uses_default", lambda: mod.with_default.__defaults__[0].append(2)),
        "defaults replaced": ("uses_default", set_attr(mod.with_default, "__defaults__", ([],))),
        "kwdefaults replaced": (
            "uses_kw_default",
            set_attr(mod.kw_default, "__kwdefaults__", {"k": 5}),
        ),
    }


CASES = [
    "list item",
    "list append",
    "nested dict",
    "array in place",
    "partial keywords",
    "global rebound",
    "class attribute",
    "instance attribute",
    "helper code replaced",
    "helper redefined by exec",
    "helper rebound",
    "default mutated",
    "defaults replaced",
    "kwdefaults replaced",
]


@pytest.mark.parametrize("case", CASES)
def test_a_change_in_place_changes_the_next_signature(mod, case):
    task_name, change = _changes(mod)[case]
    task = getattr(mod, task_name)
    before = task(1).signature
    assert task(1).signature == before  # nothing changed: the same signature
    change()
    after = task(1).signature
    assert after != before, f"{case}: the signature did not follow the change"
    assert task(1).signature == after


def test_a_closure_cell_change_changes_the_next_signature(mod):
    closed, state = mod.make_counter()
    before = closed(1).signature
    state[0] = 4
    assert closed(1).signature != before


CONF = """
K = 1
"""

OTHER_SOURCE = """
import dataclasses
import pandas as pd
import helix_dask as hx
import live_state_conf


@dataclasses.dataclass
class Params:
    lr: float = 0.1


class Holder:
    def __init__(self):
        self.params = {"lr": 0.1}


PARAMS = Params()
HOLDER = Holder()
FRAME = pd.DataFrame({"a": [1, 2]})
NAMES = {"x"}


@hx.task
def uses_module_attr(x):
    return x + live_state_conf.K


@hx.task
def uses_dataclass(x):
    return x * PARAMS.lr


@hx.task
def uses_deep(x):
    return x * HOLDER.params["lr"]


@hx.task
def uses_frame(x):
    return x + FRAME["a"].sum()


@hx.task
def uses_set(x):
    return x + len(NAMES)
"""


@pytest.fixture
def mods(module_factory):
    conf = module_factory("live_state_conf", CONF)
    return conf, module_factory("live_state_other", OTHER_SOURCE)


OTHER_CASES = {
    "module attribute": ("uses_module_attr", lambda c, m: setattr(c, "K", 2)),
    "dataclass field": ("uses_dataclass", lambda c, m: setattr(m.PARAMS, "lr", 0.2)),
    "deep dict in instance": ("uses_deep", lambda c, m: m.HOLDER.params.__setitem__("lr", 0.3)),
    "frame in place": ("uses_frame", lambda c, m: m.FRAME.iloc.__setitem__((0, 0), 5)),
    "set add": ("uses_set", lambda c, m: m.NAMES.add("y")),
}


@pytest.mark.parametrize("case", sorted(OTHER_CASES))
def test_state_of_other_objects_and_modules_changes_the_next_signature(mods, case):
    conf, mod = mods
    name, change = OTHER_CASES[case]
    task = getattr(mod, name)
    before = task(1).signature
    assert task(1).signature == before
    change(conf, mod)
    assert task(1).signature != before, case
