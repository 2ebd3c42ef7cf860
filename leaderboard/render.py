"""Render the entries as a static HTML page and a Markdown table.

The page has one sortable table per env id and track (:func:`leaderboard.entries.board_rows`):
one ranked row per entry, its newest version, with the earlier versions listed in the row;
the guard metrics of its text (distinct-2, repetition, words per reply and, where
verification measured it, perplexity); and its flags written out in the row (degenerate
text against the env's starting policy, episodes that repeat another entry's), never
hidden behind a hover. Everything a submitter wrote is HTML-escaped, the page loads
nothing from elsewhere (no external assets) and its Content-Security-Policy allows only
its own inline style and its one inline script (by hash). The script sorts a table when a
header is clicked, and on load from the URL: ``index.html?sort=mean&dir=asc`` or
``index.html#sort=date&dir=desc`` (keys: ``rank``, ``entry``, ``model``, ``mean``, ``ci``,
``distinct``, ``repetition``, ``words``, ``perplexity``, ``compute``, ``date``,
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

from leaderboard.entries import Board, Row, board_rows
from leaderboard.stats import DIVERSITY_RATIO, REPETITION_MARGIN
from leaderboard.tracks import TRACKS
from textgym.files import atomic_write

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
    ("distinct", "Distinct-2", "num"),
    ("repetition", "Repetition", "num"),
    ("words", "Words", "num"),
    ("perplexity", "Perplexity", "num"),
    ("compute", "Compute", "num"),
    ("date", "Date", "text"),
    ("verified", "Verified", "num"),
)

RIGHT_ALIGNED = ("rank", "mean", "ci", "distinct", "repetition", "words", "perplexity")
DEGENERATE_MARK = "⚠ Degenerate text"
COPY_MARK = "≡ Same episodes"
#: Per flag kind (:attr:`leaderboard.entries.Row.flags`): the CSS class and the mark its sentence starts with.
FLAG_STYLES = {
    "degenerate": ("flag-degenerate", "⚠ "),
    "copy": ("flag-copy", "≡ "),
    "unchecked": ("flag-unchecked", ""),
}
FLAG_LEGEND = (
    f"<strong>{DEGENERATE_MARK}</strong>: distinct-1 and distinct-2 both under {DIVERSITY_RATIO:g} times the "
    f"env's starting policy's, or repetition over the starting policy's + {REPETITION_MARGIN:g}; listed, never "
    f"unmarked. <strong>{COPY_MARK}</strong>: two rows with the same episodes (copies are refused now; these were "
    "listed before). Distinct-2: unique word pairs over all word pairs of a run's replies, mean over "
    "runs. Repetition: the share of a reply's word pairs that repeat an earlier one, mean over episodes. Perplexity: "
    "median over episodes under the env's LM, where verification measured it."
)
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
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 96rem;
       padding: 0 1rem; color: #1d2330; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .2rem; }
p.track, p.lead, footer { color: #4a5263; margin: .2rem 0 .6rem; }
p.legend { font-size: .9em; }
table { border-collapse: collapse; width: 100%; }
div.scroll { overflow-x: auto; }
th, td { text-align: left; padding: .35rem .4rem; border-bottom: 1px solid #e3e6ec; vertical-align: top; }
th { background: #f3f5f9; font-size: .92em; }
th.num { text-align: right; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; color: inherit; }
th[aria-sort="ascending"] button::after { content: " ▲"; }
th[aria-sort="descending"] button::after { content: " ▼"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td .sub { display: block; color: #5d6677; font-size: .85em; overflow-wrap: anywhere; }
td.entry { overflow-wrap: anywhere; min-width: 13rem; max-width: 24rem; }
td.date { white-space: nowrap; }
td.model { min-width: 9rem; }
.mark-rerun { color: #0a7a35; font-weight: 600; white-space: nowrap; }
.mark-rescored { color: #2457a6; white-space: nowrap; }
tbody tr:hover { background: #fafbfd; }
tr.degenerate, tr.degenerate:hover { background: #fff1f0; }
tr.degenerate td:first-child { box-shadow: inset 4px 0 #c62828; }
td.bad { color: #b71c1c; font-weight: 700; }
ul.flags { list-style: none; margin: .3rem 0 0; padding: 0; }
ul.flags li { font-size: .85em; line-height: 1.35; margin-top: .2rem; padding: .15rem .4rem; border-radius: 4px; }
li.flag-degenerate { background: #fdd8d5; color: #8e1b12; }
li.flag-copy { background: #fff0c2; color: #6b4a00; }
li.flag-unchecked { background: #eef0f4; color: #4a5263; }
details.versions { font-size: .85em; margin-top: .25rem; color: #4a5263; }
details.versions summary { cursor: pointer; }
details.versions ol { margin: .2rem 0 0 1.1rem; padding: 0; }
p.starting { font-size: .9em; }
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


def _ranks(rows: Sequence[Row]) -> list[int]:
    ranks, previous = [], None
    for position, row in enumerate(rows, start=1):
        mean = row.current["rescored"]["mean_reward"]
        ranks.append(ranks[-1] if previous is not None and mean == previous else position)
        previous = mean
    return ranks


def _number(value: float | None, digits: int) -> tuple[str, str]:
    """(data-sort value, shown text) of a number that may be missing."""
    if value is None:
        return "", "—"
    return repr(float(value)), f"{value:.{digits}f}"


def _guard_cells(entry: dict[str, Any], degenerate: set[str]) -> list[str]:
    guard = entry.get("guard", {})
    cells = []
    for key, value, digits, sub, bad in (
        (
            "distinct",
            guard.get("distinct_2"),
            3,
            f"distinct-1 {guard['distinct_1']:.3f}" if "distinct_1" in guard else "",
            "diversity" in degenerate,
        ),
        ("repetition", guard.get("repetition_2"), 3, "", "repetition" in degenerate),
        ("words", guard.get("reply_words"), 1, "per reply", False),
        (
            "perplexity",
            guard.get("perplexity_median"),
            1,
            f"median, under {guard['perplexity_model']}" if "perplexity_model" in guard else "",
            False,
        ),
    ):
        sort, text = _number(value, digits)
        css = "num bad" if bad else "num"
        title = ' aria-label="fails the degeneracy test"' if bad else ""
        sub_html = f'<span class="sub">{_e(sub)}</span>' if sub else ""
        cells.append(f'<td class="{css}" data-key="{key}" data-sort="{sort}"{title}>{_e(text)}{sub_html}</td>')
    return cells


def _version_line(entry: dict[str, Any]) -> str:
    low, high = entry["rescored"]["ci95"]
    mark = VERIFIED_MARKS[entry["verification"]["level"]][0]
    text = f"{entry['submitted']} · mean {entry['rescored']['mean_reward']:.4f} [{low:.4f}, {high:.4f}]"
    if "guard" in entry:
        text += f" · distinct-2 {entry['guard']['distinct_2']:.3f}"
    return f'<li id="entry-{_e(entry["id"][:16])}">{_e(text)} · {_e(mark)} · id {_e(entry["id"][:12])}</li>'


def flag_texts(row: Row) -> list[tuple[str, str]]:
    """Each flag of a row as (CSS class, text with its mark)."""
    return [(FLAG_STYLES[kind][0], FLAG_STYLES[kind][1] + sentence) for kind, sentence in row.flags]


def _flag_items(row: Row) -> str:
    items = "".join(f'<li class="{css}">{_e(text)}</li>' for css, text in flag_texts(row))
    return f'<ul class="flags">{items}</ul>' if items else ""


def _row(rank: int, row: Row) -> str:
    entry = row.current
    model, rescored = entry["model"], entry["rescored"]
    low, high = rescored["ci95"]
    episodes = rescored["episodes"]
    seeds = len(entry["training_seeds"])
    compute_main, compute_details = _compute_text(entry["compute"])
    level = entry["verification"]["level"]
    mark, title = VERIFIED_MARKS[level]
    algo = f" · {model['algo']}" if model.get("algo") else ""
    versions = ""
    if row.earlier:
        count = len(row.earlier)
        versions = (
            f'<details class="versions"><summary>{count} earlier version{"s" if count > 1 else ""}</summary>'
            f"<ol>{''.join(_version_line(old) for old in row.earlier)}</ol></details>"
        )
    cells = [
        f'<td class="num" data-sort="{rank}">{rank}</td>',
        f'<td class="entry" data-sort="{_e(entry["name"])}"><strong>{_e(entry["name"])}</strong>'
        f'<span class="sub">by {_e(entry["submitter"])}</span>{_flag_items(row)}{versions}</td>',
        f'<td class="model" data-sort="{_e(model["id"])}">{_e(model["id"])}'
        f'<span class="sub">{_e(model["revision"])}{_e(algo)} · {_e(model["decoding"])}</span></td>',
        f'<td class="num" data-sort="{rescored["mean_reward"]!r}">{rescored["mean_reward"]:.4f}</td>',
        f'<td class="num" data-sort="{low!r}">{low:.4f} – {high:.4f}'
        f'<span class="sub">{seeds} runs × {episodes // max(seeds, 1)} episodes</span></td>',
        *_guard_cells(entry, row.degenerate),
        f'<td data-sort="{float(entry["compute"]["wall_time_s"])!r}">{_e(compute_main)}'
        f'<span class="sub">{_e(compute_details)}</span></td>',
        f'<td class="date" data-sort="{_e(entry["submitted"])}">{_e(entry["submitted"])}</td>',
        f'<td data-sort="{2 if level == "rerun" else 1}"><span class="mark-{level}" title="{_e(title)}">'
        f"{_e(mark)}</span></td>",
    ]
    css = ' class="degenerate"' if row.degenerate else ""
    flags = " ".join(sorted({"degenerate" if row.degenerate else "", "copy" if row.copy_of else ""} - {""}))
    return f'<tr{css} data-entry="{_e(entry["id"][:16])}" data-flags="{flags}">' + "".join(cells) + "</tr>"


def starting_sentence(board: Board) -> str:
    """Which starting policy a board's text is checked against, in a sentence."""
    if board.starting is None:
        return "No starting-policy entry is listed, so no entry's text can be checked for degeneracy yet."
    guard = board.starting["guard"]
    where = (
        f" (this board has none: the least diverse starting policy listed, on {board.starting['env_id']})"
        if board.starting_is_fallback
        else ""
    )
    return (
        f"Text checked against the env's starting policy, {board.starting['name']}{where}: distinct-1 "
        f"{guard['distinct_1']:.3f}, distinct-2 {guard['distinct_2']:.3f}, repetition {guard['repetition_2']:.3f}, "
        f"{guard['reply_words']:.1f} words per reply."
    )


def render_html(entries: Sequence[dict[str, Any]]) -> str:
    """The leaderboard page for ``entries`` (validated entries, see :mod:`leaderboard.entries`)."""
    sections = []
    for board in board_rows(entries):
        track = TRACKS.get(board.track)
        description = track.description if track else "unofficial track"
        headers = "".join(
            f'<th{RIGHT if key in RIGHT_ALIGNED else ""} data-key="{key}" data-type="{kind}" scope="col">'
            f'<button type="button">{_e(title)}</button></th>'
            for key, title, kind in COLUMNS
        )
        body = "\n".join(_row(rank, row) for rank, row in zip(_ranks(board.rows), board.rows, strict=True))
        sections.append(
            f'<section id="{_slug(board.env_id + "--" + board.track)}">\n'
            f"<h2>{_e(board.env_id)} · {_e(board.track)} track</h2>\n"
            f'<p class="track">{_e(description)}; ranked by mean episode reward, re-scored by textgym; one row per '
            "entry (its newest version).</p>\n"
            f'<p class="track starting">{_e(starting_sentence(board))}</p>\n'
            f'<div class="scroll"><table data-board data-env="{_e(board.env_id)}" data-track="{_e(board.track)}">\n'
            f"<thead><tr>{headers}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>\n</section>"
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
        '<p class="lead">Every score is re-computed from the submitted generations with textgym\'s own reward code, '
        "and every guard metric from the generations themselves. Click a column header to sort.</p>\n"
        f'<p class="lead legend">{marks}</p>\n'
        f'<p class="lead legend">{FLAG_LEGEND}</p>\n'
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
    """The leaderboard as Markdown: one table per env id and track, one row per entry (newest version), best first."""
    lines = [
        "# TextGym leaderboard",
        "",
        "Scores are re-computed from the submitted generations with textgym's own reward code, guard metrics from the "
        "generations themselves. "
        + " ".join(f"{mark}: {title.lower()}." for mark, title in VERIFIED_MARKS.values())
        + f" {DEGENERATE_MARK}: distinct-1 and distinct-2 both under {DIVERSITY_RATIO:g} times the env's starting "
        f"policy's, or repetition over the starting policy's + {REPETITION_MARGIN:g}.",
    ]
    for board in board_rows(entries):
        lines += ["", f"## {markdown_escape(board.env_id)} · {markdown_escape(board.track)} track", ""]
        lines += [markdown_escape(starting_sentence(board)), ""]
        lines.append(
            "| # | Entry | Model | Mean reward | 95% CI | Distinct-2 | Repetition | Words / reply | Perplexity "
            "| Runs × episodes | Compute | Date | Verified | Flags |"
        )
        lines.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|")
        for rank, row in zip(_ranks(board.rows), board.rows, strict=True):
            entry = row.current
            model, rescored = entry["model"], entry["rescored"]
            low, high = rescored["ci95"]
            seeds = len(entry["training_seeds"])
            compute_main, compute_details = _compute_text(entry["compute"])
            compute = compute_main + (f"; {compute_details}" if compute_details else "")
            guard = entry.get("guard", {})
            versions = f" ({len(row.earlier) + 1} versions; newest shown)" if row.earlier else ""
            flags = [text for _, text in flag_texts(row)]
            cells = [
                str(rank),
                f"{markdown_escape(entry['name'])} (by {markdown_escape(entry['submitter'])}){versions}",
                f"{markdown_escape(model['id'])} {markdown_escape(model['revision'])}",
                f"{rescored['mean_reward']:.4f}",
                f"{low:.4f} – {high:.4f}",
                _number(guard.get("distinct_2"), 3)[1],
                _number(guard.get("repetition_2"), 3)[1],
                _number(guard.get("reply_words"), 1)[1],
                _number(guard.get("perplexity_median"), 1)[1],
                f"{seeds} × {rescored['episodes'] // max(seeds, 1)}",
                markdown_escape(compute),
                markdown_escape(entry["submitted"]),
                VERIFIED_MARKS[entry["verification"]["level"]][0],
                markdown_escape("; ".join(flags)),
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
    atomic_write(page, render_html(entries))
    atomic_write(table, render_markdown(entries))
    return page, table
