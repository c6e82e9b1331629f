"""The ``/helix`` page and its JSON API, served by the scheduler's dashboard HTTP server.

``/helix`` shows the versions, the latest run's DAG with node states, the time saved and the
storage used against the budget, refreshing itself every few seconds.
``/helix/api/versions``, ``/helix/api/runs/<v>`` and ``/helix/api/info`` answer in JSON.
"""

from __future__ import annotations

import json
import logging
import weakref
from html import escape
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes
from tornado import web

from . import views
from ._events import report_to_dict

if TYPE_CHECKING:
    from distributed import Scheduler

    from .scheduler_plugin import HelixSchedulerPlugin

logger = logging.getLogger("helix_dask")

REFRESH_SECONDS = 5
PAGE_VERSIONS = 50
"""Versions the page lists; the JSON API lists them all unless ``?limit=N``."""

_installed: weakref.WeakSet[Scheduler] = weakref.WeakSet()


def install_routes(scheduler: Scheduler, plugin: HelixSchedulerPlugin) -> None:
    """Add the ``/helix`` routes to ``scheduler``'s HTTP server (once per scheduler).

    The handlers look the plugin up at request time (``scheduler.plugins["helix"]``), so a
    plugin registered again by a second ``hx.setup`` serves the page; ``plugin`` answers until
    then. A scheduler without an HTTP server gets no routes.
    """
    app = getattr(scheduler, "http_application", None)
    if app is None or scheduler in _installed:
        return
    kwargs = {"scheduler": scheduler, "plugin": plugin}
    app.add_handlers(
        r".*",
        [
            (r"/helix/?", PageHandler, kwargs),
            (r"/helix/api/versions", VersionsHandler, kwargs),
            (r"/helix/api/runs/(\d+)", RunHandler, kwargs),
            (r"/helix/api/info", InfoHandler, kwargs),
        ],
    )
    _installed.add(scheduler)
    logger.debug("helix dashboard routes installed under /helix")


class _HelixHandler(web.RequestHandler):
    """Finds the live plugin for every request."""

    def initialize(self, scheduler: Scheduler, plugin: HelixSchedulerPlugin) -> None:
        self.scheduler = scheduler
        self._fallback = plugin

    @property
    def plugin(self) -> HelixSchedulerPlugin:
        return self.scheduler.plugins.get("helix", self._fallback)  # type: ignore[return-value]

    def write_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(views.to_data(data), default=str))


class VersionsHandler(_HelixHandler):
    def get(self) -> None:
        limit = self.get_query_argument("limit", None)
        self.write_json(views.log_rows(self.plugin.catalog, int(limit) if limit else None))


class RunHandler(_HelixHandler):
    def get(self, version: str) -> None:
        try:
            report = self.plugin.catalog.run(int(version))
        except KeyError:
            raise web.HTTPError(404, f"no version {version}") from None
        self.write_json({**report_to_dict(report), "summary": report.summary()})


class InfoHandler(_HelixHandler):
    def get(self) -> None:
        self.write_json(self.plugin.handle_info())


class PageHandler(_HelixHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(render_page(self.plugin))


def render_page(plugin: HelixSchedulerPlugin) -> str:
    """The whole ``/helix`` page as one HTML string."""
    cat = plugin.catalog
    info = plugin.handle_info()
    rows = views.log_rows(cat, PAGE_VERSIONS)
    every = cat.versions()
    stored, budget = info["stored_bytes"], plugin.budget
    share = 100.0 * stored / budget if budget else 0.0
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'><title>helix</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>helix</h1><p class='muted'>store <code>{escape(plugin.store)}</code>, "
        f"policy {escape(str(info.get('policy', '')))}, "
        f"running: {escape(', '.join(f'v{v}' for v in info.get('running', [])) or 'none')}</p>",
        "<div class='cards'>",
        _card("versions", str(len(every))),
        _card("time saved, all versions", f"{sum(v.time_saved for v in every):.2f}s"),
        _card(
            "storage",
            f"{format_bytes(stored)} of {format_bytes(budget)}"
            f"<div class='bar'><div style='width:{min(share, 100):.1f}%'></div></div>"
            f"<span class='muted'>{share:.1f}% of the budget</span>",
        ),
        "</div>",
    ]
    if rows:
        latest = rows[0]
        run = cat.run(latest.version)
        parts += [
            f"<h2>v{latest.version} {escape(latest.message)}</h2>",
            f"<p>{escape(run.summary())} of ~{latest.full_seconds:.2f}s computing everything "
            f"&middot; {escape(latest.status)}</p>",
            f"<div class='dag'>{views.render_svg(views.dag(cat, latest.version))}</div>",
        ]
    else:
        parts.append("<p>No versions yet: compute a graph with helix tasks.</p>")
    parts.append(
        "<h2>Versions</h2><table><tr><th>version</th><th>started</th><th>status</th>"
        "<th>message</th><th>computed</th><th>loaded</th><th>pruned</th><th>wall</th>"
        "<th>saved</th><th>stored</th></tr>"
    )
    for r in rows:
        wall = "running" if r.wall_seconds is None else f"{r.wall_seconds:.2f}s"
        parts.append(
            f"<tr><td>v{r.version}</td><td>{views.when(r.started)}</td><td>{escape(r.status)}</td>"
            f"<td>{escape(r.message)}</td><td>{r.computed}</td><td>{r.loaded}</td>"
            f"<td>{r.pruned}</td><td>{wall}</td><td>{r.time_saved:.2f}s</td>"
            f"<td>{format_bytes(r.stored_bytes)}</td></tr>"
        )
    parts.append("</table></body></html>")
    return "".join(parts)


def _card(title: str, body: str) -> str:
    return f"<div class='card'><div class='muted'>{escape(title)}</div><div>{body}</div></div>"


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #777; font-size: 0.9em; }
.cards { display: flex; gap: 1em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 12em;
        font-size: 1.2em; }
.bar { background: #eee; height: 8px; border-radius: 4px; margin: 0.3em 0; }
.bar div { background: #4c78a8; height: 8px; border-radius: 4px; }
table { border-collapse: collapse; } td, th { padding: 0.25em 0.8em; text-align: left; }
tr:nth-child(even) { background: #f6f6f6; } .dag { overflow-x: auto; }
"""
