r"""Reference rewards of a candidate-level env: a random candidate, the LM's top candidate, a best-of-K oracle.

    python -m baselines.dqn --env TextGym/SentimentCandidate-v0 --model default --episodes 32 \
        --out runs/sentiment_refs.json

All three pickers start from the same resets as the evaluation of a trained policy
(:func:`baselines.common.evaluation.evaluate_q_policy`), so their scores are its yardsticks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import textgym  # noqa: F401 - registers the ids
from baselines.common.candidates import branch, run_candidate_episodes
from baselines.common.cli import EXIT_OK, EXIT_USAGE, add_episodes, error, integer_at_least
from baselines.common.evaluation import reward_summary
from textgym.stats import EVAL_SEED_BASE

#: The reference pickers, in the order :func:`candidate_references` plays them.
PICKERS = ("random", "top", "best_of_k")


def candidate_references(
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int = 32,
    seed: int = EVAL_SEED_BASE,
    parallel: int = 32,
    pickers: tuple[str, ...] = PICKERS,
    proposal_cache: str | None = None,
) -> dict:
    """Reference rewards of candidate pickers on the same fixed prompts (episode ``i`` resets with ``seed + i``).

    * ``random``: a uniformly random valid candidate (``action_masks()``) each turn, drawn
      with ``numpy.random.default_rng([seed, i])`` in episode ``i``;
    * ``top``: candidate 0, the LM's own greedy reply;
    * ``best_of_k``: an oracle that tries every valid candidate on a deep copy of the env
      and keeps the one with the highest immediate reward (ties: the lowest index),
      continuing from that copy (myopic across the turns of a multi-turn episode).

    All of them start from the same reset, so the first turn's candidates are identical.
    ``parallel`` episodes run at once with their proposals batched. ``pickers`` names the
    ones played (a subset of :data:`PICKERS`); ``proposal_cache`` is a directory of stored
    candidate sets (see :func:`baselines.common.candidates.run_candidate_episodes`), or None.

    Returns:
        ``{"random": ..., "top": ..., "best_of_k": ...}`` (the pickers played), each with
        ``reward_mean``, ``reward_ci95`` and per-episode ``rewards``, plus ``env``,
        ``env_kwargs``, ``episodes`` and ``seed``.

    Raises:
        ValueError: The env is not candidate level, or ``pickers`` names one not in :data:`PICKERS`.
    """
    unknown = [name for name in pickers if name not in PICKERS]
    if unknown or not pickers:
        raise ValueError(f"pickers must be some of {PICKERS}, got {pickers!r}")

    def play(env: gym.Env, index: int, batcher: Any) -> dict[str, float]:
        env.reset(seed=seed + index)
        rng = np.random.default_rng([seed, index])
        totals = {}
        for name in pickers:
            game = branch(env.unwrapped, batcher)
            total, done = 0.0, False
            while not done:
                valid = np.flatnonzero(game.action_masks())
                if name == "random":
                    result = game.step(int(rng.choice(valid)))
                elif name == "top":
                    result = game.step(0)
                else:
                    trials = []
                    for action in valid:
                        copied = branch(game, batcher)
                        trials.append((copied.step(int(action)), copied))
                    best = max(range(len(trials)), key=lambda i: (trials[i][0][1], -i))
                    result, game = trials[best]
                total += float(result[1])
                done = bool(result[2] or result[3])
            totals[name] = total
        return totals

    played = run_candidate_episodes(env_id, env_kwargs, episodes, play, parallel, proposal_cache=proposal_cache)
    return {
        "env": env_id,
        "env_kwargs": env_kwargs,
        "episodes": episodes,
        "seed": seed,
        **{name: reward_summary([totals[name] for totals in played]) for name in pickers},
    }


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally save) :func:`candidate_references` for a candidate-level id; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m baselines.dqn",
        description="Reference rewards of a candidate-level env: random, top, best-of-K.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--env", required=True, help="a candidate-level TextGym id")
    parser.add_argument("--model", default="default", help="the env's LM")
    add_episodes(parser)
    parser.add_argument("--num-candidates", type=int, default=0, help="K (0: the id's registered value)")
    parser.add_argument("--max-reply-tokens", type=int, default=0, help="reply budget (0: the id's registered value)")
    parser.add_argument("--torch-threads", type=integer_at_least(1), default=1, help="torch CPU threads")
    parser.add_argument("--parallel", type=int, default=32, help="episodes played at once, proposals batched")
    parser.add_argument(
        "--proposal-cache", default="", help="keep the candidate sets here; runs given it share them (empty: none)"
    )
    parser.add_argument("--out", default=None, help="JSON file for the result")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    # The evaluation's own arguments (render_mode included), so that a --proposal-cache shared with
    # runs of baselines.train answers both from the same stored sets.
    kwargs: dict[str, Any] = {"model": args.model, "render_mode": None, "split": args.split}
    if args.num_candidates:
        kwargs["num_candidates"] = args.num_candidates
    if args.max_reply_tokens:
        kwargs["max_reply_tokens"] = args.max_reply_tokens
    try:
        result = candidate_references(
            args.env, kwargs, args.episodes, args.seed, args.parallel, proposal_cache=args.proposal_cache or None
        )
    except ValueError as problem:
        error(str(problem))
        return EXIT_USAGE
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    brief = {
        name: [round(result[name]["reward_mean"], 4), [round(x, 4) for x in result[name]["reward_ci95"]]]
        for name in PICKERS
    }
    print(json.dumps({"env": args.env, "episodes": args.episodes, **brief}))
    return EXIT_OK
