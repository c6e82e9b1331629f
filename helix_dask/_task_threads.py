"""Threads a node's call works in besides its own: whose recorders their reads go to.

The recorders of files and environment variables (``_file_reads``, ``_env_reads``) belong to
the thread that runs a node's call. A task that reads its files in a thread pool
(``ThreadPoolExecutor.map(load, paths)``, common for images) reads them in other threads,
where no recorder of its own is active; unrecorded, those files would not be requirements and
an edit to one would leave the stored result in place. So a read in a thread with no recorder
of its own is given to:

- the recorder of the call that started the thread (``Thread.start`` notes the recorders
  active in the starting thread), while that call runs;
- every recorder active in this process, when that call has ended (a pool kept across calls)
  or the thread was not started by a call but runs the project's code (a pool made at import);
- nobody otherwise: the process's own threads (the worker's event loop, helix's writes, Dask's
  spilling) run no project code.

Giving a read to every active call is safe (a requirement too many recomputes, never reuses
wrongly); two calls running at once in one process may each require the other's files.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any


class _Guard(threading.local):
    busy: bool = False
    """Recording is under way in this thread: what recording itself reads, lists or tests
    (a ``realpath`` finding whether code is the project's) is not recorded, and cannot recurse."""


guard = _Guard()
_lock = threading.Lock()
_own: dict[str, Callable[[], Any]] = {}
"""Kind of recorder -> the calling thread's own active recorder of that kind, or None."""
_active: dict[str, list[Any]] = {}
"""Kind of recorder -> the recorders active now, in any thread of the process."""
_installed = False
_STACK_LIMIT = 200


def register(kind: str, own: Callable[[], Any]) -> None:
    """Recorders of ``kind`` are found in a thread by ``own()``."""
    _own[kind] = own
    _active.setdefault(kind, [])
    _install()


def entered(kind: str, recorder: Any) -> None:
    with _lock:
        _active.setdefault(kind, []).append(recorder)


def exited(kind: str, recorder: Any) -> None:
    with _lock:
        try:
            _active[kind].remove(recorder)
        except ValueError:
            pass


def any_active(kind: str) -> bool:
    return bool(_active.get(kind))


def borrowed(kind: str, frame: types.FrameType | None, project: Callable[[Any], bool]) -> list:
    """The recorders a read of ``kind`` made in this thread (which has no recorder of its
    own) goes to; ``frame``: where the read was made, ``project``: whether a frame is the
    project's code."""
    active = _active.get(kind)
    if not active:
        return []
    owners = getattr(threading.current_thread(), "_helix_owners", None)
    with _lock:
        now = list(active)
    if owners is not None:
        owner = owners.get(kind)
        return [owner] if owner is not None and any(r is owner for r in now) else now
    depth = 0
    while frame is not None and depth < _STACK_LIMIT:
        if project(frame):
            return now
        frame = frame.f_back
        depth += 1
    return []


def _install() -> None:
    """``Thread.start`` notes the recorders active in the starting thread (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        original = threading.Thread.start

        def start(self: threading.Thread) -> None:
            owners = {kind: r for kind, own in _own.items() if (r := own()) is not None}
            if owners:
                self._helix_owners = owners  # type: ignore[attr-defined]
            original(self)

        start.__wrapped__ = original  # type: ignore[attr-defined]
        start.__doc__ = original.__doc__
        threading.Thread.start = start  # type: ignore[method-assign]
        _installed = True
