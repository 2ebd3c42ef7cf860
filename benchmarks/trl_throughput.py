"""End-to-end generated tokens per second on Sentiment: TRL's GRPOTrainer vs FastLMPPO, same wall-clock budget.

Both arms train the same model on the Sentiment task's training prompts (system prompt +
review opening, under the model's chat template) with the task's reward (the VADER
compound of the reply), 32 new tokens per completion, learning rate 1e-5 (constant),
float32, ``--threads`` torch threads, for ``--seconds`` each, one after the other, each in
a fresh subprocess:

* **TRL** ``GRPOTrainer`` on textgym's public TRL API (:func:`textgym.integrations.trl.make_dataset`
  and ``reward_function``): 8 completions per optimizer step in groups of 4 (2 prompts x 4;
  ``--trl-batches`` for more), one gradient step per generation batch (``num_iterations=1``),
  ``beta = --kl-coef``, no gradient checkpointing, sampling at temperature 1 with no top-k / top-p.
* **FastLMPPO** as ``python -m baselines.train --env TextGym/Sentiment-v0`` builds it
  (its defaults: 8 envs, n_steps 32, batch_size 128, 2 epochs), with
  ``--max-reply-tokens 32``, ``--learning-rate 1e-5`` and ``--kl-coef`` (fixed).

Generated tokens are the tokens each arm sampled, end token included (TRL: the
``completion_ids`` its reward function receives; FastLMPPO: env steps). Model loading is
not timed; the clock runs from the start of training until it stops, so the figure
includes generation, rewards and updates. A budget ends at the first optimizer step
(TRL) or env step (FastLMPPO) after it runs out. Reward "before" and "after" are the
mean rewards of the first and last ``--reward-window`` completions sampled in training.

TRL comes with the ``trl`` (or ``bench``) extra: ``pip install -e '.[trl]'``.

    python benchmarks/trl_throughput.py --seconds 600                    # real run
    # one optimizer step per 256 generated tokens in both arms:
    python benchmarks/trl_throughput.py --seconds 300 --ppo-args "--n-epochs 1 --batch-size 256"
    # several FastLMPPO arms beside one TRL arm, each in its own process:
    python benchmarks/trl_throughput.py --seconds 300 --ppo-args "--n-epochs 1" --ppo-args "--n-envs 64"
    # TRL arms with the top 8 layers trained, generating 8 and 64 completions per step:
    python benchmarks/trl_throughput.py --seconds 300 --arms trl --trl-layers 8 --trl-batches 8,64
    python benchmarks/trl_throughput.py --model tiny --seconds 20        # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from textgym.models import resolve_model_path  # noqa: E402

ENV_ID = "TextGym/Sentiment-v0"
ARMS = ("trl", "ppo")
RESULT_TAG = "RESULT "
COMPLETIONS_PER_STEP = 8
GROUP_SIZE = 4


def reward_change(rewards: list[float], window: int) -> dict[str, Any]:
    """Mean reward of the first and last ``window`` completions (halves when there are fewer than 2 windows)."""
    window = min(window, len(rewards) // 2)
    if window == 0:
        return {"reward_before": math.nan, "reward_after": math.nan, "reward_window": 0}
    return {
        "reward_before": float(np.mean(rewards[:window])),
        "reward_after": float(np.mean(rewards[-window:])),
        "reward_window": window,
    }


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    """GRPO for ``args.seconds``; return tokens, seconds and rewards."""
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from textgym.integrations.trl import make_dataset, reward_function

    task_reward = reward_function(ENV_ID)
    tokens: list[int] = []
    rewards: list[float] = []

    def reward(completions: list[Any], completion_ids: list[list[int]], **columns: Any) -> list[float]:
        scores = task_reward(completions, **columns)
        tokens.extend(len(ids) for ids in completion_ids)
        rewards.extend(scores)
        return scores

    reward.__name__ = task_reward.__name__  # TRL logs the reward under the function's name

    class Budget(TrainerCallback):
        start = 0.0

        def on_train_begin(self, *_: Any, **__: Any) -> None:
            Budget.start = time.perf_counter()

        def on_step_end(self, _args: Any, _state: Any, control: Any, **__: Any) -> None:
            if time.perf_counter() - Budget.start >= args.seconds:
                control.should_training_stop = True

    with tempfile.TemporaryDirectory(prefix="trl_throughput_") as output_dir:
        config = GRPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=args.trl_completions,
            gradient_accumulation_steps=1,
            num_generations=GROUP_SIZE,
            max_completion_length=args.max_new_tokens,
            learning_rate=args.learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            beta=args.kl_coef,
            temperature=1.0,
            max_steps=10**7,  # the wall-clock budget stops training
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            use_cpu=args.device == "cpu",
            model_init_kwargs=None if args.trl_trainable_layers else {"dtype": torch.float32},
            seed=args.seed,
            logging_steps=10**7,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        model: Any = resolve_model_path(args.model)
        if args.trl_trainable_layers:  # the FastLMPPO recipe's freezing: only the top layers and the final norm train
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).requires_grad_(False)
            for layer in model.model.layers[-args.trl_trainable_layers :]:
                layer.requires_grad_(True)
            model.model.norm.requires_grad_(True)
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=make_dataset(ENV_ID, "train"),
            callbacks=[Budget()],
        )
        trainer.train()
        seconds = time.perf_counter() - Budget.start
        steps = int(trainer.state.global_step)
    return {
        "generated_tokens": int(sum(tokens)),
        "completions": len(tokens),
        "updates": steps,
        "seconds": seconds,
        **reward_change(rewards, args.reward_window),
        "hyperparameters": (
            f"{args.trl_completions} completions/step in groups of {GROUP_SIZE}, 1 gradient step per batch, "
            f"beta {args.kl_coef:g}"
            + (f", top {args.trl_trainable_layers} layers trained" if args.trl_trainable_layers else "")
        ),
    }


def run_ppo(args: argparse.Namespace) -> dict[str, Any]:
    """FastLMPPO, built as ``baselines.train`` builds it, for ``args.seconds``."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import set_random_seed

    from baselines import train

    train_args = train.parse_args(
        [
            f"--env={ENV_ID}",
            f"--model={args.model}",
            f"--seed={args.seed}",
            f"--max-reply-tokens={args.max_new_tokens}",
            f"--learning-rate={args.learning_rate}",
            f"--kl-coef={args.kl_coef}",
            "--target-kl-per-reply=0",
            f"--torch-threads={torch.get_num_threads()}",
            f"--device={args.device}",
            *shlex.split(args.ppo_args[-1] if args.ppo_args else ""),
        ]
    )
    set_random_seed(train_args.seed)
    env_kwargs = train.env_kwargs_of(train_args)
    env = make_vec_env(ENV_ID, n_envs=train_args.n_envs, seed=train_args.seed, env_kwargs=env_kwargs)
    model = train.build(train_args, env)
    rewards: list[float] = []

    class Budget(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = time.perf_counter()

        def _on_step(self) -> bool:
            for index, info in enumerate(self.locals["infos"]):
                if "reply" in info:
                    rewards.append(float(self.locals["rewards"][index]))
            return time.perf_counter() - self.start < args.seconds

    budget = Budget()
    start = time.perf_counter()
    model.learn(10**12, callback=budget)
    seconds = time.perf_counter() - start
    return {
        "generated_tokens": int(model.num_timesteps),
        "completions": len(rewards),
        "updates": int(model._n_updates),
        "seconds": seconds,
        **reward_change(rewards, args.reward_window),
        "hyperparameters": (
            f"n_envs {train_args.n_envs}, n_steps {train_args.n_steps}, batch_size {train_args.batch_size}, "
            f"n_epochs {train_args.n_epochs}, lr {train_args.learning_rate:g}, kl_coef {train_args.kl_coef:g}"
            + (
                f" (target {train_args.target_kl_per_reply:g} nats/reply)"
                if train_args.target_kl_per_reply > 0
                else " (fixed)"
            )
            + (f", top {train_args.trainable_layers} layers trained" if train_args.trainable_layers >= 0 else "")
        ),
    }


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    result = run_trl(args) if args.arm == "trl" else run_ppo(args)
    result.update(
        arm=args.arm,
        tokens_per_s=result["generated_tokens"] / result["seconds"],
        torch_threads=torch.get_num_threads(),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    )
    if args.device.startswith("cuda"):
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def spawn(arm: str, args: argparse.Namespace, arm_flags: list[str]) -> dict[str, Any]:
    """Run one arm in a fresh process with its own ``arm_flags`` and return its result."""
    argv = [sys.executable, __file__, "--arm", arm, *arm_flags]
    for name, value in vars(args).items():
        if name not in ("arm", "ppo_args", "trl_trainable_layers", "trl_completions"):
            argv.append(f"--{name.replace('_', '-')}={value}")  # '=': a value may itself start with '--'
    process = subprocess.run(argv, capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout + process.stderr)
        raise SystemExit(f"arm {arm} failed (exit {process.returncode})")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default', 'tiny', a local model directory or a hub id")
    parser.add_argument("--seconds", type=float, default=300.0, help="wall-clock training budget of each arm")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (CUDA when present)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--kl-coef", type=float, default=0.0, help="TRL's beta and FastLMPPO's fixed kl_coef")
    parser.add_argument("--reward-window", type=int, default=32, help="completions averaged for reward before/after")
    parser.add_argument("--arms", default="trl,ppo", help="comma-separated, run in this order: trl, ppo")
    parser.add_argument(
        "--ppo-args",
        action="append",
        default=[],
        help="more baselines.train flags for a FastLMPPO arm, e.g. '--n-epochs 1 --batch-size 256' "
        "(one update per 256 tokens, as TRL's arm does); repeat it for one FastLMPPO arm each",
    )
    parser.add_argument(
        "--trl-layers",
        default="all",
        help="comma-separated TRL arms by trained layers: 'all' (full fine-tuning, the peer's setting) or N "
        "(the top N layers and the final norm, as FastLMPPO's --trainable-layers N), e.g. 'all,8'",
    )
    parser.add_argument(
        "--trl-batches",
        default=str(COMPLETIONS_PER_STEP),
        help=f"comma-separated TRL arms by completions per optimizer step, multiples of {GROUP_SIZE} "
        f"(default {COMPLETIONS_PER_STEP}, the peer's setting), crossed with --trl-layers, e.g. '8,64'",
    )
    parser.add_argument("--trl-trainable-layers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--trl-completions", type=int, default=COMPLETIONS_PER_STEP, help=argparse.SUPPRESS)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    unknown = set(args.arms.split(",")) - set(ARMS)
    if unknown:
        parser.error(f"unknown --arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    for layers in args.trl_layers.split(","):
        if layers != "all" and not layers.isdigit():
            parser.error(f"--trl-layers: {layers!r} is neither 'all' nor a number of layers")
    for batch in args.trl_batches.split(","):
        if not batch.isdigit() or int(batch) == 0 or int(batch) % GROUP_SIZE:
            parser.error(f"--trl-batches: {batch!r} is not a positive multiple of the group size {GROUP_SIZE}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.arm:
        print(RESULT_TAG + json.dumps(run_arm(args)), flush=True)
        return
    try:
        import trl
    except ImportError:
        raise SystemExit("this benchmark needs TRL: pip install -e '.[trl]'") from None

    from provenance import cpu_model  # this script's neighbour (a script's folder is first on sys.path)

    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads {args.threads}, "
        f"device {args.device}, trl {trl.__version__}"
    )
    print(f"model: {args.model} ({resolve_model_path(args.model)}), float32")
    print(
        f"task: {ENV_ID} training prompts (TRL: make_dataset + reward_function), VADER reward, "
        f"{args.max_new_tokens} new tokens, lr {args.learning_rate:g} constant, {args.seconds:g} s per arm"
    )
    jobs = []  # (label, arm, the arm's own flags, FastLMPPO flags as given)
    for arm in args.arms.split(","):
        if arm == "trl":
            batches = args.trl_batches.split(",")
            for layers in args.trl_layers.split(","):
                for batch in batches:
                    label = "TRL GRPOTrainer" if layers == "all" else f"TRL, top {layers} layers"
                    label += f", {batch}/step" if len(batches) > 1 or batch != str(COMPLETIONS_PER_STEP) else ""
                    arm_flags = [
                        f"--trl-trainable-layers={0 if layers == 'all' else layers}",
                        f"--trl-completions={batch}",
                    ]
                    jobs.append((label, "trl", arm_flags, ""))
        else:
            flags = args.ppo_args or [""]
            for n, f in enumerate(flags):
                label = f"FastLMPPO #{n + 1}" if len(flags) > 1 else "FastLMPPO"
                jobs.append((label, "ppo", [f"--ppo-args={f}"], f))  # '=': the value starts with '--'
    results = {label: spawn(arm, args, arm_flags) for label, arm, arm_flags, _ in jobs}
    print(
        f"\n{'arm':28} {'tokens':>8} {'replies':>8} {'updates':>8} {'seconds':>8} {'tokens/s':>9} "
        f"{'reward before':>14} {'reward after':>13} {'peak RSS MiB':>13}"
    )
    for label, row in results.items():
        print(
            f"{label:28} {row['generated_tokens']:8d} {row['completions']:8d} {row['updates']:8d} "
            f"{row['seconds']:8.1f} {row['tokens_per_s']:9.2f} {row['reward_before']:14.3f} "
            f"{row['reward_after']:13.3f} {row['peak_rss_mib']:13.0f}"
        )
    for (label, arm, _, flags), row in zip(jobs, results.values(), strict=True):
        extra = f" (flags: {flags})" if flags and arm == "ppo" else ""
        print(f"  {label}: {row['hyperparameters']}{extra}; reward window {row['reward_window']} completions")
    peers = [label for label, arm, _, _ in jobs if arm == "trl"]
    for label, arm, _, _ in jobs:
        for peer in peers if arm == "ppo" else ():
            ratio = results[label]["tokens_per_s"] / results[peer]["tokens_per_s"]
            print(f"tokens/s ratio {label} / {peer}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
