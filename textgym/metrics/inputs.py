"""Checks of the text arguments every metric and reward takes, so each names the bad value the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def text_list(value: Any, name: str, *, blank_ok: bool = True, min_len: int = 1) -> list[str]:
    """Check that ``value`` is a sequence of at least ``min_len`` strings; return it as a list.

    The one check of text arguments behind every metric and reward.

    Args:
        value: The argument to check.
        name: Its name, for the error message.
        blank_ok: Whether empty or whitespace-only strings are allowed.
        min_len: The fewest strings allowed.

    Raises:
        TypeError: ``value`` is a string or not a sequence, or holds a non-string (named by index).
        ValueError: Fewer than ``min_len`` strings, or a blank one when ``blank_ok`` is False.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}: {value!r:.80}")
    if len(value) < min_len:
        if min_len == 1:
            raise ValueError(f"{name} is empty; pass at least one string")
        raise ValueError(f"{name} needs at least {min_len} strings, got {len(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(item).__name__}: {item!r:.80}")
        if not blank_ok and not item.strip():
            raise ValueError(f"{name}[{index}] is empty or whitespace only ({item!r}); it cannot be scored")
    return list(value)


def same_length(predictions: list[Any], references: list[Any]) -> None:
    """Raise naming both lengths when ``predictions`` and ``references`` differ in length."""
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} predictions, {len(references)} references"
        )


def check_pairs(predictions: Any, references: Any) -> tuple[list[str], list[str]]:
    """Validate one reference string per prediction; predictions may be empty strings."""
    predictions = text_list(predictions, "predictions")
    references = text_list(references, "references", blank_ok=False)
    same_length(predictions, references)
    return predictions, references


def check_multi_references(predictions: Any, references: Any) -> tuple[list[str], list[list[str]]]:
    """Validate references given as one string or a non-empty list of strings per prediction."""
    predictions = text_list(predictions, "predictions")
    if isinstance(references, (str, bytes)) or not isinstance(references, Sequence):
        raise TypeError(
            f"references must be a list of strings or of lists of strings, got {type(references).__name__}: "
            f"{references!r:.80}"
        )
    if not references:
        raise ValueError("references is empty; pass at least one string")
    same_length(predictions, references)
    grouped: list[list[str]] = []
    for index, item in enumerate(references):
        if isinstance(item, str):
            group = [item]
            labels = [f"references[{index}]"]
        elif isinstance(item, Sequence) and not isinstance(item, bytes):
            if not item:
                raise ValueError(f"references[{index}] is an empty list; give each prediction at least one reference")
            group = list(item)
            labels = [f"references[{index}][{j}]" for j in range(len(group))]
        else:
            raise TypeError(
                f"references[{index}] must be a string or a list of strings, got {type(item).__name__}: {item!r:.80}"
            )
        for label, reference in zip(labels, group, strict=True):
            if not isinstance(reference, str):
                raise TypeError(f"{label} must be a string, got {type(reference).__name__}: {reference!r:.80}")
            if not reference.strip():
                raise ValueError(f"{label} is empty or whitespace only ({reference!r}); it cannot be scored")
        grouped.append(group)
    return predictions, grouped
