"""Dataset mechanics shared by the tasks: deterministic splits and record loading.

Records come from a local JSON / JSON Lines file or, for users with network access, a
Hugging Face hub dataset id through ``datasets.load_dataset``. Every failure names the
source and, where it applies, the record and field.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")
# Fractions of the hash space given to validation and test; the rest is train.
_VALIDATION_FRACTION = 0.1
_TEST_FRACTION = 0.1


class DatasetError(ValueError):
    """A data source that is missing, empty, malformed or lacks a required field."""


def check_split(split: Any) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise naming it."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def split_of(key: str) -> str:
    """The split a record with stable ``key`` belongs to: a hash, so it never depends on order.

    >>> split_of("greetings-0001")
    'train'
    """
    fraction = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 0x1_0000_0000
    if fraction < _VALIDATION_FRACTION:
        return "validation"
    if fraction < _VALIDATION_FRACTION + _TEST_FRACTION:
        return "test"
    return "train"


def looks_like_local_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id ("name" or "org/name")."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _read_json_file(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"dataset file {str(path)!r} is not UTF-8 text: {error}") from error
    if not text.strip():
        raise DatasetError(f"dataset file {str(path)!r} is empty")
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise DatasetError(f"dataset file {str(path)!r} is not valid JSON or JSON Lines: {error}") from error
    if isinstance(records, dict):
        raise DatasetError(f"dataset file {str(path)!r} holds one JSON object; expected a list of records")
    return records


def load_records(source: str | os.PathLike, hub_split: str = "train") -> list[dict[str, Any]]:
    """Load records from a local ``.json`` / ``.jsonl`` file or a hub dataset id.

    Args:
        source: A local file path, or a hub dataset id (needs network or a local HF cache).
        hub_split: The split to read from a hub dataset.

    Raises:
        DatasetError: The file is missing, empty, malformed, or a record is not an object.
    """
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        records = _read_json_file(path)
    elif looks_like_local_path(os.fspath(source)) or path.suffix in {".json", ".jsonl"}:
        raise DatasetError(f"dataset file {os.fspath(source)!r} does not exist")
    else:
        try:
            import datasets

            records = list(datasets.load_dataset(os.fspath(source), split=hub_split))
        except Exception as error:  # datasets raises many types for offline / unknown ids
            raise DatasetError(
                f"could not load hub dataset {os.fspath(source)!r} split {hub_split!r} ({error}); "
                "with no network, pass a local .json or .jsonl file instead"
            ) from error
    if not records:
        raise DatasetError(f"dataset {os.fspath(source)!r} has no records")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DatasetError(f"dataset {os.fspath(source)!r} record {index} is not a JSON object: {record!r:.80}")
    return records


def require_field(record: dict[str, Any], names: Iterable[str], source: str, index: int) -> Any:
    """Return the first present field of ``names`` in ``record`` or raise naming them all."""
    names = tuple(names)
    for name in names:
        if name in record:
            return record[name]
    raise DatasetError(f"dataset {source!r} record {index} has none of the fields {names}; it has {sorted(record)}")
