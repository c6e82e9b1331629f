"""Adversarial specifications: after any change that changes what a fresh run computes, the
next run never loads the old result.

Each attack runs a workflow, changes one thing (code on disk, a value in a module, an argument
that a shallow fingerprint would miss, the environment), runs again, and checks the result
against a plain call of the current code; where it matters, that the changed task ran again.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
from conftest import helix_client

import helix_dask as hx


def _add_path(path: str) -> None:
    if path not in sys.path:
        sys.path.insert(0, path)


# ---------------------------------------------------------------- long-lived worker processes

STATE_EDITS = {
    "module constant": ("OFFSET = 1", "OFFSET = 5"),
    "helper default": ("def shifted(x, by=1):", "def shifted(x, by=5):"),
    "class attribute": ("    STEP = 1", "    STEP = 5"),
    "dict item": ('TABLE = {"k": 1}', 'TABLE = {"k": 5}'),
    "closure cell": ("add = make_adder(1)", "add = make_adder(5)"),
    "helper constant": ("BIAS = 1", "BIAS = 5"),
    "memoized helper": ("return 1  # memoized", "return 5  # memoized"),
}

STATE_SOURCE = """
import functools

import helix_dask as hx

OFFSET = 1
TABLE = {"k": 1}


class Stepper:
    STEP = 1


def shifted(x, by=1):
    return x + by


def make_adder(k):
    def adder(x):
        return x + k

    return adder


add = make_adder(1)


@hx.task
def closure_cell(x):
    return add(x)


BIAS = 1


def biased(x):
    return x + BIAS


@hx.task
def helper_constant(x):
    return biased(x)


@functools.lru_cache
def step():
    return 1  # memoized


@hx.task
def memoized_helper(x):
    return x + step()


@hx.task
def module_constant(x):
    return x + OFFSET


@hx.task
def helper_default(x):
    return shifted(x)


@hx.task
def class_attribute(x):
    return x + Stepper.STEP


@hx.task
def dict_item(x):
    return x + TABLE["k"]
"""


@pytest.mark.parametrize("edit", sorted(STATE_EDITS))
def test_a_worker_holding_old_module_state_never_stores_its_result(
    processes_cluster, threads_cluster, tmp_path: Path, module_factory: Callable, edit: str
) -> None:
    # Worker processes imported the module before the user edited a value in it (no code
    # changed): they compute with the old value under the new signature. That result must
    # not be kept: a fresh run (threads, which see the new module) gets the new value.
    name = f"attack_state_{edit.replace(' ', '_')}"
    task = edit.replace(" ", "_")
    mod = module_factory(name, STATE_SOURCE)
    store = tmp_path / "store"
    with helix_client(processes_cluster, store, policy="all") as client:
        client.run(_add_path, str(tmp_path / "usercode"))
        client.run(importlib.import_module, name)  # every worker holds the old values
        assert getattr(mod, task)(10).compute() == 11
        old, new = STATE_EDITS[edit]
        mod = module_factory(name, STATE_SOURCE.replace(old, new))
        # What plain Dask computes here: the old value wherever a worker reads it from its
        # own module (a function pickled by value brings the client's globals along).
        assert getattr(mod, task)(10).compute() in (11, 15)
        hx.last_run(client)
    with helix_client(threads_cluster, store, policy="all") as client:
        assert getattr(mod, task)(10).compute() == 15


# ---------------------------------------------------------------- the environment

ENV_SOURCE = """
import os
import time

import helix_dask as hx
from conftest import log_call


def mode():
    return os.environ.get("HELIX_ATTACK_MODE", "plain")


@hx.task
def greet(name, check):
    log_call("greet")
    time.sleep(0.1)  # costlier than a load: an unchanged result is loaded
    if not check:
        return name  # the first call reads nothing from the environment
    return f"{name}:{mode()}:{'HELIX_ATTACK_FLAG' in os.environ}"
"""


def test_environment_variables_read_by_project_code_are_verified_before_reuse(
    threaded_client, calls, module_factory: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = module_factory("attack_env", ENV_SOURCE)
    monkeypatch.delenv("HELIX_ATTACK_FLAG", raising=False)
    monkeypatch.setenv("HELIX_ATTACK_MODE", "a")
    assert mod.greet("x", False).compute() == "x"  # traced: reads no variable
    assert mod.greet("x", True).compute() == "x:a:False"  # not traced again: still recorded
    assert mod.greet("x", True).compute() == "x:a:False"
    assert calls.take() == {"greet": 2}
    monkeypatch.setenv("HELIX_ATTACK_MODE", "b")
    assert mod.greet("x", True).compute() == "x:b:False"
    monkeypatch.setenv("HELIX_ATTACK_FLAG", "")  # a variable only tested for presence
    assert mod.greet("x", True).compute() == "x:b:True"
    assert calls.take() == {"greet": 2}
    assert mod.greet("x", True).compute() == "x:b:True"
    assert mod.greet("x", False).compute() == "x"
    assert calls.take() == {}


# ---------------------------------------------------------------- source on disk, code in memory

UNRELOADED_TASK = """
import helix_dask as hx
from attack_unreloaded_helper import bump


@hx.task
def bumped(x):
    return bump(x)
"""


def test_a_module_saved_but_not_reloaded_never_signs_its_old_code_as_the_new(
    threaded_client, module_factory: Callable
) -> None:
    # A notebook user saves an edit of a helper without reloading it: this process still runs
    # the old code, while the file holds the new. What it computes must not be stored as
    # what the new code computes (a fresh process would load it).
    helper = module_factory("attack_unreloaded_helper", "def bump(x):\n    return x + 1\n")
    mod = module_factory("attack_unreloaded_task", UNRELOADED_TASK)
    path = Path(helper.__file__)
    path.write_text("def bump(x):\n    return x + 2\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert mod.bumped(1).compute() == 2  # the old code, as plain Python runs it here
    hx.last_run(threaded_client)
    module_factory("attack_unreloaded_helper", "def bump(x):\n    return x + 2\n")
    mod = module_factory("attack_unreloaded_task", UNRELOADED_TASK)
    assert mod.bumped(1).compute() == 3
    assert hx.last_run(threaded_client).computed == ["bumped"]


SET_LITERAL = """
import helix_dask as hx


@hx.task
def known(word):
    return word in {"alpha", "beta", "gamma", "delta", "epsilon"}
"""


def test_code_with_a_set_literal_is_stored_from_worker_processes(
    processes_cluster, tmp_path: Path, module_factory: Callable
) -> None:
    # The set's order follows each process's hash seed; the code is the same everywhere.
    mod = module_factory("attack_set_literal", SET_LITERAL)
    with helix_client(processes_cluster, tmp_path / "store", policy="all") as client:
        client.run(_add_path, str(tmp_path / "usercode"))
        assert mod.known("beta").compute() is True
        node = hx.last_run(client).node("known")
        assert node.materialization is hx.Materialization.STORED, node.reason
        assert mod.known("beta").compute() is True


# ---------------------------------------------------------------- results modified in place


@hx.task
def ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=float)


def test_a_result_modified_in_place_by_its_receiver_is_never_stored_as_computed(
    threads_cluster, tmp_path: Path
) -> None:
    # An in-process cluster hands the client the very array the worker writes later.
    with helix_client(threads_cluster, tmp_path / "store", policy="all") as client:
        first = ramp(1 << 20).compute()
        first[:] = -1.0  # the user's own post-processing, before the write
        run = hx.last_run(client)
        again = ramp(1 << 20).compute()
        assert again[:3].tolist() == [0.0, 1.0, 2.0]
        if run.node("ramp").materialization is not hx.Materialization.STORED:
            assert "modified in place" in run.node("ramp").reason
            assert hx.last_run(client).computed == ["ramp"]


# ---------------------------------------------------------------- arguments


class Tagged(dict):
    """A dict that carries a setting of its own."""


class Measured(pd.DataFrame):
    """A frame with an attribute of its own, as pandas documents subclassing."""

    _metadata = ["scale"]

    @property
    def _constructor(self) -> type:
        return Measured


class Weight(int):
    """A number with an attribute."""


def _tagged(scale: int) -> Tagged:
    value = Tagged(a=1, b=2)
    value.scale = scale
    return value


def _measured(scale: int) -> Measured:
    value = Measured({"a": [1.0, 2.0]})
    value.scale = scale
    return value


def _weight(scale: int) -> Weight:
    value = Weight(3)
    value.scale = scale
    return value


@hx.task
def scaled_total(value: Tagged | Measured | Weight) -> float:
    if isinstance(value, dict):
        total = sum(value.values())
    elif isinstance(value, pd.DataFrame):
        total = value.to_numpy().sum()
    else:
        total = int(value)
    return float(total) * value.scale


@pytest.mark.parametrize("make", [_tagged, _measured, _weight])
def test_state_a_project_subclass_adds_to_a_known_type_counts(
    threaded_client, make: Callable[[int], object]
) -> None:
    expected = scaled_total.func(make(2))
    assert scaled_total(make(2)).compute() == expected
    assert scaled_total(make(2)).compute() == expected
    assert scaled_total(make(5)).compute() == scaled_total.func(make(5)) != expected
    assert hx.last_run(threaded_client).computed == ["scaled_total"]


# ---------------------------------------------------------------- names read at run time

NAMESPACE_SOURCE = """
import helix_dask as hx

FACTOR = {factor}


def setting(name):
    return globals()[name]


@hx.task
def by_name(x, name):
    return x * setting(name)
"""


def test_code_reading_its_module_by_computed_name_follows_the_module(
    threaded_client, module_factory: Callable
) -> None:
    mod = module_factory("attack_namespace", NAMESPACE_SOURCE.format(factor=2))
    assert mod.by_name(3, "FACTOR").compute() == 6
    mod = module_factory("attack_namespace", NAMESPACE_SOURCE.format(factor=5))
    assert mod.by_name(3, "FACTOR").compute() == 15
    assert hx.last_run(threaded_client).computed == ["by_name"]


ARGV_SOURCE = """
import sys

import helix_dask as hx


@hx.task
def last_argument(x):
    return f"{x}:{sys.argv[-1]}"
"""


def test_data_a_library_module_holds_counts_like_a_constant(
    threaded_client, module_factory: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same script run with other command-line arguments, read through ``sys.argv``.
    mod = module_factory("attack_argv", ARGV_SOURCE)
    monkeypatch.setattr(sys, "argv", ["script.py", "first"])
    assert mod.last_argument(1).compute() == "1:first"
    monkeypatch.setattr(sys, "argv", ["script.py", "second"])
    assert mod.last_argument(1).compute() == "1:second"


# ---------------------------------------------------------------- memoized helpers

MEMO_SOURCE = """
import functools

import helix_dask as hx

FACTOR = 2


@functools.lru_cache
def factor():
    return FACTOR


@hx.task
def times(x):
    return x * factor()
"""


def test_a_memoized_helper_never_serves_what_older_state_computed(
    threaded_client, module_factory: Callable
) -> None:
    # A notebook user sets a constant anew: the helper's cache still holds the old value,
    # which a fresh process (empty cache) would not return.
    mod = module_factory("attack_memo", MEMO_SOURCE)
    assert mod.times(3).compute() == 6
    mod.FACTOR = 5
    assert mod.times(3).compute() == 15
    mod = module_factory("attack_memo", MEMO_SOURCE.replace("FACTOR = 2", "FACTOR = 5"))
    assert mod.times(3).compute() == 15


MEMO_ENV_SOURCE = """
import functools
import os

import helix_dask as hx


@functools.lru_cache
def mode():
    return os.environ.get("HELIX_ATTACK_MEMO_MODE", "plain")


@hx.task
def first(x):
    return f"{x}:{mode()}"


@hx.task
def second(x):
    return f"{x}:{mode()}"
"""


def test_a_memoized_helper_that_reads_the_environment_is_verified_for_every_caller(
    threaded_client, module_factory: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = module_factory("attack_memo_env", MEMO_ENV_SOURCE)
    monkeypatch.setenv("HELIX_ATTACK_MEMO_MODE", "a")
    assert mod.first(1).compute() == "1:a"  # fills the cache: its read is recorded
    assert mod.second(1).compute() == "1:a"  # a cache hit: no read recorded
    assert hx.last_run(threaded_client).stored == ["second"]
    monkeypatch.setenv("HELIX_ATTACK_MEMO_MODE", "b")
    mod = module_factory("attack_memo_env", MEMO_ENV_SOURCE)  # a fresh module, empty cache
    assert mod.second(1).compute() == "1:b"


MEMO_FILE_SOURCE = """
import functools
import os

import helix_dask as hx


class Settings:
    @staticmethod
    @functools.cache
    def flavour():
        return os.environ.get("HELIX_ATTACK_MEMO_FLAVOUR", "plain")


def _read(path):
    with open(path) as f:
        return f.read()


@functools.lru_cache(maxsize=8)
def load(path):
    return _read(path)  # the read is made below the memoized function


def describe(path):
    return f"{load(path)}/{Settings.flavour()}"


@hx.task
def fill(path):
    return describe(path)


@hx.task
def hit(path):
    return describe(path)
"""


def test_reads_below_memoized_functions_and_methods_are_verified_for_cache_hits(
    threaded_client, module_factory: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "table.txt"
    path.write_text("v1")
    monkeypatch.setenv("HELIX_ATTACK_MEMO_FLAVOUR", "sweet")
    mod = module_factory("attack_memo_file", MEMO_FILE_SOURCE)
    assert mod.fill(str(path)).compute() == "v1/sweet"  # fills both caches
    assert mod.hit(str(path)).compute() == "v1/sweet"  # answered from the caches
    assert hx.last_run(threaded_client).stored == ["hit"]
    path.write_text("v2")
    mod = module_factory("attack_memo_file", MEMO_FILE_SOURCE)  # a new run: empty caches
    assert mod.hit(str(path)).compute() == "v2/sweet"
    monkeypatch.setenv("HELIX_ATTACK_MEMO_FLAVOUR", "sour")
    mod = module_factory("attack_memo_file", MEMO_FILE_SOURCE)
    assert mod.hit(str(path)).compute() == "v2/sour"


PLAIN_LOADER_SOURCE = """
import helix_dask as hx


def load(path):
    with open(path) as f:
        return f.read()


@hx.task
def read_one(path):
    return load(path)
"""


def test_a_plain_loader_makes_each_node_require_only_the_file_it_read(
    threaded_client, module_factory: Callable, tmp_path: Path
) -> None:
    # Reads are remembered across calls only for memoized functions: a loader called with
    # one path per node must not make every node depend on every file it ever read.
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("A")
    b.write_text("B")
    mod = module_factory("attack_plain_loader", PLAIN_LOADER_SOURCE)
    assert mod.read_one(str(a)).compute() == "A"
    assert mod.read_one(str(b)).compute() == "B"
    hx.last_run(threaded_client)  # its write committed before the next plan
    a.write_text("A2")
    assert mod.read_one(str(b)).compute() == "B"
    assert hx.last_run(threaded_client).loaded == ["read_one"]
    assert mod.read_one(str(a)).compute() == "A2"
    assert hx.last_run(threaded_client).computed == ["read_one"]


# ---------------------------------------------------------------- data files

READER_SOURCE = """
import helix_dask as hx


@hx.task
def read_text(path):
    with open(path) as f:
        return f.read()
"""


def test_a_relative_path_read_from_another_working_directory_recomputes(
    threaded_client, module_factory: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = module_factory("attack_relative", READER_SOURCE)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.txt").write_text(name.upper())
    monkeypatch.chdir(tmp_path / "a")
    assert mod.read_text("data.txt").compute() == "A"
    assert mod.read_text("data.txt").compute() == "A"
    monkeypatch.chdir(tmp_path / "b")  # the same script, run from another directory
    assert mod.read_text("data.txt").compute() == "B"
    assert hx.last_run(threaded_client).computed == ["read_text"]


EXISTS_SOURCE = """
import os

import helix_dask as hx


@hx.task
def flag(path):
    return "on" if os.path.exists(path) else "off"
"""


def test_a_file_only_tested_for_existence_is_verified_before_reuse(
    threaded_client, module_factory: Callable, tmp_path: Path
) -> None:
    mod = module_factory("attack_exists", EXISTS_SOURCE)
    path = tmp_path / "flag"
    assert mod.flag(str(path)).compute() == "off"
    path.write_text("")
    assert mod.flag(str(path)).compute() == "on"


PROBES_SOURCE = """
import os
from pathlib import Path

import helix_dask as hx


def _size(path):
    return os.path.getsize(path) if os.path.isfile(path) else -1


@hx.task
def survey(root):
    base = Path(root)
    return (
        (base / "ready").is_dir(),
        _size(os.path.join(root, "table.bin")),
        os.path.lexists(os.path.join(root, "link")),
    )
"""


def test_paths_tested_by_size_type_or_link_are_verified_before_reuse(
    threaded_client, module_factory: Callable, tmp_path: Path
) -> None:
    mod = module_factory("attack_probes", PROBES_SOURCE)
    root = str(tmp_path)
    assert mod.survey(root).compute() == (False, -1, False)
    assert hx.last_run(threaded_client).stored == ["survey"]
    (tmp_path / "ready").mkdir()
    assert mod.survey(root).compute() == (True, -1, False)
    (tmp_path / "table.bin").write_bytes(b"1234")
    assert mod.survey(root).compute() == (True, 4, False)
    (tmp_path / "table.bin").write_bytes(b"123456")
    assert mod.survey(root).compute() == (True, 6, False)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")  # a dangling link: lexists only
    assert mod.survey(root).compute() == (True, 6, True)
    hx.last_run(threaded_client)  # its write committed before the next plan
    assert mod.survey(root).compute() == (True, 6, True)
    assert hx.last_run(threaded_client).loaded == ["survey"]


def test_the_stat_stand_ins_keep_what_os_says_it_supports() -> None:
    import os

    from helix_dask._file_reads import FileReads

    with FileReads((), {}):
        pass
    assert os.stat in os.supports_follow_symlinks and os.stat in os.supports_dir_fd
    assert os.lstat(".").st_mode == os.stat(".", follow_symlinks=False).st_mode


C_READER_SOURCE = """
import ctypes
import os
import sqlite3

import helix_dask as hx

def _libc():
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fread.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    return libc


@hx.task
def c_read(path):
    # A library reading in C (an image, HDF5 or Parquet reader): no audit event, no open().
    libc = _libc()
    handle = libc.fopen(path.encode(), b"rb")
    buf = ctypes.create_string_buffer(64)
    n = libc.fread(buf, 1, 64, handle)
    libc.fclose(handle)
    return buf.raw[:n].decode()


@hx.task
def db_total(root):
    with sqlite3.connect(os.path.join(root, "db.sqlite")) as con:
        return con.execute("select sum(v) from t").fetchone()[0]
"""


def test_a_file_named_by_an_argument_and_read_in_c_is_verified_before_reuse(
    threaded_client, module_factory: Callable, tmp_path: Path
) -> None:
    mod = module_factory("attack_c_reader", C_READER_SOURCE)
    path = tmp_path / "image.raw"
    path.write_text("first")
    assert mod.c_read(str(path)).compute() == "first"
    hx.last_run(threaded_client)  # its write committed before the next plan
    assert mod.c_read(str(path)).compute() == "first"
    assert hx.last_run(threaded_client).loaded == ["c_read"]
    path.write_text("second!")
    assert mod.c_read(str(path)).compute() == "second!"


def test_a_sqlite_database_the_task_opens_is_verified_before_reuse(
    threaded_client, module_factory: Callable, tmp_path: Path
) -> None:
    import sqlite3

    mod = module_factory("attack_c_reader", C_READER_SOURCE)
    with sqlite3.connect(tmp_path / "db.sqlite") as con:
        con.execute("create table t (v integer)")
        con.execute("insert into t values (1), (2)")
    con.close()
    assert mod.db_total(str(tmp_path)).compute() == 3
    with sqlite3.connect(tmp_path / "db.sqlite") as con:
        con.execute("insert into t values (4)")
    con.close()
    assert mod.db_total(str(tmp_path)).compute() == 7


SPAWN_SOURCE = """
import subprocess
import sys

import helix_dask as hx


@hx.task
def run_script(script, data):
    # An external program: what it reads is not seen from here.
    done = subprocess.run([sys.executable, script, data], capture_output=True, text=True)
    return done.stdout.strip()


@hx.task
def shell_count(path):
    return subprocess.run(f"wc -c < {path}", shell=True, capture_output=True, text=True).stdout
"""


def test_a_program_a_task_runs_and_the_files_it_names_are_verified_before_reuse(
    threaded_client, module_factory: Callable, tmp_path: Path
) -> None:
    mod = module_factory("attack_spawn", SPAWN_SOURCE)
    script, data = tmp_path / "score.py", tmp_path / "values.txt"
    script.write_text("import sys\nprint(sum(map(int, open(sys.argv[1]).read().split())))\n")
    data.write_text("1 2 3")
    assert mod.run_script(str(script), str(data)).compute() == "6"
    hx.last_run(threaded_client)  # its write committed before the next plan
    assert mod.run_script(str(script), str(data)).compute() == "6"
    assert hx.last_run(threaded_client).loaded == ["run_script"]
    data.write_text("1 2 3 4")  # the data the program reads
    assert mod.run_script(str(script), str(data)).compute() == "10"
    script.write_text(script.read_text().replace("sum(", "max("))  # the program itself
    assert mod.run_script(str(script), str(data)).compute() == "4"
    assert mod.shell_count(str(data)).compute().strip() == "7"
    data.write_text("1 2 3 4 5")
    assert mod.shell_count(str(data)).compute().strip() == "9"


POOL_SOURCE = """
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attack_pool_shared

import helix_dask as hx


def _read(path):
    return Path(path).read_text()


def _mode(_):
    return os.environ.get("HELIX_ATTACK_POOL_MODE", "plain")


@hx.task(untracked=("attack_pool_shared",))  # a pool is no input
def load_all(root):
    texts = sorted(Path(root).glob("*.txt"))
    with ThreadPoolExecutor(2) as pool:  # a library function mapped in threads of its own
        texts = list(pool.map(Path.read_text, texts))
    tables = sorted(str(p) for p in Path(root).glob("*.dat"))
    shared = attack_pool_shared.SHARED  # project code in a pool made at import
    return texts, list(shared.map(_read, tables)), sorted(set(shared.map(_mode, tables)))
"""


def test_files_and_variables_read_in_threads_a_task_uses_are_verified_before_reuse(
    threaded_client,
    module_factory: Callable,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = "from concurrent.futures import ThreadPoolExecutor\n\nSHARED = ThreadPoolExecutor(2)\n"
    module_factory("attack_pool_shared", pool)  # made at import, kept across calls
    mod = module_factory("attack_pool", POOL_SOURCE)
    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text(name)
        (tmp_path / f"{name}.dat").write_text(name * 2)
    monkeypatch.setenv("HELIX_ATTACK_POOL_MODE", "x")
    assert mod.load_all(str(tmp_path)).compute() == (["a", "b"], ["aa", "bb"], ["x"])
    hx.last_run(threaded_client)  # its write committed before the next plan
    assert mod.load_all(str(tmp_path)).compute() == (["a", "b"], ["aa", "bb"], ["x"])
    assert hx.last_run(threaded_client).loaded == ["load_all"]
    (tmp_path / "b.txt").write_text("B")  # same names, so the listing is unchanged
    assert mod.load_all(str(tmp_path)).compute() == (["a", "B"], ["aa", "bb"], ["x"])
    (tmp_path / "a.dat").write_text("AA")
    assert mod.load_all(str(tmp_path)).compute() == (["a", "B"], ["AA", "bb"], ["x"])
    monkeypatch.setenv("HELIX_ATTACK_POOL_MODE", "y")
    assert mod.load_all(str(tmp_path)).compute() == (["a", "B"], ["AA", "bb"], ["y"])


WORKER_READS_SOURCE = """
import functools
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import helix_dask as hx


@functools.cache
def _cached(path):
    return Path(path).read_text()


@hx.task
def exists(root):
    return os.path.exists(os.path.join(root, "flag"))


@hx.task
def pooled(root):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(Path.read_text, sorted(Path(root).glob("*.txt"))))


@hx.task
def counted(root):
    cmd = ["wc", "-c", os.path.join(root, "a.txt")]
    return subprocess.run(cmd, capture_output=True, text=True).stdout.split()[0]


@hx.task
def memo(root, salt):
    return _cached(os.path.join(root, "a.txt")) + salt
"""


def test_reads_made_on_worker_processes_are_verified_before_reuse(
    processes_cluster, tmp_path: Path, module_factory: Callable
) -> None:
    mod = module_factory("attack_worker_reads", WORKER_READS_SOURCE)
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text("a")
    (root / "b.txt").write_text("b")

    def results() -> tuple:
        out = dask.compute(
            mod.exists(str(root)),
            mod.pooled(str(root)),
            mod.counted(str(root)),
            mod.memo(str(root), "1"),
            mod.memo(str(root), "2"),  # the cache filled by the first, on that worker
        )
        return tuple(out)

    with helix_client(processes_cluster, tmp_path / "store", policy="all") as client:
        client.run(_add_path, str(tmp_path / "usercode"))
        assert results() == (False, ["a", "b"], "1", "a1", "a2")
        hx.last_run(client)
        assert results() == (False, ["a", "b"], "1", "a1", "a2")
        assert len(hx.last_run(client).loaded) == 5
        (root / "flag").write_text("")
        (root / "a.txt").write_text("aaa")
        client.restart()  # new worker processes: the memoized reader's cache is empty
        client.run(_add_path, str(tmp_path / "usercode"))
        assert results() == (True, ["aaa", "b"], "3", "aaa1", "aaa2")


# ---------------------------------------------------------------- a new process per iteration

PROJECT = {
    "conf.py": "OFFSET = 1\n",
    "helpers.py": "from conf import OFFSET\n\n\ndef shift(v):\n    return v + OFFSET\n",
    "data/values.txt": "1 2 3\n",
    "pipeline.py": """
import json
import os
import sys
import time

import dask
from distributed import Client, LocalCluster

import helix_dask as hx
from helpers import shift


@hx.task
def load(path):
    time.sleep(0.1)  # each task costlier than a load: unchanged results are loaded
    with open(path) as f:
        return [int(v) for v in f.read().split()]


@hx.task
def mode():
    time.sleep(0.1)
    return os.environ.get("HELIX_ATTACK_MODE", "plain")


@hx.task
def combine(values, mode):
    time.sleep(0.1)
    return [f"{mode}:{shift(v)}" for v in values]


def nodes():
    return {"load": load("data/values.txt"), "mode": mode()}


if __name__ == "__main__":
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            hx.setup(client, store=sys.argv[1], budget="1 GiB", policy="all")
            parts = nodes()
            parts["combine"] = combine(parts["load"], parts["mode"])
            values = dict(zip(parts, dask.compute(*parts.values()), strict=True))
            run = hx.last_run(client)
    values_now = load.func("data/values.txt")
    plain = {"load": values_now, "mode": mode.func()}
    plain["combine"] = combine.func(values_now, plain["mode"])
    print(json.dumps({"values": values, "plain": plain, "computed": sorted(run.computed)}))
""",
}


def test_each_iteration_in_a_new_process_gets_what_a_fresh_run_computes(tmp_path: Path) -> None:
    root = tmp_path / "project"
    for name, text in PROJECT.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    store = tmp_path / "store"

    def iterate(mode: str) -> list[str]:
        env = {**os.environ, "HELIX_ATTACK_MODE": mode, "PYTHONDONTWRITEBYTECODE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(root), *sys.path])
        done = subprocess.run(
            [sys.executable, "pipeline.py", str(store)],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["values"] == out["plain"]
        return out["computed"]

    assert iterate("a") == ["combine", "load", "mode"]
    data = root / "data/values.txt"
    st = data.stat()
    data.write_text("4 5 6\n")  # same size, mtime restored: the content still decides
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert iterate("b") == ["combine", "load", "mode"]  # and an environment variable
    (root / "conf.py").write_text("OFFSET = 7\n")  # a constant imported by name elsewhere
    assert iterate("b") == ["combine"]


# ---------------------------------------------------------------- edits of code reached indirectly

BASE_MODULE = """
class Base:
    def __init_subclass__(cls, **kwargs):
        cls.level = {subclass_level}

    def bonus(self):
        return {base_bonus}
"""

INDIRECT = """
import dataclasses
import enum
import functools

import helix_dask as hx
from attack_indirect_base import Base


class Child(Base):
    pass


class Meta(type):
    def __call__(cls, *args):
        return {meta_value}


class Made(metaclass=Meta):
    pass


@dataclasses.dataclass
class Settings:
    depth: int = {dataclass_default}


class Color(enum.Enum):
    RED = {enum_value}


OPS = {{"double": lambda x: x * {lambda_factor}}}
SCALED = functools.partial(lambda x, k: x * k, k={partial_keyword})


@hx.task
def uses_base(x):
    return x + Child().bonus()


@hx.task
def uses_init_subclass(x):
    return x + Child.level


@hx.task
def uses_metaclass(x):
    return x + Made()


@hx.task
def uses_dataclass_default(x):
    return x + Settings().depth


@hx.task
def uses_enum(x):
    return x + Color.RED.value


@hx.task
def uses_dispatch_table(x, op):
    return OPS[op](x)


@hx.task
def uses_partial(x):
    return SCALED(x)
"""

INDIRECT_VALUES = {
    "base_bonus": ("uses_base", 1, 2),
    "subclass_level": ("uses_init_subclass", 1, 2),
    "meta_value": ("uses_metaclass", 1, 2),
    "dataclass_default": ("uses_dataclass_default", 1, 2),
    "enum_value": ("uses_enum", 1, 2),
    "lambda_factor": ("uses_dispatch_table", 2, 3),
    "partial_keyword": ("uses_partial", 2, 3),
}


def test_edits_of_code_a_task_reaches_indirectly_recompute_its_callers(
    threaded_client, module_factory: Callable
) -> None:
    values = {field: old for field, (_, old, _) in INDIRECT_VALUES.items()}

    def iterate() -> list[str]:
        module_factory("attack_indirect_base", BASE_MODULE.format(**values))
        mod = module_factory("attack_indirect", INDIRECT.format(**values))
        names = [task for task, _, _ in INDIRECT_VALUES.values()]
        args = {"uses_dispatch_table": (10, "double")}
        nodes = [getattr(mod, n)(*args.get(n, (10,))) for n in names]
        plain = [getattr(mod, n).func(*args.get(n, (10,))) for n in names]
        assert list(dask.compute(*nodes)) == plain
        return hx.last_run(threaded_client).computed

    assert len(iterate()) == len(INDIRECT_VALUES)
    for field, (task, _, new) in INDIRECT_VALUES.items():
        values[field] = new
        # (Lambdas count with their module, classes with their bases: a caller of the same
        # class or module may recompute too; never a stale one.)
        assert task in iterate(), f"editing {field}"
