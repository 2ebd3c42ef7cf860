r"""Score a checkpoint on an env's validation or test split, recording its generations.

    python -m baselines.evaluate --checkpoint runs/NAME/checkpoint --split validation --episodes 32 \\
        --out runs/NAME/eval_generations.jsonl

Prompts are fixed: episode ``i`` is reset with seed ``seed + i``. The checkpoint's algorithm
(:data:`baselines.algorithms.ALGOS`) names its evaluation
(:mod:`baselines.common.evaluation`): an LM policy generates its replies in one batch across
episodes with a KV cache (``--greedy`` takes the arg-max token instead of sampling); a
candidate picker (DQN) always takes its greedy choice. Exit codes: 0 done, 1 the checkpoint
cannot be loaded, 2 bad arguments; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import textgym  # noqa: F401 - registers the ids
from baselines.algorithms import UnknownAlgorithmError, algorithm
from baselines.checkpoint import CheckpointError
from baselines.common.cli import EVALUATE_EXIT_CODES, EXIT_FAILURE, EXIT_OK, add_device, add_episodes, error
from baselines.common.evaluation import EvaluationRequest, evaluate_policy, perplexity_summary
from baselines.common.loading import load_trained

#: Importable from here too, as before the split: the evaluation loop of LM policies.
__all__ = ["evaluate_policy", "main", "parser", "perplexity_summary"]


def parser() -> argparse.ArgumentParser:
    """The parser of ``baselines.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m baselines.evaluate",
        description=__doc__.splitlines()[0],
        epilog=EVALUATE_EXIT_CODES,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint directory written by baselines.train")
    parser.add_argument("--env", default=None, help="env id (none: the one the checkpoint was trained on)")
    add_episodes(parser)
    parser.add_argument("--greedy", action="store_true", help="arg-max replies instead of sampled ones (LM policies)")
    parser.add_argument("--out", default=None, help="JSONL file the generations are appended to")
    parser.add_argument("--reference-model", default=None, help="reference LM for guard perplexity (LM policies)")
    add_device(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Evaluate a checkpoint from the command line; print the result as JSON; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        model, meta = load_trained(args.checkpoint, device=args.device)
        evaluate = algorithm(meta["algo"]).load("evaluate")
    except (CheckpointError, UnknownAlgorithmError) as problem:
        error(f"cannot load --checkpoint {args.checkpoint}: {problem}")
        return EXIT_FAILURE
    env_id = args.env or meta["env"]
    kwargs = {**meta["env_kwargs"], "split": args.split}
    request = EvaluationRequest(env_id, kwargs, args.episodes, args.seed, args.greedy, args.out, args.reference_model)
    result = evaluate(model, request)
    result = {"checkpoint": str(Path(args.checkpoint)), "env": env_id, "split": args.split, **result}
    print(json.dumps({k: v for k, v in result.items() if k != "rewards"}, indent=2))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
