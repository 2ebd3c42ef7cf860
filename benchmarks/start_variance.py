r"""How much a starting policy's sampled evaluation moves between draws: same prompts, other sampling seeds.

    python benchmarks/start_variance.py TextGym/Summarization-v0 --draws 6

The learning benchmarks evaluate the untrained LM once (32 validation prompts, episode ``i``
reset with seed ``10000 + i``, replies sampled with that seed) and every trained seed's gain
subtracts that one draw. This script evaluates the same untrained policy with sampling seeds
``10000 + d`` for ``d`` in ``0..draws-1`` (draw 0 is the benchmarks' own evaluation) and
prints each draw's mean reward, their mean and spread: a trained policy's figure within that
spread is no different from another draw of its start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    """Evaluate the untrained PPO policy of ``env`` once per sampling seed; print and optionally save the means."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", help="a token-level id, e.g. TextGym/Summarization-v0")
    parser.add_argument("--model", default="default")
    parser.add_argument("--draws", type=int, default=6, help="sampling seeds 10000 + 0..draws-1")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0, help="the policy's sampling temperature")
    parser.add_argument("--init-model", default="", help="the policy's starting weights (baselines.train --init-model)")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="JSON file for the per-draw means")
    args = parser.parse_args(argv)
    if args.draws < 1 or args.episodes < 1:
        parser.error(f"--draws and --episodes must be at least 1, got {args.draws} and {args.episodes}")

    import provenance
    import rescoring
    import torch

    from baselines.common.cli import parse_train_args
    from baselines.common.config import env_kwargs_of
    from baselines.common.loading import build, make_train_env
    from textgym.stats import EVAL_SEED_BASE

    torch.set_num_threads(args.torch_threads)
    flags = ["--algo", "ppo", "--env", args.env, "--model", args.model, "--n-envs", "1"]
    train_args = parse_train_args([*flags, "--temperature", str(args.temperature), "--init-model", args.init_model])
    policy = build(train_args, make_train_env(train_args)).policy
    kwargs = {**env_kwargs_of(train_args), "split": "validation"}

    def report(draw: int, result: dict) -> None:
        print(
            f"draw {draw} (sampling seed {EVAL_SEED_BASE + draw}): mean reward {result['reward_mean']:.4f}, "
            f"reply perplexity median {result['perplexity_median']:.1f}",
            flush=True,
        )

    drawn = rescoring.sampled_draws(policy, args.env, kwargs, args.episodes, args.draws, args.model, on_draw=report)
    means, medians = drawn["draw_means"], drawn["draw_perplexity_medians"]
    spread = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    print(
        f"{provenance.measured_at()} {args.env}, {args.episodes} prompts, temperature {args.temperature:g}, "
        f"{'policy from ' + args.init_model + ', ' if args.init_model else ''}"
        f"{args.draws} draws: "
        f"mean {np.mean(means):.4f}, standard deviation {spread:.4f}, range {min(means):.4f}..{max(means):.4f}"
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            record = {"env": args.env, "episodes": args.episodes, "temperature": args.temperature}
            if args.init_model:
                record["init_model"] = args.init_model
            json.dump({**record, "draw_means": means, "draw_perplexity_medians": medians}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
