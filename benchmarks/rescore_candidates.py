r"""Score finished candidate-level runs and the LM's top candidate again, on more validation prompts, on shared sets.

    python benchmarks/rescore_candidates.py runs/dqn_summarization_s0 runs/dqn_summarization_s1 \
        --episodes 128 --proposal-cache runs/proposals_summarization --out rescored.json

A DQN run is evaluated at its end on 32 validation prompts, and a paired gain over the LM's top
candidate that is a few hundredths wide cannot be told from 0 on 32 prompts. This script loads
each run's final checkpoint and plays it, and the LM's top candidate (candidate 0 every turn),
on the first ``--episodes`` validation prompts (episode ``i`` resets with seed ``10000 + i``,
the prompts of the runs' own evaluation first). Every picker reads the same candidate sets
from ``--proposal-cache`` (a directory the runs' ``--proposal-cache`` may already fill), so
the gains are paired on identical candidates. It prints the top candidate's mean, each run's
mean and gain, and the gain's 95% bootstrap CI twice: over prompt-runs, and with prompts
resampled (each prompt's gain averaged over the runs first: the top candidate plays each
prompt once for all runs, so prompts are the independent units).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    """Re-score the runs and the LM's top candidate; print the paired gains; optionally save them as JSON."""
    from baselines.common.cli import integer_at_least

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories of baselines.train (candidate level)")
    parser.add_argument(
        "--episodes", type=integer_at_least(2), default=128, help="validation prompts, seeds 10000 + 0..N-1"
    )
    parser.add_argument("--proposal-cache", default="", help="the candidate sets' directory (empty: a temporary one)")
    parser.add_argument("--torch-threads", type=integer_at_least(1), default=2)
    parser.add_argument("--out", default=None, help="JSON file for every episode's rewards and the summary")
    args = parser.parse_args(argv)

    import provenance
    import rescoring
    import torch

    from baselines.common.evaluation import evaluate_on_split
    from baselines.common.loading import load_trained
    from baselines.dqn.references import candidate_references

    torch.set_num_threads(args.torch_threads)
    refusal = "writes its own replies: it picks no candidates"
    metas = rescoring.read_runs(parser, args.runs, picks_candidates=True, refusal=refusal)
    first, meta = next(iter(metas.items()))
    for run, other in metas.items():
        if (other["env"], other["env_kwargs"]) != (meta["env"], meta["env_kwargs"]):
            parser.error(
                f"{run} played {other['env']} with {other['env_kwargs']}, {first} {meta['env']} with "
                f"{meta['env_kwargs']}: rescore runs of one env and env arguments together"
            )
    loaded = {run: load_trained(str(Path(run) / "checkpoint"), "cpu", args.torch_threads) for run in metas}
    env_id, env_kwargs = meta["env"], {**meta["env_kwargs"], "split": "validation"}
    with tempfile.TemporaryDirectory(prefix="textgym-proposals-") as scratch:
        cache = args.proposal_cache or scratch
        references = candidate_references(env_id, env_kwargs, args.episodes, pickers=("top",), proposal_cache=cache)
        top = references["top"]["rewards"]
        print(f"LM top candidate: {np.mean(top):.4f} on {args.episodes} prompts", flush=True)
        rewards = {}
        for run, (model, run_meta) in loaded.items():
            result = evaluate_on_split(
                model,
                run_meta["algo"],
                env_id,
                run_meta["env_kwargs"],
                "validation",
                episodes=args.episodes,
                proposal_cache=cache,
            )
            rewards[run] = result["rewards"]
            print(f"{run}: {result['reward_mean']:.4f} (gain {result['reward_mean'] - np.mean(top):+.4f})", flush=True)
    prompt_ids = rescoring.prompt_labels(env_id, env_kwargs, args.episodes, "prompt_id")
    summary = rescoring.paired_summary(top, rewards, prompt_ids)
    print(
        f"{provenance.measured_at()} {env_id}, {args.episodes} validation prompts, {len(rewards)} runs: "
        + rescoring.gain_text(summary)
    )
    if args.out:
        record = {
            "env": env_id,
            "env_kwargs": env_kwargs,
            "episodes": args.episodes,
            "prompt_ids": prompt_ids,
            "top": top,
            "rewards": rewards,
        }
        Path(args.out).write_text(json.dumps({**record, **summary}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
