"""Specifications: value fingerprints keep everything code can observe in a value.

Each test pins one kind of loss: order, type, metadata, layout, the code an object carries, the
package version of a library object, or the shape of a directory.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import enum
import functools
import importlib
import importlib.metadata
import os
import pathlib
import subprocess
import sys
import textwrap
import types
import typing
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from helix_dask import _origin
from helix_dask._errors import HelixSignatureError
from helix_dask.signature import (
    CannotFingerprint,
    File,
    argument_fingerprints,
    file_fingerprint,
    fingerprint_value,
)

fp = fingerprint_value
REPO = pathlib.Path(fingerprint_value.__code__.co_filename).resolve().parents[1]


def _run(script: str, *paths: pathlib.Path) -> str:
    """Run ``script`` in a fresh interpreter that imports this worktree's helix_dask."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in paths), str(REPO)])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# ---------------------------------------------------------------- order


def test_dict_insertion_order_counts_as_dataframe_columns_do() -> None:
    first, second = {"a": [1], "b": [2]}, {"b": [2], "a": [1]}
    assert list(pd.DataFrame(first).columns) != list(pd.DataFrame(second).columns)
    assert fp(first) != fp(second)
    assert fp(collections.OrderedDict(first)) != fp(collections.OrderedDict(second))
    assert fp(collections.OrderedDict(first)) != fp(first)  # the type counts too


def test_kwargs_order_counts_but_named_argument_order_does_not() -> None:
    def task(x, y=0, **options):
        return x

    def args(*a, **k):
        return argument_fingerprints(task, a, k, task_name="t", is_node=lambda o: None)

    assert args(1, y=2) == args(y=2, x=1)
    assert args(1, p=1, q=2)["options"] != args(1, q=2, p=1)["options"]


def test_defaultdict_default_factory_counts() -> None:
    assert fp(collections.defaultdict(list)) != fp(collections.defaultdict(set))
    assert fp(collections.defaultdict(list)) != fp({})
    assert fp(collections.defaultdict(list, a=[1])) == fp(collections.defaultdict(list, a=[1]))


# ---------------------------------------------------------------- enums


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


def test_enum_members_count_by_class_and_value(tmp_path: pathlib.Path) -> None:
    mod = tmp_path / "hx_enum_value.py"
    values = []
    for value in (1, 2):
        mod.write_text(f"import enum\nclass Level(enum.Enum):\n    LOW = {value}\n")
        script = """
            import hx_enum_value
            from helix_dask.signature import fingerprint_value
            print(fingerprint_value(hx_enum_value.Level.LOW))
        """
        values.append(_run(script, tmp_path))
    assert values[0] != values[1]  # same name, same class name, other value
    assert fp(Level.LOW) == fp(Level.LOW)
    assert fp(Level.LOW) != fp(Level.HIGH)


# ---------------------------------------------------------------- pandas


def test_categorical_ordered_and_category_order_count() -> None:
    plain = pd.Categorical(["a", "b"], categories=["a", "b"])
    ordered = pd.Categorical(["a", "b"], categories=["a", "b"], ordered=True)
    reordered = pd.Categorical(["a", "b"], categories=["b", "a"])
    fingerprints = {fp(pd.Series(c)) for c in (plain, ordered, reordered)}
    assert len(fingerprints) == 3
    assert fp(pd.Series(plain)) == fp(pd.Series(pd.Categorical(["a", "b"])))


def test_index_freq_and_names_count() -> None:
    with_freq = pd.date_range("2024-01-01", periods=3, freq="D")
    without = pd.DatetimeIndex(list(with_freq))
    assert without.freq is None
    assert fp(with_freq) != fp(without)
    assert fp(with_freq) != fp(pd.date_range("2024-01-01", periods=3, freq="D").rename("t"))
    multi = pd.MultiIndex.from_tuples([("a", 1)], names=["k", "n"])
    assert fp(multi) != fp(multi.set_names(["k", "m"]))
    business = pd.date_range("2024-01-01", periods=3, freq="B")
    custom = pd.date_range("2024-01-01", periods=3, freq=pd.offsets.CustomBusinessDay())
    assert fp(business) != fp(custom)


def test_attrs_and_flags_of_frames_and_series_count() -> None:
    frame = pd.DataFrame({"a": [1]})
    tagged = frame.copy()
    tagged.attrs["unit"] = "m"
    assert fp(frame) != fp(tagged)
    series = pd.Series([1.0])
    tagged_series = series.copy()
    tagged_series.attrs["unit"] = "s"
    assert fp(series) != fp(tagged_series)
    assert fp(frame) != fp(frame.set_flags(allows_duplicate_labels=False))


def test_extension_dtypes_that_print_alike_are_told_apart() -> None:
    pytest.importorskip("pyarrow")
    python = pd.Series(["a"], dtype=pd.StringDtype("python"))
    arrow = pd.Series(["a"], dtype=pd.StringDtype("pyarrow"))
    assert str(python.dtype) == str(arrow.dtype)
    assert fp(python) != fp(arrow)


# ---------------------------------------------------------------- numpy


def test_fortran_order_counts_as_a_flag_and_views_hash_like_copies() -> None:
    data = np.arange(24.0).reshape(4, 6)
    fortran = np.asfortranarray(data)
    assert fp(fortran) != fp(data)
    assert fp(fortran) == fp(np.asfortranarray(data.copy()))
    assert fp(data[:, ::2]) == fp(np.ascontiguousarray(data[:, ::2]))
    assert fp(fortran[::2]) == fp(np.ascontiguousarray(fortran[::2]))


def test_byte_order_counts() -> None:
    little = np.arange(4, dtype="<i4")
    assert fp(little) != fp(little.astype(">i4"))
    assert fp(little.astype(">i4")) == fp(np.arange(4, dtype=">i4"))


def test_structured_arrays_count_fields_and_ignore_padding_bytes() -> None:
    aligned = np.dtype([("a", "u1"), ("b", "<f8")], align=True)  # 7 padding bytes
    first = np.zeros(3, dtype=aligned)
    second = np.zeros(3, dtype=aligned)
    second.view(np.uint8).reshape(3, -1)[:, 1:8] = 0xFF  # write garbage into the padding
    assert fp(first) == fp(second)
    renamed = np.zeros(3, dtype=np.dtype([("a", "u1"), ("c", "<f8")], align=True))
    assert fp(first) != fp(renamed)
    sub = np.zeros(2, dtype=np.dtype([("v", "<f8", (2,))]))
    flat = np.zeros(2, dtype=np.dtype([("v", "<f8", (3,))]))
    assert fp(sub.dtype) != fp(flat.dtype)


def test_subarray_dtypes_are_told_apart() -> None:
    assert fp(np.dtype(("<f8", (2,)))) != fp(np.dtype(("<i8", (2,))))


# ---------------------------------------------------------------- objects carrying code


def _module(tmp_path: pathlib.Path, name: str, source: str) -> types.ModuleType:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module(name)


@pytest.fixture
def on_path(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith("hxobj_"):
            sys.modules.pop(name, None)


OBJECTS = """
    import dataclasses, typing
    from sklearn.base import BaseEstimator

    @dataclasses.dataclass
    class Config:
        depth: int
        def __post_init__(self):
            self.depth = self.depth * FACTOR

    class Point(typing.NamedTuple):
        x: int
        def norm(self):
            return abs(self.x) * FACTOR

    class Plain:
        def __init__(self, v):
            self.v = v
        @property
        def doubled(self):
            return self.v * FACTOR

    class Estimator(BaseEstimator):
        def __init__(self, alpha=1.0):
            self.alpha = alpha
        def fit(self, x, y):
            return self * FACTOR

    FACTOR = {factor}
"""


def test_project_objects_count_by_their_class_code(on_path: pathlib.Path) -> None:
    def build(factor: int, name: str) -> list[object]:
        mod = _module(on_path, name, OBJECTS.format(factor=factor))
        return [
            mod.Config(1),
            mod.Point(1),
            mod.Plain(1),
            mod.Estimator(alpha=1.0),
            mod.Plain,
            functools.partial(mod.Plain, 1),
        ]

    # The same class name and module, edited between two imports: only the code differs.
    first = [fp(v) for v in build(2, "hxobj_a")]
    again = [fp(v) for v in build(2, "hxobj_a")]
    edited = [fp(v) for v in build(3, "hxobj_a")]
    assert first == again
    for before, after in zip(first, edited, strict=True):
        assert before != after


@pytest.fixture
def fresh_versions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget cached versions and rule lookups, before and after (an upgrade in between)."""
    import helix_dask._fingerprint_registry as registry

    def forget() -> None:
        _origin.package_versions.cache_clear()
        _origin._library_origin.cache_clear()
        registry._RESOLVED.clear()

    forget()
    yield
    monkeypatch.undo()
    forget()


def test_library_objects_record_their_distribution_version(
    monkeypatch: pytest.MonkeyPatch, fresh_versions: None
) -> None:
    from sklearn.linear_model import Ridge

    import helix_dask._fingerprint_registry as registry

    values = [Ridge(), pd.DataFrame({"a": [1]}), Ridge]
    before = [fp(v) for v in values]
    real = _origin._distribution_version
    monkeypatch.setattr(
        _origin,
        "_distribution_version",
        lambda dist: "99.0" if dist == "scikit-learn" else real(dist),
    )
    _origin.package_versions.cache_clear()
    _origin._library_origin.cache_clear()
    registry._RESOLVED.clear()
    after = [fp(v) for v in values]
    assert before[0] != after[0]  # Ridge()
    assert before[1] == after[1]  # pandas did not change
    assert before[2] != after[2]  # the class Ridge


def test_attribute_bags_fingerprint_by_their_attributes() -> None:
    assert fp(types.SimpleNamespace(a=1, b=2)) == fp(types.SimpleNamespace(b=2, a=1))
    assert fp(types.SimpleNamespace(a=1)) != fp(types.SimpleNamespace(a=2))
    assert fp(argparse.Namespace(lr=0.1)) != fp(argparse.Namespace(lr=0.2))
    assert fp(argparse.Namespace(lr=0.1)) != fp(types.SimpleNamespace(lr=0.1))


def test_slots_classes_fingerprint_and_unset_slots_are_told_apart() -> None:
    class Slotted:
        __slots__ = ("__b", "a")

        def __init__(self, a: int, *b: int | None) -> None:
            self.a = a
            if b:
                self.__b = b[0]

    assert fp(Slotted(1, 2)) == fp(Slotted(1, 2))
    assert fp(Slotted(1, 2)) != fp(Slotted(1, 3))  # the private (mangled) slot counts
    assert fp(Slotted(1)) != fp(Slotted(1, None))


MAIN_SCRIPT = """
    import dataclasses, typing
    from helix_dask.signature import fingerprint_value, code_fingerprint

    @dataclasses.dataclass(frozen=True)
    class Config:
        depth: int
        tags: list[str] = dataclasses.field(default_factory=list)
        def twice(self):
            return self.depth * {factor}

    class Slotted:
        __slots__ = ("a",)
        def __init__(self, a):
            self.a = a

    class Pair(typing.NamedTuple):
        left: int
        right: int = 0

    def task(depth):
        return Config(depth).twice()

    print(fingerprint_value([Config(1), Slotted(2), Pair(1)]), code_fingerprint(task).digest)
"""


def test_classes_defined_in_main_without_a_source_file_fingerprint() -> None:
    # exec'd code: no file to read, so classes count by their members' bytecode.
    def run(factor: int) -> list[str]:
        source = textwrap.dedent(MAIN_SCRIPT).format(factor=factor)
        script = f"exec(compile({source!r}, '<string>', 'exec'))"
        return _run(script).split()

    first, again, edited = run(2), run(2), run(3)
    assert first == again
    assert first[0] != edited[0] and first[1] != edited[1]


# ---------------------------------------------------------------- files


def test_directory_fingerprint_includes_empty_subdirectories(tmp_path: pathlib.Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("1")
    before = file_fingerprint(tmp_path / "data")
    (tmp_path / "data" / "empty").mkdir()
    assert file_fingerprint(tmp_path / "data") != before


def test_directory_fingerprint_follows_symlinked_subdirectories(tmp_path: pathlib.Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.txt").write_text("1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    before = file_fingerprint(tmp_path / "data")
    (tmp_path / "real" / "x.txt").write_text("2")
    assert file_fingerprint(tmp_path / "data") != before


def test_directory_link_cycles_terminate(tmp_path: pathlib.Path) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "a.txt").write_text("1")
    (tmp_path / "data" / "sub" / "up").symlink_to(tmp_path / "data", target_is_directory=True)
    first = file_fingerprint(tmp_path / "data")
    assert file_fingerprint(tmp_path / "data") == first
    (tmp_path / "data" / "sub" / "a.txt").write_text("2")
    assert file_fingerprint(tmp_path / "data") != first


def test_dangling_symlink_in_a_directory_names_the_path(tmp_path: pathlib.Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gone.csv").symlink_to(tmp_path / "missing.csv")
    with pytest.raises(HelixSignatureError, match=r"gone\.csv' is a symbolic link to .*missing"):
        fingerprint_value(File(tmp_path / "data"))


def test_unfingerprintable_project_object_still_names_the_attribute() -> None:
    class Holder:
        def __init__(self) -> None:
            self.gen = (i for i in range(2))

    with pytest.raises(CannotFingerprint, match=r"'generator' at value\.gen"):
        fp(Holder())


def test_generic_alias_annotations_do_not_block_class_fingerprints() -> None:
    @dataclasses.dataclass
    class Typed:
        xs: list[int]
        maybe: typing.Optional[int] = None  # noqa: UP045

    assert fp(Typed([1])) == fp(Typed([1]))
    assert fp(Typed([1])) != fp(Typed([2]))
