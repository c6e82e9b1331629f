"""Specifications for helix_dask.signature: value, file, code and node fingerprints."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import importlib
import importlib.metadata
import itertools
import json
import linecache
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from helix_dask import _files, _origin, _syntax, signature
from helix_dask._errors import HelixSignatureError
from helix_dask.signature import (
    CannotFingerprint,
    File,
    argument_fingerprints,
    code_fingerprint,
    file_fingerprint,
    fingerprint_value,
    is_project_local,
    node_signature,
    register,
    register_lazy,
)

_MODULE_IDS = itertools.count()


class Project:
    """Writes modules into a temporary directory and imports them afresh after each edit."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.prefix = f"hxsig_{os.getpid()}_{next(_MODULE_IDS)}_"
        self.names: list[str] = []

    def write(self, base: str, source: str) -> types.ModuleType:
        """Write ``<prefix><base>.py`` (``PFX_`` in the source becomes the prefix) and import it."""
        name = self.prefix + base
        path = self.root / f"{name}.py"
        path.write_text(textwrap.dedent(source).replace("PFX_", self.prefix))
        # An edit in the same clock tick with the same size would look unchanged to linecache.
        linecache.clearcache()
        return self.reimport(base)

    def reimport(self, base: str) -> types.ModuleType:
        name = self.prefix + base
        if name not in self.names:
            self.names.append(name)
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        return importlib.import_module(name)


@pytest.fixture
def project(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    proj = Project(tmp_path)
    yield proj
    for name in proj.names:
        sys.modules.pop(name, None)


def digest(func: object, **kwargs: object) -> str:
    return code_fingerprint(func, **kwargs).digest  # type: ignore[arg-type]


# ---------------------------------------------------------------- code fingerprints


def test_comment_and_docstring_edits_do_not_change_code_fingerprint(project: Project) -> None:
    mod = project.write(
        "m",
        '''
        def f(x, y):
            """Add things."""
            # a comment
            return x + y * 2
        ''',
    )
    before = code_fingerprint(mod.f)
    mod = project.write(
        "m",
        '''


        def f(x,
              y):
            """Add things, documented at length.

            More words.
            """
            return (x +
                    y * 2)  # another comment
        ''',
    )
    after = code_fingerprint(mod.f)
    assert after.digest == before.digest
    assert after.sources == before.sources


def test_code_edit_changes_code_fingerprint_and_source(project: Project) -> None:
    mod = project.write("m", "def f(x):\n    return x + 1\n")
    before = code_fingerprint(mod.f)
    mod = project.write("m", "def f(x):\n    return x + 2\n")
    after = code_fingerprint(mod.f)
    assert after.digest != before.digest
    name = f"{project.prefix}m.f"
    assert "x + 1" in before.sources[name]
    assert "x + 2" in after.sources[name]


def test_decorators_of_the_fingerprinted_function_do_not_count(project: Project) -> None:
    source = """
        def deco(**options):
            return lambda func: func

        @deco(retries=RETRIES)
        def f(x):
            return x
        """
    first = digest(project.write("m", "RETRIES = 1\n" + textwrap.dedent(source)).f)
    second = digest(project.write("m", "RETRIES = 2\n" + textwrap.dedent(source)).f)
    assert first == second


def test_helper_edit_changes_caller_fingerprint(project: Project) -> None:
    project.write("helpers", "def helper(x):\n    return x * 2\n")
    caller = project.write(
        "caller",
        """
        import PFX_helpers as helpers
        from PFX_helpers import helper

        def by_attribute(x):
            return helpers.helper(x)

        def by_name(x):
            return helper(x)
        """,
    )
    before = {f: code_fingerprint(getattr(caller, f)) for f in ("by_attribute", "by_name")}
    assert f"{project.prefix}helpers.helper" in before["by_name"].sources
    assert f"{project.prefix}helpers.helper" in before["by_attribute"].sources

    project.write("helpers", "def helper(x):\n    return x * 3\n")
    caller = project.reimport("caller")
    for name, fingerprint in before.items():
        after = code_fingerprint(getattr(caller, name))
        assert after.digest != fingerprint.digest, name
        assert "x * 3" in after.sources[f"{project.prefix}helpers.helper"]


def test_unchanged_helper_keeps_caller_fingerprint_across_reimports(project: Project) -> None:
    project.write("helpers", "def helper(x):\n    return x * 2\n")
    caller = project.write(
        "caller", "from PFX_helpers import helper\ndef f(x):\n    return helper(x)\n"
    )
    before = digest(caller.f)
    project.reimport("helpers")
    assert digest(project.reimport("caller").f) == before


def test_redefined_helper_in_a_live_namespace_changes_caller(project: Project) -> None:
    # A notebook cell redefining a helper rebinds the global; callers must see the new one.
    mod = project.write(
        "m",
        """
        def helper(x):
            return x + 1

        def other(x):
            return x - 1

        def f(x):
            return helper(x)
        """,
    )
    before = digest(mod.f)
    mod.helper = mod.other
    assert digest(mod.f) != before


def test_function_local_imports_are_tracked(project: Project) -> None:
    project.write("helpers", "def helper(x):\n    return x * 2\n")
    mod = project.write(
        "m", "def f(x):\n    from PFX_helpers import helper\n    return helper(x)\n"
    )
    before = digest(mod.f)
    project.write("helpers", "def helper(x):\n    return x * 5\n")
    assert digest(mod.f) != before


def test_mutual_recursion_terminates_and_tracks_both_functions(project: Project) -> None:
    source = """
        def is_even(n):
            return True if n == 0 else is_odd(n - 1)

        def is_odd(n):
            return False if n == 0 else is_even(n - OFFSET)
        """
    mod = project.write("m", "OFFSET = 1\n" + textwrap.dedent(source))
    first = code_fingerprint(mod.is_even)
    assert first.digest == digest(mod.is_even)
    assert set(first.sources) == {f"{project.prefix}m.is_even", f"{project.prefix}m.is_odd"}
    mod = project.write("m", "OFFSET = 2\n" + textwrap.dedent(source))
    assert digest(mod.is_even) != first.digest


def test_project_local_class_source_and_method_references_count(project: Project) -> None:
    source = """
        SCALE = {scale}

        class Model:
            def predict(self, x):
                return x * SCALE

        def f(x):
            return Model().predict(x)
        """
    first = code_fingerprint(project.write("m", source.format(scale=2)).f)
    assert f"{project.prefix}m.Model" in first.sources
    assert first.constants[f"{project.prefix}m.SCALE"] == fingerprint_value(2)
    second = code_fingerprint(project.write("m", source.format(scale=3)).f)
    assert second.digest != first.digest


def test_module_constant_change_changes_fingerprint(project: Project) -> None:
    source = "import numpy as np\nTHRESHOLD = {t}\nWEIGHTS = np.array({w})\n"
    source += "def f(x):\n    return x * WEIGHTS > THRESHOLD\n"
    base = code_fingerprint(project.write("m", source.format(t=0.5, w=[1, 2])).f)
    same = code_fingerprint(project.write("m", source.format(t=0.5, w=[1, 2])).f)
    threshold = code_fingerprint(project.write("m", source.format(t=0.6, w=[1, 2])).f)
    weights = code_fingerprint(project.write("m", source.format(t=0.5, w=[1, 3])).f)
    assert same.digest == base.digest
    assert len({base.digest, threshold.digest, weights.digest}) == 3
    assert set(base.constants) == {f"{project.prefix}m.THRESHOLD", f"{project.prefix}m.WEIGHTS"}
    assert base.constants[f"{project.prefix}m.WEIGHTS"] == fingerprint_value(np.array([1, 2]))


def test_constant_reached_through_module_attribute_changes_fingerprint(project: Project) -> None:
    project.write("config", "RATE = 0.1\n")
    caller = project.write(
        "caller", "import PFX_config as config\ndef f(x):\n    return x * config.RATE\n"
    )
    before = code_fingerprint(caller.f)
    assert f"{project.prefix}config.RATE" in before.constants
    project.write("config", "RATE = 0.2\n")
    assert digest(project.reimport("caller").f) != before.digest


def test_unfingerprintable_global_names_global_function_and_fix(project: Project) -> None:
    mod = project.write(
        "m",
        """
        import threading
        LOCK = threading.Lock()

        def f(x):
            with LOCK:
                return x
        """,
    )
    with pytest.raises(
        HelixSignatureError, match=r"global '.*m\.LOCK' used by '.*m\.f'.*untracked=\('LOCK',\)"
    ):
        code_fingerprint(mod.f)
    assert len(digest(mod.f, untracked=("LOCK",))) == 32
    assert len(digest(mod.f, untracked=[f"{project.prefix}m.LOCK"])) == 32


def test_untracked_must_be_a_collection_of_names() -> None:
    with pytest.raises(HelixSignatureError, match=r"untracked=\('LOCK',\)"):
        code_fingerprint(len, untracked="LOCK")


def test_closure_value_change_changes_fingerprint() -> None:
    def make_adder(n):
        def add(x):
            return x + n

        return add

    assert digest(make_adder(1)) == digest(make_adder(1))
    assert digest(make_adder(1)) != digest(make_adder(2))


def test_nested_closures_of_the_same_function_are_told_apart() -> None:
    def compose(f, g):
        def composed(x):
            return f(g(x))

        return composed

    def inc(x):
        return x + 1

    def dec(x):
        return x - 1

    def double(x):
        return x * 2

    first = compose(inc, compose(dec, double))
    second = compose(inc, compose(dec, inc))
    assert digest(first) != digest(second)


def test_unfingerprintable_closure_variable_names_it() -> None:
    lock = threading.Lock()

    def f(x):
        with lock:
            return x

    with pytest.raises(
        HelixSignatureError, match=r"closure variable 'lock'.*untracked=\('lock',\)"
    ):
        code_fingerprint(f)
    assert len(digest(f, untracked=("lock",))) == 32


def test_default_change_changes_fingerprint(project: Project) -> None:
    # The defaults are globals, so the function's source is identical in both versions.
    source = "ALPHA = {a}\nBETA = {b}\n"
    source += "def f(x, alpha=ALPHA, *, beta=BETA):\n    return x * alpha + beta\n"
    base = digest(project.write("m", source.format(a=1, b=2)).f)
    assert digest(project.write("m", source.format(a=1, b=2)).f) == base
    assert digest(project.write("m", source.format(a=5, b=2)).f) != base
    assert digest(project.write("m", source.format(a=1, b=7)).f) != base


def test_third_party_calls_record_package_version(project: Project) -> None:
    import sklearn

    mod = project.write(
        "m",
        """
        import json
        import numpy as np
        import pandas as pd
        from sklearn.linear_model import Ridge

        def f(x):
            frame = pd.DataFrame({"x": np.asarray(x)})
            return json.dumps(Ridge().get_params()), frame
        """,
    )
    fingerprint = code_fingerprint(mod.f)
    # The version, with the digest of the files its installer listed (see
    # test_distribution_identity).
    assert fingerprint.packages["numpy"].partition("+files.")[0] == np.__version__
    assert fingerprint.packages["pandas"].partition("+files.")[0] == pd.__version__
    assert fingerprint.packages["scikit-learn"].partition("+files.")[0] == sklearn.__version__
    assert fingerprint.packages["python"] == sys.version.split()[0]
    assert list(fingerprint.sources) == [f"{project.prefix}m.f"]  # no library source
    assert fingerprint.constants == {}


@pytest.mark.parametrize(
    "top", ["numpy", "pandas", "sklearn", "scipy", "dask", "distributed", "zarr", "yaml", "toolz"]
)
def test_package_lookup_reads_one_directory_and_agrees_with_importlib(top: str) -> None:
    # The fast lookup (the imported module's own site directory) must name the same
    # distributions as importlib's scan of every installed one, or digests would change.
    importlib.import_module(top)
    expected = sorted(set(importlib.metadata.packages_distributions().get(top, [])))
    assert expected, f"{top} should be installed by a distribution here"
    assert sorted(set(_origin._site_distributions(top) or [])) == expected


def test_package_lookup_reads_a_site_directory_once_until_a_distribution_is_installed(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(name: str, module: str) -> None:
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text("")
        meta = tmp_path / f"{name}-1.0.dist-info"
        meta.mkdir()
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (meta / "top_level.txt").write_text(f"{module}\n")
        later = tmp_path.stat().st_mtime_ns + 10**9  # a tick later, however coarse the clock
        os.utime(tmp_path, ns=(later, later))
        importlib.invalidate_caches()
        monkeypatch.setitem(sys.modules, module, None)  # removed from sys.modules afterwards
        del sys.modules[module]
        importlib.import_module(module)

    install("hx-site-one", "hx_site_one")
    install("hx-site-two", "hx_site_two")
    read: list[pathlib.Path] = []
    provided = _origin._provided
    monkeypatch.setattr(_origin, "_provided", lambda meta: read.append(meta) or provided(meta))

    assert _origin._site_distributions("hx_site_one") == ["hx-site-one"]
    assert len(read) == 2  # every distribution of the directory, once
    assert _origin._site_distributions("hx_site_two") == ["hx-site-two"]
    assert len(read) == 2  # the second name is looked up in what was read

    install("hx-site-three", "hx_site_three")
    assert _origin._site_distributions("hx_site_three") == ["hx-site-three"]
    assert len(read) == 5  # the directory changed: read again


def test_package_lookup_falls_back_for_modules_without_a_file() -> None:
    assert _origin._site_distributions("helix_no_such_module_loaded") is None
    assert _origin.package_versions("sys") == (("python", sys.version.split()[0]),)


def _decorate(f):
    return f


@_decorate
def _decorated(x):  # a comment line
    return x


async def _coroutine(x):
    return x


def test_source_of_code_objects_matches_inspect(project: Project) -> None:
    import inspect

    mod = project.write(
        "src",
        """
        import functools

        def outer(a):
            def inner(b):
                return a + b
            return inner

        square = lambda v: v * v  # noqa: E731

        @functools.lru_cache
        def cached(x):
            return x
        """,
    )
    codes = [
        _decorated.__code__,
        _coroutine.__code__,
        mod.outer.__code__,
        mod.outer(1).__code__,
        mod.square.__code__,
        mod.cached.__wrapped__.__code__,
    ]
    for code in codes:
        assert _syntax._code_source(code) == inspect.getsource(code), code.co_name


def test_builtins_are_ignored() -> None:
    def f(xs):
        return len(sorted(xs))

    fingerprint = code_fingerprint(f)
    assert fingerprint.packages == {}
    assert fingerprint.constants == {}


def test_lambdas_nested_functions_partials_and_bound_methods() -> None:
    assert digest(lambda x: x + 1) == digest(lambda x: x + 1)
    assert digest(lambda x: x + 1) != digest(lambda x: x + 2)

    def power(x, exponent):
        return x**exponent

    assert digest(functools.partial(power, exponent=2)) == digest(
        functools.partial(power, exponent=2)
    )
    assert digest(functools.partial(power, exponent=2)) != digest(
        functools.partial(power, exponent=3)
    )

    @dataclasses.dataclass
    class Scaler:
        factor: float

        def scale(self, x):
            return x * self.factor

    assert digest(Scaler(2.0).scale) == digest(Scaler(2.0).scale)
    assert digest(Scaler(2.0).scale) != digest(Scaler(3.0).scale)


def test_callable_instances_use_class_code_and_state() -> None:
    @dataclasses.dataclass
    class Threshold:
        limit: int

        def __call__(self, x):
            return x > self.limit

    assert digest(Threshold(1)) == digest(Threshold(1))
    assert digest(Threshold(1)) != digest(Threshold(2))


def test_code_fingerprint_rejects_non_callables() -> None:
    with pytest.raises(
        HelixSignatureError, match="expects a callable, got 'int'; pass the function"
    ):
        code_fingerprint(3)  # type: ignore[arg-type]


def test_function_without_source_falls_back_to_bytecode_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def build(body: str) -> types.FunctionType:
        namespace: dict[str, object] = {"__name__": "exec_built"}
        exec(compile(textwrap.dedent(body), "<string>", "exec"), namespace)
        return namespace["f"]  # type: ignore[return-value]

    with caplog.at_level(logging.DEBUG, logger="helix_dask.signature"):
        first = code_fingerprint(build('def f(x):\n    "one"\n    return x + 1\n'))
    assert "by its bytecode" in caplog.text
    assert "bytecode fingerprint" in first.sources["exec_built.f"]
    assert digest(build('def f(x):\n    "two"\n    return x + 1\n')) == first.digest
    assert digest(build('def f(x):\n    "one"\n    return x + 2\n')) != first.digest


# ---------------------------------------------------------------- value fingerprints


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Config:
    depth: int
    name: str


def test_distinct_values_have_distinct_fingerprints() -> None:
    values = [
        None, 0, 0.0, -0.0, False, 1, True, "0", b"0", bytearray(b"0"), (0,), [0], {0},
        frozenset({0}), {0: 0}, range(1), slice(0), ..., int, float, 1j, "", (), [],
        Color.RED, Color.BLUE, Config(1, "a"), Config(2, "a"),
        datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 2),
        datetime.timedelta(seconds=1), decimal.Decimal("1.0"), decimal.Decimal("1.00"),
        pathlib.Path("a.csv"), ("a", "bc"), ("ab", "c"), [[1], 2], [1, [2]],
        np.int64(0), np.float32(0), np.dtype("f8"), np.dtype("f4"),
    ]  # fmt: skip
    fingerprints = [fingerprint_value(v) for v in values]
    assert len(set(fingerprints)) == len(values)


def test_float_edge_cases_are_stable() -> None:
    assert fingerprint_value(float("nan")) == fingerprint_value(-float("nan"))
    assert fingerprint_value(0.0) != fingerprint_value(-0.0)
    assert fingerprint_value(float("inf")) != fingerprint_value(float("-inf"))


def test_set_order_does_not_matter_but_dict_insertion_order_does() -> None:
    # pd.DataFrame({"a": .., "b": ..}) takes its column order from the dict.
    assert fingerprint_value({"a": 1, "b": [2]}) != fingerprint_value({"b": [2], "a": 1})
    assert fingerprint_value({"a": 1, "b": [2]}) == fingerprint_value({"a": 1, "b": [2]})
    assert fingerprint_value({3, 1, 2}) == fingerprint_value({2, 3, 1})
    assert fingerprint_value({"a": 1}) != fingerprint_value({"a": 2})


def test_numpy_arrays_differing_in_dtype_shape_or_one_byte_differ() -> None:
    base = np.arange(12, dtype=np.int32)
    flipped = base.copy()
    flipped.view(np.uint8)[17] ^= 1
    variants = [base, base.astype(np.int64), base.astype(np.uint32), base.reshape(3, 4), flipped]
    assert len({fingerprint_value(v) for v in variants}) == len(variants)
    assert fingerprint_value(base) == fingerprint_value(np.arange(12, dtype=np.int32))


def test_large_noncontiguous_arrays_hash_like_their_contiguous_copies() -> None:
    data = np.random.default_rng(0).random((2048, 2048))  # 32 MiB
    for view in (data[::2], data[:, ::3], data.T[::2]):
        assert fingerprint_value(view) == fingerprint_value(np.ascontiguousarray(view))
    # Memory order is observable (and changes float summation order): it counts, as a flag.
    for view in (data.T, np.asfortranarray(data)):
        assert fingerprint_value(view) == fingerprint_value(np.asfortranarray(view))
        assert fingerprint_value(view) != fingerprint_value(np.ascontiguousarray(view))
    assert fingerprint_value(data.T) != fingerprint_value(data)


def test_object_arrays_are_fingerprinted_element_wise() -> None:
    first = np.array(["a", None, 1.5], dtype=object)
    assert fingerprint_value(first) == fingerprint_value(np.array(["a", None, 1.5], dtype=object))
    assert fingerprint_value(first) != fingerprint_value(np.array(["a", None, 2.5], dtype=object))
    bad = np.array([1, threading.Lock()], dtype=object)
    with pytest.raises(CannotFingerprint, match=r"'_thread.lock' at value\[1\]"):
        fingerprint_value(bad)


def test_masked_arrays_include_the_mask() -> None:
    first = np.ma.MaskedArray([1, 2, 3], mask=[0, 1, 0])
    second = np.ma.MaskedArray([1, 2, 3], mask=[0, 0, 1])
    assert fingerprint_value(first) != fingerprint_value(second)


def test_pandas_fingerprint_covers_index_columns_dtypes_and_values() -> None:
    def frame() -> pd.DataFrame:
        return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=["r1", "r2"])

    base = fingerprint_value(frame())
    assert fingerprint_value(frame()) == base
    renamed_row, renamed_col, retyped, edited = frame(), frame(), frame(), frame()
    renamed_row.index = ["r1", "r3"]
    renamed_col.columns = ["a", "c"]
    retyped["a"] = retyped["a"].astype("float64")
    edited.loc["r2", "b"] = "z"
    others = {fingerprint_value(f) for f in (renamed_row, renamed_col, retyped, edited)}
    assert len(others) == 4 and base not in others

    series = pd.Series([1.0, 2.0], name="s")
    assert fingerprint_value(series) != fingerprint_value(series.rename("t"))
    assert fingerprint_value(pd.Index([1, 2])) != fingerprint_value(pd.Index([1, 3]))
    categorical = pd.Series(pd.Categorical(["a", "b", "a"]))
    assert fingerprint_value(categorical) != fingerprint_value(pd.Series(["a", "b", "a"]))
    multi = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)])
    assert fingerprint_value(multi) != fingerprint_value(multi[::-1])


def test_sklearn_estimators_cover_params_and_fitted_state() -> None:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.arange(20.0).reshape(10, 2)
    y = np.arange(10.0)
    assert fingerprint_value(Ridge(alpha=1.0)) == fingerprint_value(Ridge(alpha=1.0))
    assert fingerprint_value(Ridge(alpha=1.0)) != fingerprint_value(Ridge(alpha=2.0))
    fitted = fingerprint_value(Ridge().fit(x, y))
    assert fitted != fingerprint_value(Ridge())
    assert fitted == fingerprint_value(Ridge().fit(x, y))
    assert fitted != fingerprint_value(Ridge().fit(x, y + 1))
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=3.0))
    assert fingerprint_value(pipeline) != fingerprint_value(
        make_pipeline(StandardScaler(), Ridge())
    )
    forest = RandomForestRegressor(n_estimators=3, random_state=0)
    assert fingerprint_value(forest.fit(x, y)) == fingerprint_value(
        RandomForestRegressor(n_estimators=3, random_state=0).fit(x, y)
    )


def test_functions_as_values_use_code_fingerprints() -> None:
    def f(x):
        return x + 1

    assert fingerprint_value([f]) == fingerprint_value([f])
    assert fingerprint_value(functools.partial(f, 1)) != fingerprint_value(functools.partial(f, 2))
    assert fingerprint_value(lambda x: x) != fingerprint_value(lambda x: -x)
    assert fingerprint_value(np.mean) != fingerprint_value(np.sum)
    assert fingerprint_value(len) != fingerprint_value(abs)


def test_unfingerprintable_value_names_type_and_path() -> None:
    value = [{"x": (i for i in range(3))}]
    with pytest.raises(CannotFingerprint, match=r"value of type 'generator' at args\[0\]\['x'\]"):
        fingerprint_value(value, path="args")
    with pytest.raises(CannotFingerprint, match=r"'_io.BufferedReader' at value"):
        with open(__file__, "rb") as handle:
            fingerprint_value(handle)


def test_self_referencing_values_are_rejected() -> None:
    loop: list[object] = [1]
    loop.append(loop)
    with pytest.raises(CannotFingerprint, match=r"contains itself"):
        fingerprint_value(loop)


def test_registered_and_lazily_registered_types(project: Project) -> None:
    class Point:
        def __init__(self, x: int) -> None:
            self.x = x
            self.lock = threading.Lock()

    with pytest.raises(CannotFingerprint, match=r"'_thread.lock' at value\.lock"):
        fingerprint_value(Point(1))

    @register(Point)
    def _(obj: Point, h: signature.Hasher) -> None:
        h.tag("Point")
        h.nested(obj.x, ".x")

    assert fingerprint_value(Point(1)) != fingerprint_value(Point(2))

    mod = project.write("lazylib", "class Thing:\n    def __init__(self, v):\n        self.v = v\n")
    calls: list[str] = []

    @register_lazy(mod.__name__)
    def _load() -> None:
        calls.append("loaded")

        @register(mod.Thing)
        def _(obj: object, h: signature.Hasher) -> None:
            h.tag("Thing")
            h.nested(obj.v, ".v")  # type: ignore[attr-defined]

    assert calls == []
    assert fingerprint_value(mod.Thing(1)) != fingerprint_value(mod.Thing(2))
    assert calls == ["loaded"]


def test_dask_tokenize_is_used_only_if_fingerprintable() -> None:
    class Tokenized:
        def __init__(self, token: object) -> None:
            self.token = token

        def __dask_tokenize__(self) -> object:
            return self.token

    assert fingerprint_value(Tokenized(("a", 1))) != fingerprint_value(Tokenized(("a", 2)))
    with pytest.raises(CannotFingerprint, match=r"'object' at value\.__dask_tokenize__\(\)"):
        fingerprint_value(Tokenized(object()))


def test_is_project_local() -> None:
    assert not is_project_local(json)
    assert not is_project_local(np)
    assert not is_project_local(signature)  # helix_dask is the library, not the project
    assert is_project_local(sys.modules[__name__])
    assert is_project_local(sys.modules["__main__"])


SUBPROCESS_MODULE = """
import numpy as np
import pandas as pd

SCALE = 2.5

def helper(x):
    return x * SCALE

def task(x, y=3):
    return helper(x) + np.sum(y)

VALUES = {
    "dict": {f"key{i}": i for i in range(30)},
    "set": {f"item{i}" for i in range(60)},
    "array": np.arange(12.0).reshape(3, 4),
    "frame": pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}, index=["r1", "r2"]),
}
"""

SUBPROCESS_SCRIPT = """
import json, sys
from helix_dask.signature import code_fingerprint, fingerprint_value
mod = __import__(sys.argv[1])
out = {k: fingerprint_value(v) for k, v in mod.VALUES.items()}
out["code"] = code_fingerprint(mod.task).digest
print(json.dumps(out, sort_keys=True))
"""


def test_signatures_identical_across_processes(project: Project) -> None:
    mod = project.write("shared", SUBPROCESS_MODULE)
    expected = {k: fingerprint_value(v) for k, v in mod.VALUES.items()}
    expected["code"] = digest(mod.task)
    repo = pathlib.Path(signature.__file__).resolve().parents[1]
    runs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(project.root), str(repo)])
        runs.append(
            subprocess.Popen(
                [sys.executable, "-c", SUBPROCESS_SCRIPT, mod.__name__],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert json.loads(out) == expected


# ---------------------------------------------------------------- files


@pytest.fixture
def trust_fresh_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache digests of just-written files too, so the stat comparison itself is exercised."""
    monkeypatch.setattr(_files, "_RACY_WINDOW_NS", 0)


@pytest.fixture
def read_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = _files._hash_file_content

    def counting(path: str) -> str:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(_files, "_hash_file_content", counting)
    return reads


def _wait_for_clock_tick(directory: pathlib.Path, after_ns: int) -> None:
    """Poll until a fresh write gets a ctime later than ``after_ns`` (file clocks are coarse)."""
    probe = directory / "clock-probe"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        probe.write_bytes(b"x")
        if probe.stat().st_ctime_ns > after_ns:
            return
    pytest.fail("the file system clock did not advance within 5 s")


def test_file_fingerprint_is_content_based(tmp_path: pathlib.Path) -> None:
    first, second, third = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    first.write_text("x,y\n1,2\n")
    second.write_text("x,y\n1,2\n")
    third.write_text("x,y\n1,3\n")
    assert file_fingerprint(first) == file_fingerprint(str(second))
    assert file_fingerprint(first) != file_fingerprint(third)
    assert fingerprint_value(File(first)) == fingerprint_value(File(second))
    assert fingerprint_value(File(first)) != fingerprint_value(File(third))


def test_large_file_is_streamed_in_blocks(tmp_path: pathlib.Path) -> None:
    import xxhash

    data = np.random.default_rng(1).bytes(9 * 1024 * 1024 + 7)  # crosses two 4 MiB blocks
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert file_fingerprint(path) == xxhash.xxh3_128(data).hexdigest()


def test_missing_file_says_path_and_fix(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(
        HelixSignatureError, match=r"nope\.csv' does not exist; create it or fix the path"
    ):
        file_fingerprint(missing)
    with pytest.raises(HelixSignatureError, match="does not exist"):
        fingerprint_value(File(missing))


def test_file_rewrite_restoring_size_and_mtime_is_detected(
    tmp_path: pathlib.Path, trust_fresh_files: None, read_counter: list[str]
) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"content A")
    first_stat = path.stat()
    first = file_fingerprint(path)
    _wait_for_clock_tick(tmp_path, first_stat.st_ctime_ns)
    path.write_bytes(b"content B")  # same size
    os.utime(path, ns=(first_stat.st_atime_ns, first_stat.st_mtime_ns))
    assert path.stat().st_size == first_stat.st_size
    assert path.stat().st_mtime_ns == first_stat.st_mtime_ns
    assert file_fingerprint(path) != first
    assert len(read_counter) == 2


def test_stat_cache_avoids_rereading(
    tmp_path: pathlib.Path, trust_fresh_files: None, read_counter: list[str]
) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    first = file_fingerprint(path)
    assert file_fingerprint(path) == first
    assert fingerprint_value(File(path)) == fingerprint_value(File(path))
    assert read_counter == [str(path)]

    _wait_for_clock_tick(tmp_path, path.stat().st_ctime_ns)
    path.write_text("a,b\n1,3\n")
    assert file_fingerprint(path) != first
    assert len(read_counter) == 2


def test_recently_modified_files_are_not_served_from_cache(
    tmp_path: pathlib.Path, read_counter: list[str]
) -> None:
    # Within the racy window a rewrite can share every timestamp with the cached version.
    path = tmp_path / "fresh.csv"
    path.write_text("a\n")
    file_fingerprint(path)
    file_fingerprint(path)
    assert len(read_counter) == 2


def test_directory_fingerprint_covers_names_and_contents(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("1")
    (root / "sub" / "b.txt").write_text("2")
    first = file_fingerprint(root)
    (root / "sub" / "b.txt").write_text("3")
    edited = file_fingerprint(root)
    (root / "sub" / "b.txt").rename(root / "sub" / "c.txt")
    renamed = file_fingerprint(root)
    assert len({first, edited, renamed}) == 3
    assert fingerprint_value(File(root)) == fingerprint_value(File(root))


def test_file_is_pathlike_picklable_and_compares_by_absolute_path(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("x\n1\n")
    f = File("data.csv")
    assert repr(f) == "File('data.csv')"
    assert os.fspath(f) == f.path == "data.csv"
    assert f == File(tmp_path / "data.csv")
    assert hash(f) == hash(File(str(tmp_path / "data.csv")))
    assert pickle.loads(pickle.dumps(f)) == f
    assert pd.read_csv(f)["x"].tolist() == [1]
    with open(f) as handle:
        assert handle.readline() == "x\n"


# ---------------------------------------------------------------- node signatures


def test_node_signature_changes_with_each_input() -> None:
    base = {"name": "fit", "code": "c0", "args": {"a": "1", "b": "2"}, "parents": ["p", "q"]}
    signature_ = node_signature(**base)
    assert node_signature(**{**base, "args": {"b": "2", "a": "1"}}) == signature_
    variants = [
        {"name": "fit2"},
        {"code": "c1"},
        {"args": {"a": "1", "b": "3"}},
        {"args": {"a": "1", "c": "2"}},
        {"parents": ["q", "p"]},
        {"parents": ["p"]},
    ]
    assert signature_ not in {node_signature(**{**base, **v}) for v in variants}


def test_node_signature_is_stable_across_releases() -> None:
    """Stored artifacts are found by signature: the digest of fixed inputs never changes."""
    got = node_signature(name="fit", code="c0", args={"b": "2", "a": "1"}, parents=["p", "q"])
    assert got == "0edb7a087dd72da28effb8b1c0c70bf4"


def test_node_signature_rejects_non_string_parts() -> None:
    with pytest.raises(
        HelixSignatureError, match=r"for parents\[0\] of 'fit'; pass hex digest strings"
    ):
        node_signature(name="fit", code="c", args={}, parents=[None])  # type: ignore[list-item]


class FakeNode:
    def __init__(self, key: str) -> None:
        self.key = key


def _is_node(obj: object) -> str | None:
    return f"sig-{obj.key}" if isinstance(obj, FakeNode) else None


def test_argument_fingerprints_bind_arguments_by_name() -> None:
    def task(x, y=2, *rest, **options):
        return x

    by_position = argument_fingerprints(task, (1, 5), {}, task_name="t", is_node=_is_node)
    by_keyword = argument_fingerprints(task, (), {"y": 5, "x": 1}, task_name="t", is_node=_is_node)
    assert by_position == by_keyword
    # Parameters left out count with their defaults (empty for *rest and **options).
    assert set(by_position) == {"x", "y", "rest", "options"}
    assert by_position["x"] == fingerprint_value(1)
    assert by_position["rest"] == fingerprint_value(())
    extra = argument_fingerprints(task, (1, 2, 3), {"k": 4}, task_name="t", is_node=_is_node)
    assert set(extra) == {"x", "y", "rest", "options"}


def test_upstream_nodes_contribute_their_signature_even_when_nested() -> None:
    def task(data, params):
        return data

    def fingerprints(data: object) -> dict[str, str]:
        return argument_fingerprints(task, (data, {}), {}, task_name="t", is_node=_is_node)

    assert fingerprints(FakeNode("a")) == fingerprints(FakeNode("a"))
    assert fingerprints(FakeNode("a")) != fingerprints(FakeNode("b"))
    nested = fingerprints([1, {"x": FakeNode("a")}])
    assert nested == fingerprints([1, {"x": FakeNode("a")}])
    assert nested != fingerprints([1, {"x": FakeNode("b")}])


def test_unfingerprintable_argument_names_task_and_argument() -> None:
    def featurize(rows, scale=1):
        return rows

    with pytest.raises(
        HelixSignatureError,
        match=r"argument 'rows' of task 'featurize' is a value of type 'generator' at rows\[1\].*"
        r"or mark the task deterministic=False",
    ):
        argument_fingerprints(
            featurize, ([1, (r for r in [])],), {}, task_name="featurize", is_node=_is_node
        )


def test_arguments_not_matching_the_signature_are_reported() -> None:
    def task(x):
        return x

    with pytest.raises(
        HelixSignatureError, match=r"task 't' was called with arguments that do not match"
    ):
        argument_fingerprints(task, (1, 2), {}, task_name="t", is_node=_is_node)
