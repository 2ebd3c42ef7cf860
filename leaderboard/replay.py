"""Replay a recorded episode through the one episode driver and compare the record with it.

Every rule of how an episode plays out (its prompt, each reply's reward, when and why it
ends, its guard metrics) is :class:`textgym.core.TextEpisode`'s, the driver ``TextEnv``
plays; this module only compares what a bundle records against what the driver gives.
"""

from __future__ import annotations

from typing import Any

from leaderboard.report import GENERATIONS, REWARD_ATOL, Report, Rescored
from textgym.core import TextTask, start_episode
from textgym.text_env import reply_budget_truncates

#: Guard metrics recomputed from the text and compared with the record's (others are ignored, never used).
CHECKED_GUARD_KEYS = ("reply_words", "distinct_1", "distinct_2", "repetition_2", "empty_replies")


def _where(record: dict[str, Any]) -> str:
    seeds = f"training seed {record['training_seed']}, prompt seed {record['seed']}"
    return f"{GENERATIONS} line {record['_line']} ({seeds})"


def rescore_episode(task: TextTask, record: dict[str, Any], granularity: str, report: Report) -> Rescored | None:
    """Replay one recorded episode through :class:`textgym.core.TextEpisode` and compare the record with it.

    The driver starts the episode as ``TextEnv.reset(seed=record["seed"])`` does, scores
    each generation and says when and why the episode ends (a last generation the record
    marks truncated is replayed as a reply cut by its token budget); the record's prompt,
    turn rewards, end flags, end reason, episode reward and guard metrics must equal the
    driver's.

    Returns:
        The re-scored episode, or None when it cannot be replayed (the reason is added to ``report``).
    """
    where = _where(record)
    try:
        episode = start_episode(task, seed=record["seed"], cut_reply_ends=reply_budget_truncates(granularity))
    except Exception as error:  # noqa: BLE001 - any failure of the task is a reason, not a crash
        report.add("prompt", f"{where}: the task could not rebuild the prompt: {error}")
        return None
    prompt_id, messages = episode.prompt.prompt_id, episode.prompt.messages
    if prompt_id != record["prompt_id"]:
        report.add(
            "prompt", f"{where}: the seed gives prompt id {prompt_id!r}, the record says {record['prompt_id']!r:.80}"
        )
        return None
    if messages != record["prompt"]:
        index = next(
            (i for i, (a, b) in enumerate(zip(messages, record["prompt"], strict=False)) if a != b), len(messages)
        )
        report.add(
            "prompt",
            f"{where}: the recorded prompt messages differ from those of prompt {prompt_id!r} (message {index})",
        )
        return None
    generations, turn_rewards = record["generations"], record["turn_rewards"]
    if len(turn_rewards) != len(generations):
        report.add("reward", f"{where}: {len(generations)} generations but {len(turn_rewards)} turn rewards")
        return None
    for turn, text in enumerate(generations):
        last = turn == len(generations) - 1
        if episode.state == "over":
            report.add(
                "reward",
                f"{where}: the task ended after generation {turn - 1}, yet the record holds {len(generations)} "
                "generations",
            )
            return None
        try:
            result = episode.step(text, finished=not (last and record["truncated"]))
        except Exception as error:  # noqa: BLE001
            report.add("reward", f"{where}: the task refused generation {turn}: {error}")
            return None
        if abs(result.reward - turn_rewards[turn]) > REWARD_ATOL:
            report.add(
                "reward",
                f"{where}: generation {turn} scores {result.reward:.6g}, the record claims {turn_rewards[turn]:.6g}",
            )
    if episode.state != "over" and not record["truncated"]:
        report.add("reward", f"{where}: the task is not over after the last generation and the record is not truncated")
        return None
    total = episode.total_reward
    if record["terminated"] != episode.terminated:
        report.add(
            "reward", f"{where}: the record says terminated={record['terminated']}, the task says {episode.terminated}"
        )
    if (record["truncated"], record["end_reason"]) != (episode.truncated, episode.end_reason):
        if record["truncated"]:
            report.add("reward", f"{where}: only a token-level reply budget truncates an episode")
        else:
            report.add("reward", f"{where}: end_reason {record['end_reason']!r} of an episode the task ended")
    if abs(total - record["reward"]) > REWARD_ATOL:
        report.add("claim", f"{where}: the episode claims reward {record['reward']:.6g}, re-scored {total:.6g}")
    guard = episode.guard()
    check_guard(record, guard, granularity, report)
    return Rescored(total, list(generations), guard, episode.messages)


def _guard_mismatch(claimed: Any, value: float) -> bool:
    return isinstance(claimed, bool) or not isinstance(claimed, int | float) or abs(claimed - value) > REWARD_ATOL


def check_guard(record: dict[str, Any], guard: dict[str, Any], granularity: str, report: Report) -> None:
    """Compare an episode's recorded guard metrics with those recomputed from its generations.

    Only what the text determines is compared: :data:`CHECKED_GUARD_KEYS`, each reward
    component, and ``unfinished_replies`` at token level (elsewhere a reply's end token is
    not in the text). Other recorded keys (a perplexity, say) are ignored: nothing the
    bundle says about its guard metrics is ever used.
    """
    claimed = record.get("guard")
    if not claimed:
        return
    where = _where(record)
    # Only where a cut reply ends the episode does the record say which reply was cut.
    keys = [*CHECKED_GUARD_KEYS, *(("unfinished_replies",) if reply_budget_truncates(granularity) else ())]
    wrong = [
        f"{key} {claimed[key]!r:.20} (recomputed {guard[key]:.6g})"
        for key in keys
        if key in claimed and _guard_mismatch(claimed[key], guard[key])
    ]
    components = claimed.get("reward_components")
    if components is not None:
        recomputed = guard["reward_components"]
        if not isinstance(components, dict) or set(components) != set(recomputed):
            names = sorted(components) if isinstance(components, dict) else components
            wrong.append(f"reward_components {names!r:.80} (recomputed {sorted(recomputed)})")
        else:
            wrong += [
                f"reward_components.{name} {components[name]!r:.20} (recomputed {recomputed[name]:.6g})"
                for name in sorted(recomputed)
                if _guard_mismatch(components[name], recomputed[name])
            ]
    if wrong:
        report.add("guard", f"{where}: the recorded guard metrics differ from the generations': {'; '.join(wrong)}")


def compare_metrics(claimed: dict[str, Any], rescored: dict[str, Any], what: str, report: Report) -> None:
    """Compare claimed episode count, mean reward and 95% CI with the re-scored ones, within :data:`REWARD_ATOL`."""
    if claimed["episodes"] != rescored["episodes"]:
        report.add("claim", f"{what} claims {claimed['episodes']} episodes; the bundle holds {rescored['episodes']}")
    if abs(claimed["mean_reward"] - rescored["mean_reward"]) > REWARD_ATOL:
        report.add(
            "claim",
            f"{what} claims mean reward {claimed['mean_reward']:.6g}; re-scored it is "
            f"{rescored['mean_reward']:.6g} (tolerance {REWARD_ATOL:g})",
        )
    for bound, name in enumerate(("lower", "upper")):
        if abs(claimed["ci95"][bound] - rescored["ci95"][bound]) > REWARD_ATOL:
            report.add(
                "claim",
                f"{what} claims a 95% CI {name} bound of {claimed['ci95'][bound]:.6g}; re-scored it is "
                f"{rescored['ci95'][bound]:.6g} (tolerance {REWARD_ATOL:g})",
            )
