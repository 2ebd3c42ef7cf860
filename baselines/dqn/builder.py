"""Stock SB3 ``DQN`` with :class:`~baselines.dqn.policy.LMQPolicy` for ``baselines.train``, and its run statistics."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import DQN

from baselines.common.candidates import candidate_shape
from baselines.common.config import Args, learning_rate_of, same_named
from baselines.dqn.policy import LMQPolicy
from baselines.proposal_vec_env import ReusedProposals, StoredProposals


def build_dqn(args: Args, env: Any) -> DQN:
    """Stock SB3 ``DQN`` with :class:`LMQPolicy` for ``baselines.train`` arguments on vector env ``env``.

    Args:
        args: The run's :class:`~baselines.common.config.Args`.
        env: A candidate-level TextGym vector env.

    Raises:
        ValueError: ``env`` is not candidate level, or an argument only PPO supports is set.
    """
    candidate_shape(env.observation_space, env.action_space)
    if args.lora_r:
        raise ValueError("--lora-r is for PPO: the DQN baseline keeps the LM frozen and trains a Q head")
    if args.bf16:
        raise ValueError("--bf16 is for PPO; the DQN baseline runs its frozen LM in float32")
    policy_kwargs: dict[str, Any] = {
        "model": args.model,
        "torch_threads": args.torch_threads,
        "net_arch": [args.q_hidden] if args.q_hidden else [],
        "q_features": args.q_features,
        "feature_layer": None if args.feature_layer == -1 else args.feature_layer,
        "cache_size": max(20_000, 2 * args.buffer_size),
        "feature_store": args.feature_cache or None,
        "guide_model": args.guide_model or None,
    }
    if args.q_weight_decay:
        policy_kwargs["optimizer_kwargs"] = {"weight_decay": args.q_weight_decay}
    return DQN(
        LMQPolicy,
        env,
        learning_rate=learning_rate_of(args),
        policy_kwargs=policy_kwargs,
        verbose=0,
        **same_named(args, "buffer_size", "learning_starts", "batch_size", "gamma", "train_freq", "gradient_steps"),
        **same_named(args, "target_update_interval", "exploration_fraction", "exploration_final_eps"),
        **same_named(args, "max_grad_norm", "seed", "device"),
    )


def replay_bytes_per_transition(model: DQN) -> float:
    """Bytes the replay buffer spends per stored transition (observation and next observation as ids)."""
    buffer = model.replay_buffer
    arrays = [buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    for name in ("observations", "next_observations"):
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            arrays += list(value.values())
        elif value is not None:
            arrays.append(value)
    return sum(array.nbytes for array in arrays) / (buffer.buffer_size * buffer.n_envs)


def run_stats(model: DQN) -> dict[str, Any]:
    """Replay-buffer bytes per transition, feature-cache and proposal-reuse counters of a DQN run."""
    encoder = model.policy.encoder
    cached = sum(features.numel() * features.element_size() for features in encoder.cache.values())
    # Reuse counters exist where the envs run in this process with --proposal-variants.
    proposer = getattr(getattr(model.get_env(), "batcher", None), "lm", None)
    reuse = (
        {"proposal_sets_generated": proposer.misses, "proposal_sets_reused": proposer.hits}
        if isinstance(proposer, ReusedProposals)
        else {}
    )
    store = getattr(proposer, "lm", None)
    if isinstance(store, StoredProposals):  # --train-proposal-cache: of the sets not reused, those read from disk
        reuse.update(proposal_sets_generated=store.misses, proposal_sets_read_from_store=store.hits)
    return {
        **reuse,
        "replay_bytes_per_transition": replay_bytes_per_transition(model),
        "feature_cache_entries": len(encoder.cache),
        "feature_cache_bytes": cached,
        "feature_cache_hits": encoder.hits,
        "feature_cache_misses": encoder.misses,
        "features_encoded": encoder.encoded,
        "features_read_from_store": encoder.stored_hits,
        "trunk_parameters_shared": sum(p.numel() for p in encoder.lm.parameters()),
        "head_parameters": sum(p.numel() for p in model.policy.q_net.parameters()),
    }


# -- evaluation and references ----------------------------------------------------------


def refill_after_resume(model: DQN, args: Args) -> None:
    """The replay buffer is not checkpointed: a resumed run collects ``learning_starts`` steps before updating again."""
    model.learning_starts = model.num_timesteps + args.learning_starts
