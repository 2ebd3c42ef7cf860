"""The statistics every textgym report uses: one bootstrap, one standard error, one evaluation seed base.

Baselines, benchmarks and the leaderboard all claim and check numbers with these functions, so a
figure computed in one place is reproduced bit for bit in another. Only NumPy is needed, so a
leaderboard verifier can run without torch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

#: Episode ``i`` of an evaluation resets with seed ``EVAL_SEED_BASE + i``: validation prompts are
#: drawn from seeds no training run uses (training seeds are small integers).
EVAL_SEED_BASE = 10_000
#: Resamples and seed of the percentile bootstrap.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95) -> list[float]:
    """Percentile bootstrap confidence interval of the mean (``[nan, nan]`` for no values).

    The resampling is seeded, so the interval is a pure function of ``values``; it depends on their
    order (bundles list episodes by training seed, then prompt seed).

    Args:
        values: The per-episode (or per-seed) values.
        confidence: The interval's coverage, in (0, 1).

    Returns:
        ``[low, high]``.

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    [1.0, 1.0]
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if len(values) == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(len(data), size=(BOOTSTRAP_RESAMPLES, len(data)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def cluster_means(clusters: Sequence[Hashable], values: Sequence[float]) -> list[float]:
    """The mean of ``values`` within each cluster, in the order the clusters first appear.

    Bootstrap these means, not the values, when the values of one cluster are not independent:
    the paired gains of several training seeds over their starting policy all subtract that
    policy's one evaluation of each prompt, and an evaluation of more episodes than its split
    has prompts plays some prompts twice, so the unit to resample is the prompt.

    Args:
        clusters: Each value's cluster (e.g. its prompt id; not its episode seed, since two
            episode seeds may draw the same prompt).
        values: The values, as many as ``clusters``.

    Returns:
        One mean per distinct cluster.

    >>> cluster_means([7, 8, 7], [1.0, 0.0, 0.0])
    [0.5, 0.0]
    """
    if len(clusters) != len(values):
        raise ValueError(f"cluster_means needs one cluster per value, got {len(clusters)} clusters for {len(values)}")
    groups: dict[Hashable, list[float]] = {}
    for cluster, value in zip(clusters, values, strict=True):
        groups.setdefault(cluster, []).append(float(value))
    return [float(np.mean(group)) for group in groups.values()]


def standard_error(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation, ddof=1, over sqrt(n)); 0 for fewer than 2 values.

    >>> standard_error([0.0, 1.0, 0.0, 1.0])
    0.28867513459481287
    """
    if len(values) < 2:
        return 0.0
    return float(np.std(np.asarray(values, dtype=float), ddof=1) / math.sqrt(len(values)))
