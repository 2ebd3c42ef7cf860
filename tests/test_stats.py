import math

import pytest

from textgym.stats import bootstrap_ci, cluster_means


def test_cluster_means_average_within_each_cluster_in_first_seen_order():
    assert cluster_means(["b", "a", "b", "a"], [1.0, 0.0, 0.0, 2.0]) == [0.5, 1.0]


def test_resampling_clusters_widens_an_interval_whose_values_share_a_cluster():
    # Three seeds' gains on each of 8 prompts, identical within a prompt: 24 values but only 8 independent ones.
    prompts = [p for _ in range(3) for p in range(8)]
    gains = [float(p % 2) for p in prompts]
    pooled, clustered = bootstrap_ci(gains), bootstrap_ci(cluster_means(prompts, gains))
    assert clustered[1] - clustered[0] > pooled[1] - pooled[0]
    assert all(math.isfinite(v) for v in clustered)


def test_cluster_means_name_a_length_mismatch():
    with pytest.raises(ValueError, match="2 clusters for 3"):
        cluster_means([1, 2], [0.0, 1.0, 2.0])
