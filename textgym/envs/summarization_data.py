"""Summarization data: the standard library's docstring pairs and datasets in the CNN/DailyMail, XSum or SAMSum schema.

Both are read and checked once per process: the docstrings are parsed once and cached
on disk per Python version; a dataset's records come from :mod:`textgym.data`, which
reads each source once.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import platform
import re
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textgym.core import validate_text
from textgym.data import DatasetError, DatasetSplit, as_dataset_split, require_field

#: Dataset schemas: name -> (source field, summary field).
SCHEMAS: dict[str, tuple[str, str]] = {
    "cnn_dailymail": ("article", "highlights"),
    "xsum": ("document", "summary"),
    "samsum": ("dialogue", "summary"),
}

#: The instruction that follows the source in the user message, per data schema.
# Bounds of the standard-library pairs (characters).
_SUMMARY_MIN_CHARS = 20
_SUMMARY_MAX_CHARS = 200
_SOURCE_MIN_CHARS = 200
# Directories of the standard library that hold tests, tools or third-party code.
_STDLIB_SKIP_DIRS = frozenset(
    {
        "__pycache__",
        "dist-packages",
        "ensurepip",
        "idlelib",
        "lib-dynload",
        "lib2to3",
        "pydoc_data",
        "site-packages",
        "test",
        "tests",
        "turtledemo",
    }
)
# Bump when the extraction rules change, so stale caches are not read.
_EXTRACTION_VERSION = 1
_DOCTEST_LINE = re.compile(r"^\s*(>>>|\.\.\.)(\s|$)")
_SIGNATURE = re.compile(r"^[A-Za-z_][\w.]*\(.*\)\s*(->.*)?$")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class SummaryExample:
    """One source text and its reference summary.

    Attributes:
        example_id: A stable id (the split is a hash of it).
        source: The text to summarize.
        summary: The reference summary (never shown to the agent).
        schema: The data schema it came from: ``"stdlib"`` or a key of :data:`SCHEMAS`.
    """

    example_id: str
    source: str
    summary: str
    schema: str


def _strip_doctests(text: str) -> str:
    """Drop doctest lines (``>>>`` and ``...`` prompts) and the output lines that follow them."""
    kept: list[str] = []
    in_example = False
    for line in text.split("\n"):
        if _DOCTEST_LINE.match(line):
            in_example = True
            continue
        if in_example and line.strip():
            continue  # expected output of the example
        in_example = False
        kept.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()


def docstring_pair(docstring: str) -> tuple[str, str] | None:
    r"""Split a cleaned docstring into ``(summary, source)``, or ``None`` if it does not qualify.

    The summary is the opening paragraph on one line (20 to 200 characters, not a call
    signature); the source is the rest with doctest examples dropped (>= 200 characters).

    >>> body = "Longer explanation. " * 12
    >>> docstring_pair("Return the answer to everything.\n\n" + body)[0]
    'Return the answer to everything.'
    >>> docstring_pair("Too short.\n\n" + body) is None
    True
    """
    parts = _PARAGRAPH_BREAK.split(docstring.strip(), maxsplit=1)
    if len(parts) != 2:
        return None
    summary = " ".join(parts[0].split())
    source = _strip_doctests(parts[1])
    if not _SUMMARY_MIN_CHARS <= len(summary) <= _SUMMARY_MAX_CHARS or len(source) < _SOURCE_MIN_CHARS:
        return None
    if summary.startswith(">>>") or _SIGNATURE.match(summary):
        return None
    try:
        validate_text(summary, "summary")
        validate_text(source, "source")
    except ValueError:
        return None
    return summary, source


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if d not in _STDLIB_SKIP_DIRS and "-" not in d and not d.startswith(".")
        )
        files += [Path(directory, name).relative_to(root) for name in sorted(names) if name.endswith(".py")]
    return files


def extract_stdlib_pairs(root: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """Extract ``(qualified name, summary, source)`` from the docstrings of a standard library.

    Every module, class and function (nested in classes or functions too, not in ``if``
    blocks) of the ``.py`` files under ``root`` is considered, in sorted file order;
    :func:`docstring_pair` decides which docstrings qualify. Test suites, IDLE,
    ``site-packages`` and other non-library directories are skipped. The first object
    with a given qualified name or a given source wins (a docstring copied onto several
    objects would otherwise sit in several splits).

    Args:
        root: The standard library directory; default ``sysconfig.get_paths()["stdlib"]``.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    pairs: dict[str, tuple[str, str]] = {}
    sources: set[str] = set()
    for relative in _stdlib_files(root):
        try:
            tree = ast.parse((root / relative).read_bytes(), filename=str(relative))
        except (SyntaxError, ValueError, OSError):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not parts:
            continue
        stack: list[tuple[ast.AST, str]] = [(tree, ".".join(parts))]
        while stack:
            node, name = stack.pop()
            docstring = ast.get_docstring(node, clean=True)  # type: ignore[arg-type]
            pair = docstring_pair(docstring) if docstring else None
            if pair is not None and name not in pairs and pair[1] not in sources:
                pairs[name] = pair
                sources.add(pair[1])
            children = [
                child
                for child in ast.iter_child_nodes(node)
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            ]
            stack += [(child, f"{name}.{child.name}") for child in reversed(children)]
    return [(name, summary, source) for name, (summary, source) in pairs.items()]


def _stdlib_cache_path() -> Path:
    from textgym.models import textgym_home

    version = f"{sys.implementation.name}-{platform.python_version()}"
    return textgym_home() / "data" / f"summarization-stdlib-{version}-v{_EXTRACTION_VERSION}.json"


def _read_cache(path: Path) -> list[tuple[str, str, str]] | None:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["pairs"]
        if rows and all(
            isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row) for row in rows
        ):
            return [tuple(row) for row in rows]  # type: ignore[misc]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_cache(path: Path, pairs: list[tuple[str, str, str]]) -> None:
    """Write atomically; a cache that cannot be written is only a slower next start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({"python": sys.version, "pairs": [list(pair) for pair in pairs]}, file)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError:
        pass


@functools.lru_cache(maxsize=1)
def stdlib_examples() -> tuple[SummaryExample, ...]:
    """The default Summarization data: docstring pairs of this Python's standard library.

    Extraction parses a few hundred files (seconds), so its result is cached per process
    and in a JSON file under :func:`textgym.models.textgym_home` keyed by the Python
    version. The data, and so the ids, depend on the Python version.
    """
    path = _stdlib_cache_path()
    pairs = _read_cache(path)
    if pairs is None:
        pairs = extract_stdlib_pairs()
        if not pairs:
            raise DatasetError(f"found no docstrings to summarize under {sysconfig.get_paths()['stdlib']!r}")
        _write_cache(path, pairs)
    return tuple(SummaryExample(name, source, summary, "stdlib") for name, summary, source in pairs)


def detect_schema(record: Mapping[str, Any]) -> str | None:
    """The first key of :data:`SCHEMAS` whose source and summary fields ``record`` has, else ``None``.

    >>> detect_schema({"id": "1", "dialogue": "A: hi", "summary": "A greets."})
    'samsum'
    """
    for schema, fields in SCHEMAS.items():
        if all(name in record for name in fields):
            return schema
    return None


def dataset_examples(source: str | DatasetSplit, schema: str | None = None) -> tuple[SummaryExample, ...]:
    """Read summarization records in the CNN/DailyMail, XSum or SAMSum schema; once per process per source.

    Args:
        source: A split of a data source (see :func:`textgym.data.open_split`), or a local
            file or directory or a hub dataset id for its ``"train"`` (or only) split.
        schema: A key of :data:`SCHEMAS`, or ``None`` to detect it from the first record's
            fields (``article``/``highlights``, ``document``/``summary``,
            ``dialogue``/``summary``). Records may carry an ``id`` (else their position).

    Raises:
        DatasetError: The source is missing, empty or malformed, no schema fits, or a
            record lacks a field, has an empty or non-text field, or repeats an id.
    """
    if schema is not None and schema not in SCHEMAS:
        raise ValueError(f"schema must be None or one of {tuple(SCHEMAS)}, got {schema!r}")
    return _dataset_examples(as_dataset_split(source), schema)


@functools.lru_cache(maxsize=16)
def _dataset_examples(data: DatasetSplit, schema: str | None) -> tuple[SummaryExample, ...]:
    source = data.dataset
    records = data.records()
    if schema is None:
        schema = detect_schema(records[0])
        if schema is None:
            expected = ", ".join(f"{a!r}/{b!r} ({name})" for name, (a, b) in SCHEMAS.items())
            raise DatasetError(
                f"dataset {source!r} record 0 has fields {sorted(records[0])}; expected one of {expected}, "
                "or pass schema="
            )
    source_field, summary_field = SCHEMAS[schema]
    examples, seen = [], set()
    for index, record in enumerate(records):
        texts = []
        for field in (source_field, summary_field):
            value = require_field(record, (field,), source, index)
            try:
                texts.append(validate_text(value, f"dataset {source!r} record {index} field {field!r}").strip())
            except (TypeError, ValueError) as error:
                raise DatasetError(str(error)) from error
        example_id = str(record.get("id", f"{index:06d}"))
        if example_id in seen:
            raise DatasetError(f"dataset {source!r} record {index} repeats id {example_id!r}")
        seen.add(example_id)
        examples.append(SummaryExample(example_id, texts[0], texts[1], schema))
    return tuple(examples)
