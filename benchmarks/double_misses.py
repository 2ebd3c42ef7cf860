r"""Which steps of a DQN run had two envs miss the same new context of its kept candidate sets.

    python benchmarks/double_misses.py benchmarks/results/runs/dqn_pool256_mlp/dqn_sentiment_s0 --out runs/probe \
        --total-timesteps 512 --moved proposal_cache=PATH

Trains the recorded run's config again (``reproduce_run.py``'s command line, here with ``--total-timesteps`` and no
evaluation to speed it up) with ``ReusedProposals.propose_many`` wrapped to print every call in which two requests
miss one kept context: the set is generated once, with one of their seeds, and which one the batcher picked depended
on the threads' arrival order until commit a35445b (``dqn_candidates.md``, "Why that re-run parted").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reproduce_run import moved_files, replay_config, train_command

import baselines.proposal_vec_env as proposal_vec_env
from baselines import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recorded", type=Path, help="a DQN run directory (config.json, summary.json)")
    parser.add_argument("--out", type=Path, required=True, help="where the probe's run is written")
    parser.add_argument("--total-timesteps", type=int, default=512)
    parser.add_argument("--moved", action="append", default=[], metavar="FIELD=PATH", help="as in reproduce_run.py")
    args = parser.parse_args(argv)
    config = replay_config(args.recorded, moved_files(args.moved))
    config.update(total_timesteps=args.total_timesteps, initial_eval=False, eval_episodes=1, sample_every=0)
    original = proposal_vec_env.ReusedProposals.propose_many
    calls = 0

    def logged(self: proposal_vec_env.ReusedProposals, requests: list) -> list:
        nonlocal calls
        calls += 1
        seeds_of_missing: dict = {}
        for request in requests:
            key = self.key(request)
            if key not in self.sets:
                seeds_of_missing.setdefault(key, []).append(int(request[3]))
        for seeds in seeds_of_missing.values():
            if len(seeds) > 1:
                print(f"double miss in proposal round {calls}: seeds {seeds}", flush=True)
        return original(self, requests)

    proposal_vec_env.ReusedProposals.propose_many = logged
    return train.main(train_command(config, args.out)[3:])  # in this process, where the wrapper is in place


if __name__ == "__main__":
    sys.exit(main())
