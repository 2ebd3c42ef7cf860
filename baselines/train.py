r"""Train an LM policy on a TextGym env with PPO, CleanRL style: read it top to bottom.

    python -m baselines.train --algo ppo --env TextGym/Sentiment-v0 --model default --seed 0 \\
        --total-timesteps 4096 --out runs/sentiment_ppo_s0

Writes to ``--out``: ``config.json``, TensorBoard logs under ``tb/``, ``checkpoint/``
(safetensors + JSON, see :mod:`baselines.checkpoint`), ``eval_generations.jsonl`` and
``summary.json`` (initial and final validation reward on fixed prompts, KL, perplexity,
wall time, env steps/s, warnings, the learning curve and the full config). ``--resume``
continues a run from its checkpoint; Ctrl-C saves a checkpoint before exiting.

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

import argparse
import base64
import dataclasses
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.utils import set_random_seed  # noqa: E402

import textgym  # noqa: E402
from baselines.checkpoint import (  # noqa: E402
    CheckpointError,
    load_checkpoint,
    read_metadata,
    read_resume_state,
    save_checkpoint,
)
from baselines.evaluate import evaluate_policy  # noqa: E402
from baselines.ppo import FastLMPPO  # noqa: E402
from baselines.vec_env import BatchedProposalVecEnv  # noqa: E402
from textgym import files  # noqa: E402

ALGOS = ("ppo", "dqn")
#: Defaults that differ for --algo dqn (a small head on frozen LM features, not LM fine-tuning);
#: flags given on the command line override them.
DQN_DEFAULTS: dict[str, Any] = {"n_envs": 8, "batch_size": 64, "learning_rate": 1e-3, "gamma": 0.5}


@dataclass
class Args:
    """Command-line arguments; each field's comment is its ``--help``."""

    algo: str = "ppo"  # ppo (FastLMPPO, token level) or dqn (candidate level)
    env: str = "TextGym/Sentiment-v0"  # a TextGym env id
    model: str = "default"  # 'default', 'tiny', a local model directory or a hub id
    seed: int = 0  # seeds torch, numpy, the envs and the evaluation prompts
    total_timesteps: int = 4096  # env steps (tokens at token level)
    out: str = ""  # run directory (default runs/<env>__<algo>__s<seed>__<time>)
    n_envs: int = 8  # envs collected in one batch (dqn: their proposals batched)
    n_steps: int = 32  # steps per env per rollout
    batch_size: int = 128  # transitions per minibatch (whole segments; dqn: 64)
    n_epochs: int = 2  # PPO epochs per rollout
    learning_rate: float = 2e-5  # Adam learning rate (dqn: 1e-3)
    lr_schedule: str = "constant"  # constant or linear (decays to 0)
    gamma: float = 1.0  # discount (dqn: 0.5)
    gae_lambda: float = 0.95  # GAE lambda
    clip_range: float = 0.2  # PPO clip range
    ent_coef: float = 0.0  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 1.0  # gradient clipping
    kl_coef: float = 0.05  # initial KL-to-reference coefficient (0: no KL, no reference model)
    target_kl_per_reply: float = 6.0  # adaptive KL target in nats per reply (<= 0: fixed coefficient)
    whiten_rewards: bool = False  # scale rewards by a running std of returns (SB3 VecNormalize)
    bootstrap_truncated: bool = True  # a reply cut by the token budget bootstraps from V (no: its end is final)
    max_context_tokens: int = 0  # env observation length (0: the id's default)
    max_reply_tokens: int = 0  # env reply budget (0: the id's default)
    eval_episodes: int = 32  # fixed validation prompts for the initial / final / periodic evaluation
    eval_every: int = 0  # evaluate (and checkpoint) every N env steps (0: only at start and end)
    max_train_seconds: float = 0.0  # stop training after this many seconds, at the next step (0: no limit)
    initial_eval: bool = True  # evaluate before training (an untrained DQN head picks candidate 0, the LM's own)
    initial_eval_from: str = ""  # reuse the initial evaluation of this finished run of the same starting policy
    sample_every: int = 8  # print sample generations every N rollouts (0: never)
    device: str = "auto"  # auto (CUDA when present), cpu or cuda
    bf16: bool = False  # bfloat16 autocast (CUDA only)
    lora_r: int = 0  # LoRA rank through peft (0: full fine-tuning)
    trainable_layers: int = -1  # train only the top N transformer layers (-1: all)
    value_scale: float = 1.0  # value = value_scale * head(hidden): a faster-learning value head
    torch_threads: int = 2  # torch CPU threads
    progress_bar: bool = True  # show a progress bar
    resume: bool = False  # continue the run in --out from its checkpoint
    num_candidates: int = 0  # candidate-level K, replies proposed per turn (0: the id's default)
    buffer_size: int = 10_000  # dqn: replay buffer capacity in transitions
    learning_starts: int = 32  # dqn: random-candidate steps before the first update
    train_freq: int = 1  # dqn: env steps (per env) between updates
    gradient_steps: int = 8  # dqn: gradient steps per update (cheap: the LM features are cached)
    target_update_interval: int = 64  # dqn: env steps between copies of the Q head into the target network
    exploration_fraction: float = 0.5  # dqn: fraction of training over which epsilon decays from 1
    exploration_final_eps: float = 0.05  # dqn: final epsilon of epsilon-greedy exploration
    q_hidden: int = 64  # dqn: hidden width of the Q head's MLP (0: a linear head)
    feature_layer: int = -1  # dqn: LM hidden layer of the Q features (0: embeddings; -1: the middle layer)
    # -- Ray env workers (issue 15) --
    ray_address: str = ""  # run the envs in Ray actors on this cluster: auto or HOST:PORT ('': no Ray)
    env_workers: int = 0  # Ray actors hosting the envs (0: one per cluster CPU; > 0 without --ray-address: local Ray)


def parse_args(argv: list[str] | None = None) -> Args:
    """Build an argparse parser from :class:`Args` and parse ``argv``."""
    source = Path(__file__).read_text(encoding="utf-8")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in dataclasses.fields(Args):
        comment = next(
            (
                line.split("#", 1)[1].strip()
                for line in source.splitlines()
                if line.strip().startswith(f"{field.name}:") and "#" in line
            ),
            "",
        )
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=comment)
        else:
            kind = {"int": int, "float": float, "str": str}[field.type]
            parser.add_argument(flag, type=kind, default=field.default, help=comment)
    chosen = argparse.ArgumentParser(add_help=False)
    chosen.add_argument("--algo", default=Args.algo)
    if chosen.parse_known_args(argv)[0].algo == "dqn":
        parser.set_defaults(**DQN_DEFAULTS)
    args = Args(**vars(parser.parse_args(argv)))
    if args.algo not in ALGOS:
        parser.error(f"unknown --algo {args.algo!r}; choose one of {ALGOS}")
    if args.env not in gym.registry or not args.env.startswith("TextGym/"):
        parser.error(f"unknown --env {args.env!r}; TextGym ids: {', '.join(textgym.env_ids())}")
    if args.lr_schedule not in ("constant", "linear"):
        parser.error(f"unknown --lr-schedule {args.lr_schedule!r}; choose constant or linear")
    return args


#: Fields a command line leaves out: where the run is written and how it is resumed, not what it trains.
_NOT_IN_COMMAND = ("out", "resume", "progress_bar", "sample_every", "initial_eval_from", "ray_address", "env_workers")


def command_line(config: dict[str, Any]) -> str:
    """The ``python -m baselines.train`` command that trains a run with ``config`` (a config.json).

    Names the algorithm, env, model and seed, and every other field that differs from its default.
    """
    args = Args(**config)
    defaults = {**{f.name: f.default for f in dataclasses.fields(Args)}, **(DQN_DEFAULTS if args.algo == "dqn" else {})}
    words = ["python", "-m", "baselines.train"]
    for field in dataclasses.fields(Args):
        value = getattr(args, field.name)
        always = field.name in ("algo", "env", "model", "seed", "total_timesteps")
        if field.name in _NOT_IN_COMMAND or (value == defaults[field.name] and not always):
            continue
        flag = field.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            words += [f"--{flag}", str(value)]
    return shlex.join(words)


def env_kwargs_of(args: Args) -> dict[str, Any]:
    """``gym.make`` keyword arguments for the training envs."""
    kwargs: dict[str, Any] = {"model": args.model, "render_mode": None}
    if args.max_context_tokens:
        kwargs["max_context_tokens"] = args.max_context_tokens
    if args.max_reply_tokens:
        kwargs["max_reply_tokens"] = args.max_reply_tokens
    if args.num_candidates:
        kwargs["num_candidates"] = args.num_candidates
    return kwargs


def build(args: Args, env: Any) -> Any:
    """The algorithm object for ``args`` on vector env ``env``."""
    learning_rate: Any = args.learning_rate
    if args.lr_schedule == "linear":
        learning_rate = lambda progress: args.learning_rate * progress  # noqa: E731
    policy_kwargs: dict[str, Any] = {
        "model": args.model,
        "torch_threads": args.torch_threads,
        "trainable_layers": None if args.trainable_layers < 0 else args.trainable_layers,
        "value_scale": args.value_scale,
    }
    if args.lora_r:
        policy_kwargs["lora"] = {"r": args.lora_r, "lora_alpha": 2 * args.lora_r, "target_modules": "all-linear"}
    if args.algo == "dqn":
        from baselines.dqn import build_dqn

        return build_dqn(args, env)
    return FastLMPPO(
        env,
        policy_kwargs=policy_kwargs,
        kl_coef=args.kl_coef,
        target_kl_per_reply=args.target_kl_per_reply if args.target_kl_per_reply > 0 else None,
        bf16=args.bf16,
        bootstrap_truncated=args.bootstrap_truncated,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_range,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        device=args.device,
        tensorboard_log=None,
        verbose=0,
    )


def checkpoint_metadata(args: Args, model: Any) -> dict[str, Any]:
    """What a checkpoint needs to be rebuilt and checked: never the reference model."""
    return {
        "algo": args.algo,
        "env": args.env,
        "env_kwargs": env_kwargs_of(args),
        "model": args.model,
        "num_timesteps": int(model.num_timesteps),
        "kl_coef": float(getattr(getattr(model, "kl", None), "coef", 0.0)),
        "textgym_version": textgym.__version__,
        "config": dataclasses.asdict(args),
    }


def load_trained(checkpoint: str, device: str = "auto") -> tuple[Any, dict[str, Any]]:
    """Rebuild the algorithm of a checkpoint directory and load its weights (no pickle)."""
    meta = read_metadata(checkpoint)
    args = Args(**{**meta["config"], "device": device})
    env = make_vec_env(args.env, n_envs=1, seed=args.seed, env_kwargs=meta["env_kwargs"])
    model = build(args, env)
    load_checkpoint(checkpoint, model.policy, load_optimizer=False)
    return model, meta


class PeriodicEvaluation(BaseCallback):
    """Evaluate on fixed validation prompts, checkpoint, and dump sample generations, as configured.

    Args:
        args: The run's arguments.
        out: The run directory.
        curve: The evaluations so far (appended to).
        save: Writes the run's checkpoint (called after each periodic evaluation).
        next_eval: The step count of the next periodic evaluation (default: ``eval_every``).
    """

    def __init__(
        self,
        args: Args,
        out: Path,
        curve: list[dict[str, Any]],
        save: Any,
        next_eval: float | None = None,
    ) -> None:
        super().__init__()
        self.args, self.out, self.curve, self.save = args, out, curve, save
        self.next_eval = next_eval if next_eval is not None else (args.eval_every or math.inf)
        self.rollouts = 0
        self.deadline = time.perf_counter() + args.max_train_seconds if args.max_train_seconds else math.inf
        self.stopped_by_deadline = False

    def _on_step(self) -> bool:
        if time.perf_counter() > self.deadline:
            self.stopped_by_deadline = True
            return False
        return True

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        monitor = getattr(self.model, "monitor", None)
        if self.args.sample_every and monitor and self.rollouts % self.args.sample_every == 0:
            print(f"\n[samples at step {self.num_timesteps}]")
            for text in list(monitor.samples)[-3:]:
                print(f"  > {text[:160]!r}")

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.args.eval_every
            point = run_evaluation(self.model, self.args, self.out, tag=f"step{self.num_timesteps}")
            self.curve.append(point)
            self.logger.record("eval/reward_mean", point["reward_mean"])
            self.save(self.next_eval)


def run_evaluation(model: Any, args: Args, out: Path, tag: str) -> dict[str, Any]:
    """Sampled evaluation on the fixed validation prompts; generations appended to eval_generations.jsonl."""
    kwargs = {**env_kwargs_of(args), "split": "validation"}
    if args.algo == "dqn":
        from baselines.dqn import evaluate_q_policy

        result = evaluate_q_policy(
            model, args.env, kwargs, args.eval_episodes, 10_000, str(out / "eval_generations.jsonl")
        )
    else:
        result = evaluate_policy(
            model.policy,
            args.env,
            kwargs,
            episodes=args.eval_episodes,
            seed=10_000,
            record_path=str(out / "eval_generations.jsonl"),
            reference_model=args.model,
        )
    result.update(tag=tag, step=int(model.num_timesteps))
    low, high = result["reward_ci95"]
    perplexity = (
        f", perplexity mean {result['perplexity_mean']:.1f} median {result['perplexity_median']:.1f}"
        if result.get("perplexity_mean")
        else ""
    )
    print(f"[eval {tag}] reward {result['reward_mean']:.3f} (95% CI {low:.3f}..{high:.3f}){perplexity}")
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


def dqn_run_stats(model: Any) -> dict[str, Any]:
    """Replay-buffer and feature-cache bookkeeping of a DQN run."""
    from baselines.dqn import run_stats

    return run_stats(model)


# -- deterministic resume -----------------------------------------------------------------

#: Counters of SB3 algorithms that schedule their work (updates done, env steps seen by DQN's target updates).
ALGORITHM_COUNTERS = ("_n_updates", "_n_calls", "_episode_num")
EVAL_RECORDS = "eval_generations.jsonl"


def _bytes_text(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _text_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global random number generators, as JSON."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": _bytes_text(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_bytes_text(generator) for generator in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`'s output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(_text_bytes(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_text_bytes(generator) for generator in state["cuda"]])


def resume_state(
    model: Any, env: Any, out: Path, initial: dict[str, Any] | None, curve: list[dict[str, Any]], next_eval: float
) -> dict[str, Any]:
    """What a deterministic resume needs besides the weights and the optimizer (``resume.json``)."""
    from stable_baselines3.common.vec_env import VecNormalize

    records = out / EVAL_RECORDS
    state: dict[str, Any] = {
        "rng": rng_state(),
        "action_space_rng": model.action_space.np_random.bit_generator.state,
        "counters": {name: int(getattr(model, name)) for name in ALGORITHM_COUNTERS if hasattr(model, name)},
        "initial": initial,
        "curve": curve,
        "next_eval": None if math.isinf(next_eval) else int(next_eval),
        "eval_generations_bytes": records.stat().st_size if records.exists() else 0,
    }
    monitor = getattr(model, "monitor", None)
    if monitor is not None:
        state["monitor"] = {"first_reply_words": monitor.first_reply_words, "issued": list(monitor.issued)}
    if isinstance(env, VecNormalize):
        rms = env.ret_rms
        state["return_rms"] = {"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count)}
    return state


def restore_resume_state(model: Any, env: Any, state: dict[str, Any]) -> None:
    """Put :func:`resume_state`'s output back into a freshly built ``model`` and ``env``."""
    from stable_baselines3.common.vec_env import VecNormalize

    set_rng_state(state["rng"])
    model.action_space.np_random.bit_generator.state = state["action_space_rng"]
    for name, value in state["counters"].items():
        setattr(model, name, value)
    monitor = getattr(model, "monitor", None)
    if monitor is not None and "monitor" in state:
        monitor.first_reply_words = state["monitor"]["first_reply_words"]
        monitor.issued[:] = state["monitor"]["issued"]
    if isinstance(env, VecNormalize) and "return_rms" in state:
        saved = state["return_rms"]
        env.ret_rms.mean, env.ret_rms.var = np.float64(saved["mean"]), np.float64(saved["var"])
        env.ret_rms.count = saved["count"]


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: strict JSON, as the leaderboard reads it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def _cluster_summary() -> dict[str, Any]:
    from baselines.cluster import cluster_summary

    return cluster_summary()


def resume_env_seed(seed: int, num_timesteps: int) -> int:
    """The envs' seed when a run resumes at ``num_timesteps``: fixed by the checkpoint, unlike the start's."""
    return int(np.random.SeedSequence([seed, num_timesteps]).generate_state(1)[0]) % (2**31 - 1)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate and save; see the module docstring."""
    args = parse_args(argv)
    out = Path(args.out or f"runs/{args.env.split('/')[-1]}__{args.algo}__s{args.seed}__{int(time.time())}")
    if args.resume:
        config_path = out / "config.json"
        if not config_path.is_file():
            print(f"error: cannot resume: {out} holds no run (config.json is missing)")
            return 2
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        given = sys.argv[1:] if argv is None else argv
        total = args.total_timesteps if any(a.split("=")[0] == "--total-timesteps" for a in given) else None
        args = Args(**{**saved, "total_timesteps": total or saved["total_timesteps"], "resume": True})
    elif (out / "checkpoint").exists():
        print(f"error: {out} already holds a run; pass --resume to continue it or choose another --out")
        return 2
    reused: tuple[dict[str, Any], list[str]] | None = None
    if args.initial_eval_from and not args.resume:
        try:
            reused = reused_initial_evaluation(args)
        except ValueError as error:
            print(f"error: {error}")
            return 2
    out.mkdir(parents=True, exist_ok=True)
    files.atomic_write(out / "config.json", json.dumps(dataclasses.asdict(args), indent=2))

    # Seeding: one block, everything derived from --seed (a resume then restores the checkpoint's generators).
    set_random_seed(args.seed)
    torch.set_num_threads(args.torch_threads)

    if args.ray_address or args.env_workers:  # -- Ray env workers (issue 15): same envs, in Ray actors --
        from baselines.cluster import make_ray_vec_env

        try:
            env = make_ray_vec_env(
                args.env, args.n_envs, args.seed, env_kwargs_of(args), args.ray_address, args.env_workers
            )
        except (ImportError, ValueError, ConnectionError, RuntimeError) as error:
            print(f"error: {error}")
            return 2
    else:
        env = make_vec_env(
            args.env,
            n_envs=args.n_envs,
            seed=args.seed,
            env_kwargs=env_kwargs_of(args),
            vec_env_cls=BatchedProposalVecEnv if args.algo == "dqn" else None,
        )
    if args.whiten_rewards:
        from stable_baselines3.common.vec_env import VecNormalize

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
        except CheckpointError as error:
            print(f"error: cannot resume: {error}")
            return 2
        model.num_timesteps = meta["num_timesteps"]
        if hasattr(model, "kl"):
            model.kl.coef = meta["kl_coef"]
        if args.algo == "dqn":  # the replay buffer is not checkpointed: refill it before updating again
            model.learning_starts = model.num_timesteps + args.learning_starts
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        if previous.get("env_steps") == model.num_timesteps and "eval_generations_bytes" in previous:
            # The run finished at this checkpoint: its final evaluation stays part of the record.
            if model.num_timesteps >= args.total_timesteps:
                print(f"{out} finished at {model.num_timesteps} steps; pass a larger --total-timesteps to go on")
                return 0
            curve, initial, keep = previous.get("curve", []), previous.get("initial") or None, previous
        elif state is not None:  # cut what was recorded after the checkpoint (a crash's half-done evaluation)
            curve, initial, keep = state["curve"], state["initial"], state
            next_eval = math.inf if state["next_eval"] is None else state["next_eval"]
        else:  # a format-1 checkpoint: no record of the evaluations
            curve, initial, keep = previous.get("curve", []), previous.get("initial") or None, None
        try:
            if keep is not None:
                files.truncate_file(records, keep["eval_generations_bytes"])
        except ValueError as error:
            print(f"error: cannot resume: {error}")
            return 2
        if state is not None:
            restore_resume_state(model, env, state)
        env.seed(resume_env_seed(args.seed, model.num_timesteps))
        if next_eval is None and args.eval_every:
            next_eval = (model.num_timesteps // args.eval_every + 1) * args.eval_every
        log_dir = log_dir / f"resumed_at_{model.num_timesteps}"  # SB3's CSV log would overwrite the earlier one
    else:  # a fresh run: records of an earlier attempt that never checkpointed are not this run's
        files.atomic_write(records, "\n".join(reused[1]) + "\n" if reused else "")
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(str(log_dir), ["tensorboard", "csv"]))

    def save(next_eval: float) -> None:
        state = resume_state(model, env, out, initial, curve, next_eval)
        save_checkpoint(out / "checkpoint", model.policy, checkpoint_metadata(args, model), state)

    start = time.perf_counter()
    if reused is not None:
        initial = reused[0]
        print(f"[eval initial] reused from {args.initial_eval_from}: reward {initial['reward_mean']:.3f}")
        curve.append(initial)
    elif not args.resume:
        initial = run_evaluation(model, args, out, tag="initial") if args.initial_eval else None
        curve += [initial] if initial else []
    callback = PeriodicEvaluation(args, out, curve, save, next_eval)
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
    final = run_evaluation(model, args, out, tag="final")
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
        "env_steps_per_s": steps / train_time if train_time > 0 else None,
        "warnings": list(getattr(getattr(model, "monitor", None), "issued", [])),
        **({"dqn": dqn_run_stats(model)} if args.algo == "dqn" else {}),
        "curve": [{k: v for k, v in point.items() if k != "rewards"} for point in curve],
        "eval_generations_bytes": records.stat().st_size if records.exists() else 0,
        "config": dataclasses.asdict(args),
        "textgym_version": textgym.__version__,
        "torch_version": torch.__version__,
        "device": str(model.device),
        **({"cluster": _cluster_summary()} if args.ray_address or args.env_workers else {}),  # -- Ray (issue 15)
    }
    files.atomic_write(summary_path, json.dumps(finite(summary), indent=2, default=float, allow_nan=False))
    print(
        f"wrote {summary_path}: reward {summary['initial'].get('reward_mean', float('nan')):.3f} -> "
        f"{final['reward_mean']:.3f} in {summary['wall_time_s']:.0f} s"
    )
    env.close()
    return 130 if interrupted else 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
