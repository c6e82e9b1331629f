"""Which node is which across versions, and what to call it: identity by lineage.

A task used more than once in a graph (``score(model)`` per model) has several nodes of the
same name whose signatures all change when anything upstream does, so neither the name nor the
key says which is which. A node's *lineage* does: its task name, its own argument values (as
shown, ``C=0.1``) and the lineages of its parents, or, when the user named the call
(``label``), its task name and label alone. Lineages are followed through the history as
*tracks*: a node continues the track of the node with the same lineage in any earlier version;
a task used once in a version and once in the version before continues that node's track even
when its arguments changed (an edit of the only ``featurize``), so its descendants keep theirs.
A repeated task whose arguments changed starts a new track: without a label, an edited call
and a replaced one cannot be told apart, and pairing them would compare different models.

Everything here is a pure function over node records; the CLI, the dashboard, ``RunReport``
and the diff all name and pair nodes through it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol


class _Node(Protocol):
    key: str
    name: str
    label: str
    signature: str
    args: Mapping[str, str]
    arg_values: Mapping[str, str]
    parents: tuple[str, ...]


_NODES = re.compile(r"(?:[\[\](), ]|<[^<>]+>)*<[^<>]+>(?:[\[\](), ]|<[^<>]+>)*")


def is_upstream(value: str | None) -> bool:
    """Whether an argument's shown value stands for parent nodes (``<featurize>``, or a list
    or tuple of them, ``[<fit_a>, (<b>, [<c>])]``)."""
    return value is not None and _NODES.fullmatch(value) is not None


def own_arguments(n: _Node) -> tuple[tuple[str, str], ...]:
    """The node's arguments that are values, not parents, as shown: sorted ``(name, value)``."""
    return tuple(sorted((k, v) for k, v in n.arg_values.items() if not is_upstream(v)))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _topological(nodes: Sequence[_Node]) -> list[_Node]:
    """Parents before children; ties in a stable order (name, arguments, signature)."""
    by_key = {n.key: n for n in nodes}
    waiting = {n.key: sum(p in by_key for p in n.parents) for n in nodes}
    children: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        for p in n.parents:
            if p in by_key:
                children[p].append(n.key)

    def order(n: _Node) -> tuple:
        return (n.name, n.label, own_arguments(n), n.signature, n.key)

    ready = sorted((n for n in nodes if not waiting[n.key]), key=order)
    out: list[_Node] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for c in children[n.key]:
            waiting[c] -= 1
            if not waiting[c]:
                ready.append(by_key[c])
        ready.sort(key=order)
    seen = {n.key for n in out}
    out.extend(sorted((n for n in nodes if n.key not in seen), key=order))  # a cycle: never
    return out


class Lineage:
    """Tracks of every node over ``runs`` (each a sequence of node records, oldest first).

    ``track(i, key)`` is the track of node ``key`` in the ``i``-th run; nodes of two runs with
    the same track are the same call. ``names(tracks)`` gives each track a readable name.
    """

    def __init__(self, runs: Iterable[Sequence[_Node]]) -> None:
        self.runs: list[dict[str, _Node]] = []
        self.tracks: list[dict[str, str]] = []
        self._rep: dict[str, tuple[int, _Node]] = {}
        seen: dict[str, str] = {}
        before: dict[tuple[str, str], list[str]] = {}
        for i, nodes in enumerate(runs):
            tracks: dict[str, str] = {}
            claimed: set[str] = set()
            count = Counter((n.name, n.label) for n in nodes)
            for n in _topological(nodes):
                lk = self._lineage_key(n, tracks)
                t = seen.get(lk)
                if t is None or t in claimed:
                    prev = before.get((n.name, n.label), [])
                    if count[(n.name, n.label)] == 1 and len(prev) == 1 and prev[0] not in claimed:
                        t = prev[0]  # the only call of this task, edited
                    else:
                        t = _digest(lk)
                        while t in claimed:
                            t = _digest(t)
                seen.setdefault(lk, t)
                tracks[n.key] = t
                claimed.add(t)
                self._rep[t] = (i, n)
            groups: dict[tuple[str, str], list[str]] = defaultdict(list)
            for n in nodes:
                groups[(n.name, n.label)].append(tracks[n.key])
            before = dict(groups)
            self.runs.append({n.key: n for n in nodes})
            self.tracks.append(tracks)

    @staticmethod
    def _lineage_key(n: _Node, tracks: Mapping[str, str]) -> str:
        if n.label:
            return f"{n.name}\x00label\x00{n.label}"
        parents = sorted(tracks.get(p, "?" + p.rsplit("-", 1)[0]) for p in n.parents)
        return f"{n.name}\x00{own_arguments(n)!r}\x00{parents!r}"

    def track(self, run: int, key: str) -> str:
        return self.tracks[run][key]

    def _describe(self, track: str, depth: int) -> str:
        i, n = self._rep[track]
        if n.label:
            return n.label
        if depth == 0:
            return n.name
        parts = [f"{k}={v}" for k, v in own_arguments(n)]
        parents = [self.tracks[i].get(p) for p in n.parents]
        parts += sorted(self._describe(t, depth - 1) for t in parents if t is not None)
        return f"{n.name}({', '.join(parts)})" if parts else n.name

    def names(self, tracks: Iterable[str]) -> dict[str, str]:
        """A readable name per track, unique among ``tracks``: the label when the call has one,
        else the task name, qualified by arguments and parents only as far as needed to tell
        the calls of one task apart (``score(train(model='rf'))``)."""
        groups: dict[str, list[str]] = defaultdict(list)
        out: dict[str, str] = {}
        for t in dict.fromkeys(tracks):
            n = self._rep[t][1]
            if n.label:
                out[t] = n.label
            else:
                groups[n.name].append(t)
        for name, group in groups.items():
            if len(group) == 1:
                out[group[0]] = name
                continue
            for depth in range(1, 12):
                described = {t: self._describe(t, depth) for t in group}
                if len(set(described.values())) == len(group):
                    break
            seen: Counter[str] = Counter()
            for t in sorted(group, key=lambda t: (described[t], t)):
                seen[described[t]] += 1
                k = seen[described[t]]
                out[t] = described[t] if k == 1 else f"{described[t]}#{k}"
        taken = Counter(out.values())  # a label equal to another call's derived name
        for t, text in out.items():
            if taken[text] > 1 and not self._rep[t][1].label:
                out[t] = f"{text} [{self._rep[t][1].name}]"
        return out

    def node_names(self, run: int) -> dict[str, str]:
        """Key -> readable name of every node of the ``run``-th run, unique within it."""
        tracks = self.tracks[run]
        names = self.names(tracks.values())
        return {k: names[t] for k, t in tracks.items()}


def node_names(nodes: Sequence[_Node]) -> dict[str, str]:
    """Key -> a name unique within one version: the label, the task name, or the task name
    qualified by its lineage when the task is used more than once."""
    return Lineage([nodes]).node_names(0)


def match_nodes(
    old: Sequence[_Node], new: Sequence[_Node]
) -> list[tuple[_Node | None, _Node | None]]:
    """Pair each node of ``old`` with the same call in ``new`` (by lineage, see the module);
    unpaired nodes come with ``None`` (removed, or added)."""
    lin = Lineage([old, new])
    by_track = {lin.track(0, n.key): n for n in old}
    pairs: list[tuple[_Node | None, _Node | None]] = []
    matched: set[str] = set()
    for n in new:
        t = lin.track(1, n.key)
        a = by_track.get(t)
        if a is not None:
            matched.add(t)
        pairs.append((a, n))
    pairs.extend((a, None) for t, a in by_track.items() if t not in matched)
    return pairs
