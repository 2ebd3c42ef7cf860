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
import tempfile
from pathlib import Path
from typing import Any

import textgym  # noqa: F401 - registers the ids
from baselines.algorithms import UnknownAlgorithmError
from baselines.checkpoint import CheckpointError
from baselines.cluster import run_task
from baselines.common.cli import (
    EVALUATE_EXIT_CODES,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    add_device,
    add_episodes,
    error,
)
from baselines.common.evaluation import evaluate_on_split, evaluate_policy, perplexity_summary
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
    cluster = parser.add_argument_group("Ray cluster")
    cluster.add_argument("--ray-address", default="", help="evaluate as a Ray task on this cluster: auto or HOST:PORT")
    cluster.add_argument("--env-workers", type=int, default=0, help="CPUs of the Ray task (> 0 alone: a local Ray)")
    return parser


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
    """Load a checkpoint and evaluate it as the command line's arguments say; return the env id and the result.

    Raises:
        baselines.checkpoint.CheckpointError: The checkpoint is missing or unreadable.
        baselines.algorithms.UnknownAlgorithmError: It names an algorithm the table does not hold.
    """
    model, meta = load_trained(checkpoint, device=device)
    env_id = env or meta["env"]
    result = evaluate_on_split(
        model,
        meta["algo"],
        env_id,
        meta["env_kwargs"],
        split,
        episodes=episodes,
        seed=seed,
        deterministic=greedy,
        record_path=out,
        reference_model=reference_model,
    )
    return env_id, result


def remote_evaluation(options: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """:func:`evaluate_checkpoint` in a Ray task; the generations come back as text (the node may not share files)."""
    with tempfile.TemporaryDirectory() as directory:
        records = Path(directory) / "generations.jsonl"
        env_id, result = evaluate_checkpoint(**{**options, "out": str(records) if options["out"] else None})
        return env_id, result, records.read_text(encoding="utf-8") if records.exists() else ""


def main(argv: list[str] | None = None) -> int:
    """Evaluate a checkpoint from the command line; print the result as JSON; returns the exit code."""
    args = parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("ray_address", "env_workers")}
    options["checkpoint"] = str(Path(args.checkpoint).resolve())  # a Ray worker runs in another directory
    try:
        if args.ray_address or args.env_workers:
            cpus = max(1, args.env_workers)
            try:
                env_id, result, records = run_task(remote_evaluation, options, address=args.ray_address, num_cpus=cpus)
            except (ImportError, ValueError, ConnectionError) as problem:
                error(str(problem))
                return EXIT_USAGE
            if args.out:
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(records)
        else:
            env_id, result = evaluate_checkpoint(**options)
    except (CheckpointError, UnknownAlgorithmError) as problem:
        error(f"cannot load --checkpoint {args.checkpoint}: {problem}")
        return EXIT_FAILURE
    result = {"checkpoint": str(Path(args.checkpoint)), "env": env_id, "split": args.split, **result}
    print(json.dumps({k: v for k, v in result.items() if k != "rewards"}, indent=2))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
