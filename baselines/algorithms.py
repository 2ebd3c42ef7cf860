"""The algorithm table: every script looks an algorithm up here instead of branching on its name.

As in rl-baselines3-zoo's ``ALGOS``, ``baselines.train``, ``baselines.evaluate``,
``baselines.export``, the leaderboard's bundles and re-runs and the benchmark scripts read an
algorithm's builder, evaluator, vector env, defaults and labels from :data:`ALGOS`; adding an
algorithm is one package plus one entry here (or ``ALGOS["name"] = AlgorithmSpec(...)`` at
run time, as the tests do).

The callables are named by string entry points (``"package.module:attribute"``, as in
Gymnasium's registry) and imported on first use, so that reading the table (the leaderboard
does, to label bundles) does not import torch or stable-baselines3.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: A callable, or the ``"module:attribute"`` path of one.
Entry = str | Callable[..., Any]


def resolve(entry: Entry) -> Any:
    """The object an :data:`Entry` names (a callable is returned as it is).

    Raises:
        ValueError: ``entry`` is a string not of the form ``"module:attribute"``.
    """
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    if not module or not attribute:
        raise ValueError(f"entry point {entry!r} is not of the form 'package.module:attribute'")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class AlgorithmSpec:
    """What the scripts need to know of one algorithm.

    Attributes:
        summary: One line for ``--help``.
        granularities: The env granularities it trains at (``token``, ``utterance``, ``candidate``).
        build: ``(args, vec_env) -> algorithm``: the SB3 algorithm for :class:`baselines.common.config.Args`.
        evaluate: A :data:`baselines.common.evaluation.Evaluator`: plays fixed-prompt episodes.
        decoding: How ``evaluate`` replies in training runs, ``sample`` or ``greedy`` (a bundle's
            ``model.decoding``).
        starting_policy: The leaderboard ``algo`` label and display name of its untrained
            policy (the initial evaluation of a run).
        defaults: :class:`~baselines.common.config.Args` fields whose default differs for it;
            flags given on the command line override them.
        options: The :class:`~baselines.common.config.Args` fields only it reads: its group in ``--help``.
        vec_env_cls: The vector env class of its training envs (None: SB3's ``DummyVecEnv``).
        run_stats: ``(algorithm) -> dict`` written to ``summary.json`` under its name, or None.
        after_resume: ``(algorithm, args) -> None`` run after a checkpoint is restored, or None.
        exports_lm: Whether its policy holds a language model that ``baselines.export`` can write.
    """

    summary: str
    granularities: tuple[str, ...]
    build: Entry
    evaluate: Entry
    decoding: str
    starting_policy: tuple[str, str]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    vec_env_cls: Entry | None = None
    run_stats: Entry | None = None
    after_resume: Entry | None = None
    exports_lm: bool = False

    def __post_init__(self) -> None:
        if self.decoding not in ("sample", "greedy"):
            raise ValueError(f"decoding must be 'sample' or 'greedy', got {self.decoding!r}")

    def load(self, name: str) -> Any:
        """The callable of field ``name`` (``build``, ``evaluate``, ``vec_env_cls``, ...), imported; None if unset."""
        entry = getattr(self, name)
        return None if entry is None else resolve(entry)


ALGOS: dict[str, AlgorithmSpec] = {
    "ppo": AlgorithmSpec(
        summary="FastLMPPO: the LM itself is the policy, trained token by token with a KL penalty",
        granularities=("token",),
        options=(
            "n_steps",
            "n_epochs",
            "gae_lambda",
            "clip_range",
            "ent_coef",
            "vf_coef",
            "kl_coef",
            "target_kl_per_reply",
            "bootstrap_truncated",
            "group_baseline",
            "bf16",
            "lora_r",
            "init_model",
            "trainable_layers",
            "value_scale",
            "temperature",
        ),
        build="baselines.ppo.builder:build_ppo",
        evaluate="baselines.common.evaluation:evaluate_lm",
        decoding="sample",
        starting_policy=("zero-shot", "Zero-shot LM, sampled"),
        exports_lm=True,
    ),
    "dqn": AlgorithmSpec(
        summary="stock SB3 DQN: a small Q head on frozen LM features picks one of K proposed replies",
        granularities=("candidate",),
        # A small head on frozen LM features, not LM fine-tuning: more envs, a larger step, a short horizon.
        defaults={"n_envs": 8, "batch_size": 64, "learning_rate": 1e-3, "gamma": 0.5},
        options=(
            "buffer_size",
            "learning_starts",
            "train_freq",
            "gradient_steps",
            "target_update_interval",
            "exploration_fraction",
            "exploration_final_eps",
            "q_hidden",
            "q_weight_decay",
            "q_features",
            "feature_layer",
            "guide_model",
            "proposal_variants",
            "proposal_cache",
            "train_proposal_cache",
            "feature_cache",
        ),
        vec_env_cls="baselines.vec_env:BatchedProposalVecEnv",
        build="baselines.dqn.builder:build_dqn",
        evaluate="baselines.common.evaluation:evaluate_candidates",
        decoding="greedy",
        starting_policy=("lm-top", "LM top candidate"),
        run_stats="baselines.dqn.builder:run_stats",
        after_resume="baselines.dqn.builder:refill_after_resume",
    ),
}


class UnknownAlgorithmError(ValueError):
    """An algorithm name that is not in :data:`ALGOS`."""


def algorithm(name: Any) -> AlgorithmSpec:
    """The table entry of ``name``.

    Raises:
        UnknownAlgorithmError: ``name`` is not a key of :data:`ALGOS` (the message lists them).
    """
    spec = ALGOS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise UnknownAlgorithmError(f"unknown algorithm {name!r:.40}; choose one of: {', '.join(ALGOS)}")
    return spec


def starting_policy_labels() -> dict[str, str]:
    """``{starting-policy label: algorithm}``, e.g. ``{"zero-shot": "ppo", "lm-top": "dqn"}``."""
    return {spec.starting_policy[0]: name for name, spec in ALGOS.items()}
