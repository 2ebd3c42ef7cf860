"""The leaderboard's entries: one JSON file, appended to, never rewritten or shortened.

``leaderboard/entries/entries.json`` holds ``{"format_version": 1, "entries": [...]}``
(schema: ``schema/entries.schema.json``). :func:`append_entry` adds one entry: it reads
the file, refuses a bundle already listed, writes the longer list to a temporary file,
checks that every old entry is still there unchanged and in order, then renames the
file into place, so a crash leaves either the old or the new file.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path
from typing import Any

from leaderboard import safejson
from leaderboard.verify import REWARD_ATOL, Report, schema_errors

ROOT = Path(__file__).resolve().parent
ENTRIES_PATH = ROOT / "entries" / "entries.json"
MAX_ENTRIES_BYTES = 64 << 20


class EntriesError(ValueError):
    """An entries file that is unreadable, invalid, or an entry that cannot be added."""


def load_entries(path: str | os.PathLike = ENTRIES_PATH) -> list[dict[str, Any]]:
    """The entries of an entries file (an absent file has none).

    Raises:
        EntriesError: The file is unreadable or does not match the entries schema.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        document = safejson.load_json_file(path, MAX_ENTRIES_BYTES, str(path))
    except safejson.UnsafeInputError as error:
        raise EntriesError(str(error)) from error
    errors = schema_errors(document, "entries", str(path))
    if errors:
        raise EntriesError("; ".join(errors))
    return document["entries"]


def make_entry(report: Report, submitted: dt.date | None = None) -> dict[str, Any]:
    """The entry of a bundle that verified (by re-scoring, and by re-running when ``report.rerun`` is set)."""
    if not report.ok or report.bundle is None or report.rescored is None:
        raise EntriesError("only a bundle that verified can become an entry")
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
    }
    for key in ("created", "notes"):
        if key in manifest:
            entry[key] = manifest[key]
    if report.rerun is not None:
        entry["verification"]["level"] = "rerun"
        entry["verification"]["rerun"] = {k: v for k, v in report.rerun.items() if k != "summary"}
    return entry


def append_entry(entry: dict[str, Any], path: str | os.PathLike = ENTRIES_PATH) -> list[dict[str, Any]]:
    """Append ``entry`` to the entries file atomically; return all entries.

    Raises:
        EntriesError: The bundle is already listed, the result would not match the schema,
            or the file changed in a way that would drop or alter an existing entry.
    """
    path = Path(path)
    old = load_entries(path)
    if any(existing["id"] == entry["id"] for existing in old):
        raise EntriesError(f"this bundle (id {entry['id'][:16]}...) is already on the leaderboard")
    document = {"format_version": 1, "entries": [*old, entry]}
    errors = schema_errors(document, "entries", "the new entries file")
    if errors:
        raise EntriesError("; ".join(errors))
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}-", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(safejson.dumps(document, indent=1) + "\n")
        written = safejson.load_json_file(handle.name, MAX_ENTRIES_BYTES, "the new entries file")["entries"]
        if written[: len(old)] != old or len(written) != len(old) + 1:
            raise EntriesError("refusing to write: the new file would drop or alter existing entries")
        if load_entries(path) != old:
            raise EntriesError(f"{path} changed while the entry was being added; submit again")
        os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    return written
