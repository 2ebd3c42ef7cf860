"""Argument checks shared by envs, tasks, adapters and CLIs, so that every one accepts the same values.

NumPy integers count as integers everywhere (seeds and sizes often come out of arrays); booleans
never do, although ``bool`` subclasses ``int``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_integer(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer and not a boolean.

    >>> is_integer(3), is_integer(np.int64(3)), is_integer(True), is_integer(3.0)
    (True, True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_integer(value: Any, name: str, minimum: int | None = None) -> int:
    """``value`` as a Python ``int``, or a clear error naming ``name`` and the bad value.

    Args:
        value: The value to check.
        name: The argument's name, as the caller's user wrote it.
        minimum: The smallest allowed value, if any.

    Returns:
        ``int(value)``.

    Raises:
        TypeError: ``value`` is not an integer (see :func:`is_integer`).
        ValueError: ``value`` is below ``minimum``.

    >>> check_integer(np.int32(4), "num_turns", minimum=1)
    4
    """
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}: {value!r:.80}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
