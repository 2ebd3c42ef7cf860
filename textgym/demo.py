"""Demo: the default LM plays one Dialogue episode at each granularity.

Run with ``python -m textgym.demo [--model default] [--seed 0]``. Prints each transcript,
the episode reward and what the episode ended on.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym

import textgym  # noqa: F401  (registers the ids)
from textgym.agents import GreedyLMAgent, play_episode

DEMO_IDS = ("TextGym/Dialogue-v0", "TextGym/DialogueCandidate-v0", "TextGym/DialogueUtterance-v0")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and play one episode per Dialogue id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default', 'tiny', a local directory or a hub id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="validation")
    args = parser.parse_args(argv)

    agent = GreedyLMAgent(args.model)
    for env_id in DEMO_IDS:
        env = gym.make(env_id, model=args.model, split=args.split, render_mode="ansi")
        start = time.perf_counter()
        episode = play_episode(env, agent, seed=args.seed)
        print(f"=== {env_id}  (granularity: {env.unwrapped.granularity}, prompt {episode['prompt_id']})")
        print(env.render())
        print(
            f"--- reward {episode['reward']:.3f} over {episode['steps']} steps; "
            f"ended: {episode['end_reason']} (terminated={episode['terminated']}, truncated={episode['truncated']}); "
            f"{time.perf_counter() - start:.1f} s\n"
        )
        env.close()


if __name__ == "__main__":
    main()
