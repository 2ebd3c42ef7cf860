"""The statistics the leaderboard claims and checks: the same numbers the baselines report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from textgym.metrics.diversity import distinct_n
from textgym.stats import bootstrap_ci


def metrics(values: Sequence[float]) -> dict[str, float | int | list[float]]:
    """``mean_reward``, ``ci95`` and ``episodes`` of per-episode rewards, as bundles claim them."""
    return {"mean_reward": float(np.mean(values)), "ci95": bootstrap_ci(values), "episodes": len(values)}


# -- the text of an entry: guard metrics and degeneracy -----------------------------------

#: An entry's text is degenerate when its distinct-1 *and* distinct-2 are both below this
#: fraction of its starting policy's ...
DIVERSITY_RATIO = 0.5
#: ... or when its repetition exceeds the starting policy's by more than this.
REPETITION_MARGIN = 0.3
#: The entry-level text metrics, as entries store them (see :func:`text_metrics`).
TEXT_METRICS = ("distinct_1", "distinct_2", "repetition_2", "reply_words")


def text_metrics(runs: Mapping[int, Sequence[Sequence[str]]], guards: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """An entry's text metrics from its replies and its episodes' guard metrics (``textgym.core.guard_metrics``).

    ``distinct_1`` / ``distinct_2`` are :func:`textgym.metrics.diversity.distinct_n` over all
    replies of one run (one training seed, one reply set per prompt), averaged over runs: a
    policy that writes the same text for every prompt scores about ``1 / episodes``, whatever
    the text. Pooling the runs instead would punish a deterministic policy, whose runs repeat
    one another. ``repetition_2`` and ``reply_words`` are the episodes' guard values averaged.

    Args:
        runs: Each run's episodes, each episode as its list of replies.
        guards: Every episode's guard metrics (``repetition_2`` and ``reply_words`` are read).

    Returns:
        ``distinct_1``, ``distinct_2``, ``repetition_2`` and ``reply_words``.

    >>> text_metrics({0: [["good film"], ["good film"]]}, [{"repetition_2": 0.0, "reply_words": 2}] * 2)
    {'distinct_1': 0.5, 'distinct_2': 0.5, 'repetition_2': 0.0, 'reply_words': 2.0}
    """
    replies = [[reply for episode in episodes for reply in episode] for episodes in runs.values()]
    return {
        "distinct_1": float(np.mean([distinct_n(texts, 1) for texts in replies])),
        "distinct_2": float(np.mean([distinct_n(texts, 2) for texts in replies])),
        "repetition_2": float(np.mean([guard["repetition_2"] for guard in guards])),
        "reply_words": float(np.mean([guard["reply_words"] for guard in guards])),
    }


def degenerate_reasons(text: Mapping[str, Any], starting: Mapping[str, Any]) -> dict[str, str]:
    """Why an entry's text is degenerate against its env's starting policy (empty when it is not).

    Degenerate is either *low diversity*, distinct-1 and distinct-2 both below
    :data:`DIVERSITY_RATIO` times the starting policy's (both, because a terse task's
    one-word answers have no word pairs yet differ from prompt to prompt), or *repetition*,
    ``repetition_2`` above the starting policy's plus :data:`REPETITION_MARGIN`.

    Args:
        text: The entry's :func:`text_metrics`.
        starting: The starting policy's :func:`text_metrics`.

    Returns:
        ``{"diversity": sentence, "repetition": sentence}``, each key present when that test
        fails, each sentence naming both values.

    >>> reasons = degenerate_reasons({"distinct_1": 0.01, "distinct_2": 0.01, "repetition_2": 0.6},
    ...                              {"distinct_1": 0.5, "distinct_2": 0.9, "repetition_2": 0.03})
    >>> print(reasons["diversity"])
    distinct-1 0.010 and distinct-2 0.010 are under half the starting policy's 0.500 and 0.900
    >>> print(reasons["repetition"])
    repetition 0.600 is over the starting policy's 0.030 + 0.3
    """
    reasons = {}
    if all(text[key] < DIVERSITY_RATIO * starting[key] for key in ("distinct_1", "distinct_2")):
        reasons["diversity"] = (
            f"distinct-1 {text['distinct_1']:.3f} and distinct-2 {text['distinct_2']:.3f} are under "
            f"{_fraction(DIVERSITY_RATIO)} the starting policy's {starting['distinct_1']:.3f} and "
            f"{starting['distinct_2']:.3f}"
        )
    if text["repetition_2"] > starting["repetition_2"] + REPETITION_MARGIN:
        reasons["repetition"] = (
            f"repetition {text['repetition_2']:.3f} is over the starting policy's "
            f"{starting['repetition_2']:.3f} + {REPETITION_MARGIN:g}"
        )
    return reasons


def _fraction(ratio: float) -> str:
    return "half" if ratio == 0.5 else f"{ratio:g} x"
