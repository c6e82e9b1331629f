"""The DAG of one version (or of a plan) as a picture: the one renderer the CLI, notebooks and
the dashboard use. A layered layout (topological generations), drawn by hand as SVG (no
graphviz binary needed) or, with the same layout, colours and labels, as PNG with matplotlib."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx
from dask.utils import format_bytes

COLOURS = {
    "changed": "#f58518",
    "computed": "#4c78a8",
    "loaded": "#54a24b",
    "pruned": "#bab0ac",
    "in cluster": "#72b7b2",
}
"""Fill colour of a DAG node by state; a computed node that differs from the version before is
``changed``. Stored nodes get a thick dark outline on top."""

STORED_OUTLINE = "#1b3a1b"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def colour(attrs: Mapping[str, object]) -> str:
    """Fill colour of a DAG node from its attributes."""
    if attrs["state"] == "computed" and attrs.get("changed"):
        return COLOURS["changed"]
    return COLOURS[str(attrs["state"])]


def cost_label(attrs: Mapping[str, object]) -> str:
    """The costs line under a DAG node's name, e.g. ``computed 0.05s, stored 748 B``."""
    state = str(attrs["state"])
    secs = {
        "computed": attrs.get("compute_seconds"),
        "loaded": attrs.get("load_seconds"),
    }.get(state, attrs.get("estimated_compute_seconds"))
    text = state if secs is None else f"{state} {secs:.2f}s"
    if state in ("pruned", "in cluster"):
        text = f"{state} (~{attrs.get('estimated_compute_seconds') or 0:.2f}s)"
    if attrs.get("stored"):
        text += f", stored {format_bytes(int(attrs.get('nbytes') or 0))}"
    return text


def layout(graph: nx.DiGraph) -> dict[str, tuple[int, int]]:
    """``key -> (layer, slot)``: layers are topological generations; within a layer nodes sit
    near the mean slot of their parents, so edges cross less."""
    placed: dict[str, tuple[int, int]] = {}
    for layer, keys in enumerate(nx.topological_generations(graph)):

        def pull(k: str) -> tuple[float, str, str]:
            slots = [placed[p][1] for p in graph.predecessors(k)]
            return (sum(slots) / len(slots) if slots else 0.0, node_label(graph.nodes[k]), k)

        for slot, key in enumerate(sorted(keys, key=pull)):
            placed[key] = (layer, slot)
    return placed


BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 46, 24, 40, 16
LEGEND = (*COLOURS.items(), ("stored", "#ffffff"))
"""Legend entries, left to right; each takes ``24 + 7 * len(label)`` pixels."""
LEGEND_W = sum(24 + 7 * len(label) for label, _ in LEGEND)


def positions(graph: nx.DiGraph) -> tuple[dict[str, tuple[float, float]], float, float]:
    """Top-left corner of every node's box, and the picture's width and height in pixels."""
    slots = layout(graph)
    widths: dict[int, int] = defaultdict(int)
    for layer, _ in slots.values():
        widths[layer] += 1
    most = max(widths.values(), default=1)
    width = 2 * MARGIN + max(most * BOX_W + (most - 1) * GAP_X, LEGEND_W)
    out = {}
    for key, (layer, slot) in slots.items():
        row = widths[layer] * BOX_W + (widths[layer] - 1) * GAP_X
        x = (width - row) / 2 + slot * (BOX_W + GAP_X)
        out[key] = (x, MARGIN + layer * (BOX_H + GAP_Y))
    layers = max(widths, default=0) + 1
    return out, width, 2 * MARGIN + layers * BOX_H + (layers - 1) * GAP_Y + 24


def node_label(attrs: Mapping[str, object]) -> str:
    """The name a DAG node shows: its readable name (label or lineage), else its task."""
    return str(attrs.get("label") or attrs["name"])


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def render_svg(graph: nx.DiGraph) -> str:
    """A standalone SVG of a :func:`dag`: one ``<g class="node">`` per node, coloured by state,
    stored nodes outlined, costs under each name, and a legend."""
    pos, width, height = positions(graph)
    marker = f"hx-arrow-{graph.graph.get('version', 0)}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="11">',
        f"<title>helix v{graph.graph.get('version', '?')} {_e(graph.graph.get('message', ''))}"
        "</title>",
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
        '<g class="edges" fill="none" stroke="#555" stroke-width="1.2">',
    ]
    for parent, child in graph.edges:
        (x1, y1), (x2, y2) = pos[parent], pos[child]
        x1, y1, x2 = x1 + BOX_W / 2, y1 + BOX_H, x2 + BOX_W / 2
        mid = (y1 + y2) / 2
        out.append(
            f'<path class="edge" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} '
            f'{x2:.1f},{y2:.1f}" marker-end="url(#{marker})"/>'
        )
    out.append("</g>")
    for key, (x, y) in pos.items():
        a = graph.nodes[key]
        tip = f"{key}\n{cost_label(a)}\n{a.get('reason') or ''}".strip()
        stroke = f'stroke="{STORED_OUTLINE}" stroke-width="3"' if a["stored"] else 'stroke="#333"'
        out.append(
            f'<g class="node" data-key="{_e(key)}" data-label="{_e(node_label(a))}" '
            f'data-state="{_e(a["state"])}" '
            f'data-changed="{str(a["changed"]).lower()}" data-stored="{str(a["stored"]).lower()}">'
            f"<title>{_e(tip)}</title>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="{colour(a)}" {stroke}/>'
            f'<text x="{x + BOX_W / 2:.1f}" y="{y + 18:.1f}" text-anchor="middle" '
            f'font-weight="bold" font-size="12">{_e(_clip(node_label(a), 26))}</text>'
            f'<text x="{x + BOX_W / 2:.1f}" y="{y + 35:.1f}" text-anchor="middle">'
            f"{_e(_clip(cost_label(a), 32))}</text></g>"
        )
    x = MARGIN
    out.append(f'<g class="legend" transform="translate(0,{height - 18:.0f})">')
    for label, fill in LEGEND:
        stroke = f'"{STORED_OUTLINE}" stroke-width="3"' if label == "stored" else '"#333"'
        out.append(
            f'<rect x="{x}" y="0" width="12" height="12" fill="{fill}" stroke={stroke}/>'
            f'<text x="{x + 16}" y="10">{label}</text>'
        )
        x += 24 + 7 * len(label)
    out.append("</g></svg>")
    return "\n".join(out)


def render_png(graph: nx.DiGraph, path) -> None:
    """The picture of :func:`render_svg`, written as a PNG file (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import FancyBboxPatch, Rectangle
    except ImportError:
        from ._errors import HelixConfigError

        raise HelixConfigError("PNG output needs matplotlib; pip install matplotlib") from None
    pos, width, height = positions(graph)
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")
    for parent, child in graph.edges:
        (x1, y1), (x2, y2) = pos[parent], pos[child]
        ax.annotate(
            "",
            xy=(x2 + BOX_W / 2, y2),
            xytext=(x1 + BOX_W / 2, y1 + BOX_H),
            arrowprops={"arrowstyle": "-|>", "color": "#555"},
        )
    for key, (x, y) in pos.items():
        a = graph.nodes[key]
        stored = a["stored"]
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                BOX_W,
                BOX_H,
                boxstyle="round,pad=0,rounding_size=6",
                facecolor=colour(a),
                edgecolor=STORED_OUTLINE if stored else "#333",
                linewidth=3 if stored else 1,
            )
        )
        name = _clip(node_label(a), 26)
        ax.text(x + BOX_W / 2, y + 16, name, ha="center", va="center", fontsize=9, weight="bold")
        ax.text(x + BOX_W / 2, y + 33, cost_label(a), ha="center", va="center", fontsize=7)
    x = MARGIN
    for label, fill in LEGEND:
        stored = label == "stored"
        ax.add_patch(
            Rectangle(
                (x, height - 18),
                12,
                12,
                facecolor=fill,
                edgecolor=STORED_OUTLINE if stored else "#333",
                linewidth=3 if stored else 1,
            )
        )
        ax.text(x + 16, height - 8, label, fontsize=8)
        x += 24 + 7 * len(label)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


@dataclass(frozen=True, slots=True)
class DagView:
    """The DAG of one version: ``.graph`` (networkx), ``to_svg()``, and an inline picture in
    notebooks."""

    graph: nx.DiGraph

    @property
    def version(self) -> int:
        return int(self.graph.graph["version"])

    def to_svg(self) -> str:
        return render_svg(self.graph)

    def _repr_html_(self) -> str:
        return self.to_svg()
