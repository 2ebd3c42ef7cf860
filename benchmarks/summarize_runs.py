"""Aggregate baselines.train run directories: per-seed table, mean gain with a bootstrap CI, learning-curve PNG.

    python benchmarks/summarize_runs.py runs/ppo_sentiment_s* --title "PPO on Sentiment" \
        --png benchmarks/results/ppo_sentiment.png --markdown benchmarks/results/ppo_sentiment.md

Reads each run's summary.json (never re-trains). The PNG shows every seed's validation
reward against env steps and the across-seed mean with a band from its bootstrap CI.
Its lines are each training rollout's mean reply reward (``--curve reply``) or SB3's mean
reward of the last 100 training episodes (``--curve episode``: on the validation
metric's scale for multi-turn tasks, where a reply's reward is one turn's).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from provenance import measured_at

from baselines.common.evaluation import perplexity_summary
from textgym.stats import bootstrap_ci, cluster_means
from textgym.wrappers.recorder import read_records


def load(run: Path) -> dict:
    """A run's summary.json with ``run`` (its directory) and ``evaluations`` (:func:`first_and_last_evaluation`)."""
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["run"] = str(run)
    path = run / "eval_generations.jsonl"
    records = read_records(path) if path.is_file() else []
    backfill_median_perplexity(records, summary)
    summary["evaluations"] = first_and_last_evaluation(records, summary["final"]["episodes"])
    return summary


def backfill_median_perplexity(records: list[dict], summary: dict) -> None:
    """Give evaluations from before ``perplexity_median`` existed theirs, from the recorded generations.

    Each evaluation appends its episodes to eval_generations.jsonl in the curve's order; where
    the counts disagree (a reused initial evaluation, a file copied in part) nothing is filled.
    """
    points = summary.get("curve", [])
    if all("perplexity_median" in point for point in points) or not records:
        return
    if len(records) != sum(point["episodes"] for point in points):
        return
    start = 0
    for point in points:
        guards = [record.get("guard", {}) for record in records[start : start + point["episodes"]]]
        start += point["episodes"]
        point.setdefault("perplexity_median", perplexity_summary(guards)["perplexity_median"])
        if point.get("tag") in ("initial", "final"):
            summary[point["tag"]].setdefault("perplexity_median", point["perplexity_median"])


def first_and_last_evaluation(records: list[dict], episodes: int) -> tuple[list[dict], list[dict]] | None:
    """The recorded episodes of a run's first (initial) and last (final) evaluation, or None without both."""
    if len(records) < 2 * episodes:
        return None
    return records[:episodes], records[-episodes:]


def reply_reward(records: list[dict]) -> float:
    """Mean reward of a single reply: every turn's reward of every episode, pooled (Dialogue: one reply's word-F1)."""
    turns = [reward for record in records for reward in record["turn_rewards"]]
    return float(np.mean(turns)) if turns else float("nan")


def paired_gains(summaries: list[dict]) -> tuple[list[str], list[float]]:
    """Final minus initial reward per validation episode (same episode seeds), pooled over the runs.

    Returns each gain's prompt id and the gains, in the same order (both empty when a run lacks an evaluation).
    Episodes beyond the split's size revisit prompts, so the prompt id, not the episode seed, is what a CI
    over prompts resamples.
    """
    prompts, gains = [], []
    for s in summaries:
        evaluations = s["evaluations"]
        if evaluations is None:
            return [], []
        initial = {record["seed"]: record["reward"] for record in evaluations[0]}
        prompts += [record["prompt_id"] for record in evaluations[1]]
        gains += [record["reward"] - initial[record["seed"]] for record in evaluations[1]]
    return prompts, gains


CURVE_COLUMNS = {"reply": "rollout/reply_reward_mean", "episode": "rollout/ep_rew_mean"}


def rollout_curve(run: Path, column: str = CURVE_COLUMNS["reply"]) -> tuple[list[int], list[float]]:
    """One point per training rollout from the run's progress.csv: ``column`` against env steps."""
    import csv

    with (run / "tb" / "progress.csv").open(encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(column)]
    return [int(row["time/total_timesteps"]) for row in rows], [float(row[column]) for row in rows]


def table(summaries: list[dict]) -> str:
    lines = [
        "| run | seed | initial reward | final reward | gain | KL/reply | perplexity mean (init -> final) "
        "| perplexity median | reward per reply (init -> final) | train s | steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for s in summaries:
        initial, final = s["initial"], s["final"]
        ppl = f"{initial.get('perplexity_mean') or nan:.1f} -> {final.get('perplexity_mean') or nan:.1f}"
        median = f"{initial.get('perplexity_median') or nan:.1f} -> {final.get('perplexity_median') or nan:.1f}"
        evaluations = s["evaluations"]
        per_reply = f"{reply_reward(evaluations[0]):.3f} -> {reply_reward(evaluations[1]):.3f}" if evaluations else ""
        lines.append(
            f"| {Path(s['run']).name} | {s['seed']} | {initial['reward_mean']:.3f} | {final['reward_mean']:.3f} | "
            f"{s['reward_gain']:+.3f} | {s['kl'].get('kl_per_reply', float('nan')):.2f} | {ppl} | {median} | "
            f"{per_reply} | "
            f"{s['train_time_s']:.0f} | {s['env_steps_per_s'] or float('nan'):.1f} |"
        )
    gains = [s["reward_gain"] for s in summaries]
    low, high = bootstrap_ci(gains)
    lines.append("")
    lines.append(
        f"Mean gain {np.mean(gains):+.3f} (95% bootstrap CI {low:+.3f} .. {high:+.3f}) over {len(gains)} seeds."
    )
    prompts, paired = paired_gains(summaries)
    if paired:
        low, high = bootstrap_ci(paired)
        lines.append(
            f"Paired per-prompt gain, pooled over the seeds: {np.mean(paired):+.3f} (95% bootstrap CI "
            f"{low:+.3f} .. {high:+.3f}, {len(paired)} prompt-runs)."
        )
        # Every seed's gain on a prompt subtracts the same initial evaluation of it, and episodes may revisit a
        # prompt: resample prompts, not runs or episodes.
        per_prompt = cluster_means(prompts, paired)
        low, high = bootstrap_ci(per_prompt)
        lines.append(
            f"Prompts resampled (each prompt's gain averaged over the seeds and its episodes): 95% bootstrap CI "
            f"{low:+.3f} .. {high:+.3f}, {len(per_prompt)} distinct prompts."
        )
    return "\n".join(lines)


def plot(summaries: list[dict], title: str, path: Path, curve: str = "reply") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    curves, from_rollouts = [], True
    for s in summaries:
        evals = [(point["step"], point["reward_mean"]) for point in s["curve"]]
        if (Path(s["run"]) / "tb" / "progress.csv").is_file():
            steps, rewards = rollout_curve(Path(s["run"]), CURVE_COLUMNS[curve])
        else:  # a run copied without its TensorBoard folder: the validation points alone
            from_rollouts = False
            steps, rewards = (list(values) for values in zip(*evals, strict=True))
        line = axis.plot(steps, rewards, alpha=0.4, label=f"seed {s['seed']}")[0]
        axis.plot(*zip(*evals, strict=True), "o", color=line.get_color(), markersize=7)
        curves.append((steps, rewards))
    grid = sorted({step for steps, _ in curves for step in steps})
    table_ = np.array([np.interp(grid, steps, rewards) for steps, rewards in curves])
    bands = np.array([bootstrap_ci(list(column)) for column in table_.T])
    axis.plot(grid, table_.mean(axis=0), color="black", linewidth=2, label="mean")
    axis.fill_between(grid, bands[:, 0], bands[:, 1], color="black", alpha=0.15, label="95% CI of mean")
    axis.set_xlabel("env steps (tokens)")
    lines = "training replies" if curve == "reply" else "training episodes"
    axis.set_ylabel(f"reward (lines: {lines}; dots: validation)" if from_rollouts else "validation reward")
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--title", default="")
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--commit", default=None, help="the commit the runs ran at (default: HEAD)")
    parser.add_argument("--machine", default=None, help="the machine the runs ran on (default: this one)")
    parser.add_argument("--curve", choices=sorted(CURVE_COLUMNS), default="reply", help="what the PNG's lines show")
    args = parser.parse_args()
    summaries = [load(run) for run in args.runs]
    text = table(summaries)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(
            f"# {args.title}\n\n{measured_at(args.commit, args.machine)}\n\n{text}\n", encoding="utf-8"
        )
    if args.png:
        plot(summaries, args.title, args.png, args.curve)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
