r"""Recompute the paired gain of rescored results with prompts resampled by id.

    python benchmarks/reanalyse_rescored.py benchmarks/results/runs/rescored_ppo_dialogue_128x2.json --write

``rescore_lm_runs.py`` and ``rescore_candidates.py`` play episode ``i`` with seed ``10000 + i``;
an evaluation of more episodes than the validation split has prompts revisits prompts, so the
independent unit of the CI is the prompt, not the episode. Files written before the scripts kept
each episode's prompt id (``prompt_ids``) resampled episodes. This script recovers the prompt ids
by resetting the env with the same seeds (nothing is played again), prints the paired gain with
both CIs, and with ``--write`` stores ``prompt_ids``, ``distinct_prompts`` and the new
``gain_ci95_prompts`` in the file, keeping the CI it replaces as ``gain_ci95_episodes``.

    python benchmarks/reanalyse_rescored.py first_x3.json second_x3.json --pool

With ``--pool`` the files are taken as one evaluation of more runs (e.g. two sets of seeds of
one recipe rescored in two sittings): they must hold the same env, prompts and starting
policy's rewards (the rescoring is seeded, so the start plays the same replies each time), and
one paired gain is printed for all their runs together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def paired_rewards(result: dict[str, Any]) -> tuple[list[float], dict[str, list[float]]]:
    """The starting policy's (or LM top candidate's) per-episode rewards and each run's, from either script's file."""
    if "played" in result:  # rescore_lm_runs.py
        return result["start"]["rewards"], {run: played["rewards"] for run, played in result["played"].items()}
    return result["top"], result["rewards"]  # rescore_candidates.py


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--write`` store) each file's paired gain with prompts resampled by id."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="JSON files of rescore_lm_runs.py or rescore_candidates.py")
    parser.add_argument("--model", default="default", help="the env's LM, for files that do not name env arguments")
    parser.add_argument("--write", action="store_true", help="store the prompt ids and the new CI in each file")
    parser.add_argument(
        "--pool", action="store_true", help="also print one paired gain for the runs of all the files together"
    )
    args = parser.parse_args(argv)
    if args.pool and len(args.files) < 2:
        parser.error(f"--pool needs two or more files, got {len(args.files)}")

    import rescoring

    import textgym  # noqa: F401 - registers the ids

    pooled: dict[str, Any] = {}
    for name in args.files:
        path = Path(name)
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            start, runs = paired_rewards(result)
        except (OSError, ValueError, KeyError, TypeError) as problem:
            parser.error(f"{name} is not a rescored result file: {problem!r}")
        env_kwargs = {**result.get("env_kwargs", {"model": args.model}), "split": "validation"}
        prompt_ids = result.get("prompt_ids") or rescoring.prompt_labels(
            result["env"], env_kwargs, result["episodes"], "prompt_id"
        )
        summary = rescoring.paired_summary(start, runs, prompt_ids)
        print(f"{name}: {result['env']}, {result['episodes']} episodes: {rescoring.gain_text(summary)}")
        if args.pool:
            pool_into(parser, pooled, name, result["env"], start, runs, prompt_ids)
        if args.write:
            if "prompt_ids" not in result:
                result["gain_ci95_episodes"] = result["gain_ci95_prompts"]
            result.update(
                prompt_ids=prompt_ids,
                distinct_prompts=summary["distinct_prompts"],
                gain_ci95_prompts=summary["gain_ci95_prompts"],
            )
            path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.pool:
        summary = rescoring.paired_summary(pooled["start"], pooled["runs"], pooled["prompt_ids"])
        print(
            f"pooled, {len(pooled['runs'])} runs of {len(args.files)} files: {pooled['env']}, "
            f"{len(pooled['start'])} episodes: {rescoring.gain_text(summary)}"
        )
    return 0


def pool_into(
    parser: argparse.ArgumentParser,
    pooled: dict[str, Any],
    name: str,
    env: str,
    start: list[float],
    runs: dict[str, list[float]],
    prompt_ids: list[str],
) -> None:
    """Add one file's runs to ``pooled``; refuse a file whose env, prompts or starting rewards differ."""
    if not pooled:
        pooled.update(file=name, env=env, start=list(start), prompt_ids=list(prompt_ids), runs={})
    first = pooled["file"]
    if env != pooled["env"]:
        parser.error(f"--pool: {name} evaluates {env}, {first} {pooled['env']}")
    if list(prompt_ids) != pooled["prompt_ids"]:
        parser.error(f"--pool: {name} played other prompts than {first}")
    if list(start) != pooled["start"]:
        parser.error(f"--pool: {name}'s starting policy scored other rewards than {first}'s: not one evaluation")
    for run, rewards in runs.items():
        if run in pooled["runs"]:
            parser.error(f"--pool: run {run} is in {name} and in an earlier file")
        pooled["runs"][run] = rewards


if __name__ == "__main__":
    sys.exit(main())
