r"""Score finished PPO runs and their starting policy again: more validation prompts, several sampled replies each.

    python benchmarks/rescore_lm_runs.py runs/ppo_summarizationv0_s0 runs/ppo_summarizationv0_s1 \
        --episodes 121 --draws 2 --out rescored.json
    python benchmarks/rescore_lm_runs.py runs/ppo_summarizationv0_s? --whole-split --draws 3 --out rescored.json

A PPO run is evaluated on 32 validation prompts with one sampled reply each, and its gain
subtracts one such draw of the starting policy: on Summarization two draws of the same
policy differ by up to 0.06 (``start_variance.py``). This script rebuilds each run's starting
policy from its checkpoint's configuration (``--model``, ``--init-model``, ``--temperature``:
the runs must share it) and loads each run's final weights, then plays every policy on the
first ``--episodes`` validation prompts (episode ``i`` resets with seed ``10000 + i``, the
runs' own prompts first) with ``--draws`` sampling seeds (``10000 + d``; draw 0 is the runs'
own). A prompt's reward is its mean over the draws. It prints the start's mean, each run's
mean and gain, and the gain's 95% bootstrap CI over prompt-runs and with prompts resampled
(the start plays each prompt once for all runs, and episodes beyond the split's size revisit
prompts, so prompts, by id, are the independent units), and
the median reply perplexity under ``--model`` of each policy. ``--breakdown FIELD`` adds the
same paired gain for the prompts of each value of a reset-info field, and for the rest, e.g.
SparseCompletion's ``family``: where a gain comes from one problem family, it says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The configuration fields that make the starting policy: runs rescored together must agree on them.
START_FIELDS = ("algo", "env", "model", "init_model", "temperature", "max_context_tokens", "max_reply_tokens")


def main(argv: list[str] | None = None) -> int:
    """Re-score the runs and their starting policy; print the paired gains; optionally save them as JSON."""
    from baselines.common.cli import integer_at_least

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories of baselines.train (PPO, one starting policy)")
    prompts = parser.add_mutually_exclusive_group()
    prompts.add_argument("--episodes", type=integer_at_least(2), default=121, help="validation prompts, seeds 10000+i")
    prompts.add_argument(
        "--whole-split", action="store_true", help="play every prompt of the validation split once (per draw)"
    )
    parser.add_argument("--draws", type=integer_at_least(1), default=2, help="sampled replies per prompt")
    parser.add_argument("--torch-threads", type=integer_at_least(1), default=2)
    parser.add_argument("--out", default=None, help="JSON file for every prompt's rewards and the summary")
    parser.add_argument(
        "--breakdown", metavar="FIELD", default=None, help="also the gain per value of this reset-info field"
    )
    args = parser.parse_args(argv)

    import provenance
    import rescoring
    import torch

    from baselines.common.loading import load_trained

    torch.set_num_threads(args.torch_threads)
    metas = rescoring.read_runs(
        parser, args.runs, picks_candidates=False, refusal="picks candidates: use rescore_candidates.py"
    )
    first, meta = next(iter(metas.items()))
    start_of = {run: {name: m["config"].get(name) for name in START_FIELDS} for run, m in metas.items()}
    for run in args.runs:
        if start_of[run] != start_of[first]:
            parser.error(
                f"{run} starts from {start_of[run]}, {first} from {start_of[first]}: rescore one start at a time"
            )

    env_id, env_kwargs, reference = meta["env"], {**meta["env_kwargs"], "split": "validation"}, meta["model"]
    sweep = None
    if args.whole_split:
        try:
            sweep = rescoring.split_prompt_ids(env_id, env_kwargs)
        except ValueError as problem:
            parser.error(f"--whole-split: {problem}")
        args.episodes = len(sweep)
    prompt_ids = sweep or rescoring.prompt_labels(env_id, env_kwargs, args.episodes, "prompt_id")
    labels = None
    if args.breakdown is not None:
        try:
            labels = rescoring.prompt_labels(env_id, env_kwargs, args.episodes, args.breakdown, sweep)
        except KeyError as problem:
            parser.error(f"--breakdown {args.breakdown}: {problem.args[0]}")

    def play(run: str, starting_policy: bool = False) -> dict[str, Any]:
        checkpoint = str(Path(run) / "checkpoint")
        model, _ = load_trained(checkpoint, "cpu", args.torch_threads, starting_policy=starting_policy)
        return rescoring.sampled_draws(
            model.policy, env_id, env_kwargs, args.episodes, args.draws, reference, prompt_ids=sweep
        )

    start = play(first, starting_policy=True)
    print(f"starting policy: {np.mean(start['rewards']):.4f} (draws {start['draw_means']})", flush=True)
    played = {}
    for run in args.runs:
        played[run] = play(run)
        mean = np.mean(played[run]["rewards"])
        print(f"{run}: {mean:.4f} (gain {mean - np.mean(start['rewards']):+.4f}, draws {played[run]['draw_means']})")
    summary = rescoring.paired_summary(start["rewards"], {run: p["rewards"] for run, p in played.items()}, prompt_ids)
    medians = [np.median(p["draw_perplexity_medians"]) for p in played.values()]
    print(
        f"{provenance.measured_at()} {env_id}, {args.episodes} validation episodes"
        f"{' (the whole split, each prompt once)' if sweep else ''} x {args.draws} sampled replies, "
        f"{len(played)} runs: {rescoring.gain_text(summary)}; reply perplexity median "
        f"{np.median(start['draw_perplexity_medians']):.1f} -> " + " / ".join(f"{m:.1f}" for m in medians)
    )
    if labels is not None:
        groups = rescoring.breakdown(
            labels, start["rewards"], {run: p["rewards"] for run, p in played.items()}, prompt_ids
        )
        summary["breakdown"] = {"field": args.breakdown, "labels": labels, "groups": groups}
        for label, parts in groups.items():
            print(
                f"  {args.breakdown}={label}: "
                + "; ".join(
                    f"{part} ({part_summary['prompts']} prompts) {rescoring.gain_text(part_summary)}"
                    for part, part_summary in parts.items()
                )
            )
            for part_summary in parts.values():
                part_summary["start_mean"] = part_summary.pop("top_mean")
    if args.out:
        summary["start_mean"] = summary.pop("top_mean")
        record = {
            "env": env_id,
            "env_kwargs": env_kwargs,
            "episodes": args.episodes,
            "whole_split": args.whole_split,
            "draws": args.draws,
            "prompt_ids": prompt_ids,
            "start": start,
            "played": played,
        }
        Path(args.out).write_text(json.dumps({**record, **summary}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
