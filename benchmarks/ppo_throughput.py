"""PPO baseline throughput: naive stock-SB3 collection vs FastLMPPO's, and end-to-end stock vs fast PPO.

Two comparisons, each printed side by side with the ratio, every arm on the same model,
env, seed and device:

1. **Collection** (default: prompt 256 tokens, 128 new tokens per reply). Stock SB3
   ``PPO(LMActorCriticPolicy, ...).collect_rollouts`` runs one full forward over the whole
   observation window per new token; ``FastLMPPO.collect_rollouts`` samples each reply
   ahead with a KV cache, batched across envs. Reported: new tokens per second.
2. **End to end** (default: prompt 64, reply 32). ``PPO(LMActorCriticPolicy, ...).learn(N)``
   vs ``FastLMPPO(...).learn(N)`` with the same n_envs, n_steps, batch_size, n_epochs and
   learning rate. Reported: env steps (= sampled tokens) per second and peak memory.

The env is a one-turn TextEnv defined here whose prompt is padded with filler prose to
about ``--prompt-tokens`` tokens; its window is prompt + reply so it never slides, and
the end tokens are blocked (policy kwarg ``blocked_token_ids``) so every reply runs the
full token budget in both arms. The reward is the VADER score of the reply (as in
Sentiment), so both arms pay the same per-reply reward cost.

Each arm runs in a fresh subprocess of this script, so its peak memory is its own: peak
RSS from ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, plus
``torch.cuda.max_memory_allocated`` on CUDA (``--in-process`` runs them all in one
process, quicker to start, for smoke tests). Model loading is not timed; each collection
arm gets one untimed warm-up forward. On a busy machine pass ``--threads 1``: with more
torch threads than free cores, every op waits for a preempted thread.

    python benchmarks/ppo_throughput.py                       # SmolLM2-135M-Instruct, full size
    python benchmarks/ppo_throughput.py --layers 6            # its first 6 layers, for a quicker naive arm
    python benchmarks/ppo_throughput.py --model tiny --prompt-tokens 32 --reply-tokens 8   # smoke run
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

from textgym.core import TaskPrompt, TextTask, TurnResult  # noqa: E402
from textgym.envs.sentiment import sentiment_reward  # noqa: E402
from textgym.text_env import TextEnv  # noqa: E402

ARMS = ("naive-collect", "fast-collect", "stock-learn", "fast-learn")
RESULT_TAG = "RESULT "

# Filler prose for the long prompt (written for this benchmark); repeated as needed.
FILLER = (
    "The river town kept a ledger of every boat that passed the lock, noting its cargo, its crew and the hour "
    "it arrived. In spring the entries grew long, because timber came down from the hills and the mills "
    "worked late into the evening. The lock keeper wrote slowly and carefully, and on quiet afternoons he "
    "added small remarks about the weather, the height of the water and the birds nesting under the bridge. "
)
SYSTEM_PROMPT = "Read the notes and continue them."


class LongPromptTask(TextTask):
    """One turn: a user message of filler prose; the reward is the reply's VADER score."""

    def __init__(self, text: str = "Notes:") -> None:
        self.text = text

    def reset(self, rng: np.random.Generator, options: Any = None) -> TaskPrompt:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": self.text}]
        return TaskPrompt(messages, "long")

    def step(self, reply: str) -> TurnResult:
        return TurnResult(sentiment_reward([reply])[0], True)


@functools.lru_cache(maxsize=8)
def filler_text(model: str, prompt_tokens: int) -> tuple[str, int]:
    """The shortest filler message whose chat-template context has at least ``prompt_tokens`` tokens."""
    from textgym.chat import chat_encoder

    encoder = chat_encoder(model)

    def length(text: str) -> int:  # as TextEnv encodes its context
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        return len(encoder.encode(messages))

    words = (FILLER * (1 + prompt_tokens // 40)).split()
    low, high = 1, len(words)  # binary search on the number of words
    while low < high:
        middle = (low + high) // 2
        if length(" ".join(words[:middle])) >= prompt_tokens:
            high = middle
        else:
            low = middle + 1
    text = " ".join(words[:low])
    return text, length(text)


class LongPromptEnv(TextEnv):
    """A token-level env whose single prompt is about ``prompt_tokens`` tokens long."""

    task_class = LongPromptTask

    def __init__(self, prompt_tokens: int = 256, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task.text, self.prompt_length = filler_text(self.model_name, prompt_tokens)


# -- one arm, in its own process ----------------------------------------------------------


def _vec_env(args: argparse.Namespace, prompt_tokens: int, reply_tokens: int, n_envs: int) -> tuple[Any, int]:
    from stable_baselines3.common.env_util import make_vec_env

    _, prompt_length = filler_text(args.model, prompt_tokens)
    env_kwargs = {
        "prompt_tokens": prompt_tokens,
        "model": args.model,
        "max_context_tokens": prompt_length + reply_tokens,
        "max_reply_tokens": reply_tokens,
    }
    return make_vec_env(LongPromptEnv, n_envs=n_envs, seed=args.seed, env_kwargs=env_kwargs), prompt_length


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class RolloutClock(BaseCallback):
    """Records when each rollout's collection starts."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device, self.times = device, []

    def _on_rollout_start(self) -> None:
        _synchronize(self.device)
        self.times.append(time.perf_counter())

    def _on_step(self) -> bool:
        return True


def run_arm(args: argparse.Namespace) -> dict[str, Any]:
    """Build and time one arm; return its figures."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import obs_as_tensor

    from baselines.policies import LMActorCriticPolicy
    from baselines.ppo import FastLMPPO

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    collect = args.arm.endswith("collect")
    if collect:
        env, prompt_length = _vec_env(args, args.prompt_tokens, args.reply_tokens, args.collect_envs)
        n_steps = args.naive_steps if args.arm == "naive-collect" else args.fast_steps
        hyper = {"n_steps": n_steps, "batch_size": n_steps * args.collect_envs, "n_epochs": 1}
    else:
        env, prompt_length = _vec_env(args, args.e2e_prompt_tokens, args.e2e_reply_tokens, args.n_envs)
        hyper = {"n_steps": args.n_steps, "batch_size": args.batch_size, "n_epochs": args.n_epochs}
    end_ids = sorted(env.get_attr("end_ids")[0])
    policy_kwargs = {"model": args.model, "blocked_token_ids": end_ids}
    common = {
        "policy_kwargs": policy_kwargs,
        "learning_rate": args.learning_rate,
        "gamma": 1.0,
        "max_grad_norm": 1.0,
        "seed": args.seed,
        "device": args.device,
        "verbose": 0,
        **hyper,
    }
    if args.arm.startswith("fast"):
        model = FastLMPPO(env, kl_coef=0.0 if collect else args.kl_coef, target_kl_per_reply=None, **common)
    else:
        model = PPO(LMActorCriticPolicy, env, **common)

    if collect:
        n_steps = hyper["n_steps"]
        _, callback = model._setup_learn(n_steps * model.n_envs, callback=None)
        with torch.no_grad():  # warm-up: one full policy forward, untimed
            model.policy(obs_as_tensor(model._last_obs, model.device))
        _synchronize(args.device)
        start = time.perf_counter()
        assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_steps)
        _synchronize(args.device)
        seconds = time.perf_counter() - start
        units = n_steps * model.n_envs
    else:
        rollout_starts = RolloutClock(args.device)
        start = time.perf_counter()
        model.learn(args.e2e_timesteps, callback=rollout_starts)
        _synchronize(args.device)
        seconds = time.perf_counter() - start
        units = int(model.num_timesteps)
        # Each rollout's time runs from its collection start to the next one's (or the end):
        # collection plus the update that follows it.
        marks = [*rollout_starts.times, start + seconds]
        extra = {"rollout_seconds": [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]}
    result = {
        **(extra if not collect else {}),
        "arm": args.arm,
        "units": units,
        "seconds": seconds,
        "rate": units / seconds,
        "prompt_length": prompt_length,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "torch_threads": torch.get_num_threads(),
        **hyper,
    }
    if args.device.startswith("cuda"):
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# -- the driver ---------------------------------------------------------------------------


def describe_model(name: str) -> str:
    from textgym.models import resolve_model_path

    path = resolve_model_path(name)
    config_path = Path(path, "config.json")
    if not config_path.is_file():  # a hub id: name it only
        return path
    config = json.loads(config_path.read_text())
    return (
        f"{config['architectures'][0]}, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
        f"vocab {config['vocab_size']} ({path})"
    )


def first_layers(name: str, layers: int, directory: str) -> str:
    """Save the first ``layers`` decoder layers of model ``name`` (same tokenizer) to ``directory``."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from textgym.models import load_tokenizer, resolve_model_path

    hf_logging.set_verbosity_error()  # the dropped layers' weights are reported as unexpected keys
    hf_logging.disable_progress_bar()
    source = resolve_model_path(name)
    model = AutoModelForCausalLM.from_pretrained(source, num_hidden_layers=layers, dtype=torch.float32)
    model.save_pretrained(directory, safe_serialization=True)
    load_tokenizer(name).save_pretrained(directory)
    if Path(source, "generation_config.json").is_file():
        shutil.copy(Path(source, "generation_config.json"), Path(directory, "generation_config.json"))
    return directory


def spawn(arm: str, args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Run one arm in a fresh interpreter (or here, with ``--in-process``) and return its figures."""
    if args.in_process:
        return run_arm(argparse.Namespace(**{**vars(args), "arm": arm, "model": model}))
    argv = [sys.executable, __file__, "--arm", arm, "--model", model, "--device", args.device]
    for name, value in vars(args).items():
        if name not in {"arm", "model", "device", "layers", "sections", "in_process"}:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    process = subprocess.run(argv, capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout + process.stderr)
        raise SystemExit(f"arm {arm} failed (exit {process.returncode})")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def table(rows: list[tuple[str, dict[str, Any]]], unit: str) -> None:
    cuda = any("cuda_peak_mib" in row for _, row in rows)
    header = f"{'arm':44} {unit:>10} {'seconds':>9} {unit + '/s':>12} {'peak RSS MiB':>13}"
    print(header + (f" {'CUDA peak MiB':>14}" if cuda else ""))
    for label, row in rows:
        line = f"{label:44} {row['units']:10d} {row['seconds']:9.2f} {row['rate']:12.2f} {row['peak_rss_mib']:13.0f}"
        print(line + (f" {row.get('cuda_peak_mib', float('nan')):14.0f}" if cuda else ""))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.inf


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default', 'tiny', a local model directory or a hub id")
    parser.add_argument("--layers", type=int, default=0, help="keep the first N decoder layers of --model (0: all)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sections", default="collection,e2e", help="comma-separated: collection, e2e")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the arms in this process (quicker to start; peak RSS is then the high-water mark so far)",
    )
    group = parser.add_argument_group("collection")
    group.add_argument("--prompt-tokens", type=int, default=256, help="prompt length (chat-template context)")
    group.add_argument("--reply-tokens", type=int, default=128, help="new tokens per reply")
    group.add_argument("--collect-envs", type=int, default=4, help="envs collected in one batch")
    group.add_argument("--naive-steps", type=int, default=0, help="steps per env, naive arm (0: one whole reply)")
    group.add_argument("--fast-steps", type=int, default=0, help="steps per env, fast arm (0: one whole reply)")
    group = parser.add_argument_group("end to end")
    group.add_argument("--e2e-prompt-tokens", type=int, default=64)
    group.add_argument("--e2e-reply-tokens", type=int, default=32)
    group.add_argument("--n-envs", type=int, default=4)
    group.add_argument("--n-steps", type=int, default=64)
    group.add_argument("--batch-size", type=int, default=64)
    group.add_argument("--n-epochs", type=int, default=2)
    group.add_argument("--e2e-timesteps", type=int, default=0, help="env steps for learn() (0: one rollout)")
    group.add_argument("--learning-rate", type=float, default=1e-5)
    group.add_argument("--kl-coef", type=float, default=0.0, help="FastLMPPO's KL coefficient (stock PPO has none)")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.naive_steps = args.naive_steps or args.reply_tokens
    args.fast_steps = args.fast_steps or args.reply_tokens
    args.e2e_timesteps = args.e2e_timesteps or args.n_envs * args.n_steps
    unknown = set(args.sections.split(",")) - {"collection", "e2e"}
    if unknown:
        parser.error(f"unknown --sections {sorted(unknown)}; choose from collection, e2e")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.arm:
        print(RESULT_TAG + json.dumps(run_arm(args)), flush=True)
        return
    from provenance import cpu_model  # this script's neighbour (a script's folder is first on sys.path)

    sections = args.sections.split(",")
    threads = args.threads or torch.get_num_threads()
    print(f"command: {shlex.join(['python', *sys.argv])}")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads {threads}, "
        f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    )
    scratch = tempfile.mkdtemp(prefix="ppo_throughput_") if args.layers else None
    try:
        model = first_layers(args.model, args.layers, scratch) if scratch else args.model
        label = f"{args.model}, first {args.layers} layers" if scratch else args.model
        print(f"model: {label}: {describe_model(model)}")
        where = "this process so far (--in-process)" if args.in_process else "the arm's own fresh process"
        print(
            f"peak memory: max RSS of {where} (resource.getrusage ru_maxrss)"
            + ("; CUDA: torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "")
        )
        print("end tokens blocked in every arm: each reply runs its full token budget")
        if "collection" in sections:
            naive, fast = spawn("naive-collect", args, model), spawn("fast-collect", args, model)
            print(
                f"\n== collection: prompt {naive['prompt_length']} tokens, {args.reply_tokens} new tokens per reply, "
                f"{args.collect_envs} envs, window {naive['prompt_length'] + args.reply_tokens} =="
            )
            table(
                [
                    (f"naive (stock SB3 PPO, {args.naive_steps} steps/env)", naive),
                    (f"fast (FastLMPPO, {args.fast_steps} steps/env)", fast),
                ],
                "tokens",
            )
            print(f"collection ratio fast/naive: {ratio(fast['rate'], naive['rate']):.2f}x")
        if "e2e" in sections:
            stock, fast = spawn("stock-learn", args, model), spawn("fast-learn", args, model)
            print(
                f"\n== end to end learn({args.e2e_timesteps}): prompt {stock['prompt_length']} tokens, "
                f"{args.e2e_reply_tokens} new tokens per reply, n_envs {args.n_envs}, n_steps {args.n_steps}, "
                f"batch_size {args.batch_size}, n_epochs {args.n_epochs}, lr {args.learning_rate:g} =="
            )
            table(
                [
                    ("stock (PPO + LMActorCriticPolicy)", stock),
                    (f"fast (FastLMPPO, kl_coef {args.kl_coef:g})", fast),
                ],
                "steps",
            )
            print(f"end-to-end ratio fast/stock: {ratio(fast['rate'], stock['rate']):.2f}x")
            rollouts = len(stock["rollout_seconds"])
            if rollouts > 1:
                per_rollout = args.n_envs * args.n_steps
                print(f"per rollout ({per_rollout} steps: collection + update), seconds:")
                for label, row in (("stock", stock), ("fast", fast)):
                    print(f"  {label:6} " + " ".join(f"{value:7.2f}" for value in row["rollout_seconds"]))
                first = ratio(stock["rollout_seconds"][0], fast["rollout_seconds"][0])
                later = ratio(sum(stock["rollout_seconds"][1:]), sum(fast["rollout_seconds"][1:]))
                print(
                    f"ratio fast/stock, first rollout (with the one-time costs: optimizer state, first "
                    f"allocations): {first:.2f}x; rollouts 2-{rollouts}: {later:.2f}x"
                )
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
