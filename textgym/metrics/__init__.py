"""Text metrics shipped with textgym, as Hugging Face ``evaluate`` modules that load offline.

Each metric is a script ``textgym/metrics/textgym_<name>/textgym_<name>.py`` inside the
package, so ``evaluate.load`` reads it from disk and never asks the hub:

>>> module_path("rouge").endswith("textgym_rouge")
True

``load("rouge")`` is ``evaluate.load(module_path("rouge"))``. The computations themselves
live in :mod:`textgym.metrics.functional`, which reward code imports directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS = ("rouge", "bleu", "meteor", "semantic_similarity", "diversity", "perplexity")
_ROOT = Path(__file__).resolve().parent

__all__ = ["METRICS", "load", "module_path"]


def module_path(name: str) -> str:
    """The directory of the shipped ``evaluate`` module for metric ``name``.

    Args:
        name: A short name from :data:`METRICS` (``"rouge"``), or the module name itself
            (``"textgym_rouge"``).

    Returns:
        The absolute path, as a string ``evaluate.load`` accepts.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not a known metric.
    """
    if not isinstance(name, str):
        raise TypeError(f"metric name must be a string, got {type(name).__name__}: {name!r}")
    short = name.removeprefix("textgym_")
    if short not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
    return str(_ROOT / f"textgym_{short}")


def load(name: str, **kwargs: Any) -> Any:
    """Load a shipped metric with ``evaluate.load``, offline.

    Args:
        name: A short name from :data:`METRICS`, e.g. ``"rouge"``.
        **kwargs: Passed on to :func:`evaluate.load` (``experiment_id``, ``keep_in_memory``...).

    Returns:
        The :class:`evaluate.EvaluationModule`.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not a known metric.
    """
    path = module_path(name)
    import evaluate

    return evaluate.load(path, **kwargs)
