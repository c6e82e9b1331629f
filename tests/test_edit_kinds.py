"""Edits of many kinds, each made to a module the task reaches, in a new import of the code.

Each case: a task computes and is stored, an identical run loads it, one edit is made on disk
and the modules imported afresh (as a new run of the script would); the next run must give
what the edited code computes, never the stored result."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

import helix_dask as hx


def _source(*lines: str) -> str:
    return "\n".join(lines) + "\n"


CASES: dict[str, tuple] = {
    # name: (module sources, (module edited, old text, new text), task module, argument,
    #        what the edited code returns)
    "base class method in other module": (
        {
            "sb_base": _source(
                "class Base:",
                "    def k(self):",
                "        return 1",
            ),
            "sb_task": _source(
                "import helix_dask as hx",
                "from sb_base import Base",
                "class M(Base):",
                "    pass",
                "@hx.task",
                "def t(x):",
                "    return x + M().k()",
            ),
        },
        ("sb_base", "return 1", "return 7"),
        "sb_task",
        1,
        8,
    ),
    "decorator body": (
        {
            "sc_deco": _source(
                "import functools",
                "def deco(f):",
                "    @functools.wraps(f)",
                "    def w(*a):",
                "        return f(*a) + 1",
                "    return w",
            ),
            "sc_task": _source(
                "import helix_dask as hx",
                "from sc_deco import deco",
                "@deco",
                "def h(x):",
                "    return x",
                "@hx.task",
                "def t(x):",
                "    return h(x)",
            ),
        },
        ("sc_deco", "+ 1", "+ 9"),
        "sc_task",
        1,
        10,
    ),
    "registry dict of functions": (
        {
            "sd_reg": _source(
                "def fa(x):",
                "    return x + 1",
                "HANDLERS = {'a': fa}",
            ),
            "sd_task": _source(
                "import helix_dask as hx",
                "from sd_reg import HANDLERS",
                "@hx.task",
                "def t(x):",
                "    return HANDLERS['a'](x)",
            ),
        },
        ("sd_reg", "x + 1", "x + 4"),
        "sd_task",
        1,
        5,
    ),
    "partial constant": (
        {
            "se_p": _source(
                "import functools",
                "def f(x, k):",
                "    return x * k",
                "P = functools.partial(f, k=2)",
            ),
            "se_task": _source(
                "import helix_dask as hx",
                "from se_p import P",
                "@hx.task",
                "def t(x):",
                "    return P(x)",
            ),
        },
        ("se_p", "k=2", "k=3"),
        "se_task",
        2,
        6,
    ),
    "lambda constant": (
        {
            "sf_l": _source(
                "F = lambda x: x + 1",
            ),
            "sf_task": _source(
                "import helix_dask as hx",
                "import sf_l",
                "@hx.task",
                "def t(x):",
                "    return sf_l.F(x)",
            ),
        },
        ("sf_l", "x + 1", "x + 2"),
        "sf_task",
        1,
        3,
    ),
    "enum value": (
        {
            "sg_e": _source(
                "import enum",
                "class C(enum.Enum):",
                "    A = 1",
            ),
            "sg_task": _source(
                "import helix_dask as hx",
                "from sg_e import C",
                "@hx.task",
                "def t(x):",
                "    return x + C.A.value",
            ),
        },
        ("sg_e", "A = 1", "A = 5"),
        "sg_task",
        1,
        6,
    ),
    "star import constant": (
        {
            "sh_c": _source(
                "K = 1",
            ),
            "sh_task": _source(
                "import helix_dask as hx",
                "from sh_c import *",
                "@hx.task",
                "def t(x):",
                "    return x + K",
            ),
        },
        ("sh_c", "K = 1", "K = 3"),
        "sh_task",
        1,
        4,
    ),
    "getattr by name argument": (
        {
            "si_ops": _source(
                "def double(x):",
                "    return 2 * x",
            ),
            "si_task": _source(
                "import helix_dask as hx",
                "import si_ops",
                "@hx.task",
                "def t(x, name='double'):",
                "    return getattr(si_ops, name)(x)",
            ),
        },
        ("si_ops", "2 * x", "3 * x"),
        "si_task",
        2,
        6,
    ),
    "import_module by constant": (
        {
            "sj_impl": _source(
                "def run(x):",
                "    return x + 1",
            ),
            "sj_task": _source(
                "import importlib",
                "import helix_dask as hx",
                "NAME = 'sj_impl'",
                "@hx.task",
                "def t(x):",
                "    return importlib.import_module(NAME).run(x)",
            ),
        },
        ("sj_impl", "x + 1", "x + 8"),
        "sj_task",
        1,
        9,
    ),
    "property getter": (
        {
            "sk_p": _source(
                "class P:",
                "    @property",
                "    def v(self):",
                "        return 1",
            ),
            "sk_task": _source(
                "import helix_dask as hx",
                "from sk_p import P",
                "@hx.task",
                "def t(x):",
                "    return x + P().v",
            ),
        },
        ("sk_p", "return 1", "return 4"),
        "sk_task",
        1,
        5,
    ),
    "numpy constant array": (
        {
            "sl_a": _source(
                "import numpy as np",
                "W = np.array([1.0, 2.0])",
            ),
            "sl_task": _source(
                "import helix_dask as hx",
                "from sl_a import W",
                "@hx.task",
                "def t(x):",
                "    return float(x * W.sum())",
            ),
        },
        ("sl_a", "[1.0, 2.0]", "[1.0, 5.0]"),
        "sl_task",
        1,
        6.0,
    ),
    "dataclass default in other module": (
        {
            "sm_dc": _source(
                "import dataclasses",
                "@dataclasses.dataclass",
                "class Cfg:",
                "    k: int = 1",
            ),
            "sm_task": _source(
                "import helix_dask as hx",
                "from sm_dc import Cfg",
                "@hx.task",
                "def t(x):",
                "    return x + Cfg().k",
            ),
        },
        ("sm_dc", "k: int = 1", "k: int = 6"),
        "sm_task",
        1,
        7,
    ),
    "package __init__ re-export": (
        {
            "sn_pkg/__init__": _source(
                "from sn_pkg.impl import f",
            ),
            "sn_pkg/impl": _source(
                "def f(x):",
                "    return x + 1",
            ),
            "sn_task": _source(
                "import helix_dask as hx",
                "import sn_pkg",
                "@hx.task",
                "def t(x):",
                "    return sn_pkg.f(x)",
            ),
        },
        ("sn_pkg/impl", "x + 1", "x + 5"),
        "sn_task",
        1,
        6,
    ),
    "method via argument object class edit": (
        {
            "so_m": _source(
                "class Scaler:",
                "    def apply(self, x):",
                "        return x * 2",
            ),
            "so_task": _source(
                "import helix_dask as hx",
                "@hx.task",
                "def t(obj, x):",
                "    return obj.apply(x)",
            ),
        },
        ("so_m", "x * 2", "x * 3"),
        "so_task",
        2,
        6,
    ),
    "class-level registry filled by decorator": (
        {
            "sp_r": _source(
                "REG = {}",
                "def register(f):",
                "    REG[f.__name__] = f",
                "    return f",
                "@register",
                "def inc(x):",
                "    return x + 1",
            ),
            "sp_task": _source(
                "import helix_dask as hx",
                "from sp_r import REG",
                "@hx.task",
                "def t(x):",
                "    return REG['inc'](x)",
            ),
        },
        ("sp_r", "x + 1", "x + 3"),
        "sp_task",
        1,
        4,
    ),
}


def _forget(files: dict[str, str]) -> None:
    for name in files:
        sys.modules.pop(name.replace("/__init__", "").replace("/", "."), None)


@pytest.mark.parametrize("case", list(CASES))
def test_an_edit_of_this_kind_recomputes_with_the_edited_code(
    case: str, threaded_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, (edited, old, new), task_module, arg, expected = CASES[case]
    root = tmp_path / "src"
    monkeypatch.syspath_prepend(str(root))
    for name, source in files.items():
        path = root / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)

    def run() -> object:
        _forget(files)
        importlib.invalidate_caches()
        mod = importlib.import_module(task_module)
        if case.startswith("method via argument"):
            return mod.t(importlib.import_module("so_m").Scaler(), arg).compute()
        return mod.t(arg).compute()

    try:
        first = run()
        hx.last_run(threaded_client)  # its write committed
        assert run() == first
        assert hx.last_run(threaded_client).loaded == ["t"], case
        path = root / f"{edited}.py"
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new))
        st = path.stat()  # a fresh mtime: the import system must not reuse the old bytecode
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        assert run() == expected, hx.last_run(threaded_client).summary()
    finally:
        _forget(files)
