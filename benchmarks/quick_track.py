r"""The quick CPU benchmark track: every baseline and reference on every task, 3 seeds, fixed budgets, one command.

    python benchmarks/quick_track.py --out runs/quick --results benchmarks/results/quick_track

Arms, for each task (Dialogue, Summarization, SparseCompletion, Sentiment), on the track's
registered env arguments (``leaderboard.tracks``: validation split, 32 episodes with prompt
seeds 10000..10031, 3 training seeds):

=========  ==================  ==============================================================
arm        id                  what
=========  ==================  ==============================================================
ppo        ``<Task>-v0``       ``FastLMPPO`` (``baselines.train --algo ppo``)
zero-shot  ``<Task>-v0``       the untrained PPO policy, i.e. the LM sampling (the PPO runs'
                               initial evaluation)
dqn        ``<Task>Candidate``  ``LMQPolicy`` on stock DQN
lm-top     ``<Task>Candidate``  the LM's own top candidate (the DQN runs' initial evaluation)
random     both ids            uniformly random tokens / a random valid candidate
=========  ==================  ==============================================================

The PPO baseline trains at token level (utterance-level ids give the same rewards for the
same replies), so utterance ids are not a separate arm. The starting policy does not depend
on the training seed, so only the first seed's run evaluates it; the other seeds' runs start
after it and reuse that evaluation (``baselines.train --initial-eval-from``). The candidate-level
arms play the same prompts with the same LM, so they keep the LM's candidate sets in one
directory (``--proposal-cache``) and generate each set once. Budgets are fixed in seconds of
training per run (plus the evaluations; :data:`TRAIN_SECONDS`), so the whole track fits in an
hour on the 2-core reference machine (the wall time is in ``track.json``). The hour goes to
the arms where the learning benchmarks (``ppo_learning.sh``, ``dqn_learning.sh``) measured
learning: PPO on Dialogue (10 minutes), SparseCompletion and Sentiment (3-3.5 minutes) and
DQN on Sentiment (3 minutes); the arms that did not learn there in 5-15 minutes train for 1-2
minutes, enough for a few updates. The table ends
with each trained arm's paired per-prompt gain over its starting policy, with a 95% bootstrap
CI, and whether it beats it (the CI above 0).

Each arm x id becomes one leaderboard bundle (3 training seeds, generations recorded by
:class:`textgym.wrappers.RecordGenerations`), verified by re-scoring. The PPO and DQN bundles
carry their runs' checkpoints, which hold only what was trained (PPO: the top
``--trainable-layers`` layers, the final norm and the value head; DQN: the Q heads) against
the named base model, so ``textgym-leaderboard verify --rerun`` can replay them. ``--out`` receives the
run directories, ``bundles/``, ``table.md``, ``curves.png`` and ``track.json`` (wall times,
command); ``--results`` copies the table, PNG, JSON and bundles to a directory to check in,
and ``--submit`` adds every verified bundle to the leaderboard and re-renders it.

The GPU track runs the same arms with the training budgets of the learning benchmarks::

    python benchmarks/quick_track.py --out runs/gpu --device cuda --ppo-seconds 660 --dqn-seconds 600 --jobs 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baselines.algorithms import ALGOS

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Longest first, so that the job pool ends evenly.
TASKS = ("Dialogue", "Summarization", "SparseCompletion", "Sentiment")
#: The trained algorithms of the track: the flags of all their runs, those of the learning benchmarks
#: (``ppo_learning.sh``: 1 epoch of 256-step minibatches, KL target 6 nats per reply; ``dqn_learning.sh``: 16 envs
#: on a pool of 96 train prompts, each context's candidate set generated once). :data:`TASK_FLAGS` adds each task's.
TRAIN_FLAGS = {
    "ppo": (
        "--n-steps 32 --batch-size 256 --n-epochs 1 --learning-rate 3e-4 --value-scale 10 --kl-coef 0.05 "
        "--target-kl-per-reply 6 --total-timesteps 10000000"
    ),
    "dqn": "--n-envs 16 --train-prompts 96 --proposal-variants 1 --total-timesteps 3000",
}
#: PPO's recipe for rewards that come small and only at a reply's end (``ppo_learning.sh`` explains each flag).
_REPLY_END_REWARD = "--whiten-rewards --no-bootstrap-truncated --gae-lambda 1.0"
#: Flags of one algorithm on one task; a flag given twice takes its last value. Sentiment and SparseCompletion
#: roll out 16 envs (512 steps per update), twice the updates of the learning benchmarks' rollouts in a budget of
#: minutes; Dialogue keeps their 32 envs, with which it learned. Summarization keeps its learning-benchmark recipe
#: (articles that leave room for the reply, each read once for 4 episodes). DQN on Summarization trains on a pool
#: of 16 articles: at 5 s per candidate set, a pool of 96 left its budget without one update.
TASK_FLAGS = {
    ("ppo", "Sentiment"): "--n-envs 16 --batch-size 128",
    ("ppo", "Dialogue"): f"--n-envs 32 {_REPLY_END_REWARD}",
    ("ppo", "SparseCompletion"): f"--n-envs 16 --batch-size 128 {_REPLY_END_REWARD}",
    ("ppo", "Summarization"): (
        f"--n-envs 32 --learning-rate 1e-4 --train-prompts 256 --prompt-repeats 4 --max-prompt-tokens 464 "
        f"{_REPLY_END_REWARD}"
    ),
    ("dqn", "Summarization"): "--train-prompts 16",
}
#: Training seconds per run. The hour goes where the learning benchmarks measured learning: PPO on Sentiment,
#: Dialogue and SparseCompletion, DQN on Sentiment. Dialogue's PPO gain comes late: at commit 3fc42c4 a
#: 360-second run of seed 0 ended at its starting reward (0.109), the 660-second runs of ``ppo_dialogue.md``
#: gained. DQN on Dialogue, SparseCompletion and Summarization and PPO on Summarization did not beat their
#: starting policies in 5-15 minute runs (``dqn_candidates.md``, ``ppo_summarization.md``), so they get budgets
#: that make a few updates and no more.
TRAIN_SECONDS = {
    ("ppo", "Dialogue"): 600.0,
    ("ppo", "Sentiment"): 180.0,
    ("dqn", "Sentiment"): 180.0,
    ("ppo", "SparseCompletion"): 210.0,
    ("dqn", "Summarization"): 120.0,
    ("ppo", "Summarization"): 60.0,
    ("dqn", "Dialogue"): 60.0,
    ("dqn", "SparseCompletion"): 60.0,
}
COLORS = {"ppo": "C0", "dqn": "C1"}
#: Each arm's algorithm: a trained one, or the starting policy (initial evaluation) of one.
ARM_ALGO = {**{algo: algo for algo in TRAIN_FLAGS}, **{ALGOS[algo].starting_policy[0]: algo for algo in TRAIN_FLAGS}}
ARMS = ("ppo", "zero-shot", "dqn", "lm-top", "random")
#: The granularities each arm runs at: its algorithm's (PPO trains at token level, DQN picks among candidates).
ARM_LEVELS = {**{arm: ALGOS[algo].granularities for arm, algo in ARM_ALGO.items()}, "random": ("token", "candidate")}
REPO = Path(__file__).resolve().parent.parent


def token_id(task: str) -> str:
    """The task's token-level id."""
    return f"TextGym/{task}-v0"


def candidate_id(task: str) -> str:
    """The task's candidate-level id."""
    return f"TextGym/{task}Candidate-v0"


def task_of(env_id: str) -> str:
    """The task of a token- or candidate-level id (``TextGym/SentimentCandidate-v0`` -> ``Sentiment``)."""
    return env_id.removeprefix("TextGym/").split("-")[0].removesuffix("Candidate")


def train_seconds(args: argparse.Namespace, algo: str, task: str) -> float:
    """Training seconds of ``algo``'s runs on ``task``: ``--<algo>-seconds`` when given, else the track's budget."""
    given = getattr(args, f"{algo}_seconds")
    return float(given) if given is not None else TRAIN_SECONDS[algo, task]


def slug(env_id: str) -> str:
    """A directory name for an env id."""
    return env_id.removeprefix("TextGym/").replace("-", "_").lower()


# -- jobs ---------------------------------------------------------------------------------


def train_command(
    args: argparse.Namespace, algo: str, env_id: str, seed: int, out: Path, initial_eval_from: Path | None = None
) -> list[str]:
    """The ``baselines.train`` command of one run (its initial evaluation is the arm's starting policy).

    With ``initial_eval_from`` (the first seed's run) the run reuses that run's initial
    evaluation instead of repeating it: the starting policy and its evaluation prompts do not
    depend on the training seed.
    """
    task = task_of(env_id)
    return [
        sys.executable,
        "-m",
        "baselines.train",
        "--algo",
        algo,
        "--env",
        env_id,
        "--model",
        args.model,
        "--seed",
        str(seed),
        *TRAIN_FLAGS[algo].split(),
        *TASK_FLAGS.get((algo, task), "").split(),
        *(["--proposal-cache", str(proposal_cache(args))] if "proposal_cache" in ALGOS[algo].options else []),
        *(["--trainable-layers", str(args.trainable_layers)] if "trainable_layers" in ALGOS[algo].options else []),
        "--max-train-seconds",
        str(train_seconds(args, algo, task)),
        "--eval-episodes",
        "32",
        *(["--initial-eval-from", str(initial_eval_from)] if initial_eval_from else ["--initial-eval"]),
        "--torch-threads",
        "1",
        "--device",
        args.device,
        "--no-progress-bar",
        "--sample-every",
        "0",
        "--out",
        str(out),
    ]


def proposal_cache(args: argparse.Namespace) -> Path:
    """Where the track's candidate-level evaluations keep the LM's candidate sets.

    Every candidate-level arm plays the same 32 prompts with the same LM and prompt seeds, so a
    set is generated once: by the starting policy's evaluation, then read back by the final
    evaluations (a context the trained head leads to for the first time is generated then) and
    the random arm. The sets are exactly those the env proposes itself.
    """
    return Path(args.out) / "proposals"


def random_command(args: argparse.Namespace, env_id: str, out: Path, seed: int) -> list[str]:
    """This script, run as the random-agent job of ``env_id`` and one training seed."""
    return [
        sys.executable,
        __file__,
        "random-arm",
        env_id,
        str(out),
        "--model",
        args.model,
        "--seeds",
        str(seed),
        "--proposal-cache",
        str(proposal_cache(args)),
    ]


def run_job(name: str, command: list[str], log: Path) -> dict[str, Any]:
    """Run one job with its output in ``log``; return its name, exit code and wall time."""
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.perf_counter() - start
    print(f"[{dt.datetime.now():%H:%M:%S}] {name}: exit {code} in {seconds:.0f} s", flush=True)
    return {"job": name, "exit_code": code, "wall_time_s": seconds, "command": shlex.join(command)}


@dataclass
class Job:
    """One subprocess of the track; ``followers`` become runnable when it has finished."""

    name: str
    command: list[str]
    followers: list[Job] = field(default_factory=list)


def track_jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    """The track's jobs in the order they start: each trained arm's first seed, longest first, then the random arms.

    The other seeds of a trained arm follow its first seed (they reuse its initial evaluation).
    """
    jobs = []
    for task in args.tasks:
        for algo, env_id in (("dqn", candidate_id(task)), ("ppo", token_id(task))):
            first_seed, *other_seeds = args.seeds
            first = out / "runs" / f"{algo}__{slug(env_id)}__s{first_seed}"
            job = Job(first.name, train_command(args, algo, env_id, first_seed, first))
            for seed in other_seeds:
                run = out / "runs" / f"{algo}__{slug(env_id)}__s{seed}"
                job.followers.append(Job(run.name, train_command(args, algo, env_id, seed, run, first)))
            jobs.append(job)
    # The short jobs last, the longest of them (candidate ids: the LM proposes every turn) first.
    for env_id in [candidate_id(task) for task in args.tasks] + [token_id(task) for task in args.tasks]:
        for seed in args.seeds:
            records = out / "random" / slug(env_id)
            jobs.append(Job(f"random__{slug(env_id)}__s{seed}", random_command(args, env_id, records, seed)))
    return jobs


def finished(job: Job, result: dict[str, Any], results: list[dict[str, Any]]) -> list[Job]:
    """Record ``job``'s result; return its followers to run, or record them as not run when it failed."""
    results.append(result)
    if result["exit_code"] == 0:
        return job.followers
    # Followers would reuse a missing evaluation: report them as not run.
    results.extend({"job": f.name, "exit_code": -1, "wall_time_s": 0.0, "command": ""} for f in job.followers)
    return []


def run_jobs_on_ray(jobs: list[Job], logs: Path, address: str) -> list[dict[str, Any]]:
    """Run ``jobs`` as Ray tasks of one CPU each (a run uses one torch thread); followers start after their job.

    The cluster's nodes must share the track's directory (the jobs write their runs and logs there).
    """
    from baselines.cluster import connect

    connect(address)
    import ray

    # This module runs as a script, not an importable module: its functions travel to the workers by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(num_cpus=1)(run_job)
    results: list[dict[str, Any]] = []

    def submit(job: Job) -> tuple[Any, Job]:
        return task.remote(job.name, job.command, logs / f"{job.name}.log"), job

    pending = dict(map(submit, jobs))
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as error:  # a lost node or task: a failed job, not a hung track
            result = {"job": job.name, "exit_code": -1, "wall_time_s": 0.0, "command": f"not run: {error}"}
        pending.update(map(submit, finished(job, result, results)))
    return results


def run_jobs(jobs: list[Job], workers: int, logs: Path) -> list[dict[str, Any]]:
    """Run ``jobs`` on ``workers`` threads; a finished job's followers go to the front of the queue."""
    queue, results, running = list(jobs), [], 0
    ready = threading.Condition()

    def work() -> None:
        nonlocal running
        while True:
            with ready:
                while not queue and running:
                    ready.wait()
                if not queue:
                    ready.notify_all()
                    return
                job, running = queue.pop(0), running + 1
            try:
                result = run_job(job.name, job.command, logs / f"{job.name}.log")
            except OSError as error:  # e.g. the log cannot be written: a failed job, not a hung pool
                result = {"job": job.name, "exit_code": -1, "wall_time_s": 0.0, "command": f"not run: {error}"}
            with ready:
                queue[:0] = finished(job, result, results)
                running -= 1
                ready.notify_all()

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def random_arm(env_id: str, out: Path, model: str, seeds: list[int], proposals: Path | None = None) -> None:
    """Record the random agent on the track's episodes of ``env_id``, one JSONL per training seed.

    ``proposals``: the track's candidate sets (see :func:`proposal_cache`), or None to generate every one.
    """
    import gymnasium as gym
    import torch

    import textgym  # noqa: F401
    from leaderboard.tracks import TRACKS
    from textgym.agents import RandomAgent, play_episode
    from textgym.wrappers import RecordGenerations

    torch.set_num_threads(1)
    track = TRACKS["quick"]
    kwargs = {"model": model, "split": track.split, "render_mode": None}
    out.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = out / f"seed{seed}.jsonl"
        path.unlink(missing_ok=True)
        if gym.spec(env_id).kwargs.get("granularity") == "candidate":
            from baselines.common.candidates import run_candidate_episodes

            def play(env: gym.Env, index: int, batcher: Any, seed: int = seed) -> float:
                rng = np.random.default_rng([seed, index])
                env.reset(seed=track.prompt_seed_base + index)
                total, done = 0.0, False
                while not done:
                    action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
                    _, reward, terminated, truncated, _ = env.step(action)
                    total, done = total + float(reward), terminated or truncated
                return total

            run_candidate_episodes(
                env_id,
                kwargs,
                track.episodes,
                play,
                parallel=track.episodes,
                record_path=path,
                proposal_cache=str(proposals) if proposals else None,
            )
        else:
            env = RecordGenerations(gym.make(env_id, **kwargs), path)
            for index, prompt_seed in enumerate(track.prompt_seeds):
                play_episode(env, RandomAgent(seed=seed * 1_000_003 + index), seed=prompt_seed)
            env.close()


# -- bundles, table, curves ---------------------------------------------------------------


def random_bundle(records_dir: Path, target: Path, env_id: str, seeds: list[int], model: str) -> None:
    """Bundle the random arm's recorded episodes of ``env_id`` (one JSONL per training seed)."""
    from leaderboard.bundle import RunData, make_bundle, model_revision
    from textgym.wrappers.recorder import read_records

    make_bundle(
        target,
        [RunData(seed, read_records(records_dir / f"seed{seed}.jsonl")) for seed in seeds],
        name=f"Random {'candidate' if 'Candidate' in env_id else 'tokens'} ({env_id.removeprefix('TextGym/')})",
        submitter="textgym baselines",
        model={"id": model, "revision": model_revision(model), "algo": "random", "decoding": "sample"},
        compute={"hardware": "cpu", "wall_time_s": 0.0, "env_steps": 0},
        notes="uniformly random actions (valid candidates at candidate level); no training",
    )


def make_bundles(out: Path, tasks: list[str], seeds: list[int], model: str) -> list[dict[str, Any]]:
    """One verified bundle per arm x id; returns a row per bundle (claims and verification)."""
    from leaderboard.bundle import bundle_from_run_dirs
    from leaderboard.verify import verify_bundle

    bundles = out / "bundles"
    shutil.rmtree(bundles, ignore_errors=True)
    rows = []
    for task in tasks:
        for arm in ARMS:
            ids = {"token": token_id(task), "candidate": candidate_id(task)}
            for env_id in (ids[level] for level in ARM_LEVELS[arm]):
                target = bundles / f"{arm}__{slug(env_id)}"
                try:
                    if arm == "random":
                        random_bundle(out / "random" / slug(env_id), target, env_id, seeds, model)
                    else:
                        algo = ARM_ALGO[arm]
                        run_dirs = [out / "runs" / f"{algo}__{slug(env_id)}__s{s}" for s in seeds]
                        bundle_from_run_dirs(
                            run_dirs,
                            target,
                            include_checkpoints=arm == algo,
                            evaluation="final" if arm == algo else "initial",
                            notes="quick track (benchmarks/quick_track.py)",
                        )
                except Exception as error:  # a failed run must not hide the others: report it in the table
                    rows.append({"arm": arm, "env": env_id, "error": f"{type(error).__name__}: {error}"})
                    continue
                report = verify_bundle(target)
                manifest = json.loads((target / "bundle.json").read_text(encoding="utf-8"))
                rows.append(
                    {
                        "arm": arm,
                        "env": env_id,
                        "bundle": target.name,
                        "verified": report.ok,
                        "verify_summary": report.summary(),
                        "claimed": manifest["claimed"],
                        "per_seed": [run["claimed"]["mean_reward"] for run in manifest["runs"]],
                        "report": report,
                    }
                )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Per env id: every arm's pooled mean reward with its 95% bootstrap CI and per-seed means."""
    lines = [
        "| env id | arm | mean reward [95% CI] | per-seed means | verified |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["env"], ARMS.index(r["arm"]))):
        if "error" in row:
            lines.append(f"| {row['env'][8:]} | {row['arm']} | failed: {row['error'][:120]} | | no |")
            continue
        low, high = row["claimed"]["ci95"]
        seeds = " / ".join(f"{value:.3f}" for value in row["per_seed"])
        mark = "yes (re-scored)" if row["verified"] else "NO"
        lines.append(
            f"| {row['env'][8:]} | {row['arm']} | {row['claimed']['mean_reward']:.3f} [{low:.3f}, {high:.3f}] "
            f"| {seeds} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def gains_over_start(bundles: Path, tasks: list[str]) -> list[dict[str, Any]]:
    """Per task and trained arm: its paired per-prompt gain over its starting policy, pooled over the seeds.

    Both arms play the same prompts (and, at candidate level, choose among the same candidate
    sets), so each (training seed, prompt) of the trained arm's bundle is paired with the same
    episode of the starting policy's bundle. The starting policy plays each episode once for all
    seeds, and episodes beyond the split's size revisit prompts, so the gains of one prompt are
    not independent: the CI resamples prompts (by id), each with its gain averaged over the
    seeds and its episodes.
    """
    from textgym.stats import bootstrap_ci, cluster_means
    from textgym.wrappers.recorder import read_records

    def rewards(name: str) -> dict[tuple[int, int, str], float] | None:
        path = bundles / name / "generations.jsonl"
        if not path.is_file():
            return None
        return {(r["training_seed"], r["seed"], r["prompt_id"]): float(r["reward"]) for r in read_records(path)}

    rows = []
    for task in tasks:
        for algo, env_id in (("ppo", token_id(task)), ("dqn", candidate_id(task))):
            start_arm = ALGOS[algo].starting_policy[0]
            trained, start = rewards(f"{algo}__{slug(env_id)}"), rewards(f"{start_arm}__{slug(env_id)}")
            row: dict[str, Any] = {"task": task, "arm": algo, "start_arm": start_arm, "env": env_id}
            if not trained or not start or set(trained) != set(start):
                rows.append({**row, "error": "missing or unpaired bundles"})
                continue
            keys = sorted(trained)
            gains = [trained[key] - start[key] for key in keys]
            low, high = bootstrap_ci(cluster_means([prompt for _, _, prompt in keys], gains))
            verdict = "yes" if low > 0 else ("no, worse" if high < 0 else "no (CI includes 0)")
            rows.append(
                {
                    **row,
                    "start_mean": float(np.mean(list(start.values()))),
                    "trained_mean": float(np.mean(list(trained.values()))),
                    "gain": float(np.mean(gains)),
                    "gain_ci95": [low, high],
                    "pairs": len(gains),
                    "prompts": len({prompt for _, _, prompt in keys}),
                    "beats_start": verdict,
                }
            )
    return rows


def gains_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: does each trained arm beat its starting policy (paired gain with its 95% bootstrap CI)?"""
    lines = [
        "| task | trained arm | starting policy | start -> trained | paired gain [95% CI, prompts resampled] "
        "| beats its start |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['task']} | {row['arm']} | {row['start_arm']} | {row['error']} | | no |")
            continue
        low, high = row["gain_ci95"]
        lines.append(
            f"| {row['task']} | {row['arm']} | {row['start_arm']} "
            f"| {row['start_mean']:.3f} -> {row['trained_mean']:.3f} "
            f"| {row['gain']:+.3f} [{low:+.3f}, {high:+.3f}] | {row['beats_start']} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(out: Path, tasks: list[str], seeds: list[int], path: Path) -> None:
    """Validation reward against env steps per trained arm: seeds, mean, and a bootstrap CI band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textgym.stats import bootstrap_ci

    figure, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6.5), squeeze=False)
    for column, task in enumerate(tasks):
        for row, (algo, env_id) in enumerate((("ppo", token_id(task)), ("dqn", candidate_id(task)))):
            axis = axes[row][column]
            curves = []
            for seed in seeds:
                summary_path = out / "runs" / f"{algo}__{slug(env_id)}__s{seed}" / "summary.json"
                if not summary_path.is_file():
                    continue
                curve = json.loads(summary_path.read_text(encoding="utf-8"))["curve"]
                steps, rewards = [p["step"] for p in curve], [p["reward_mean"] for p in curve]
                axis.plot(steps, rewards, color="0.7", linewidth=1)
                curves.append((steps, rewards))
            if curves:
                points = min(len(c[1]) for c in curves)
                steps = np.mean([c[0][:points] for c in curves], axis=0)
                values = np.array([c[1][:points] for c in curves])
                bands = np.array([bootstrap_ci(list(values[:, i])) for i in range(points)])
                axis.plot(steps, values.mean(0), color=COLORS[algo], marker="o", label="mean")
                axis.fill_between(steps, bands[:, 0], bands[:, 1], alpha=0.25, color=COLORS[algo])
            axis.set_title(f"{algo.upper()} on {env_id[8:]}", fontsize=9)
            axis.set_xlabel("env steps")
            axis.set_ylabel("validation reward")
    figure.suptitle("Quick track: validation reward (32 prompts), seeds in grey, mean with 95% bootstrap CI band")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def submit_rows(rows: list[dict[str, Any]], entries: Path | None = None, site: Path | None = None) -> int:
    """Add every verified bundle of ``rows`` to the leaderboard and re-render it; return how many were added.

    Uses the reports ``make_bundles`` already has (each bundle is verified once, the site
    rendered once). A bundle already listed (e.g. a random arm re-run with the same seeds
    gives the very same bundle), or one the leaderboard refuses (its episodes are a listed
    entry's), is reported and skipped.
    """
    from leaderboard.entries import ENTRIES_PATH, EntriesError, append_entry, load_entries, make_entry
    from leaderboard.render import SITE_DIR, write_site

    entries, site = entries or ENTRIES_PATH, site or SITE_DIR
    listed, added = {entry["id"] for entry in load_entries(entries)}, 0
    for row in rows:
        if not row.get("verified"):
            continue
        if row["report"].bundle.digest in listed:
            print(f"{row['bundle']}: this very bundle is already on the leaderboard; not added again")
            continue
        try:
            append_entry(make_entry(row["report"]), entries)
        except EntriesError as error:  # e.g. a DQN that never left the LM's top candidate: the LM-top entry's episodes
            print(f"{row['bundle']}: not added: {error}")
            continue
        listed.add(row["report"].bundle.digest)
        added += 1
    page, table = write_site(load_entries(entries), site)
    print(f"submitted {added} entries; rendered {page} and {table}")
    return added


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/quick", help="work directory (run directories, bundles, table)")
    parser.add_argument("--results", default=None, help="copy table, curves, track.json and bundles here")
    parser.add_argument("--model", default="default", help="the LM of every arm and env")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--ppo-seconds", type=float, default=None, help="training seconds of every PPO run (default: the track's)"
    )
    parser.add_argument(
        "--dqn-seconds", type=float, default=None, help="training seconds of every DQN run (default: the track's)"
    )
    parser.add_argument("--trainable-layers", type=int, default=8, help="PPO trains the top N layers (-1: all)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--device", default="cpu", help="device of the training runs")
    parser.add_argument("--submit", action="store_true", help="add the verified bundles to the leaderboard")
    parser.add_argument(
        "--ray-address",
        default="",
        help="run the jobs as Ray tasks on this cluster (auto or HOST:PORT; the nodes share --out) instead of --jobs",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the track; return 0 when every job ran and every bundle verified."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["random-arm"]:
        sub = argparse.ArgumentParser()
        sub.add_argument("env_id")
        sub.add_argument("out", type=Path)
        sub.add_argument("--model", default="default")
        sub.add_argument("--seeds", nargs="+", type=int, required=True)
        sub.add_argument("--proposal-cache", type=Path, default=None)
        options = sub.parse_args(argv[1:])
        random_arm(options.env_id, options.out, options.model, options.seeds, options.proposal_cache)
        return 0
    args = parse_args(argv)
    import provenance  # this script's neighbour (a script's folder is first on sys.path)

    commit = provenance.commit()  # before the track writes anything
    out = Path(args.out)
    if (out / "runs").exists():
        print(f"error: {out} already holds a track; choose another --out (nothing is overwritten)")
        return 2
    (out / "runs").mkdir(parents=True)
    (out / "logs").mkdir()
    jobs = track_jobs(args, out)
    start = time.perf_counter()
    count = len(jobs) + sum(len(job.followers) for job in jobs)
    print(f"quick track: {count} jobs, {args.jobs} at a time, in {out}", flush=True)
    if args.ray_address:
        results = run_jobs_on_ray(jobs, out / "logs", args.ray_address)
    else:
        results = run_jobs(jobs, args.jobs, out / "logs")
    jobs_time = time.perf_counter() - start
    rows = make_bundles(out, args.tasks, args.seeds, args.model)
    gains = gains_over_start(out / "bundles", args.tasks)
    wall = time.perf_counter() - start
    table = (
        f"{provenance.measured_at(commit)} One command, {wall / 60:.1f} min wall; `track.json` has the command "
        "and every job's wall time.\n\n" + markdown_table(rows) + "\n" + gains_table(gains)
    )
    (out / "table.md").write_text(table, encoding="utf-8")
    plot_curves(out, args.tasks, args.seeds, out / "curves.png")
    record = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{provenance.machine()}, {platform.machine()}, {platform.platform()}",
        "jobs_wall_time_s": jobs_time,
        "wall_time_s": wall,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "results")},
        "jobs": results,
        "bundles": [{k: v for k, v in row.items() if k != "report"} for row in rows],
        "gains_over_start": gains,
    }
    (out / "track.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    print(table)
    print(f"quick track: {wall / 60:.1f} min wall ({jobs_time / 60:.1f} min of runs); results in {out}")
    if args.results:
        results_dir = Path(args.results)
        results_dir.mkdir(parents=True, exist_ok=True)
        for name in ("table.md", "curves.png", "track.json"):
            shutil.copyfile(out / name, results_dir / name)
        shutil.rmtree(results_dir / "bundles", ignore_errors=True)
        shutil.copytree(out / "bundles", results_dir / "bundles")
    failed = [r for r in results if r["exit_code"] != 0] + [r for r in rows if not r.get("verified")]
    if args.submit:
        submit_rows(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
