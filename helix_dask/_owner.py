"""Who holds a version or a lease: this process's plugin as ``pid@host/instance``, and whether
an owner another process recorded is certainly gone.

An owner is known dead only on its own host: its process exited, or its pid now belongs to a
process started at another time, or (in this very process) its plugin was closed or replaced.
An owner on another host is never declared dead; its leases end when they expire.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Final

import psutil

HOST: Final = socket.gethostname()
_OWNER = re.compile(r"(\d+)@(.+)/([0-9a-f]+)")
_LIVE: set[str] = set()
"""Instance tokens of the plugins running in this process."""
_LIVE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Owner:
    """One plugin instance: ``name`` is ``pid@host/instance``, ``started`` its process's start."""

    name: str
    started: float


def process_started(pid: int | None = None) -> float:
    """When process ``pid`` (default: this one) started, in seconds since the epoch; 0 if gone."""
    try:
        return psutil.Process(pid or os.getpid()).create_time()
    except psutil.Error:
        return 0.0


def new_owner() -> Owner:
    """A fresh owner for a plugin instance of this process, registered as live."""
    token = uuid.uuid4().hex[:16]
    owner = Owner(f"{os.getpid()}@{HOST}/{token}", process_started())
    with _LIVE_LOCK:
        _LIVE.add(token)
    return owner


def retire(owner: Owner) -> None:
    """The plugin instance of ``owner`` stopped: what it holds is no longer protected."""
    with _LIVE_LOCK:
        _LIVE.discard(owner.name.rsplit("/", 1)[-1])


def is_dead(name: str, started: float | None) -> bool:
    """Whether the owner ``name`` (recorded with its process start ``started``) is certainly
    gone; False when it may be alive (another host, an unreadable process, no owner recorded)."""
    match = _OWNER.fullmatch(name or "")
    if match is None or match[2] != HOST:
        return False
    pid, token = int(match[1]), match[3]
    if pid == os.getpid():
        with _LIVE_LOCK:
            return token not in _LIVE
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # alive, but not ours to inspect
        return False
    return bool(started) and abs(created - float(started or 0)) > 1.0  # the pid was reused
