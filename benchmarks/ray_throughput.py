r"""Candidate-level env throughput in one process vs RayVecEnv, Ray's per-step overhead, and a projection to N nodes.

    python benchmarks/ray_throughput.py --model default --out benchmarks/results/ray_throughput.txt

One run measures, on this machine (a local Ray instance of ``--workers`` CPUs, bound to 127.0.0.1):

1. ``--n-envs`` envs of ``--env`` stepped in one process by ``BatchedProposalVecEnv``, with
   1 and with ``--workers`` torch threads (the faster counts);
2. the same envs in a ``RayVecEnv`` of ``--workers`` actors (one CPU, one torch thread each);
3. Ray's overhead per vector step: CartPole stepped by ``DummyVecEnv`` and by ``RayVecEnv``
   (the env costs nothing, so the difference is Ray's round trip).

Projection: a cluster of N nodes, each hosting as many envs as the one-process run and
stepping them as fast as it does, plus Ray's overhead per step, gives
``N * n_envs / (one-process step time + overhead)`` transitions/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from provenance import commit, machine  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

import textgym  # noqa: E402, F401
from baselines.cluster import connect  # noqa: E402
from baselines.vec_env import BatchedProposalVecEnv, RayVecEnv  # noqa: E402


def seconds_per_step(env, steps: int, seed: int = 0) -> float:
    """Mean wall seconds of one vector step, after a reset and one warm-up step (random actions, fixed generator)."""
    rng = np.random.default_rng(seed)
    env.seed(seed)
    env.reset()
    env.step(rng.integers(env.action_space.n, size=env.num_envs))  # warm-up: first-call costs are not throughput
    start = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(env.action_space.n, size=env.num_envs))
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="TextGym/DialogueCandidate-v0", help="a candidate-level id")
    parser.add_argument("--model", default="default", help="the env's LM (default or tiny)")
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (and local Ray CPUs)")
    parser.add_argument("--steps", type=int, default=6, help="timed vector steps of the LM env")
    parser.add_argument("--overhead-steps", type=int, default=200, help="timed vector steps of CartPole")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="cluster sizes to project")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    kwargs = {"model": args.model, "render_mode": None}
    # One process at its best: with 1 and with --workers torch threads (on a busy machine more threads can be
    # slower), before Ray starts (its idle workers would compete).
    local = make_vec_env(args.env, args.n_envs, seed=0, env_kwargs=kwargs, vec_env_cls=BatchedProposalVecEnv)
    by_threads = {}
    for threads in sorted({1, args.workers}):
        torch.set_num_threads(threads)
        by_threads[threads] = seconds_per_step(local, args.steps)
    local.close()
    threads, one_process = min(by_threads.items(), key=lambda item: item[1])
    connect(None, num_cpus=args.workers)
    remote = make_vec_env(
        args.env,
        args.n_envs,
        seed=0,
        env_kwargs=kwargs,
        vec_env_cls=RayVecEnv,
        vec_env_kwargs={"num_workers": args.workers},
    )
    on_ray = seconds_per_step(remote, args.steps)
    remote.close()

    cartpoles = [lambda: gym.make("CartPole-v1")] * args.n_envs
    trivial_local = DummyVecEnv(cartpoles)
    trivial_ray = RayVecEnv(cartpoles, num_workers=args.workers)
    overhead = seconds_per_step(trivial_ray, args.overhead_steps) - seconds_per_step(trivial_local, args.overhead_steps)
    trivial_ray.close()

    rate_one, rate_ray = args.n_envs / one_process, args.n_envs / on_ray
    lines = [
        f"ray_throughput: {args.env}, model={args.model}, {args.n_envs} envs, {args.steps} timed steps",
        f"commit {commit()}; machine {machine()}; ray {connect()['ray_version']}, torch {torch.__version__}",
        f"command: {' '.join([Path(sys.executable).name, *sys.argv])}",
        "",
        *(
            f"one process (BatchedProposalVecEnv, {n} torch threads): {args.n_envs / t:.3f} transitions/s "
            f"({t:.3f} s per vector step)"
            for n, t in by_threads.items()
        ),
        f"one process at its best ({threads} threads): {rate_one:.3f} transitions/s",
        f"RayVecEnv, {args.workers} actors of 1 CPU:                   {rate_ray:.3f} transitions/s "
        f"({on_ray:.3f} s per vector step)",
        f"ratio Ray / one process: {rate_ray / rate_one:.2f}",
        f"Ray overhead per vector step (CartPole, RayVecEnv - DummyVecEnv): {overhead * 1e3:.2f} ms",
        "",
        "projected transitions/s on N nodes (each like this machine, hosting "
        f"{args.n_envs} envs): N * {args.n_envs} / ({one_process:.3f} s + {overhead * 1e3:.2f} ms)",
        *(f"  N={n:3d}: {n * args.n_envs / (one_process + overhead):.2f}" for n in args.nodes),
    ]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
