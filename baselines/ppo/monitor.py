"""The adaptive KL coefficient and the silent-failure monitor of :class:`~baselines.ppo.FastLMPPO`."""

from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: Largest mean |ratio - 1| on an update's first minibatch that the monitor accepts, float32 and bf16.
FP32_RATIO_TOLERANCE, BF16_RATIO_TOLERANCE = 1e-3, 1e-2


class KLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the sampled KL per reply towards a target.

    Args:
        coef: Initial coefficient ``beta`` (0 disables the penalty).
        target: Target KL per reply in nats; None keeps ``beta`` fixed.
        horizon: Env steps over which ``beta`` may change by a factor of about e.
    """

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10_000) -> None:
        if not (math.isfinite(coef) and coef >= 0):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {coef!r}")
        if target is not None and not (math.isfinite(target) and target > 0):
            raise ValueError(f"target_kl_per_reply must be > 0, got {target!r}")
        self.coef, self.target, self.horizon = float(coef), target, horizon

    def update(self, kl_per_reply: float, steps: int) -> None:
        """Move ``coef`` after a rollout of ``steps`` env steps whose mean KL per reply was ``kl_per_reply``."""
        if self.target is None or self.coef == 0:
            return
        error = float(np.clip(kl_per_reply / self.target - 1.0, -0.2, 0.2))
        self.coef *= 1.0 + error * steps / self.horizon


@dataclass
class TrainingMonitor:
    """Silent-failure warnings for LM RL, logged and printed with ``warnings.warn``.

    Flags a rollout whose rewards all tie, a negative KL estimate, PPO ratios away from 1
    before the first update (sampling and training log-probs disagree), replies collapsing
    in length or into repetition, and one reward component dominating the reward. Keeps
    sample generations for periodic dumps.
    """

    ratio_tolerance: float = FP32_RATIO_TOLERANCE
    samples: deque = field(default_factory=lambda: deque(maxlen=8))
    first_reply_words: float | None = None
    issued: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record and emit one warning."""
        self.issued.append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def check_rollout(self, reply_rewards: list[float], guards: list[dict], components: list[dict]) -> None:
        """Checks on the replies and episodes a rollout finished."""
        if len(reply_rewards) >= 2 and float(np.std(reply_rewards)) == 0.0:
            self.warn(
                f"all {len(reply_rewards)} reply rewards of this rollout tie at {reply_rewards[0]:.4g}: no signal"
            )
        if guards:
            words = float(np.mean([g["reply_words"] for g in guards]))
            if self.first_reply_words is None:
                self.first_reply_words = words
            elif words < 0.25 * self.first_reply_words:
                self.warn(f"length collapse: {words:.1f} words per reply, from {self.first_reply_words:.1f}")
            repetition = float(np.mean([g["repetition_2"] for g in guards]))
            if repetition > 0.5:
                self.warn(f"repetition collapse: {repetition:.0%} of reply bigrams repeat")
        totals: dict[str, float] = {}
        for reply_components in components:
            for name, value in reply_components.items():
                totals[name] = totals.get(name, 0.0) + abs(float(value))
        grand = sum(totals.values())
        if len(totals) > 1 and grand > 0:
            name, value = max(totals.items(), key=lambda item: item[1])
            if value / grand > 0.95:
                self.warn(f"reward component {name!r} makes {value / grand:.0%} of the reward")

    def check_kl(self, kl_per_token: float) -> None:
        """A sampled KL below zero means log-probs are mismatched or too few samples."""
        if kl_per_token < -1e-3:
            self.warn(f"negative KL estimate {kl_per_token:.4f} per token: policy and reference log-probs disagree")

    def check_ratios(self, mean_abs_ratio_error: float) -> None:
        """Before any update the PPO ratio must be 1."""
        if mean_abs_ratio_error > self.ratio_tolerance:
            self.warn(
                f"PPO ratios before the first update are {mean_abs_ratio_error:.2e} away from 1: sampling and "
                "training log-probs disagree (dropout on? a different dtype or model between the two?)"
            )
