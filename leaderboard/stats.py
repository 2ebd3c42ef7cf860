"""The statistics the leaderboard claims and checks: the same numbers the baselines report."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Resamples and seed of the percentile bootstrap (those of ``baselines.evaluate.bootstrap_ci``).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95) -> list[float]:
    """Percentile bootstrap CI of the mean, identical to ``baselines.evaluate.bootstrap_ci``.

    Kept here so that verifying a bundle needs neither torch nor stable-baselines3; a
    test checks the two agree. The result depends on the order of ``values``: bundles
    list episodes by training seed, then prompt seed.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    [1.0, 1.0]
    """
    if not values:
        return [math.nan, math.nan]
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(len(data), size=(BOOTSTRAP_RESAMPLES, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def metrics(values: Sequence[float]) -> dict[str, float | int | list[float]]:
    """``mean_reward``, ``ci95`` and ``episodes`` of per-episode rewards, as bundles claim them."""
    return {"mean_reward": float(np.mean(values)), "ci95": bootstrap_ci(values), "episodes": len(values)}


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation, ddof=1, over sqrt(n)); 0 for fewer than 2 values.

    >>> standard_error([0.0, 1.0, 0.0, 1.0])
    0.28867513459481287
    """
    if len(values) < 2:
        return 0.0
    return float(np.std(np.asarray(values, dtype=float), ddof=1) / math.sqrt(len(values)))
