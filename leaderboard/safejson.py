"""Read untrusted JSON and JSON Lines with limits: nothing in a bundle is executed or trusted.

Every reader here refuses, with a reason that names the file (and line):

* a path that is a symbolic link, not a regular file, or outside the directory it
  must lie in;
* a file (or a JSON Lines line, or a file's number of lines) over its size limit,
  checked before the bytes are parsed;
* text that is not UTF-8;
* nesting deeper than :data:`MAX_DEPTH` (checked before parsing, so deep nesting can
  never exhaust the parser's recursion);
* ``NaN``, ``Infinity`` and ``-Infinity`` (Python's ``json`` accepts them, JSON does
  not), numbers that overflow to infinity (``1e999``), integers of more than 20 digits;
* an object with a repeated key (the last one would silently win).

Only :func:`json.loads` with these hooks is used: no pickle, no eval, no imports named
by the data.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The deepest nesting of arrays and objects accepted anywhere.
MAX_DEPTH = 32
#: The longest integer literal accepted, in digits.
MAX_INT_DIGITS = 20

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class UnsafeInputError(ValueError):
    """Input refused before or while parsing: too large, malformed, hostile.

    Attributes:
        code: A short machine-readable reason: ``"too_large"``, ``"malformed"``,
            ``"hostile"`` or ``"path"``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (non-finite numbers are refused)")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} overflows to infinity")
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits is longer than {MAX_INT_DIGITS} digits")
    return int(text)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key[:80]!r} appears twice in one object")
        result[key] = value
    return result


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text``, ignoring brackets inside strings.

    >>> nesting_depth('{"a": [1, {"b": "[[["}]}')
    3
    """
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads(text: str, what: str) -> Any:
    """Parse JSON ``text`` strictly (see the module docstring); ``what`` names it in errors.

    Raises:
        UnsafeInputError: ``"hostile"`` for deep nesting, ``"malformed"`` for anything
            else that is not strict, finite, duplicate-free JSON.

    >>> loads('{"mean": 0.5}', "bundle.json")
    {'mean': 0.5}
    >>> loads('{"mean": NaN}', "bundle.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    leaderboard.safejson.UnsafeInputError: bundle.json is not valid JSON: NaN is not valid JSON ...
    """
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise UnsafeInputError("hostile", f"{what} nests arrays/objects {depth} deep; the limit is {MAX_DEPTH}")
    try:
        return json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            parse_int=_parse_int,
            object_pairs_hook=_no_duplicate_keys,
        )
    except (ValueError, RecursionError) as error:
        raise UnsafeInputError("malformed", f"{what} is not valid JSON: {error}") from error


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities (the only way this package writes JSON)."""
    return json.dumps(value, allow_nan=False, ensure_ascii=False, **kwargs)


def safe_path(root: str | os.PathLike, relative: str, what: str) -> Path:
    """``root / relative`` if it is a plain relative path inside ``root`` with no symbolic links on the way.

    Raises:
        UnsafeInputError: ``"path"`` for an absolute path, ``..``, or a symbolic link.
    """
    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or any(part in ("..", "") for part in parts) or "\\" in relative:
        raise UnsafeInputError("path", f"{what} {relative!r} must be a relative path inside the bundle, without '..'")
    path = Path(root)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise UnsafeInputError("path", f"{what} {relative!r} goes through a symbolic link, which is refused")
    return path


def read_limited(path: str | os.PathLike, limit: int, what: str) -> str:
    """Read a regular (non-link) UTF-8 file of at most ``limit`` bytes.

    Raises:
        UnsafeInputError: ``"path"`` when missing, a link or not a regular file;
            ``"too_large"`` over ``limit``; ``"malformed"`` when not UTF-8.
    """
    path = Path(path)
    if path.is_symlink():
        raise UnsafeInputError("path", f"{what} is a symbolic link, which is refused")
    if not path.is_file():
        raise UnsafeInputError("path", f"{what} is missing or not a regular file")
    size = path.stat().st_size
    if size > limit:
        raise UnsafeInputError("too_large", f"{what} is {size} bytes; the limit is {limit} bytes")
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeInputError("too_large", f"{what} is over the limit of {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnsafeInputError("malformed", f"{what} is not UTF-8 text: {error}") from error


def load_json_file(path: str | os.PathLike, limit: int, what: str) -> Any:
    """Read and strictly parse one JSON file of at most ``limit`` bytes."""
    return loads(read_limited(path, limit, what), what)


def iter_jsonl(text: str, line_limit: int, max_lines: int, what: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, value)`` for each non-blank line of JSON Lines ``text``, within limits."""
    count = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        count += 1
        if count > max_lines:
            raise UnsafeInputError("too_large", f"{what} has more than {max_lines} lines")
        if len(line.encode("utf-8")) > line_limit:
            raise UnsafeInputError("too_large", f"{what} line {number} is over the limit of {line_limit} bytes")
        yield number, loads(line, f"{what} line {number}")
