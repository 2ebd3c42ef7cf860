"""The ``baselines.train`` builder of :class:`~baselines.ppo.FastLMPPO`."""

from __future__ import annotations

from typing import Any

from baselines.common.config import Args, learning_rate_of, lm_policy_kwargs, same_named
from baselines.ppo.algorithm import FastLMPPO


def build_ppo(args: Args, env: Any) -> FastLMPPO:
    """:class:`FastLMPPO` with :class:`~baselines.policies.LMActorCriticPolicy` for ``args`` on vector env ``env``.

    Args:
        args: The run's :class:`~baselines.common.config.Args`.
        env: A token-level TextGym vector env.
    """
    return FastLMPPO(
        env,
        policy_kwargs=lm_policy_kwargs(args),
        kl_coef=args.kl_coef,
        target_kl_per_reply=args.target_kl_per_reply if args.target_kl_per_reply > 0 else None,
        learning_rate=learning_rate_of(args),
        tensorboard_log=None,
        verbose=0,
        **same_named(args, "bf16", "bootstrap_truncated", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda"),
        **same_named(args, "clip_range", "ent_coef", "vf_coef", "max_grad_norm", "seed", "device", "group_baseline"),
    )
