"""Dataset mechanics shared by the tasks: where records come from, which split, and reading once.

A data source is a local ``.json`` / ``.jsonl`` file, a local ``.parquet`` file, a local
directory of data files (e.g. ``train-*.parquet``, ``validation-*.parquet``,
``test-*.parquet``, or a hub dataset's snapshot with its ``README.md``), or a Hugging Face
hub dataset id. Everything but a JSON file is read with ``datasets.load_dataset``, with
the dataset's config (``dataset_config``, e.g. ``"3.0.0"`` for CNN/DailyMail).

Which records an env's split gets (:func:`open_split`):

1. ``dataset_split`` given: that split of the dataset, whole.
2. Else, if the dataset has a single split (a single file always has one, ``"train"``),
   that split divided by :func:`split_of`, a hash of each record's id: the fallback.
3. Else the dataset's own split of the same name (``"validation"``), whole: scores on it
   are comparable with published ones. A dataset of several splits without that one is
   an error that lists its splits.

A JSON / JSON Lines file is read by :func:`read_json_records`, not ``datasets``: datasets
infers one Arrow schema for all records, so a record with a field of the wrong type
fails with an Arrow error instead of an error naming the record.

Each source is read once per process: a vector env of 8 envs reads its file once. The
records are immutable and the cache is keyed by the source's path, config and split and,
for local files, their sizes and modification times, so an edited file is read again.
Every failure names the source and, where it applies, the record and field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

SPLITS = ("train", "validation", "test")
# Fractions of the hash space given to validation and test; the rest is train.
_VALIDATION_FRACTION = 0.1
_TEST_FRACTION = 0.1
_JSON_SUFFIXES = (".json", ".jsonl")
# The one split of a single file, as datasets names it.
_SINGLE_SPLIT = "train"

Record = Mapping[str, Any]
Item = TypeVar("Item")


class DatasetError(ValueError):
    """A data source that is missing, empty, malformed or lacks a required field, config or split."""


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


def _optional_name(value: Any, what: str) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise TypeError(f"{what} must be None or a non-empty str, got {type(value).__name__}: {value!r:.80}")
    return value


@dataclass(frozen=True)
class DataSource:
    """What a task's ``dataset``, ``dataset_config`` and ``dataset_split`` arguments name.

    Attributes:
        dataset: A local file or directory, or a hub dataset id.
        config: The dataset's config (``None`` for its default).
        split: The dataset's own split to read (``None``: see :func:`open_split`).
    """

    dataset: str
    config: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, (str, os.PathLike)) or not os.fspath(self.dataset).strip():
            raise TypeError(f"dataset must be a path or a hub id, got {type(self.dataset).__name__}: {self.dataset!r}")
        object.__setattr__(self, "dataset", os.fspath(self.dataset))
        _optional_name(self.config, "dataset_config")
        _optional_name(self.split, "dataset_split")


@dataclass(frozen=True)
class DatasetSplit:
    """One split of a data source, resolved; hashable, so readers of its records can cache on it.

    Attributes:
        dataset: The source as the user named it (errors name it so).
        config: The dataset's config, or None.
        split: The dataset's split read.
        whole: True when the split is the env's whole split; False when it is a single-split
            source that the env divides with :func:`split_of`.
        fingerprint: Sizes and modification times of a local source's files.
    """

    dataset: str
    config: str | None
    split: str
    whole: bool
    fingerprint: tuple[tuple[str, int, int], ...] = ()

    def records(self) -> tuple[Record, ...]:
        """The split's records, read once per process."""
        return _split_records(self)

    def keeps(self, key: str, split: str) -> bool:
        """Whether the record with id ``key`` belongs to the env's ``split``."""
        return self.whole or split_of(key) == split


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def _local_path(name: str) -> Path | None:
    """The local file or directory ``name`` names, None for a hub id; raise for a missing path."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if looks_like_local_path(name) or path.suffix in {*_JSON_SUFFIXES, ".parquet"}:
        raise DatasetError(f"dataset file {name!r} does not exist")
    return None


def open_split(source: DataSource, split: str) -> DatasetSplit:
    """Resolve which split of ``source`` an env's ``split`` reads (see the module docstring).

    Raises:
        DatasetError: The source is missing or cannot be loaded, names no such config, or
            has no such split (the error lists the splits it has).
    """
    check_split(split)
    path = _local_path(source.dataset)
    fingerprint = _fingerprint(path) if path else ()
    if path is not None and path.is_file() and source.config is not None:
        raise DatasetError(f"dataset file {source.dataset!r} has no configs; got dataset_config={source.config!r}")
    if path is not None and path.is_file() and path.suffix in _JSON_SUFFIXES:
        available: tuple[str, ...] = (_SINGLE_SPLIT,)
    else:
        available = tuple(_load(source.dataset, source.config, fingerprint))
    described = f"dataset {source.dataset!r}" + (f" config {source.config!r}" if source.config else "")
    if source.split is not None:
        if source.split not in available:
            raise DatasetError(f"{described} has no split {source.split!r}; it has {list(available)}")
        return DatasetSplit(source.dataset, source.config, source.split, True, fingerprint)
    if len(available) == 1:
        # Even a split named like the env's: reading it whole for "train" and hash-divided
        # for "validation" would put the validation records in train too.
        return DatasetSplit(source.dataset, source.config, available[0], False, fingerprint)
    if split in available:
        return DatasetSplit(source.dataset, source.config, split, True, fingerprint)
    raise DatasetError(
        f"{described} has no split {split!r}; it has {list(available)}: pass dataset_split= to choose one"
    )


@functools.lru_cache(maxsize=16)
def _load(name: str, config: str | None, fingerprint: tuple) -> Mapping[str, Any]:
    """``datasets.load_dataset`` of a source: its splits by name (``fingerprint`` only keys the cache)."""
    import datasets

    path = Path(name).expanduser()
    try:
        if path.is_file():
            loaded = datasets.load_dataset(path.suffix.lstrip("."), data_files=str(path))
        else:
            loaded = datasets.load_dataset(str(path) if path.is_dir() else name, config)
    except Exception as error:  # datasets raises many types for offline / unknown ids and configs
        hint = "" if path.exists() else "; with no network, pass a local file or directory instead"
        raise DatasetError(f"could not load dataset {name!r} config {config!r} ({error}){hint}") from error
    return MappingProxyType(dict(loaded))


def read_json_records(path: str | os.PathLike) -> list[Any]:
    """The values of a JSON file holding a list, or of a JSON Lines file, one per line.

    Raises:
        DatasetError: The file is not UTF-8, empty, not JSON, or one JSON object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"dataset file {str(path)!r} is not UTF-8 text: {error}") from error
    if not text.strip():
        raise DatasetError(f"dataset file {str(path)!r} is empty")
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise DatasetError(f"dataset file {str(path)!r} is not valid JSON or JSON Lines: {error}") from error
    if isinstance(records, dict):
        raise DatasetError(f"dataset file {str(path)!r} holds one JSON object; expected a list of records")
    return records


@functools.lru_cache(maxsize=16)
def _split_records(data: DatasetSplit) -> tuple[Record, ...]:
    path = _local_path(data.dataset)
    if path is not None and path.is_file() and path.suffix in _JSON_SUFFIXES:
        rows: Iterable[Any] = read_json_records(path)
    else:
        rows = _load(data.dataset, data.config, data.fingerprint)[data.split]
    records = []
    for index, record in enumerate(rows):
        if not isinstance(record, Mapping):
            raise DatasetError(f"dataset {data.dataset!r} record {index} is not a JSON object: {record!r:.80}")
        records.append(MappingProxyType(dict(record)))
    if not records:
        raise DatasetError(f"dataset {data.dataset!r} has no records")
    return tuple(records)


def split_items(
    split: str,
    source: DataSource | None,
    builtin: Callable[[], Sequence[Item]],
    read: Callable[[DatasetSplit], Sequence[Item]],
    key: Callable[[Item], str],
) -> list[Item]:
    """The items (conversations, examples) of an env's ``split``, from built-in data or a data source.

    Built-in data is one split, divided by :func:`split_of`; a source's split is chosen by
    :func:`open_split`.

    Args:
        split: The env's split.
        source: The task's ``dataset`` arguments, or None for its built-in data.
        builtin: The built-in data, all of it.
        read: Reads the items of a split of a source (cached per split).
        key: An item's stable id.
    """
    if source is None:
        return [item for item in builtin() if split_of(key(item)) == split]
    data = open_split(source, split)
    return [item for item in read(data) if data.keeps(key(item), split)]


def data_source(dataset: str | None, config: Any = None, dataset_split: Any = None) -> DataSource | None:
    """A task's ``dataset``, ``dataset_config`` and ``dataset_split`` arguments; None for its built-in data.

    Raises:
        DatasetError: ``dataset_config`` or ``dataset_split`` without a ``dataset``.
    """
    if dataset is not None:
        return DataSource(dataset, config, dataset_split)
    for name, value in (("dataset_config", config), ("dataset_split", dataset_split)):
        if value is not None:
            raise DatasetError(f"{name} applies to a dataset; got {name}={value!r} without a dataset")
    return None


def as_dataset_split(source: str | os.PathLike | DatasetSplit) -> DatasetSplit:
    """``source`` as a :class:`DatasetSplit`: a path or hub id means its ``"train"`` (or only) split."""
    return source if isinstance(source, DatasetSplit) else open_split(DataSource(os.fspath(source)), "train")


def require_field(record: Record, names: Iterable[str], source: str, index: int) -> Any:
    """Return the first present field of ``names`` in ``record`` or raise naming them all."""
    names = tuple(names)
    for name in names:
        if name in record:
            return record[name]
    raise DatasetError(f"dataset {source!r} record {index} has none of the fields {names}; it has {sorted(record)}")
