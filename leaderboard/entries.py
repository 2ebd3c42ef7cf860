"""The leaderboard's entries: one JSON file, appended to, never rewritten or shortened.

``leaderboard/entries/entries.json`` holds ``{"format_version": 2, "entries": [...],
"migrations": [...]}`` (schema: ``schema/entries.schema.json``). :func:`append_entry` adds
one entry: it reads the file, refuses a bundle already listed or one whose episodes copy a
listed entry's, checks that every old entry is still there unchanged and in order, and
replaces the file atomically (:func:`textgym.files.atomic_write`), so a crash at
any moment leaves either the old or the new file.

Format 2 adds, for every entry, ``guard`` (its guard metrics, recomputed from the
generations) and ``content`` (the fingerprints of its episodes). A format-1 file is moved
to format 2 once, explicitly, by :func:`migrate_to_v2` (``textgym-leaderboard migrate``),
which re-verifies each entry's bundle; it is the only change ever made to a listed entry,
and it only adds these two fields.

Entries are shown as rows: a submission with the :func:`~leaderboard.copies.identity` (env
id, track, submitter, name) of a listed entry is a new *version* of it; the newest version
is ranked and the older ones stay reachable from its row (:func:`board_rows`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baselines.algorithms import starting_policy_labels
from leaderboard import safejson
from leaderboard.copies import entry_identity, find_copies
from leaderboard.report import REWARD_ATOL, Report
from leaderboard.stats import degenerate_reasons
from leaderboard.verify import schema_errors
from textgym.files import atomic_write

ROOT = Path(__file__).resolve().parent
ENTRIES_PATH = ROOT / "entries" / "entries.json"
MAX_ENTRIES_BYTES = 64 << 20
FORMAT_VERSION = 2
#: ``model.algo`` of the entries that are an env's untrained starting policy (``bundle --evaluation initial``).
STARTING_POLICY_ALGOS = tuple(starting_policy_labels())


class EntriesError(ValueError):
    """An entries file that is unreadable, invalid, or an entry that cannot be added."""


def load_document(path: str | os.PathLike = ENTRIES_PATH) -> dict[str, Any]:
    """The whole entries file (an absent file is an empty format-2 one).

    Raises:
        EntriesError: The file is unreadable or does not match the entries schema.
    """
    path = Path(path)
    if not path.exists():
        return {"format_version": FORMAT_VERSION, "entries": []}
    try:
        document = safejson.load_json_file(path, MAX_ENTRIES_BYTES, str(path))
    except safejson.UnsafeInputError as error:
        raise EntriesError(str(error)) from error
    errors = schema_errors(document, "entries", str(path))
    if errors:
        raise EntriesError("; ".join(errors))
    return document


def load_entries(path: str | os.PathLike = ENTRIES_PATH) -> list[dict[str, Any]]:
    """The entries of an entries file, oldest first (an absent file has none).

    Raises:
        EntriesError: The file is unreadable or does not match the entries schema.
    """
    return load_document(path)["entries"]


def make_entry(report: Report, submitted: dt.date | None = None) -> dict[str, Any]:
    """The entry of a bundle that verified (by re-scoring, and by re-running when ``report.rerun`` is set)."""
    if not report.ok or report.bundle is None or report.rescored is None:
        raise EntriesError("only a bundle that verified can become an entry")
    if report.guard is None or report.content is None:
        raise EntriesError("the report lacks the recomputed guard metrics or the content fingerprints")
    manifest = report.bundle.manifest
    entry: dict[str, Any] = {
        "id": report.bundle.digest,
        "submitted": (submitted or dt.datetime.now(dt.timezone.utc).date()).isoformat(),
        "name": manifest["name"],
        "submitter": manifest["submitter"],
        "env_id": manifest["env"]["id"],
        "env_version": manifest["env"]["version"],
        "track": manifest["track"]["name"],
        "textgym_version": manifest["textgym_version"],
        "model": manifest["model"],
        "compute": manifest["compute"],
        "training_seeds": sorted(run["training_seed"] for run in manifest["runs"]),
        "claimed": manifest["claimed"],
        "rescored": report.rescored,
        "verification": {"level": "rescored", "reward_atol": REWARD_ATOL},
        "guard": report.guard,
        "content": report.content,
    }
    for key in ("created", "notes"):
        if key in manifest:
            entry[key] = manifest[key]
    if report.rerun is not None:
        entry["verification"]["level"] = "rerun"
        entry["verification"]["rerun"] = {k: v for k, v in report.rerun.items() if k != "summary"}
    return entry


def _write(document: dict[str, Any], path: Path, old: list[dict[str, Any]], added: int) -> list[dict[str, Any]]:
    """Check ``document`` keeps ``old`` unchanged and in order, then replace ``path`` with it atomically."""
    errors = schema_errors(document, "entries", "the new entries file")
    if errors:
        raise EntriesError("; ".join(errors))
    text = safejson.dumps(document, indent=1) + "\n"
    written = safejson.loads(text, "the new entries file")["entries"]
    if written[: len(old)] != old or len(written) != len(old) + added:
        raise EntriesError("refusing to write: the new file would drop or alter existing entries")
    if load_entries(path) != old:
        raise EntriesError(f"{path} changed while the entry was being added; submit again")
    atomic_write(path, text)
    return written


def append_entry(entry: dict[str, Any], path: str | os.PathLike = ENTRIES_PATH) -> list[dict[str, Any]]:
    """Append ``entry`` to the entries file atomically; return all entries.

    Raises:
        EntriesError: The file is of format 1 (migrate it first), the bundle is already
            listed, its episodes copy a listed entry's (the message names it), the result
            would not match the schema, or the file changed in a way that would drop or
            alter an existing entry.
    """
    path = Path(path)
    document = load_document(path)
    old = document["entries"]
    if document["format_version"] != FORMAT_VERSION:
        raise EntriesError(
            f"{path} is of format {document['format_version']}, without the episodes' fingerprints that copies are "
            f"checked against; migrate it first: textgym-leaderboard migrate BUNDLE [BUNDLE ...] --entries {path}"
        )
    if any(existing["id"] == entry["id"] for existing in old):
        raise EntriesError(f"this bundle (id {entry['id'][:16]}...) is already on the leaderboard")
    copies, _ = find_copies(entry["env_id"], entry_identity(entry), entry["id"], entry["content"], old)
    if copies:
        raise EntriesError("; ".join(copy.sentence() for copy in copies))
    return _write({**document, "entries": [*old, entry]}, path, old, 1)


# -- migration --------------------------------------------------------------------------


def migrate_to_v2(document: dict[str, Any], reports: Sequence[Report], date: dt.date) -> dict[str, Any]:
    """Move a format-1 entries document to format 2, adding each entry's ``guard`` and ``content``.

    Each entry's bundle is identified by its digest (the entry id) among ``reports``, the
    verification reports of re-verified bundles (:func:`leaderboard.verify.verify_bundle`,
    without a copy check: listed history is not re-judged). An entry gains exactly two
    fields, the recomputed guard metrics and the episodes' fingerprints; nothing else
    changes, and the re-scored numbers must still be the listed ones. The document records
    the migration under ``migrations``.

    Args:
        document: A format-1 entries document.
        reports: Reports of verified bundles; those of no listed entry are ignored.
        date: The migration date recorded.

    Returns:
        The format-2 document.

    Raises:
        EntriesError: The document is not of format 1, a report did not verify, an entry has
            no bundle among the reports, or a bundle now re-scores to other numbers.
    """
    if document.get("format_version") != 1:
        raise EntriesError(
            f"only a format-1 entries file can be migrated; this one is {document.get('format_version')}"
        )
    by_digest = {}
    for report in reports:
        if report.bundle is None or not report.ok or report.guard is None or report.content is None:
            where = report.bundle.path if report.bundle is not None else "a bundle"
            raise EntriesError(f"{where} did not verify: {report.summary()}")
        by_digest[report.bundle.digest] = report
    missing = [entry for entry in document["entries"] if entry["id"] not in by_digest]
    if missing:
        shown = ", ".join(f"{entry['id'][:12]} ({entry['name']!r:.60})" for entry in missing[:5])
        raise EntriesError(
            f"{len(missing)} entries have no bundle among those given: {shown}{' ...' if len(missing) > 5 else ''}"
        )
    entries = []
    for entry in document["entries"]:
        report = by_digest[entry["id"]]
        if report.rescored != entry["rescored"]:
            raise EntriesError(
                f"entry {entry['id'][:12]} ({entry['name']!r:.60}) now re-scores to {report.rescored}, "
                f"not the listed {entry['rescored']}; it cannot be migrated unchanged"
            )
        entries.append({**entry, "guard": report.guard, "content": report.content})
    migration = {
        "to_format_version": FORMAT_VERSION,
        "date": date.isoformat(),
        "entries": len(entries),
        "added": ["guard", "content"],
        "how": "each entry's bundle re-verified by textgym-leaderboard migrate; guard metrics recomputed from the "
        "generations, episodes fingerprinted",
    }
    return {"format_version": FORMAT_VERSION, "entries": entries, "migrations": [migration]}


def migrate_file(path: str | os.PathLike, reports: Sequence[Report], date: dt.date) -> list[dict[str, Any]]:
    """:func:`migrate_to_v2` on the entries file at ``path``, replaced atomically; return the entries.

    Raises:
        EntriesError: As :func:`migrate_to_v2`, or the migrated entries would differ from the
            old ones in anything but the two added fields.
    """
    path = Path(path)
    document = load_document(path)
    migrated = migrate_to_v2(document, reports, date)
    stripped = [{k: v for k, v in entry.items() if k not in ("guard", "content")} for entry in migrated["entries"]]
    if stripped != document["entries"]:
        raise EntriesError("refusing to write: the migration would alter an entry beyond adding guard and content")
    errors = schema_errors(migrated, "entries", "the migrated entries file")
    if errors:
        raise EntriesError("; ".join(errors))
    if load_document(path) != document:
        raise EntriesError(f"{path} changed during the migration; run it again")
    atomic_write(path, safejson.dumps(migrated, indent=1) + "\n")
    return migrated["entries"]


# -- rows, versions, flags --------------------------------------------------------------


@dataclass
class Row:
    """One leaderboard row: an entry's newest version and its earlier ones.

    Attributes:
        current: The newest version (the one ranked).
        earlier: The earlier versions, newest first.
        flags: Why the row is marked: ``(kind, sentence)`` pairs, kind ``"degenerate"``, ``"copy"`` or
            ``"unchecked"`` (see :func:`board_rows`).
        degenerate: Which degeneracy tests its text fails against the env's starting policy
            (keys of :func:`leaderboard.stats.degenerate_reasons`: ``diversity``, ``repetition``).
        copy_of: Another row's entry with the same episodes (listed before copies were refused), if any.
    """

    current: dict[str, Any]
    earlier: list[dict[str, Any]] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)
    degenerate: set[str] = field(default_factory=set)
    copy_of: dict[str, Any] | None = None


@dataclass
class Board:
    """The rows of one env id and track, ranked, and the starting policy the text is checked against.

    Attributes:
        env_id: The env id.
        track: The track's name.
        rows: Its rows, best re-scored mean first (then oldest).
        starting: The entry standing for the env's starting policy, or None when there is none.
        starting_is_fallback: True when ``starting`` is from another env (this board has none).
    """

    env_id: str
    track: str
    rows: list[Row]
    starting: dict[str, Any] | None = None
    starting_is_fallback: bool = False


def is_starting_policy(entry: dict[str, Any]) -> bool:
    """True for an entry of an untrained starting policy (``model.algo`` ``zero-shot`` or ``lm-top``)."""
    return entry["model"].get("algo") in STARTING_POLICY_ALGOS


def starting_policy(boards: Sequence[Board], board: Board) -> tuple[dict[str, Any] | None, bool]:
    """The entry whose guard metrics stand for ``board``'s starting policy, and whether it is a fallback.

    On the board: the starting-policy row listed first (the maintainers' baseline; a later
    submission labelled ``zero-shot`` cannot replace it), at its newest version. A board with
    none falls back to the least diverse (lowest distinct-2) starting policy of the same track
    on any board, so that its degeneracy check is the most lenient the leaderboard knows of,
    never missing. None when no starting policy with guard metrics is listed at all.
    """
    own = [row.current for row in board.rows if is_starting_policy(row.current) and "guard" in row.current]
    if own:
        first = min(own, key=lambda entry: entry["_order"])
        return first, False
    others = [
        row.current
        for other in boards
        if other.track == board.track
        for row in other.rows
        if is_starting_policy(row.current) and "guard" in row.current
    ]
    if not others:
        return None, False
    return min(others, key=lambda entry: (entry["guard"]["distinct_2"], entry["_order"])), True


def board_rows(entries: Sequence[dict[str, Any]]) -> list[Board]:
    """The leaderboard as boards (one per env id and track, sorted) of ranked, flagged rows.

    Entries of one :func:`~leaderboard.copies.identity` make one row, its newest version
    ranked. Each row is flagged (:attr:`Row.flags`) when its text is degenerate against the
    board's starting policy (:func:`leaderboard.stats.degenerate_reasons`), when its episodes
    are those of another row (possible only for entries listed before copies were refused;
    both rows are flagged), and when it has no recomputed guard metrics.
    """
    ordered = [{**entry, "_order": position} for position, entry in enumerate(entries)]
    rows: dict[tuple[str, str, str, str], Row] = {}
    for entry in ordered:
        key = entry_identity(entry)
        if key in rows:
            row = rows[key]
            row.earlier.insert(0, row.current)
            row.current = entry
        else:
            rows[key] = Row(entry)
    grouped: dict[tuple[str, str], list[Row]] = {}
    for row in rows.values():
        grouped.setdefault((row.current["env_id"], row.current["track"]), []).append(row)
    boards = []
    for (env_id, track), members in sorted(grouped.items()):
        members.sort(
            key=lambda row: (-row.current["rescored"]["mean_reward"], row.current["submitted"], row.current["_order"])
        )
        boards.append(Board(env_id, track, members))
    for board in boards:
        board.starting, board.starting_is_fallback = starting_policy(boards, board)
        for row in board.rows:
            _flag(row, board, ordered)
    return boards


def _flag(row: Row, board: Board, ordered: Sequence[dict[str, Any]]) -> None:
    entry = row.current
    if "guard" not in entry:
        row.flags.append(("unchecked", "Text not checked: listed without recomputed guard metrics"))
    elif board.starting is not None and board.starting["id"] != entry["id"]:
        reasons = degenerate_reasons(entry["guard"], board.starting["guard"])
        if reasons:
            row.degenerate = set(reasons)
            row.flags.append(("degenerate", "Degenerate text: " + "; ".join(reasons.values())))
    if "content" in entry:
        others = [other.current for other in board.rows if other is not row]
        copies, _ = find_copies(entry["env_id"], entry_identity(entry), entry["id"], entry["content"], others)
        if copies:
            row.copy_of = copies[0].entry
            exact = "" if copies[0].exact else " (after whitespace and case normalisation)"
            names = " and ".join(f"“{copy.entry['name']}”" for copy in copies)
            row.flags.append(("copy", f"Same episodes{exact} as {names}"))
