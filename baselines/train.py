r"""Train an LM policy on a TextGym env with an algorithm of the table, CleanRL style: read it top to bottom.

    python -m baselines.train --algo ppo --env TextGym/Sentiment-v0 --model default --seed 0 \\
        --total-timesteps 4096 --out runs/sentiment_ppo_s0

Writes to ``--out``: ``config.json``, TensorBoard logs under ``tb/`` and one row per
evaluation in ``eval.csv`` (:mod:`baselines.common.run_logging`; ``--wandb-project`` mirrors
them to Weights & Biases), ``checkpoint/`` (safetensors + JSON, see :mod:`baselines.checkpoint`),
``eval_generations.jsonl`` and ``summary.json`` (initial and final validation reward on fixed prompts, KL, perplexity,
wall time, env steps/s, warnings, the learning curve, the full config, and the commit and machine it ran on).
``--resume`` continues a run from its checkpoint; Ctrl-C saves a checkpoint before exiting. The algorithm
(``--algo``) is looked up in :data:`baselines.algorithms.ALGOS`: its builder, evaluator,
vector env, defaults and run statistics; ``--help`` lists every flag with its default, grouped
by the algorithm that reads it. Exit codes: 0 done, 2 bad arguments or run directory, 130
interrupted (a checkpoint was saved); errors are one line on stderr.

Crash safety: ``config.json`` and ``summary.json`` are replaced atomically, evaluation
records are appended one durable line at a time, and a checkpoint directory is switched
to its new version in one step (:mod:`textgym.files`), so a run killed at any moment
(SIGKILL, power loss) keeps its last complete checkpoint, and ``--resume`` continues it up
to the run's ``--total-timesteps`` (or a new one given with it). That checkpoint's
``resume.json`` holds the random number generator states, the algorithm's counters, the
evaluations so far and the length of ``eval_generations.jsonl`` when it was written;
``--resume`` restores them, cuts the evaluation records written after the checkpoint and
reseeds the envs from the seed and the step count. Resuming from a given checkpoint is
deterministic: a run resumed after a crash continues exactly as one resumed from a copy of
the same checkpoint. (The envs restart their episodes at a resume; the episodes in progress
when the checkpoint was written are not replayed.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.utils import set_random_seed  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

import textgym  # noqa: E402
from baselines.algorithms import ALGOS, algorithm  # noqa: E402
from baselines.checkpoint import CheckpointError, load_checkpoint, read_resume_state, save_checkpoint  # noqa: E402
from baselines.cluster import cluster_summary  # noqa: E402
from baselines.common import provenance  # noqa: E402
from baselines.common.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, error  # noqa: E402
from baselines.common.cli import parse_train_args as parse_args  # noqa: E402
from baselines.common.config import Args, env_kwargs_of, uses_ray  # noqa: E402
from baselines.common.evaluation import evaluate_on_split  # noqa: E402
from baselines.common.loading import (  # noqa: E402
    build,
    check_env_options,
    checkpoint_metadata,
    load_trained,
    make_train_env,
)
from baselines.common.resume import (  # noqa: E402
    EVAL_RECORDS,
    restore_resume_state,
    resume_env_seed,
    resume_state,
)
from baselines.common.run_logging import RunLogger  # noqa: E402
from textgym import files  # noqa: E402
from textgym.data import DatasetError  # noqa: E402
from textgym.wrappers import read_records  # noqa: E402

#: Importable from here too, as before the split: the CLI's parser, config and checkpoint loading.
__all__ = ["Args", "build", "checkpoint_metadata", "env_kwargs_of", "load_trained", "main", "parse_args"]


class PeriodicEvaluation(BaseCallback):
    """Evaluate on fixed validation prompts, checkpoint, and dump sample generations, as configured.

    Args:
        args: The run's arguments.
        out: The run directory.
        curve: The evaluations so far (appended to).
        save: Writes the run's checkpoint (called after each periodic evaluation).
        next_eval: The step count of the next periodic evaluation (default: ``eval_every``).
        run_log: Where evaluations, warnings and samples are logged (None: nowhere).
    """

    def __init__(
        self,
        args: Args,
        out: Path,
        curve: list[dict[str, Any]],
        save: Any,
        next_eval: float | None = None,
        run_log: RunLogger | None = None,
    ) -> None:
        super().__init__()
        self.args, self.out, self.curve, self.save = args, out, curve, save
        self.run_log = run_log
        self.next_eval = next_eval if next_eval is not None else (args.eval_every or math.inf)
        self.rollouts = 0
        self.deadline = time.perf_counter() + args.max_train_seconds if args.max_train_seconds else math.inf
        self.stopped_by_deadline = False
        # The env steps of the rollouts the model trained on: a run stopped by its time limit leaves its last
        # rollout unfinished and untrained, so these, as --total-timesteps, replay the run's updates exactly where
        # nothing is scheduled over --total-timesteps (not DQN's epsilon decay, nor --lr-schedule linear).
        self.timesteps_trained = 0

    def _on_training_start(self) -> None:
        self.timesteps_trained = self.num_timesteps

    def _on_step(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.stopped_by_deadline = True
            return False
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        self.timesteps_trained = self.num_timesteps
        monitor = getattr(self.model, "monitor", None)
        if self.run_log is not None and monitor is not None:
            self.run_log.warnings(self.num_timesteps, monitor.issued)
        if self.args.sample_every and monitor and self.rollouts % self.args.sample_every == 0:
            print(f"\n[samples at step {self.num_timesteps}]")
            for text in list(monitor.samples)[-3:]:
                print(f"  > {text[:160]!r}")

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.args.eval_every
            point = run_evaluation(self.model, self.args, self.out, f"step{self.num_timesteps}", self.run_log)
            self.curve.append(point)
            self.save(self.next_eval)


def run_evaluation(model: Any, args: Args, out: Path, tag: str, run_log: RunLogger | None = None) -> dict[str, Any]:
    """Sampled evaluation on the fixed validation prompts; generations appended to eval_generations.jsonl.

    ``run_log`` (if given) logs the result and this evaluation's generations.
    """
    records = str(out / EVAL_RECORDS)
    result = evaluate_on_split(
        model,
        args.algo,
        args.env,
        env_kwargs_of(args),
        "validation",
        episodes=args.eval_episodes,
        record_path=records,
        reference_model=args.model,
        proposal_cache=args.proposal_cache or None,
    )
    result.update(tag=tag, step=int(model.num_timesteps))
    low, high = result["reward_ci95"]
    perplexity = (
        f", perplexity mean {result['perplexity_mean']:.1f} median {result['perplexity_median']:.1f}"
        if result.get("perplexity_mean")
        else ""
    )
    print(f"[eval {tag}] reward {result['reward_mean']:.3f} (95% CI {low:.3f}..{high:.3f}){perplexity}")
    if run_log is not None:
        run_log.evaluation(result["step"], result)
        run_log.samples(result["step"], read_records(out / EVAL_RECORDS)[-args.eval_episodes :])
    return result


#: The config fields the starting policy's evaluation depends on. Not the seed: the evaluation
#: prompts and sampling seeds are fixed, the LM is not yet trained, and an untrained DQN head
#: picks candidate 0 whatever its initialisation, so every training seed starts from the same scores.
STARTING_POLICY_FIELDS = (
    "algo",
    "env",
    "model",
    "eval_episodes",
    "max_context_tokens",
    "max_reply_tokens",
    "num_candidates",
    "device",
    "bf16",
)


def reused_initial_evaluation(args: Args) -> tuple[dict[str, Any], list[str]]:
    """The initial evaluation of the finished run ``args.initial_eval_from``: its summary entry and JSONL lines.

    Raises:
        ValueError: The directory is not a finished run with an initial evaluation, or its run
            differs from this one in a field of :data:`STARTING_POLICY_FIELDS`.
    """
    source = Path(args.initial_eval_from)
    files = [source / name for name in ("config.json", "summary.json", "eval_generations.jsonl")]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise ValueError(f"--initial-eval-from {source}: not a finished run ({', '.join(missing)} missing)")
    config = json.loads(files[0].read_text(encoding="utf-8"))
    differ = [
        f"{name}={config.get(name)!r} (this run: {getattr(args, name)!r})"
        for name in STARTING_POLICY_FIELDS
        if config.get(name) != getattr(args, name)
    ]
    if differ:
        raise ValueError(f"--initial-eval-from {source}: another starting policy: {'; '.join(differ)}")
    initial = json.loads(files[1].read_text(encoding="utf-8")).get("initial")
    if not initial:
        raise ValueError(f"--initial-eval-from {source}: that run has no initial evaluation")
    lines = files[2].read_text(encoding="utf-8").splitlines()[: int(initial["episodes"])]
    if len(lines) != args.eval_episodes:
        raise ValueError(f"--initial-eval-from {source}: {len(lines)} initial episodes, not {args.eval_episodes}")
    return {**initial, "reused_from": str(source)}, lines


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: strict JSON, as the leaderboard reads it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and save; see the module docstring."""
    args = parse_args(argv)
    source_commit = provenance.commit()  # before training: the code that runs, not what the tree holds at its end
    out = Path(args.out or f"runs/{args.env.split('/')[-1]}__{args.algo}__s{args.seed}__{int(time.time())}")
    if args.resume:
        config_path = out / "config.json"
        if not config_path.is_file():
            error(f"cannot resume: {out} holds no run (config.json is missing)")
            return EXIT_USAGE
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        given = sys.argv[1:] if argv is None else argv
        total = args.total_timesteps if any(a.split("=")[0] == "--total-timesteps" for a in given) else None
        args = Args(**{**saved, "total_timesteps": total or saved["total_timesteps"], "resume": True})
        if args.algo not in ALGOS:
            error(f"cannot resume: {out} is a run of algorithm {args.algo!r}; this install has {', '.join(ALGOS)}")
            return EXIT_USAGE
    elif (out / "checkpoint").exists():
        error(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        return EXIT_USAGE
    try:
        check_env_options(args)
    except ValueError as problem:  # before the run directory is made: nothing to clean up
        error(str(problem))
        return EXIT_USAGE
    reused: tuple[dict[str, Any], list[str]] | None = None
    if args.initial_eval_from and not args.resume:
        try:
            reused = reused_initial_evaluation(args)
        except ValueError as problem:
            error(str(problem))
            return EXIT_USAGE
    out.mkdir(parents=True, exist_ok=True)
    files.atomic_write(out / "config.json", json.dumps(dataclasses.asdict(args), indent=2))

    # Seeding: one block, everything derived from --seed (a resume then restores the checkpoint's generators).
    set_random_seed(args.seed)
    torch.set_num_threads(args.torch_threads)

    spec = algorithm(args.algo)
    try:
        env = make_train_env(args)
    except DatasetError as problem:  # a bad --dataset, --dataset-config or --dataset-split: nothing built yet
        error(str(problem))
        return EXIT_USAGE
    except (ImportError, ValueError, ConnectionError, RuntimeError) as problem:
        if not uses_ray(args):
            raise
        error(str(problem))
        return EXIT_USAGE
    if args.whiten_rewards:
        env = VecNormalize(env, norm_obs=False, norm_reward=True, gamma=args.gamma)
    model = build(args, env)
    curve: list[dict[str, Any]] = []
    initial: dict[str, Any] | None = None
    next_eval: float | None = None
    summary_path = out / "summary.json"
    records = out / EVAL_RECORDS
    log_dir = out / "tb"
    if args.resume:
        try:
            meta = load_checkpoint(out / "checkpoint", model.policy)
            state = read_resume_state(out / "checkpoint")
        except CheckpointError as problem:
            error(f"cannot resume: {problem}")
            return EXIT_USAGE
        model.num_timesteps = meta["num_timesteps"]
        if hasattr(model, "kl"):
            model.kl.coef = meta["kl_coef"]
        if spec.after_resume is not None:
            spec.load("after_resume")(model, args)
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        if previous.get("env_steps") == model.num_timesteps and "eval_generations_bytes" in previous:
            # The run finished at this checkpoint: its final evaluation stays part of the record.
            if model.num_timesteps >= args.total_timesteps:
                print(f"{out} finished at {model.num_timesteps} steps; pass a larger --total-timesteps to go on")
                return EXIT_OK
            curve, initial, keep = previous.get("curve", []), previous.get("initial") or None, previous
        elif state is not None:  # cut what was recorded after the checkpoint (a crash's half-done evaluation)
            curve, initial, keep = state["curve"], state["initial"], state
            next_eval = math.inf if state["next_eval"] is None else state["next_eval"]
        else:  # a format-1 checkpoint: no record of the evaluations
            curve, initial, keep = previous.get("curve", []), previous.get("initial") or None, None
        try:
            if keep is not None:
                files.truncate_file(records, keep["eval_generations_bytes"])
        except ValueError as problem:
            error(f"cannot resume: {problem}")
            return EXIT_USAGE
        if state is not None:
            restore_resume_state(model, env, state)
        env.seed(resume_env_seed(args.seed, model.num_timesteps))
        if next_eval is None and args.eval_every:
            next_eval = (model.num_timesteps // args.eval_every + 1) * args.eval_every
        log_dir = log_dir / f"resumed_at_{model.num_timesteps}"  # SB3's CSV log would overwrite the earlier one
    else:  # a fresh run: records of an earlier attempt that never checkpointed are not this run's
        files.atomic_write(records, "\n".join(reused[1]) + "\n" if reused else "")
    run_log = RunLogger(
        out,
        dataclasses.asdict(args),
        log_dir,
        history=curve,
        wandb_project=args.wandb_project,
        wandb_entity=args.wandb_entity,
    )
    model.set_logger(run_log.sb3_logger)

    def save(next_eval: float) -> None:
        state = resume_state(model, env, out, initial, curve, next_eval)
        save_checkpoint(out / "checkpoint", model.policy, checkpoint_metadata(args, model), state)

    start = time.perf_counter()
    if reused is not None:
        initial = reused[0]
        print(f"[eval initial] reused from {args.initial_eval_from}: reward {initial['reward_mean']:.3f}")
        curve.append(initial)
        run_log.evaluation(initial["step"], initial)
        run_log.samples(initial["step"], [json.loads(line) for line in reused[1]])
    elif not args.resume:
        initial = run_evaluation(model, args, out, "initial", run_log) if args.initial_eval else None
        curve += [initial] if initial else []
    callback = PeriodicEvaluation(args, out, curve, save, next_eval, run_log)
    remaining = max(0, args.total_timesteps - model.num_timesteps)
    interrupted = False
    train_start = time.perf_counter()
    steps_before = model.num_timesteps
    try:
        model.learn(remaining, callback=callback, reset_num_timesteps=False, progress_bar=args.progress_bar)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: saving a checkpoint")
    train_time = time.perf_counter() - train_start
    save(callback.next_eval)
    final = run_evaluation(model, args, out, "final", run_log)
    curve.append(final)
    steps = model.num_timesteps - steps_before
    summary = {
        "env": args.env,
        "algo": args.algo,
        "model": args.model,
        "seed": args.seed,
        "interrupted": interrupted,
        "stopped_by_time_limit": callback.stopped_by_deadline,
        "initial": {k: v for k, v in (initial or {}).items() if k != "rewards"},
        "final": {k: v for k, v in final.items() if k != "rewards"},
        "reward_gain": final["reward_mean"] - initial["reward_mean"] if initial else None,
        "kl": {k: v for k, v in getattr(model, "last_rollout", {}).items() if k.startswith("kl")},
        "wall_time_s": time.perf_counter() - start,
        "train_time_s": train_time,
        "env_steps": int(model.num_timesteps),
        "timesteps_trained": int(callback.timesteps_trained),
        "env_steps_per_s": steps / train_time if train_time > 0 else None,
        "warnings": list(getattr(getattr(model, "monitor", None), "issued", [])),
        **({args.algo: spec.load("run_stats")(model)} if spec.run_stats is not None else {}),
        "curve": [{k: v for k, v in point.items() if k != "rewards"} for point in curve],
        "eval_generations_bytes": records.stat().st_size if records.exists() else 0,
        "config": dataclasses.asdict(args),
        "textgym_version": textgym.__version__,
        "commit": source_commit,
        "machine": provenance.machine(),
        "torch_version": torch.__version__,
        "device": str(model.device),
        **({"cluster": cluster_summary()} if uses_ray(args) else {}),
    }
    files.atomic_write(summary_path, json.dumps(finite(summary), indent=2, default=float, allow_nan=False))
    print(
        f"wrote {summary_path}: reward {summary['initial'].get('reward_mean', float('nan')):.3f} -> "
        f"{final['reward_mean']:.3f} in {summary['wall_time_s']:.0f} s"
    )
    run_log.warnings(int(model.num_timesteps), summary["warnings"])
    run_log.close()
    env.close()
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
