"""Building an algorithm from :class:`~baselines.common.config.Args`, and rebuilding one from its checkpoint."""

from __future__ import annotations

import dataclasses
from typing import Any

from stable_baselines3.common.env_util import make_vec_env

import textgym
from baselines.algorithms import ALGOS, algorithm
from baselines.checkpoint import load_checkpoint, read_metadata
from baselines.common.config import Args, env_kwargs_of, uses_ray
from baselines.vec_env import make_ray_vec_env
from textgym.checks import check_integer
from textgym.wrappers import PromptPool


def build(args: Args, env: Any) -> Any:
    """The algorithm of ``args.algo`` (its table entry's builder) on vector env ``env``."""
    return algorithm(args.algo).load("build")(args, env)


def check_env_options(args: Args) -> None:
    """Check the options that shape the training envs, before anything is built.

    Raises:
        ValueError: ``--proposal-variants``, ``--proposal-cache`` or ``--train-proposal-cache`` for
            an algorithm that does not play at candidate level, ``--train-proposal-cache`` without
            ``--proposal-variants`` or with Ray envs, a ``--train-prompts`` below 0, a
            ``--prompt-repeats`` below 1, a ``--max-prompt-tokens`` below 0, or one of
            ``--pool-seed``, ``--prompt-repeats``, ``--max-prompt-tokens`` and ``--group-baseline``
            without ``--train-prompts``.
    """
    # The candidate-level options, which a run of another level would ignore.
    for name in ("proposal_variants", "proposal_cache", "train_proposal_cache"):
        value = getattr(args, name)
        if value and name not in algorithm(args.algo).options:
            users = ", ".join(algo for algo in ALGOS if name in ALGOS[algo].options)
            raise ValueError(
                f"--{name.replace('_', '-')} {value}: only candidate-level runs propose candidates "
                f"(algorithms {users}), not --algo {args.algo}"
            )
    if args.train_proposal_cache and not args.proposal_variants:
        raise ValueError(
            f"--train-proposal-cache {args.train_proposal_cache} keeps the reused candidate sets: "
            "give --proposal-variants N too"
        )
    if args.train_proposal_cache and uses_ray(args):
        raise ValueError(
            f"--train-proposal-cache {args.train_proposal_cache} is a directory of this machine: "
            "not for envs in Ray actors (--ray-address, --env-workers)"
        )
    check_integer(args.train_prompts, "--train-prompts", minimum=0)
    check_integer(args.pool_seed, "--pool-seed", minimum=-1)
    check_integer(args.prompt_repeats, "--prompt-repeats", minimum=1)
    check_integer(args.max_prompt_tokens, "--max-prompt-tokens", minimum=0)
    pool_options = (
        ("--pool-seed", args.pool_seed, -1),
        ("--prompt-repeats", args.prompt_repeats, 1),
        ("--max-prompt-tokens", args.max_prompt_tokens, 0),
        ("--group-baseline", args.group_baseline, False),  # replies to one prompt meet in a rollout only in a pool
    )
    for flag, value, unset in pool_options:
        if value != unset and not args.train_prompts:
            raise ValueError(f"{flag} {value} applies to a pool of prompts: give --train-prompts N too")


def pool_seed_of(args: Args) -> int:
    """The seed the ``--train-prompts`` pool is drawn with: ``--pool-seed``, or the run's ``--seed``."""
    return args.pool_seed if args.pool_seed >= 0 else args.seed


def make_train_env(args: Args) -> Any:
    """The run's training vector env: ``args.n_envs`` envs of the algorithm's vector env class, or in Ray actors.

    Raises:
        ValueError: Options :func:`check_env_options` refuses.
        ImportError, ValueError, ConnectionError, RuntimeError: With ``--ray-address`` or
            ``--env-workers``: Ray is missing, the cluster does not answer or is too small.
    """
    check_env_options(args)
    reuse: dict[str, Any] = {"proposal_variants": args.proposal_variants} if args.proposal_variants else {}
    if args.train_proposal_cache:
        reuse["proposal_store"] = args.train_proposal_cache
    # Every env holds the same pool: drawn with the run's (or the pool's own) seed, not the env's.
    pool = {
        "wrapper_class": PromptPool,
        "wrapper_kwargs": {
            "size": args.train_prompts,
            "seed": pool_seed_of(args),
            "repeats": args.prompt_repeats,
            "max_prompt_tokens": args.max_prompt_tokens or None,
        },
    }
    wrapping = pool if args.train_prompts else {}
    if uses_ray(args):  # the same envs, in Ray actors (each actor batches its envs' proposals)
        return make_ray_vec_env(
            args.env,
            args.n_envs,
            args.seed,
            env_kwargs_of(args),
            args.ray_address,
            args.env_workers,
            **wrapping,
            **reuse,
        )
    return make_vec_env(
        args.env,
        n_envs=args.n_envs,
        seed=args.seed,
        env_kwargs=env_kwargs_of(args),
        vec_env_cls=algorithm(args.algo).load("vec_env_cls"),
        vec_env_kwargs=reuse or None,
        **wrapping,
    )


def checkpoint_metadata(args: Args, model: Any) -> dict[str, Any]:
    """What a checkpoint needs to be rebuilt and checked: never the reference model."""
    return {
        "algo": args.algo,
        "env": args.env,
        "env_kwargs": env_kwargs_of(args),
        "model": args.model,
        "num_timesteps": int(model.num_timesteps),
        "kl_coef": float(getattr(getattr(model, "kl", None), "coef", 0.0)),
        "textgym_version": textgym.__version__,
        "config": dataclasses.asdict(args),
    }


def load_trained(
    checkpoint: str, device: str = "auto", torch_threads: int | None = None, starting_policy: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Rebuild the algorithm of a checkpoint directory and load its weights (no pickle).

    Args:
        checkpoint: A checkpoint directory written by ``baselines.train``.
        device: Where the policy runs.
        torch_threads: Torch CPU threads (None: the run's own ``--torch-threads``, which
            building the policy sets).
        starting_policy: Build the run's policy as it started, without loading the trained weights.

    Raises:
        baselines.checkpoint.CheckpointError: The checkpoint is missing or unreadable.
        baselines.algorithms.UnknownAlgorithmError: It names an algorithm the table does not hold.
    """
    meta = read_metadata(checkpoint)
    threads = {} if torch_threads is None else {"torch_threads": torch_threads}
    args = Args(**{**meta["config"], "device": device, **threads})
    env = make_vec_env(args.env, n_envs=1, seed=args.seed, env_kwargs=meta["env_kwargs"])
    model = build(args, env)
    if not starting_policy:
        load_checkpoint(checkpoint, model.policy, load_optimizer=False)
    return model, meta
