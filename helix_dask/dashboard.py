"""The ``/helix`` page and its JSON API, served by the scheduler's dashboard HTTP server.

``/helix`` lists the versions and shows one (the newest, or any chosen): its DAG, its nodes
with their state (live, from the scheduler, while the version runs) and its materializer
events, the time saved and the storage against the budget. The page is a shell that polls the
JSON routes; it never reloads itself. The page is linked from the Dask dashboard's navigation.

``/helix/api/versions[?limit=N]``, ``/helix/api/runs/<v>``, ``/helix/api/runs/<v>/dag`` (SVG)
and ``/helix/api/info`` answer in JSON; malformed requests get 400, unknown versions 404.
``POST /helix/api/catalog`` with ``{"method": ..., "params": {...}}`` answers the catalog's
read queries (:mod:`helix_dask._scheduler_api`) for ``helix --scheduler http://...``.
Every catalog query runs in a thread, off the scheduler's event loop, on the dashboard's own
read-only connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import weakref
from typing import TYPE_CHECKING, Any

from tornado import web

from . import history
from ._drawing import COLOURS, render_svg
from ._events import RunReport, report_to_dict
from ._lineage import node_names
from ._location import public_location
from ._scheduler_api import answer, reader
from .catalog import Catalog
from .presentation import e, to_data

if TYPE_CHECKING:
    from distributed import Scheduler

    from .scheduler_plugin import HelixSchedulerPlugin

logger = logging.getLogger("helix_dask")

POLL_SECONDS = 2
PAGE_VERSIONS = 50
"""Versions the page lists; the JSON API lists them all unless ``?limit=N``."""

_installed: weakref.WeakSet[Scheduler] = weakref.WeakSet()


def install_routes(scheduler: Scheduler, plugin: HelixSchedulerPlugin) -> None:
    """Add the ``/helix`` routes to ``scheduler``'s HTTP server (once per scheduler), and a
    ``Helix`` entry to the navigation bar of the Dask dashboard's pages.

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
            (r"/helix/api/versions/?", VersionsHandler, kwargs),
            (r"/helix/api/runs/([^/]+)/dag/?", DagHandler, kwargs),
            (r"/helix/api/runs/([^/]+)/?", RunHandler, kwargs),
            (r"/helix/api/info/?", InfoHandler, kwargs),
            (r"/helix/api/catalog/?", CatalogHandler, kwargs),
        ],
    )
    _add_navigation_link(scheduler)
    _installed.add(scheduler)
    logger.debug("helix dashboard routes installed under /helix")


def _add_navigation_link(scheduler: Scheduler) -> None:
    """List ``helix`` among the pages of the navigation bar every Bokeh page of the dashboard
    renders (``template_variables(scheduler)["pages"]``, memoized per scheduler and shared with
    the running Bokeh application)."""
    # Imported by the scheduler when it serves the Bokeh dashboard; importing it here when it
    # does not (no bokeh, or no dashboard) would cost seconds for a navigation bar nobody sees.
    dashboard = sys.modules.get("distributed.dashboard.scheduler")
    if dashboard is None:
        return
    try:
        pages = dashboard.template_variables(scheduler)["pages"]
    except Exception as exc:  # a distributed whose template changed: the page still works
        logger.warning("helix could not add /helix to the dashboard's navigation: %s", exc)
        return
    if "helix" not in pages:
        pages.append("helix")


class _HelixHandler(web.RequestHandler):
    """Finds the live plugin for every request; runs catalog reads in a thread."""

    def initialize(self, scheduler: Scheduler, plugin: HelixSchedulerPlugin) -> None:
        self.scheduler = scheduler
        self._fallback = plugin

    @property
    def plugin(self) -> HelixSchedulerPlugin:
        return self.scheduler.plugins.get("helix", self._fallback)  # type: ignore[return-value]

    async def read(self, func, *args):
        """``func(catalog, *args)`` in a thread, on the dashboard's connection."""
        return await asyncio.to_thread(func, reader(str(self.plugin.store)), *args)

    def write_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(to_data(data), default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            reason = exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "error": reason}))

    def version_arg(self, text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise web.HTTPError(400, f"version {text!r} is not a number") from None
        if v < 1:
            raise web.HTTPError(400, f"version {v} is not a version id (1, 2, ...)")
        if v >= 2**63:  # beyond SQLite's integers: no such version
            raise web.HTTPError(404, f"no version {v}")
        return v


class VersionsHandler(_HelixHandler):
    async def get(self) -> None:
        text = self.get_query_argument("limit", None)
        limit = None
        if text:
            try:
                limit = int(text)
            except ValueError:
                raise web.HTTPError(400, f"limit {text!r} is not a number") from None
            if not 0 <= limit < 2**63:
                raise web.HTTPError(400, f"limit {limit} is not a count of versions")
        self.write_json(await self.read(history.log_rows, limit))


def _run_data(cat: Catalog, version: int) -> dict[str, Any] | None:
    try:
        report = cat.run(version)
    except KeyError:
        return None
    return _report_data(report)


def _report_data(report: RunReport) -> dict[str, Any]:
    names = node_names(report.nodes)
    data = report_to_dict(report)
    for n in data["nodes"]:
        n["label"] = n.get("label") or ""
        n["display"] = names[n["key"]]
        n["state"] = history.STATES[n["decision"]]
    data["summary"] = report.summary()
    return data


class RunHandler(_HelixHandler):
    async def get(self, version: str) -> None:
        v = self.version_arg(version)
        run = self.plugin.book.runs.get(v)
        if run is not None and run.finished is None:
            # Running here: the scheduler's own record, which the catalog's lags behind.
            data: dict[str, Any] | None = _report_data(run.report())
        else:
            data = await self.read(_run_data, v)
        if data is None:
            raise web.HTTPError(404, f"no version {v}")
        if data["status"] == "running":  # where each node is now, from the scheduler
            tasks = self.scheduler.tasks
            data["live"] = {
                n["key"]: tasks[n["key"]].state if n["key"] in tasks else "forgotten"
                for n in data["nodes"]
            }
        self.write_json(data)


def _dag_svg(cat: Catalog, version: int) -> str | None:
    try:
        return render_svg(history.dag(cat, version))
    except KeyError:
        return None


class DagHandler(_HelixHandler):
    async def get(self, version: str) -> None:
        v = self.version_arg(version)
        svg = await self.read(_dag_svg, v)
        if svg is None:
            raise web.HTTPError(404, f"no version {v}")
        self.set_header("Content-Type", "image/svg+xml")
        self.set_header("Cache-Control", "no-store")
        self.write(svg)


def _store_info(cat: Catalog) -> dict[str, Any]:
    return {
        "stored_bytes": cat.stored_bytes(),
        "running": [v.id for v in cat.versions() if v.status == "running"],
        "versions": len(cat.versions()),
        "time_saved": sum(v.time_saved for v in cat.versions()),
    }


class InfoHandler(_HelixHandler):
    async def get(self) -> None:
        p = self.plugin
        info = await self.read(_store_info)
        self.write_json(
            {
                "store": public_location(str(p.store)),
                "budget": p.budget,
                "policy": getattr(p, "policy_name", ""),
                **info,
            }
        )


class CatalogHandler(_HelixHandler):
    """One catalog read per request: the body is ``{"method": ..., "params": {...}}``; the
    answer is ``{"data": ...}``, 400 for an unknown method or bad parameters, 404 for a
    version not in the catalog."""

    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the body is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            raise web.HTTPError(400, 'expected {"method": NAME, "params": {...}}')
        got = await asyncio.to_thread(
            answer, str(self.plugin.store), body["method"], body.get("params")
        )
        if "error" in got:
            raise web.HTTPError(404 if got["missing"] else 400, got["error"])
        self.write_json(got)


class PageHandler(_HelixHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(render_page(self.request.path.rstrip("/")))


def render_page(base: str) -> str:
    """The ``/helix`` page: a shell whose script polls the JSON routes under ``base``."""
    legend = "".join(
        f"<span class='key' style='background:{c}'></span>{e(s)} " for s, c in COLOURS.items()
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>helix</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>helix</h1><p class='muted' id='store'>loading&hellip;</p>"
        "<div class='cards' id='cards'></div>"
        "<h2 id='title'></h2><p id='summary'></p>"
        f"<div class='dag' id='dag'></div><p class='muted'>{legend}</p>"
        "<h3>Nodes</h3><table id='nodes'></table>"
        "<h3>Events</h3><ul id='events'></ul>"
        "<h2>Versions</h2><table id='versions'></table>"
        f"<script>const BASE = {json.dumps(base)}; const POLL = {POLL_SECONDS * 1000};"
        f" const LIMIT = {PAGE_VERSIONS};\n{_SCRIPT}</script></body></html>"
    )


_SCRIPT = r"""
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) =>
  ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
const bytes = (n) => { const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 2 : 0) + " " + u[i]; };
const secs = (s) => s == null ? "-" : s.toFixed(2) + "s";
let shownDag = "";
function selected(versions) {
  const m = location.hash.match(/^#v(\d+)$/);
  return m ? Number(m[1]) : (versions.length ? versions[0].version : null);
}
async function getJSON(path) {
  const r = await fetch(BASE + path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
async function refresh() {
  const [info, versions] = await Promise.all([getJSON("/api/info"),
                                              getJSON("/api/versions?limit=" + LIMIT)]);
  document.getElementById("store").textContent = "store " + info.store + ", policy " +
    info.policy + ", running: " + (info.running.map((v) => "v" + v).join(", ") || "none");
  const share = info.budget ? 100 * info.stored_bytes / info.budget : 0;
  document.getElementById("cards").innerHTML =
    `<div class='card'><div class='muted'>versions</div>${info.versions}</div>` +
    `<div class='card'><div class='muted'>time saved, all versions</div>` +
    `${secs(info.time_saved)}</div>` +
    `<div class='card'><div class='muted'>storage</div>${bytes(info.stored_bytes)} of ` +
    `${bytes(info.budget)}<div class='bar'>` +
    `<div style='width:${Math.min(share, 100).toFixed(1)}%'>` +
    `</div></div><span class='muted'>${share.toFixed(1)}% of the budget</span></div>`;
  document.getElementById("versions").innerHTML =
    "<tr><th>version</th><th>started</th><th>status</th><th>message</th><th>computed</th>" +
    "<th>loaded</th><th>pruned</th><th>wall</th><th>saved</th><th>stored</th></tr>" +
    versions.map((r) => `<tr class='version' data-version='${r.version}'>` +
      `<td><a href='#v${r.version}'>v${r.version}</a></td>` +
      `<td>${esc(new Date(r.started * 1000).toLocaleString())}</td>` +
      `<td>${esc(r.status)}${r.repeats ? ", = v" + r.repeats : ""}</td><td>${esc(r.message)}</td>` +
      `<td>${r.computed}</td><td>${r.loaded}</td><td>${r.pruned}</td>` +
      `<td>${r.wall_seconds == null ? "running" : secs(r.wall_seconds)}</td>` +
      `<td>${secs(r.time_saved)}</td><td>${bytes(r.stored_bytes)}</td></tr>`).join("");
  const v = selected(versions);
  if (v == null) {
    document.getElementById("title").textContent =
      "No versions yet: compute a graph with helix tasks.";
    return;
  }
  const run = await getJSON("/api/runs/" + v);
  document.getElementById("title").textContent = `v${run.version} ${run.message}`;
  document.getElementById("summary").textContent = `${run.summary} · ${run.status}`;
  const live = run.live || {};
  document.getElementById("nodes").innerHTML =
    "<tr><th>node</th><th>task</th><th>state</th><th>now</th><th>stored</th><th>compute</th>" +
    "<th>arguments</th></tr>" +
    run.nodes.map((n) => `<tr class='node' data-key='${esc(n.key)}' data-state='${esc(n.state)}'` +
      ` data-live='${esc(live[n.key] || "")}'><td class='label'>${esc(n.display)}</td>` +
      `<td>${esc(n.name)}</td><td class='state'>${esc(n.state)}</td>` +
      `<td class='live'>${esc(live[n.key] || (run.status === "running" ? "" : run.status))}</td>` +
      `<td>${esc(n.materialization || "")}</td><td>${secs(n.compute_seconds)}</td>` +
      `<td>${esc(Object.entries(n.arg_values).map(([k, x]) => k + "=" + x).join(", "))}</td></tr>`
    ).join("");
  document.getElementById("events").innerHTML = run.events.map((ev) =>
    `<li>${esc(ev.kind)} ${esc(ev.name)}-${esc(ev.signature.slice(0, 8))}: ${esc(ev.reason)}</li>`
  ).join("") || "<li class='muted'>none</li>";
  const stamp = v + ":" + run.status + ":" +
    run.nodes.map((n) => n.decision + n.materialization).join();
  if (stamp !== shownDag) {
    const r = await fetch(BASE + "/api/runs/" + v + "/dag", {cache: "no-store"});
    document.getElementById("dag").innerHTML = r.ok ? await r.text() : "";
    shownDag = stamp;
  }
  for (const g of document.querySelectorAll("#dag g.node")) {
    g.setAttribute("data-live", live[g.getAttribute("data-key")] || "");
  }
}
function tick() {
  refresh().catch((err) => { document.getElementById("store").textContent = "helix: " + err; })
    .finally(() => setTimeout(tick, POLL));
}
window.addEventListener("hashchange", () => { shownDag = ""; refresh(); });
tick();
"""


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
.key { display: inline-block; width: 0.9em; height: 0.9em; margin: 0 0.3em 0 0.8em; }
#dag g.node[data-live="processing"] rect { stroke: #e45756; stroke-width: 3; }
"""
