"""Specifications: a code digest follows all the code and state that static analysis can see.

State outside definitions, code reached through imports not done yet, namespace packages,
dispatch tables and wrappers; and no more than that: names that are local are not globals, and
cosmetic edits keep the digest.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import itertools
import json
import linecache
import os
import pathlib
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator

import pytest

from helix_dask._errors import HelixSignatureError
from helix_dask.signature import argument_fingerprints, code_fingerprint

_IDS = itertools.count()
REPO = pathlib.Path(code_fingerprint.__code__.co_filename).resolve().parents[1]


class Project:
    """Modules in a temporary directory, written and imported afresh (``PFX_`` is the prefix)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.prefix = f"hxtrack_{os.getpid()}_{next(_IDS)}_"

    def path(self, base: str) -> pathlib.Path:
        return self.root / f"{self.prefix}{base}.py"

    def write(self, base: str, source: str, *, load: bool = True) -> types.ModuleType | None:
        target = self.root / f"{self.prefix}{base}.py"  # "ns/sub": a namespace package
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source).replace("PFX_", self.prefix))
        linecache.clearcache()
        self.forget()
        return self.load(base) if load else None

    def load(self, base: str) -> types.ModuleType:
        importlib.invalidate_caches()
        return importlib.import_module(self.prefix + base.replace("/", "."))

    def forget(self) -> None:
        for name in [n for n in sys.modules if n.startswith(self.prefix)]:
            del sys.modules[name]


@pytest.fixture
def project(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    proj = Project(tmp_path)
    yield proj
    proj.forget()


def digest(func: object) -> str:
    return code_fingerprint(func).digest  # type: ignore[arg-type]


# ---------------------------------------------------------------- state outside definitions


def test_class_attribute_assigned_after_the_class_changes_its_users(project: Project) -> None:
    source = """
        class Thresholds:
            LEVEL = 3

        Thresholds.LEVEL = {level}

        def flag(x):
            return x > Thresholds.LEVEL
    """
    first = digest(project.write("m", source.format(level=9)).flag)
    assert digest(project.write("m", source.format(level=9)).flag) == first
    assert digest(project.write("m", source.format(level=8)).flag) != first


def test_function_attribute_assigned_after_the_def_changes_its_callers(project: Project) -> None:
    source = """
        def helper(x):
            return x * helper.factor

        helper.factor = {factor}

        def task(x):
            return helper(x)
    """
    first = digest(project.write("m", source.format(factor=7)).task)
    assert digest(project.write("m", source.format(factor=7)).task) == first
    assert digest(project.write("m", source.format(factor=8)).task) != first


TWICE = """
    class Model:
        def predict(self, x):
            return x + {dead}

    class Model:
        def predict(self, x):
            return x * {live}

    def task(x):
        return Model().predict(x)
"""


def test_of_two_definitions_of_a_class_the_one_that_runs_counts(project: Project) -> None:
    first = digest(project.write("m", TWICE.format(dead=1, live=2)).task)
    assert digest(project.write("m", TWICE.format(dead=5, live=2)).task) == first
    assert digest(project.write("m", TWICE.format(dead=1, live=3)).task) != first


def test_of_two_method_less_definitions_the_live_members_count(project: Project) -> None:
    source = """
        class Limits:
            HIGH = {dead}

        class Limits:
            HIGH = {live}

        def task(x):
            return min(x, Limits.HIGH)
    """
    first = digest(project.write("m", source.format(dead=1, live=2)).task)
    assert digest(project.write("m", source.format(dead=1, live=3)).task) != first


def _reload_in_place(module: types.ModuleType, path: pathlib.Path) -> None:
    """What notebook autoreload does: run the new source, then patch old objects in place."""
    fresh: dict[str, object] = {"__name__": module.__name__}
    exec(compile(path.read_text(), str(path), "exec"), fresh)
    for name, new in fresh.items():
        old = getattr(module, name, None)
        if isinstance(old, types.FunctionType) and isinstance(new, types.FunctionType):
            old.__code__ = new.__code__
        elif isinstance(old, type) and isinstance(new, type):
            for attr, value in vars(new).items():
                current = vars(old).get(attr)
                if isinstance(current, types.FunctionType) and isinstance(
                    value, types.FunctionType
                ):
                    current.__code__ = value.__code__
                elif attr not in ("__dict__", "__weakref__", "__doc__"):
                    setattr(old, attr, value)


def test_in_place_updates_do_not_serve_a_cached_digest(project: Project) -> None:
    source = """
        class Scaler:
            OFFSET = {offset}

            def scale(self, x):
                return x * {factor}

        def helper(x):
            return x - {factor}

        def task(x):
            return Scaler().scale(helper(x))
    """
    mod = project.write("m", source.format(offset=0, factor=2))
    assert mod is not None
    before = digest(mod.task), digest(mod.Scaler)
    project.write("m", source.format(offset=0, factor=3), load=False)
    _reload_in_place(mod, project.path("m"))
    after = digest(mod.task), digest(mod.Scaler)
    assert after[0] != before[0] and after[1] != before[1]
    fresh = project.load("m")
    assert (digest(fresh.task), digest(fresh.Scaler)) == after
    project.write("m", source.format(offset=1, factor=3), load=False)
    _reload_in_place(mod, project.path("m"))
    assert digest(mod.Scaler) != after[1]


# ---------------------------------------------------------------- code reached at run time


def test_local_import_of_a_project_module_not_imported_yet(project: Project) -> None:
    project.write("helpers", "def g(x):\n    return x + 1\n", load=False)
    mod = project.write("m", "def task(x):\n    from PFX_helpers import g\n    return g(x)\n")
    assert mod is not None and project.prefix + "helpers" not in sys.modules
    cold = digest(mod.task)
    project.load("helpers")
    assert digest(mod.task) == cold  # identical code, identical digest either way
    project.write("helpers", "def g(x):\n    return x + 2\n", load=False)
    mod = project.write("m", "def task(x):\n    from PFX_helpers import g\n    return g(x)\n")
    assert mod is not None and digest(mod.task) != cold


def test_local_import_of_a_whole_project_module(project: Project) -> None:
    project.write("helpers", "def g(x):\n    return x + 1\n", load=False)
    source = "def task(x):\n    import PFX_helpers\n    return PFX_helpers.g(x)\n"
    cold = digest(project.write("m", source).task)
    project.write("helpers", "def g(x):\n    return x + 2\n", load=False)
    assert digest(project.write("m", source).task) != cold


def test_local_import_of_a_library_not_imported_yet_records_its_version(
    tmp_path: pathlib.Path,
) -> None:
    # A fresh process: the library is not imported, and the full scan of installed
    # distributions must not be needed to name its version.
    script = """
        import json, sys
        from helix_dask import _origin
        from helix_dask.signature import code_fingerprint

        def scan():
            raise AssertionError("packages_distributions() scan")

        _origin._distributions = scan

        def task(text):
            import threadpoolctl
            return threadpoolctl.threadpool_info()

        found = code_fingerprint(task).packages
        print(json.dumps({"packages": found, "imported": "threadpoolctl" in sys.modules}))
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    version = importlib.metadata.version("threadpoolctl")
    assert out["imported"] is False
    # The version, with the digest of the files its installer listed.
    assert out["packages"].keys() == {"threadpoolctl"}
    assert out["packages"]["threadpoolctl"].partition("+files.")[0] == version


def test_namespace_packages_are_followed_like_regular_packages(project: Project) -> None:
    source = """
        import PFX_ns.sub

        def task(x):
            return PFX_ns.sub.g(x)
    """
    project.write("ns/sub", "def g(x):\n    return x + 1\n", load=False)
    assert not (project.root / f"{project.prefix}ns" / "__init__.py").exists()
    first = digest(project.write("m", source).task)
    project.write("ns/sub", "def g(x):\n    return x + 2\n", load=False)
    assert digest(project.write("m", source).task) != first


def test_singledispatch_implementations_count(project: Project) -> None:
    source = """
        import functools

        @functools.singledispatch
        def describe(x):
            return "thing"

        @describe.register
        def _(x: int):
            return "int {n}"

        def task(x):
            return describe(x)
    """
    first = digest(project.write("m", source.format(n=1)).task)
    assert digest(project.write("m", source.format(n=1)).task) == first
    assert digest(project.write("m", source.format(n=2)).task) != first


def test_vectorized_project_helpers_count(project: Project) -> None:
    source = """
        import numpy as np

        def clip(x):
            return min(x, {n})

        vclip = np.vectorize(clip)

        def task(xs):
            return vclip(xs)
    """
    first = digest(project.write("m", source.format(n=1)).task)
    assert digest(project.write("m", source.format(n=2)).task) != first


def test_class_based_decorators_count_with_the_function_they_wrap(project: Project) -> None:
    source = """
        import functools

        class logged:
            def __init__(self, func):
                functools.update_wrapper(self, func)

            def __call__(self, *args):
                return self.__wrapped__(*args) {deco}

        @logged
        def helper(x):
            return x {body}

        def task(x):
            return helper(x)
    """
    first = digest(project.write("m", source.format(deco="+ 0", body="+ 1")).task)
    assert digest(project.write("m", source.format(deco="+ 0", body="+ 1")).task) == first
    assert digest(project.write("m", source.format(deco="+ 0", body="+ 2")).task) != first
    assert digest(project.write("m", source.format(deco="- 0", body="+ 1")).task) != first


def test_a_project_module_used_as_a_value_counts_whole(project: Project) -> None:
    models = "def linear(x):\n    return x * {n}\n\nWEIGHT = 1\n"
    source = """
        import PFX_models as models

        def task(name, x):
            return getattr(models, name)(x)

        def factory():
            module = models
            def build(name):
                return getattr(module, name)
            return build
    """
    project.write("models", models.format(n=1), load=False)
    mod = project.write("m", source)
    first, closure = digest(mod.task), digest(mod.factory())
    project.write("models", models.format(n=2), load=False)
    mod = project.write("m", source)
    assert digest(mod.task) != first
    assert digest(mod.factory()) != closure


# ---------------------------------------------------------------- precision


def test_an_argument_equal_to_its_default_gives_the_same_signature() -> None:
    def fit(x, C=1.0, *, penalty="l2"):
        return x

    def args(*a, **k):
        return argument_fingerprints(fit, a, k, task_name="fit", is_node=lambda o: None)

    assert args(1) == args(1, C=1.0) == args(1, 1.0, penalty="l2")
    assert args(1) != args(1, C=2.0)


SHADOWED = """
    import threading

    x = threading.Lock()
    item = threading.Lock()
    handle = threading.Lock()
    err = threading.Lock()
    n = threading.Lock()
    total = threading.Lock()

    def task(x, values):
        total = 0
        for item in values:
            total += item
        with open(__file__) as handle:
            handle.read(0)
        try:
            pass
        except ValueError as err:
            print(err)
        squares = [n * n for n in values]
        if (size := len(values)) > 0:
            total += size
        return x + total + sum(squares)

    class Model:
        def fit(self, x, values):
            return task(x, values)

        def score(self, values):
            return [n for n in values]
"""


def test_globals_shadowed_by_local_names_are_neither_tracked_nor_blamed(
    project: Project,
) -> None:
    mod = project.write("m", SHADOWED)
    assert mod is not None
    assert digest(mod.task) == digest(mod.task)
    assert digest(mod.Model().fit) == digest(mod.Model().fit)


def test_a_global_that_is_really_read_is_still_blamed(project: Project) -> None:
    source = """
        import threading
        lock = threading.Lock()

        class C:
            def f(self):
                return lock
    """
    mod = project.write("m", source)
    with pytest.raises(HelixSignatureError, match=r"global '.*m\.lock' used by .*; pass it"):
        digest(mod.C)


def test_reordering_definitions_and_cosmetic_edits_keep_digests(project: Project) -> None:
    first = project.write(
        "m",
        """
        import dataclasses

        RATE = 2

        def helper(x):
            return x * RATE

        @dataclasses.dataclass
        class Config:
            depth: int = 3

            def scaled(self):
                return helper(self.depth)

        def task(x):
            return Config(x).scaled()
        """,
    )
    assert first is not None
    before = digest(first.task), digest(first.Config)
    second = project.write(
        "m",
        '''
        """A module, documented now."""
        import dataclasses


        def task(x):
            """Run it."""
            return Config(x).scaled()  # comment


        @dataclasses.dataclass
        class Config:
            """Settings."""

            depth: int = 3

            def scaled(self):
                return helper(
                    self.depth
                )


        def helper(x):
            return x * RATE


        RATE = 2
        ''',
    )
    assert second is not None
    assert (digest(second.task), digest(second.Config)) == before


SUBPROCESS = """
    import dataclasses, enum, functools, json, sys
    from helix_dask.signature import code_fingerprint, fingerprint_value

    class Kind(enum.Enum):
        A = "a"
        B = "b"

    @dataclasses.dataclass
    class Config:
        kinds: frozenset = frozenset({Kind.A, Kind.B})
        names: tuple = ("x", "y", "z")

    @functools.singledispatch
    def show(x):
        return str(x)

    @show.register
    def _(x: int):
        return "int"

    @show.register
    def _(x: float):
        return "float"

    def task(x):
        return show(Config()), Kind.A, sys.modules[__name__]

    out = {"code": code_fingerprint(task).digest, "value": fingerprint_value([Config(), Kind.B])}
    print(json.dumps(out))
"""


def test_digests_of_classes_and_dispatch_tables_identical_across_processes(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "hxtrack_shared.py").write_text(textwrap.dedent(SUBPROCESS))
    outputs = set()
    for seed in ("1", "2024"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONDONTWRITEBYTECODE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
        done = subprocess.run(
            [sys.executable, "-c", "import hxtrack_shared"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_partial_of_a_project_class_counts_by_the_class_code(project: Project) -> None:
    source = "class Model:\n    def fit(self):\n        return {n}\n"
    first = digest(functools.partial(project.write("m", source.format(n=1)).Model))
    assert digest(functools.partial(project.write("m", source.format(n=2)).Model)) != first
