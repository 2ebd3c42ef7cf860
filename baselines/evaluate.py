r"""Score a policy (or a checkpoint) on an env's validation or test split, recording its generations.

    python -m baselines.evaluate --checkpoint runs/NAME/checkpoint --split validation --episodes 32 \\
        --out runs/NAME/eval_generations.jsonl

Prompts are fixed: episode ``i`` is reset with seed ``seed + i``. Replies are generated in
one batch across episodes with a KV cache; ``--greedy`` takes the arg-max token instead of
sampling.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.utils import obs_as_tensor

import textgym  # noqa: F401
from textgym.stats import bootstrap_ci
from textgym.wrappers import RecordGenerations, ReferencePerplexity


def perplexity_summary(guards: list[dict[str, Any]]) -> dict[str, float | None]:
    """``perplexity_mean`` and ``perplexity_median`` over episodes' guard metrics (None where none has one).

    The median is reported because one rare one-word reply can lift the mean by orders of magnitude.
    """
    values = [guard["perplexity"] for guard in guards if guard.get("perplexity") is not None]
    return {
        "perplexity_mean": float(np.mean(values)) if values else None,
        "perplexity_median": float(np.median(values)) if values else None,
    }


def make_eval_envs(
    env_id: str, env_kwargs: dict[str, Any], episodes: int, record_path: str | None, reference_model: str | None
) -> list[gym.Env]:
    """One env per episode, each wrapped to record generations and (optionally) reference perplexity."""
    envs = []
    for _ in range(episodes):
        env = gym.make(env_id, **env_kwargs)
        if reference_model:
            env = ReferencePerplexity(env, reference_model=reference_model)
        if record_path:
            env = RecordGenerations(env, record_path)
        envs.append(env)
    return envs


@torch.no_grad()
def evaluate_policy(
    policy: Any,
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int = 32,
    seed: int = 10_000,
    deterministic: bool = False,
    record_path: str | None = None,
    reference_model: str | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` fixed-prompt episodes with an LM policy at token or utterance level.

    Args:
        policy: A :class:`~baselines.policies.LMActorCriticPolicy`.
        env_id: A token- or utterance-level TextGym id.
        env_kwargs: ``gym.make`` arguments (e.g. ``model``, ``split``).
        episodes: Number of episodes; episode ``i`` resets with ``seed + i``.
        seed: Base seed of the prompts, and of the sampling.
        deterministic: Greedy instead of sampled replies.
        record_path: JSONL file for the generations (appended).
        reference_model: Name of the frozen reference LM for guard perplexity, or None.

    Returns:
        ``reward_mean``, ``reward_ci95``, ``rewards`` (per episode), ``perplexity_mean`` and
        ``perplexity_median`` (:func:`perplexity_summary`), ``reply_words_mean``, ``distinct_2_mean``
        and ``episodes``.
    """
    torch.manual_seed(seed)
    envs = make_eval_envs(env_id, env_kwargs, episodes, record_path, reference_model)
    observations = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    rewards = [0.0] * episodes
    guards: list[dict[str, Any]] = [{} for _ in range(episodes)]
    active = list(range(episodes))
    policy.set_training_mode(False)
    while active:
        batch = {key: np.stack([observations[i][key] for i in active]) for key in observations[active[0]]}
        base = envs[active[0]].unwrapped
        replies = policy.generate(obs_as_tensor(batch, policy.device), base.max_reply_tokens, deterministic).cpu()
        still = []
        for row, index in enumerate(active):
            env = envs[index]
            if env.unwrapped.granularity == "utterance":
                steps = [replies[row].numpy()]
            else:
                steps = [int(token) for token in replies[row]]
            for action in steps:
                observation, reward, terminated, truncated, info = env.step(action)
                rewards[index] += float(reward)
                if terminated or truncated:
                    guards[index] = info.get("guard", {})
                    break
                if "reply" in info:
                    still.append(index)  # next turn: generate again from the new context
                    break
            observations[index] = observation
        active = still
    for env in envs:
        env.close()
    return {
        "episodes": episodes,
        "deterministic": deterministic,
        "reward_mean": float(np.mean(rewards)),
        "reward_ci95": bootstrap_ci(rewards),
        "rewards": rewards,
        **perplexity_summary(guards),
        "reply_words_mean": float(np.mean([g.get("reply_words", 0.0) for g in guards])),
        "distinct_2_mean": float(np.mean([g.get("distinct_2", 0.0) for g in guards])),
    }


def evaluate_checkpoint(
    checkpoint: str,
    env: str | None,
    split: str,
    episodes: int,
    seed: int,
    greedy: bool,
    out: str | None,
    reference_model: str | None,
    device: str,
) -> tuple[str, dict[str, Any]]:
    """Load a checkpoint and evaluate it as the command line's arguments say; return the env id and the result."""
    from baselines.train import load_trained

    algorithm, meta = load_trained(checkpoint, device=device)
    env_id = env or meta["env"]
    env_kwargs = {**meta["env_kwargs"], "split": split}
    if meta["algo"] == "dqn":
        from baselines.dqn import evaluate_q_policy

        return env_id, evaluate_q_policy(algorithm, env_id, env_kwargs, episodes, seed, out)
    result = evaluate_policy(
        algorithm.policy,
        env_id,
        env_kwargs,
        episodes=episodes,
        seed=seed,
        deterministic=greedy,
        record_path=out,
        reference_model=reference_model,
    )
    return env_id, result


def remote_evaluation(options: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """:func:`evaluate_checkpoint` in a Ray task; the generations come back as text (the node may not share files)."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        records = Path(directory) / "generations.jsonl"
        env_id, result = evaluate_checkpoint(**{**options, "out": str(records) if options["out"] else None})
        return env_id, result, records.read_text(encoding="utf-8") if records.exists() else ""


def main(argv: list[str] | None = None) -> int:
    """Evaluate a checkpoint from the command line; print and optionally save the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint directory written by baselines.train")
    parser.add_argument("--env", default=None, help="env id (default: the one the checkpoint was trained on)")
    parser.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--out", default=None, help="JSONL file for the generations")
    parser.add_argument("--reference-model", default=None, help="reference LM for guard perplexity")
    parser.add_argument("--device", default="auto")
    # -- Ray (issue 15) --
    parser.add_argument("--ray-address", default="", help="evaluate as a Ray task on this cluster (auto or HOST:PORT)")
    parser.add_argument(
        "--env-workers", type=int, default=0, help="CPUs of the Ray task (> 0 without an address: local Ray)"
    )
    args = parser.parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("ray_address", "env_workers")}
    options["checkpoint"] = str(Path(args.checkpoint).resolve())  # a Ray worker runs in another directory
    if args.ray_address or args.env_workers:
        from baselines.cluster import run_task

        cpus = max(1, args.env_workers)
        try:
            env_id, result, records = run_task(remote_evaluation, options, address=args.ray_address, num_cpus=cpus)
        except (ImportError, ValueError, ConnectionError) as error:
            print(f"error: {error}")
            return 2
        if args.out:
            with open(args.out, "a", encoding="utf-8") as handle:
                handle.write(records)
    else:
        env_id, result = evaluate_checkpoint(**options)
    result = {"checkpoint": str(Path(args.checkpoint)), "env": env_id, "split": args.split, **result}
    print(json.dumps({k: v for k, v in result.items() if k != "rewards"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
