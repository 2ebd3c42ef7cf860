"""Render the entries as a static HTML page and a Markdown table.

The page has one sortable table per env id and track; everything a submitter wrote is
HTML-escaped, the page loads nothing from elsewhere (no external assets) and its
Content-Security-Policy allows only its own inline style and its one inline script
(by hash). The script sorts a table when a header is clicked, and on load from the URL:
``index.html?sort=mean&dir=asc`` or ``index.html#sort=date&dir=desc`` (keys:
``rank``, ``entry``, ``model``, ``mean``, ``ci``, ``seeds``, ``compute``, ``date``,
``verified``). Rendering is deterministic: the same entries give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leaderboard.tracks import TRACKS

SITE_DIR = Path(__file__).resolve().parent / "site"
VERIFIED_MARKS = {
    "rerun": (
        "✔✔ re-run",
        "Prompts rebuilt and every generation re-scored by textgym; the checkpoints re-run on "
        "held-out prompts confirmed the claimed score",
    ),
    "rescored": ("✔ re-scored", "Prompts rebuilt and every generation re-scored by textgym"),
}
#: (key, header, type): the columns of every table, in order.
COLUMNS = (
    ("rank", "#", "num"),
    ("entry", "Entry", "text"),
    ("model", "Model", "text"),
    ("mean", "Mean reward", "num"),
    ("ci", "95% CI", "num"),
    ("seeds", "Runs × episodes", "num"),
    ("compute", "Compute", "num"),
    ("date", "Date", "text"),
    ("verified", "Verified", "num"),
)

RIGHT_ALIGNED = ("rank", "mean", "ci", "seeds")
RIGHT = ' class="num"'

SCRIPT = """
(function () {
  "use strict";
  function value(row, index, type) {
    var cell = row.cells[index];
    var raw = cell.getAttribute("data-sort");
    if (raw === null) { raw = cell.textContent; }
    if (type === "num") { var n = parseFloat(raw); return isNaN(n) ? -Infinity : n; }
    return raw.toLowerCase();
  }
  function sortTable(table, key, dir) {
    var headers = table.tHead.rows[0].cells, index = -1, type = "text", i;
    for (i = 0; i < headers.length; i++) {
      if (headers[i].getAttribute("data-key") === key) { index = i; type = headers[i].getAttribute("data-type"); }
    }
    if (index < 0) { return; }
    for (i = 0; i < headers.length; i++) { headers[i].removeAttribute("aria-sort"); }
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows), sign = dir === "asc" ? 1 : -1;
    var order = rows.map(function (row, position) { return {row: row, position: position}; });
    order.sort(function (a, b) {
      var x = value(a.row, index, type), y = value(b.row, index, type);
      if (x < y) { return -sign; }
      if (x > y) { return sign; }
      return a.position - b.position;
    });
    order.forEach(function (item) { body.appendChild(item.row); });
    headers[index].setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    table.setAttribute("data-sorted", key + "-" + dir);
  }
  var tables = Array.prototype.slice.call(document.querySelectorAll("table[data-board]"));
  tables.forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header) {
      var button = header.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var key = header.getAttribute("data-key");
        var current = table.getAttribute("data-sorted") || "";
        var dir = current === key + "-desc" ? "asc" : "desc";
        if (current !== key + "-desc" && current !== key + "-asc" && header.getAttribute("data-type") === "text") {
          dir = "asc";
        }
        sortTable(table, key, dir);
      });
    });
  });
  var query = new URLSearchParams(window.location.search);
  var fragment = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  var key = query.get("sort") || fragment.get("sort");
  var dir = (query.get("dir") || fragment.get("dir")) === "asc" ? "asc" : "desc";
  if (key) { tables.forEach(function (table) { sortTable(table, key, dir); }); }
  document.documentElement.setAttribute("data-js", "ready");
})();
"""

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d2330; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .2rem; }
p.track, p.lead, footer { color: #4a5263; margin: .2rem 0 .6rem; }
p.legend { font-size: .9em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .55rem; border-bottom: 1px solid #e3e6ec; vertical-align: top; }
th { background: #f3f5f9; font-size: .92em; }
th.num { text-align: right; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " ▲"; }
th[aria-sort="descending"] button::after { content: " ▼"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .sub { display: block; color: #5d6677; font-size: .85em; overflow-wrap: anywhere; }
td.entry { overflow-wrap: anywhere; min-width: 12rem; max-width: 22rem; }
td.date { white-space: nowrap; }
.mark-rerun { color: #0a7a35; font-weight: 600; white-space: nowrap; }
.mark-rescored { color: #2457a6; white-space: nowrap; }
tbody tr:hover { background: #fafbfd; }
"""


def script_hash() -> str:
    """The CSP source expression that allows exactly :data:`SCRIPT`."""
    digest = hashlib.sha256(SCRIPT.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _compute_text(compute: dict[str, Any]) -> tuple[str, str]:
    main = f"{compute['hardware']}, {_duration(float(compute['wall_time_s']))}"
    details = []
    if compute.get("gpu_hours") is not None:
        details.append(f"{compute['gpu_hours']:g} GPU-h")
    if compute.get("env_steps") is not None:
        details.append(f"{compute['env_steps']:,} env steps")
    return main, ", ".join(details)


def groups(entries: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    """Entries grouped by (env id, track), each group ranked by re-scored mean (best first, then oldest)."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault((entry["env_id"], entry["track"]), []).append(entry)
    ordered = []
    for key in sorted(grouped):
        rows = sorted(
            enumerate(grouped[key]),
            key=lambda item: (-item[1]["rescored"]["mean_reward"], item[1]["submitted"], item[0]),
        )
        ordered.append((key, [entry for _, entry in rows]))
    return ordered


def _ranks(rows: Sequence[dict[str, Any]]) -> list[int]:
    ranks, previous = [], None
    for position, entry in enumerate(rows, start=1):
        mean = entry["rescored"]["mean_reward"]
        ranks.append(ranks[-1] if previous is not None and mean == previous else position)
        previous = mean
    return ranks


def _row(rank: int, entry: dict[str, Any]) -> str:
    model, rescored = entry["model"], entry["rescored"]
    low, high = rescored["ci95"]
    episodes = rescored["episodes"]
    seeds = len(entry["training_seeds"])
    compute_main, compute_details = _compute_text(entry["compute"])
    level = entry["verification"]["level"]
    mark, title = VERIFIED_MARKS[level]
    algo = f" · {model['algo']}" if model.get("algo") else ""
    cells = [
        f'<td class="num" data-sort="{rank}">{rank}</td>',
        f'<td class="entry" data-sort="{_e(entry["name"])}"><strong>{_e(entry["name"])}</strong>'
        f'<span class="sub">by {_e(entry["submitter"])}</span></td>',
        f'<td data-sort="{_e(model["id"])}">{_e(model["id"])}'
        f'<span class="sub">{_e(model["revision"])}{_e(algo)} · {_e(model["decoding"])}</span></td>',
        f'<td class="num" data-sort="{rescored["mean_reward"]!r}">{rescored["mean_reward"]:.4f}</td>',
        f'<td class="num" data-sort="{low!r}">{low:.4f} – {high:.4f}</td>',
        f'<td class="num" data-sort="{seeds}">{seeds} × {episodes // max(seeds, 1)}</td>',
        f'<td data-sort="{float(entry["compute"]["wall_time_s"])!r}">{_e(compute_main)}'
        f'<span class="sub">{_e(compute_details)}</span></td>',
        f'<td class="date" data-sort="{_e(entry["submitted"])}">{_e(entry["submitted"])}</td>',
        f'<td data-sort="{2 if level == "rerun" else 1}"><span class="mark-{level}" title="{_e(title)}">'
        f"{_e(mark)}</span></td>",
    ]
    return f'<tr data-entry="{_e(entry["id"][:16])}">' + "".join(cells) + "</tr>"


def render_html(entries: Sequence[dict[str, Any]]) -> str:
    """The leaderboard page for ``entries`` (validated entries, see :mod:`leaderboard.entries`)."""
    sections = []
    for (env_id, track_name), rows in groups(entries):
        track = TRACKS.get(track_name)
        description = track.description if track else "unofficial track"
        headers = "".join(
            f'<th{RIGHT if key in RIGHT_ALIGNED else ""} data-key="{key}" data-type="{kind}" scope="col">'
            f'<button type="button">{_e(title)}</button></th>'
            for key, title, kind in COLUMNS
        )
        body = "\n".join(_row(rank, entry) for rank, entry in zip(_ranks(rows), rows, strict=True))
        sections.append(
            f'<section id="{_slug(env_id + "--" + track_name)}">\n'
            f"<h2>{_e(env_id)} · {_e(track_name)} track</h2>\n"
            f'<p class="track">{_e(description)}; ranked by mean episode reward, re-scored by textgym.</p>\n'
            f'<table data-board data-env="{_e(env_id)}" data-track="{_e(track_name)}">\n'
            f"<thead><tr>{headers}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n</section>"
        )
    if not sections:
        sections.append('<p class="lead" id="empty">No verified entries yet.</p>')
    csp = (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src {script_hash()}; "
        "base-uri 'none'; form-action 'none'"
    )
    marks = " ".join(f"<strong>{_e(mark)}</strong>: {_e(title)}." for mark, title in VERIFIED_MARKS.values())
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>TextGym leaderboard</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        "<h1>TextGym leaderboard</h1>\n"
        '<p class="lead">Every score is re-computed from the submitted generations with textgym\'s own reward code. '
        "Click a column header to sort.</p>\n"
        f'<p class="lead legend">{marks}</p>\n'
        + "\n".join(sections)
        + f"\n<footer><p>{len(entries)} entries · rendered from leaderboard/entries/entries.json</p></footer>\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def markdown_escape(text: Any) -> str:
    r"""Escape text for a Markdown table cell: no markup, links, HTML or cell breaks survive.

    >>> markdown_escape("<b>x</b> | [a](b) & *c*")
    '\\<b\\>x\\</b\\> \\| \\[a\\]\\(b\\) &amp; \\*c\\*'
    """
    text = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text.replace("&", "&amp;"))


def render_markdown(entries: Sequence[dict[str, Any]]) -> str:
    """The leaderboard as Markdown: one table per env id and track, best first."""
    lines = [
        "# TextGym leaderboard",
        "",
        "Scores are re-computed from the submitted generations with textgym's own reward code. "
        + " ".join(f"{mark}: {title.lower()}." for mark, title in VERIFIED_MARKS.values()),
    ]
    for (env_id, track_name), rows in groups(entries):
        lines += ["", f"## {markdown_escape(env_id)} · {markdown_escape(track_name)} track", ""]
        lines.append("| # | Entry | Model | Mean reward | 95% CI | Runs × episodes | Compute | Date | Verified |")
        lines.append("|---:|---|---|---:|---:|---:|---|---|---|")
        for rank, entry in zip(_ranks(rows), rows, strict=True):
            model, rescored = entry["model"], entry["rescored"]
            low, high = rescored["ci95"]
            seeds = len(entry["training_seeds"])
            compute_main, compute_details = _compute_text(entry["compute"])
            compute = compute_main + (f"; {compute_details}" if compute_details else "")
            cells = [
                str(rank),
                f"{markdown_escape(entry['name'])} (by {markdown_escape(entry['submitter'])})",
                f"{markdown_escape(model['id'])} {markdown_escape(model['revision'])}",
                f"{rescored['mean_reward']:.4f}",
                f"{low:.4f} – {high:.4f}",
                f"{seeds} × {rescored['episodes'] // max(seeds, 1)}",
                markdown_escape(compute),
                markdown_escape(entry["submitted"]),
                VERIFIED_MARKS[entry["verification"]["level"]][0],
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if not entries:
        lines += ["", "No verified entries yet."]
    return "\n".join(lines) + "\n"


def write_site(entries: Sequence[dict[str, Any]], out: str | os.PathLike = SITE_DIR) -> tuple[Path, Path]:
    """Write ``index.html`` and ``LEADERBOARD.md`` under ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page, table = out / "index.html", out / "LEADERBOARD.md"
    page.write_text(render_html(entries), encoding="utf-8")
    table.write_text(render_markdown(entries), encoding="utf-8")
    return page, table
