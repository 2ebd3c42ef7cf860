"""What the scripts that play finished runs again share: reading the runs, sampled draws, the paired gain.

``rescore_candidates.py`` and ``rescore_lm_runs.py`` read their runs' checkpoints and print the
paired gain over a starting policy the same way; ``start_variance.py`` and
``rescore_lm_runs.py`` draw a policy's sampled replies with several sampling seeds the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def read_runs(parser: argparse.ArgumentParser, runs: list[str], picks_candidates: bool, refusal: str) -> dict:
    """Each run directory's checkpoint metadata; ``parser.error`` (exit 2) before any model is loaded.

    Args:
        parser: The script's parser, which names the bad run.
        runs: Run directories of ``baselines.train``.
        picks_candidates: Whether the script rescores candidate pickers (DQN) or LM policies (PPO).
        refusal: The message after the run's name for a run of the other kind.
    """
    from baselines.algorithms import UnknownAlgorithmError, algorithm
    from baselines.checkpoint import CheckpointError, read_metadata

    metas = {}
    for run in runs:
        try:
            metas[run] = read_metadata(str(Path(run) / "checkpoint"))
            granularities = algorithm(metas[run]["algo"]).granularities
        except (CheckpointError, UnknownAlgorithmError) as problem:
            parser.error(f"cannot load the checkpoint of {run}: {problem}")
        if ("candidate" in granularities) != picks_candidates:
            parser.error(f"{run} is a run of an algorithm that {refusal}")
    return metas


def sampled_draws(
    policy: Any,
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int,
    draws: int,
    reference: str | None,
    on_draw: Callable[[int, dict[str, Any]], None] | None = None,
    prompt_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Play ``policy`` on the same episodes with sampling seeds ``EVAL_SEED_BASE + 0..draws-1``.

    Episode ``i`` resets with seed ``EVAL_SEED_BASE + i`` and plays the prompt that seed draws or,
    with ``prompt_ids``, the prompt ``prompt_ids[i]`` (then ``episodes`` is their number).

    Returns:
        ``rewards`` (each episode's mean over the draws), ``draw_means`` and
        ``draw_perplexity_medians`` (reply perplexity under ``reference``; None without one).
        ``on_draw(draw, result)`` sees each draw's evaluation as it ends.
    """
    from baselines.common.evaluation import evaluate_policy
    from textgym.stats import EVAL_SEED_BASE

    rewards, means, medians = [], [], []
    for draw in range(draws):
        result = evaluate_policy(
            policy,
            env_id,
            env_kwargs,
            episodes=episodes,
            sampling_seed=EVAL_SEED_BASE + draw,
            reference_model=reference,
            prompt_ids=prompt_ids,
        )
        rewards.append(result["rewards"])
        means.append(result["reward_mean"])
        medians.append(result["perplexity_median"])
        if on_draw is not None:
            on_draw(draw, result)
    return {"rewards": np.mean(rewards, axis=0).tolist(), "draw_means": means, "draw_perplexity_medians": medians}


def split_prompt_ids(env_id: str, env_kwargs: dict[str, Any]) -> list[str]:
    """Every prompt id of the env's split, in the data's order.

    Raises:
        ValueError: The env generates its prompts without end (SparseCompletion): it has no split to sweep.
    """
    import gymnasium as gym

    env = gym.make(env_id, **{**env_kwargs, "render_mode": None})
    try:
        ids = env.unwrapped.task.prompt_ids()
    finally:
        env.close()
    if ids is None:
        raise ValueError(f"{env_id} generates its prompts without end: it has no split of prompts to play once each")
    return [str(prompt_id) for prompt_id in ids]


def prompt_labels(
    env_id: str, env_kwargs: dict[str, Any], episodes: int, field: str, prompt_ids: list[str] | None = None
) -> list[str]:
    """The reset info ``field`` of each evaluation episode, reset as :func:`sampled_draws` resets it.

    Raises:
        KeyError: The env's reset info has no ``field``; the message names the fields it has.
    """
    import gymnasium as gym

    from baselines.proposal_vec_env import PlaceholderProposals
    from textgym.stats import EVAL_SEED_BASE

    env = gym.make(env_id, **{**env_kwargs, "render_mode": None})
    if getattr(env.unwrapped, "proposer", None) is not None:
        env.unwrapped.proposer = PlaceholderProposals()  # a reset's candidates are not needed for its info
    labels = []
    try:
        for episode in range(episodes):
            options = None if prompt_ids is None else {"prompt_id": prompt_ids[episode]}
            _, info = env.reset(seed=EVAL_SEED_BASE + episode, options=options)
            if field not in info:
                raise KeyError(f"{env_id}'s reset info has no {field!r}; it has {sorted(info)}")
            labels.append(str(info[field]))
    finally:
        env.close()
    return labels


def paired_summary(start: list[float], runs: dict[str, list[float]], prompt_ids: list[str]) -> dict[str, Any]:
    """Each run's mean and gain over ``start`` (same episodes, in order), and the gain's CIs pooled and per prompt.

    Episodes ``i`` of ``start`` and of every run played the same prompt, ``prompt_ids[i]``.
    Episodes whose prompts are drawn by seed (episode ``i`` with seed ``10000 + i``) revisit
    prompts, so the unit the second CI resamples is the prompt: each prompt's gain is averaged
    over the runs and over the episodes that played it.
    """
    from textgym.stats import bootstrap_ci, cluster_means

    if len(prompt_ids) != len(start):
        raise ValueError(f"paired_summary needs one prompt id per episode, got {len(prompt_ids)} for {len(start)}")
    gains = {name: np.asarray(rewards) - np.asarray(start) for name, rewards in runs.items()}
    pooled = np.concatenate(list(gains.values()))
    per_episode = np.mean(np.stack(list(gains.values())), axis=0)
    per_prompt = cluster_means(list(prompt_ids), per_episode.tolist())
    return {
        "top_mean": float(np.mean(start)),
        "runs": {name: {"mean": float(np.mean(runs[name])), "gain": float(gains[name].mean())} for name in runs},
        "gain_mean": float(pooled.mean()),
        "gain_ci95_prompt_runs": bootstrap_ci(pooled.tolist()),
        "gain_ci95_prompts": bootstrap_ci(per_prompt),
        "distinct_prompts": len(per_prompt),
    }


def breakdown(
    labels: list[str], start: list[float], runs: dict[str, list[float]], prompt_ids: list[str]
) -> dict[str, Any]:
    """:func:`paired_summary` of the episodes with each label, and of the episodes without it."""
    labels_array = np.asarray(labels)
    ids_array = np.asarray(prompt_ids)
    start_array = np.asarray(start)
    result = {}
    for label in sorted(set(labels)):
        parts = {}
        for part, keep in (("with", labels_array == label), ("without", labels_array != label)):
            if keep.sum() < 2:  # a bootstrap CI needs two prompts
                continue
            summary = paired_summary(
                start_array[keep].tolist(),
                {name: np.asarray(r)[keep].tolist() for name, r in runs.items()},
                ids_array[keep].tolist(),
            )
            parts[part] = {"prompts": int(keep.sum()), **summary}
        result[label] = parts
    return result


def gain_text(summary: dict[str, Any]) -> str:
    """``start -> runs' mean, paired gain, 95% CI over prompt-runs and with prompts resampled`` of a summary."""
    low, high = summary["gain_ci95_prompts"]
    pooled_low, pooled_high = summary["gain_ci95_prompt_runs"]
    return (
        f"{summary['top_mean']:.4f} -> {np.mean([r['mean'] for r in summary['runs'].values()]):.4f}, paired gain "
        f"{summary['gain_mean']:+.4f}, 95% CI {pooled_low:+.4f}..{pooled_high:+.4f} over prompt-runs, "
        f"{low:+.4f}..{high:+.4f} with prompts resampled ({summary['distinct_prompts']} distinct prompts)"
    )
