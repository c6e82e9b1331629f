"""Specifications: a code fingerprint is reused between calls only while nothing it read changed.

Each test builds a node (or fingerprints a function), makes one in-process edit of the kind a
notebook makes between two calls, and checks that the next node is signed from the new state:
its signature differs, and the fingerprint equals what a walk from scratch gives now.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import linecache
import os
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import helix_dask as hx
from helix_dask._code import _CodeWalker, _walk
from helix_dask.signature import code_fingerprint

_IDS = itertools.count()


def fresh(func: Callable[..., object]) -> str:
    """The digest a walk from scratch gives now, bypassing any reuse."""
    return _walk(_CodeWalker(frozenset()), func).digest


def current(func: Callable[..., object]) -> str:
    """``code_fingerprint(func)``, checked against a walk from scratch."""
    digest = code_fingerprint(func).digest
    assert digest == fresh(func)
    return digest


Load = Callable[..., types.ModuleType]


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Load]:
    """Write project modules to a temporary directory and import them (``PFX_`` is the
    prefix that keeps their names apart across tests)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    prefix = f"hxcache_{os.getpid()}_{next(_IDS)}_"

    def write(base: str, source: str) -> types.ModuleType:
        (tmp_path / f"{prefix}{base}.py").write_text(
            textwrap.dedent(source).replace("PFX_", prefix)
        )
        linecache.clearcache()
        importlib.invalidate_caches()
        name = prefix + base
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)

    yield write
    for name in [n for n in sys.modules if n.startswith(prefix)]:
        del sys.modules[name]


def test_unchanged_code_reuses_its_fingerprint(load: Load) -> None:
    mod = load(
        "m", "SCALE = 3\ndef helper(x):\n    return x * SCALE\ndef task(x):\n    return helper(x)\n"
    )
    assert code_fingerprint(mod.task) is code_fingerprint(mod.task)
    t = hx.task(mod.task)
    assert t(1).signature == t(1).signature


def test_reassigned_global_changes_the_next_node(load: Load) -> None:
    mod = load("m", "SCALE = 3\ndef task(x):\n    return x * SCALE\n")
    t = hx.task(mod.task)
    before = t(1).signature
    mod.SCALE = 4
    assert t(1).signature != before
    current(mod.task)
    mod.SCALE = 3
    assert t(1).signature == before


def test_global_mutated_in_place_changes_the_next_node(load: Load) -> None:
    mod = load("m", "TABLE = {'a': 1}\ndef task(x):\n    return TABLE[x]\n")
    t = hx.task(mod.task)
    before = t("a").signature
    assert code_fingerprint(mod.task) is code_fingerprint(mod.task)  # a table is re-checked
    mod.TABLE["a"] = 2
    assert t("a").signature != before
    current(mod.task)


def test_global_of_a_helper_changes_its_callers(load: Load) -> None:
    mod = load(
        "m",
        "LEVEL = (1, 2)\ndef helper(x):\n    return x + LEVEL[0]\n"
        "def task(x):\n    return helper(x)\n",
    )
    t = hx.task(mod.task)
    before = t(1).signature
    mod.LEVEL = (5, 2)
    assert t(1).signature != before
    current(mod.task)


def test_helper_redefined_by_exec_changes_its_callers(load: Load) -> None:
    mod = load("m", "def helper(x):\n    return x + 1\ndef task(x):\n    return helper(x)\n")
    t = hx.task(mod.task)
    before = t(1).signature
    exec("def helper(x):\n    return x + 2\n", vars(mod))  # a notebook cell
    assert t(1).signature != before
    current(mod.task)


def test_helper_code_swapped_in_place_changes_its_callers(load: Load) -> None:
    mod = load(
        "m",
        "def helper(x):\n    return x + 1\ndef other(x):\n    return x + 2\n"
        "def task(x):\n    return helper(x)\n",
    )
    t = hx.task(mod.task)
    before = t(1).signature
    mod.helper.__code__ = mod.other.__code__  # what autoreload does
    assert t(1).signature != before
    current(mod.task)


def test_reloaded_helper_module_changes_its_callers(load: Load) -> None:
    load("helpers", "def helper(x):\n    return x + 1\n")
    mod = load(
        "m",
        "import PFX_helpers\nfrom PFX_helpers import helper\n"
        "def via_module(x):\n    return PFX_helpers.helper(x)\n"
        "def via_name(x):\n    from PFX_helpers import helper\n    return helper(x)\n",
    )
    chained, imported = hx.task(mod.via_module), hx.task(mod.via_name)
    before = chained(1).signature, imported(1).signature
    load("helpers", "def helper(x):\n    return x + 2\n")  # importlib.reload
    after = chained(1).signature, imported(1).signature
    assert after[0] != before[0] and after[1] != before[1]
    current(mod.via_module)
    current(mod.via_name)


def test_module_attribute_set_from_outside_changes_the_next_node(load: Load) -> None:
    config = load("config", "THRESHOLD = 0.5\n")
    mod = load("m", "import PFX_config\ndef task(x):\n    return x > PFX_config.THRESHOLD\n")
    t = hx.task(mod.task)
    before = t(1).signature
    config.THRESHOLD = 0.7
    assert t(1).signature != before
    current(mod.task)


def test_module_used_as_a_value_counts_attributes_added_later(load: Load) -> None:
    models = load("models", "def a(x):\n    return x\n")
    mod = load("m", "import PFX_models\ndef task(name):\n    return getattr(PFX_models, name)\n")
    before = current(mod.task)
    models.b = lambda x: x + 1
    assert current(mod.task) != before


def test_changed_defaults_change_the_next_node(load: Load) -> None:
    mod = load(
        "m",
        "def helper(x, k=1, *, m=2):\n    return x * k * m\n"
        "def task(x, step=1):\n    return helper(x) + step\n",
    )
    t = hx.task(mod.task)
    seen = {t(1).signature}
    mod.helper.__defaults__ = (3,)
    seen.add(t(1).signature)
    mod.helper.__kwdefaults__["m"] = 5  # in place
    seen.add(t(1).signature)
    mod.task.__defaults__ = (2,)  # the task's own default: its code and its argument change
    seen.add(t(1).signature)
    assert len(seen) == 4
    current(mod.task)


def test_mutable_default_mutated_in_place_changes_the_next_node(load: Load) -> None:
    mod = load(
        "m",
        "def helper(x, extra=[1]):\n    return x + sum(extra)\n"
        "def task(x):\n    return helper(x)\n",
    )
    t = hx.task(mod.task)
    before = t(1).signature
    mod.helper.__defaults__[0].append(2)
    assert t(1).signature != before
    current(mod.task)


def test_a_table_entry_replaced_by_an_equal_value_of_another_kind_counts(load: Load) -> None:
    mod = load("m", "TABLE = [1, 0.0, 'a']\ndef task(x):\n    return TABLE[x]\n")
    seen = {current(mod.task)}
    for index, value in ((0, True), (1, -0.0), (0, 1.0)):  # == to what they replace
        mod.TABLE[index] = value
        seen.add(current(mod.task))
    assert len(seen) == 4


def test_global_array_mutated_in_place_changes_the_next_node(load: Load) -> None:
    np = pytest.importorskip("numpy")
    mod = load(
        "m", "import numpy as np\nWEIGHTS = np.ones(3)\ndef task(x):\n    return x @ WEIGHTS\n"
    )
    t = hx.task(mod.task)
    before = t(np.zeros(3)).signature
    mod.WEIGHTS[0] = 2.0
    assert t(np.zeros(3)).signature != before
    current(mod.task)


def test_rebound_closure_cell_changes_the_next_node() -> None:
    factor = 2

    def task(x: int) -> int:
        return x * factor

    t = hx.task(task)
    before = t(1).signature
    factor = 3
    assert t(1).signature != before
    current(task)


def test_function_attribute_added_later_changes_its_callers(load: Load) -> None:
    mod = load(
        "m",
        "def helper(x):\n    return x * getattr(helper, 'factor', 1)\n"
        "def task(x):\n    return helper(x)\n",
    )
    before = current(mod.task)
    mod.helper.factor = 7
    assert current(mod.task) != before


def test_class_attribute_and_method_replaced_later_change_its_users(load: Load) -> None:
    mod = load(
        "m",
        "class Scaler:\n    FACTOR = 2\n    def scale(self, x):\n        return x * self.FACTOR\n"
        "def task(x):\n    return Scaler().scale(x)\n",
    )
    seen = {current(mod.task)}
    mod.Scaler.FACTOR = 3
    seen.add(current(mod.task))
    mod.Scaler.scale = lambda self, x: x - self.FACTOR
    seen.add(current(mod.task))
    assert len(seen) == 3


def test_class_source_edited_on_disk_changes_its_users(load: Load) -> None:
    mod = load(
        "m",
        "class Limits:\n    HIGH = 3\n\ndef task(x):\n    return min(x, Limits.HIGH)\n",
    )
    before = current(mod.task)
    path = Path(mod.__file__)
    path.write_text(path.read_text().replace("HIGH = 3", "HIGH = 4") + "\n\n")
    linecache.checkcache(str(path))
    assert current(mod.task) != before  # a class counts by its file's current lines


def test_singledispatch_registration_after_a_call_changes_the_next_node(load: Load) -> None:
    mod = load(
        "m",
        "import functools\n@functools.singledispatch\ndef show(x):\n    return str(x)\n"
        "def task(x):\n    return show(x)\n",
    )
    t = hx.task(mod.task)
    before = t(1).signature
    mod.show.register(int)(lambda x: f"int {x}")
    assert t(1).signature != before
    current(mod.task)


def test_global_defined_after_a_call_changes_the_next_node(load: Load) -> None:
    mod = load("m", "def task(x):\n    return x + LATE\n")
    t = hx.task(mod.task)
    before = t(1).signature
    mod.LATE = 1
    assert t(1).signature != before
    current(mod.task)


def test_partial_and_wrapped_helpers_follow_their_target(load: Load) -> None:
    mod = load(
        "m",
        "import functools\ndef base(x, k):\n    return x * k\n"
        "helper = functools.partial(base, k=2)\n"
        "def task(x):\n    return helper(x)\n",
    )
    before = current(mod.task)
    mod.helper.keywords["k"] = 3  # a partial's keywords can change in place
    assert current(mod.task) != before
    mod.helper = functools.partial(mod.base, k=2)
    assert current(mod.task) == before


def test_a_task_that_calls_another_task_follows_it(load: Load) -> None:
    mod = load(
        "m",
        "import helix_dask as hx\n@hx.task\ndef inner(x):\n    return x + 1\n"
        "def outer(x):\n    return inner.func(x)\n",
    )
    t = hx.task(mod.outer)
    before = t(1).signature
    first = code_fingerprint(mod.outer)
    mod.inner(1)  # building a node of the inner task leaves its code's fingerprint as it was
    assert code_fingerprint(mod.outer) is first
    exec("@hx.task\ndef inner(x):\n    return x + 2\n", vars(mod))
    assert t(1).signature != before
    current(mod.outer)


def test_walks_of_one_function_with_other_untracked_names_are_kept_apart(load: Load) -> None:
    mod = load("m", "LOCK = 1\ndef task(x):\n    return x + LOCK\n")
    tracked = code_fingerprint(mod.task)
    untracked = code_fingerprint(mod.task, untracked=("LOCK",))
    assert tracked.digest != untracked.digest
    mod.LOCK = 2
    assert code_fingerprint(mod.task, untracked=("LOCK",)).digest == untracked.digest
    assert code_fingerprint(mod.task).digest != tracked.digest


def test_node_built_before_an_edit_is_refused_at_compute(load: Load) -> None:
    mod = load("m", "SCALE = 3\ndef task(x):\n    return x * SCALE\n")
    node = hx.task(mod.task)(1)
    mod.SCALE = 4
    with pytest.raises(hx.HelixSignatureError, match="changed after the node was built"):
        node.__dask_postcompute__()


def test_bound_methods_and_partials_as_tasks_are_signed_afresh() -> None:
    def scale(x: int, k: int) -> int:
        return x * k

    part = functools.partial(scale, k=2)
    before = code_fingerprint(part).digest
    part.keywords["k"] = 3
    assert code_fingerprint(part).digest != before
