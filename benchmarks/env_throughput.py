"""Env steps per second with random actions, for every Dialogue id (or the ids given).

Token level measures the env's own overhead (tokenizer only, no LM); candidate level
includes the default LM proposing K replies each turn. One torch thread, one process.

    python benchmarks/env_throughput.py [--model default] [--seconds 10] [ids ...]
"""

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import textgym  # noqa: E402,F401

DEFAULT_IDS = ["TextGym/Dialogue-v0", "TextGym/DialogueCandidate-v0", "TextGym/DialogueUtterance-v0"]


def measure(env_id: str, model: str, seconds: float, seed: int = 0) -> dict:
    env = gym.make(env_id, model=model)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    granularity = env.unwrapped.granularity
    env.reset(seed=seed)
    steps = episodes = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if granularity == "token":
            # Random tokens rarely end a reply; draw an end token 1 time in 20 so replies vary in length.
            action = min(env.unwrapped.end_ids) if rng.random() < 0.05 else env.action_space.sample()
        else:
            action = env.action_space.sample()
        _, _, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            episodes += 1
            env.reset()
    elapsed = time.perf_counter() - start
    return {
        "id": env_id,
        "granularity": granularity,
        "steps": steps,
        "episodes": episodes,
        "steps_per_s": steps / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", default=DEFAULT_IDS)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads 1")
    print(f"{'id':36} {'granularity':11} {'steps':>8} {'episodes':>8} {'steps/s':>10}")
    for env_id in args.ids:
        row = measure(env_id, args.model, args.seconds)
        print(
            f"{row['id']:36} {row['granularity']:11} {row['steps']:8d} {row['episodes']:8d} {row['steps_per_s']:10.1f}"
        )


if __name__ == "__main__":
    main()
