"""The ``baselines.train`` builder of :class:`~baselines.ppo.FastLMPPO`."""

from __future__ import annotations

from typing import Any

from baselines.common.config import Args, learning_rate_of, lm_policy_kwargs
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
        bf16=args.bf16,
        bootstrap_truncated=args.bootstrap_truncated,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=learning_rate_of(args),
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_range,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        device=args.device,
        tensorboard_log=None,
        verbose=0,
    )
