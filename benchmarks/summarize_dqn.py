"""Aggregate DQN runs against the candidate references: per task and seed, with bootstrap CIs.

    python benchmarks/summarize_dqn.py RUNS_DIR --markdown benchmarks/results/dqn_candidates.md

Reads ``RUNS_DIR/dqn_refs_<task>.json`` (``python -m baselines.dqn``: random candidate, the
LM's top candidate, best-of-K) and ``RUNS_DIR/dqn_<task>_s<seed>/`` (``baselines.train --algo
dqn``), as ``benchmarks/dqn_learning.sh`` writes them. Every score is on the same 32
validation prompts (episode ``i`` resets with seed ``10000 + i``), so the DQN's gain over the
LM's top candidate is also given paired per episode (pooled over seeds, bootstrap CI; and with prompts resampled,
each prompt's gain averaged over the seeds and over the episodes that played it: with more episodes than the
split has prompts, episodes revisit prompts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from provenance import measured_at

from textgym.stats import EVAL_SEED_BASE, bootstrap_ci, cluster_means
from textgym.wrappers.recorder import read_records


def final_rewards(run: Path, episodes: int, seed_base: int = EVAL_SEED_BASE) -> tuple[list[float], list[str]]:
    """Per-episode rewards of a run's last evaluation and the episodes' prompt ids, in episode-seed order."""
    latest = {}
    for record in read_records(run / "eval_generations.jsonl"):
        if record["episode_index"] == 0:
            latest[record["seed"]] = (record["reward"], record["prompt_id"])
    episodes_played = [latest[seed_base + i] for i in range(episodes)]
    return [reward for reward, _ in episodes_played], [prompt for _, prompt in episodes_played]


def summarize(runs: Path, task: str) -> dict | None:
    """References and DQN seeds of one task, or None when its references are missing."""
    refs_path = runs / f"dqn_refs_{task}.json"
    if not refs_path.is_file():
        return None
    refs = json.loads(refs_path.read_text(encoding="utf-8"))
    episodes = refs["episodes"]
    seeds, prompt_ids = [], None
    for run in sorted(runs.glob(f"dqn_{task}_s*")):
        if (run / "summary.json").is_file():
            summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
            rewards, run_prompts = final_rewards(run, episodes)
            if prompt_ids is not None and run_prompts != prompt_ids:
                raise ValueError(f"{run} played other prompts than the runs before it: not paired")
            prompt_ids = run_prompts
            seeds.append(
                {
                    "seed": summary["seed"],
                    "rewards": rewards,
                    "env_steps": summary["env_steps"],
                    "train_time_s": summary["train_time_s"],
                    "wall_time_s": summary["wall_time_s"],
                    "top_candidate_rate": summary["final"]["top_candidate_rate"],
                    "proposal_sets_generated": summary.get("dqn", {}).get("proposal_sets_generated"),
                }
            )
    pooled = [r for seed in seeds for r in seed["rewards"]]
    paired = [r - t for seed in seeds for r, t in zip(seed["rewards"], refs["top"]["rewards"], strict=True)]
    over_random = [r - t for seed in seeds for r, t in zip(seed["rewards"], refs["random"]["rewards"], strict=True)]
    return {
        "env": refs["env"],
        "episodes": episodes,
        "refs": refs,
        "seeds": seeds,
        "pooled": pooled,
        "paired": paired,
        "paired_over_random": over_random,
        "prompt_ids": prompt_ids or [],
    }


def markdown(results: list[dict]) -> str:
    """One table row per reference and per DQN seed, then the pooled DQN and its paired gain over the LM's top."""
    lines = [
        "| env id | policy | mean reward [95% CI] | env steps | proposal sets generated | train s | run s "
        "| picks candidate 0 |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for result in results:
        env = result["env"].removeprefix("TextGym/")
        for name, label in (("random", "random candidate"), ("top", "LM top candidate"), ("best_of_k", "best-of-K")):
            ref = result["refs"][name]
            low, high = ref["reward_ci95"]
            lines.append(f"| {env} | {label} | {ref['reward_mean']:.3f} [{low:.3f}, {high:.3f}] | | | | | |")
        for seed in result["seeds"]:
            low, high = bootstrap_ci(seed["rewards"])
            generated = seed["proposal_sets_generated"]  # 0 where every set was stored beforehand
            lines.append(
                f"| {env} | DQN seed {seed['seed']} | {np.mean(seed['rewards']):.3f} [{low:.3f}, {high:.3f}] "
                f"| {seed['env_steps']} | {'' if generated is None else generated} "
                f"| {seed['train_time_s']:.0f} | {seed['wall_time_s']:.0f} "
                f"| {seed['top_candidate_rate']:.2f} |"
            )
        if result["seeds"]:
            low, high = bootstrap_ci(result["pooled"])
            gains = []
            # The references play each episode once for every seed, and episodes beyond the split's size revisit
            # prompts: the second CI resamples prompts (by id), not prompt-runs or episodes.
            prompts = [prompt for _ in result["seeds"] for prompt in result["prompt_ids"]]
            for key, label in (("paired", "LM top"), ("paired_over_random", "random")):
                gain_low, gain_high = bootstrap_ci(result[key])
                prompt_low, prompt_high = bootstrap_ci(cluster_means(prompts, result[key]))
                gains.append(
                    f"paired gain over {label} {np.mean(result[key]):+.3f} [{gain_low:+.3f}, {gain_high:+.3f}], "
                    f"prompts resampled [{prompt_low:+.3f}, {prompt_high:+.3f}] ({len(set(prompts))} distinct prompts)"
                )
            lines.append(
                f"| {env} | **DQN, {len(result['seeds'])} seeds pooled** | **{np.mean(result['pooled']):.3f}** "
                f"[{low:.3f}, {high:.3f}]; {'; '.join(gains)} | | | | | |"
            )
    return "\n".join(lines) + "\n"


def plot(results: list[dict], runs: Path, path: Path) -> None:
    """One panel per task: each seed's training reward (SB3's last 100 episodes, exploration included) against
    env steps, its final validation reward as a dot, and the references as horizontal lines."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), dpi=100, squeeze=False)
    for axis, result in zip(axes[0], results, strict=True):
        task = result["env"].removeprefix("TextGym/").removesuffix("Candidate-v0").lower()
        for seed in result["seeds"]:
            progress = runs / f"dqn_{task}_s{seed['seed']}" / "tb" / "progress.csv"
            steps, rewards = [], []
            if progress.is_file():
                with progress.open(encoding="utf-8") as handle:
                    for row in csv.DictReader(handle):
                        if row.get("rollout/ep_rew_mean"):
                            steps.append(int(row["time/total_timesteps"]))
                            rewards.append(float(row["rollout/ep_rew_mean"]))
            line = axis.plot(steps, rewards, alpha=0.5, label=f"seed {seed['seed']} (training)")[0]
            axis.plot([seed["env_steps"]], [np.mean(seed["rewards"])], "o", color=line.get_color())
        for name, label, style in (
            ("random", "random", ":"),
            ("top", "LM top", "--"),
            ("best_of_k", "best-of-K", "-."),
        ):
            axis.axhline(result["refs"][name]["reward_mean"], color="gray", linestyle=style, label=label)
        axis.set_title(result["env"].removeprefix("TextGym/"), fontsize=9)
        axis.set_xlabel("env steps (transitions)")
    axes[0][0].set_ylabel("reward (lines: training; dots: validation)")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--tasks", nargs="+", default=["sentiment", "dialogue", "sparsecompletion", "summarization"])
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None, help="learning curves, one panel per task")
    parser.add_argument("--commit", default=None, help="the commit the runs ran at (default: HEAD)")
    args = parser.parse_args(argv)
    results = [r for r in (summarize(args.runs, task) for task in args.tasks) if r is not None]
    table = measured_at(args.commit) + "\n\n" + markdown(results)
    print(table)
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    if args.png:
        plot(results, args.runs, args.png)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
