"""Wrappers that score replies under a frozen reference LM: guard perplexity and a KL penalty."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym

from textgym.core import Message

PolicyLogProb = Callable[[Sequence[Message], str], float]


def _reply_contexts(messages: Sequence[Message]) -> list[tuple[list[Message], str]]:
    """Each assistant reply of a conversation with the messages before it."""
    return [(list(messages[:i]), m["content"]) for i, m in enumerate(messages) if m["role"] == "assistant"]


class _ReferenceScorer:
    """Log-likelihoods of replies under a frozen reference LM, one batched forward per call."""

    def __init__(self, model: str) -> None:
        from textgym.models import load_tokenizer

        self.model = model
        self.tokenizer = load_tokenizer(model)

    def perplexities(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[float | None]:
        """Perplexity of each non-blank reply given its chat context (None for a blank reply)."""
        from textgym.metrics.functional import perplexity

        scored = [(context, reply) for context, reply in pairs if reply.strip()]
        values = iter(
            perplexity(
                [reply for _, reply in scored],
                model=self.model,
                contexts=[
                    self.tokenizer.apply_chat_template(list(context), tokenize=False, add_generation_prompt=True)
                    for context, _ in scored
                ],
                batch_size=max(len(scored), 1),
            )
            if scored
            else []
        )
        return [next(values) if reply.strip() else None for _, reply in pairs]

    def logprob(self, context: Sequence[Message], reply: str) -> float:
        """Summed log-probability of ``reply``'s tokens given ``context`` (0.0 for a blank reply)."""
        (ppl,) = self.perplexities([(context, reply)])
        if ppl is None:
            return 0.0
        tokens = len(self.tokenizer(reply, add_special_tokens=False)["input_ids"])
        return -tokens * math.log(ppl)


class ReferencePerplexity(gym.Wrapper):
    """Add the perplexity of the episode's replies under a frozen reference LM to ``info["guard"]``.

    At the end of each episode, every non-blank reply is scored given the conversation
    before it (chat template), all replies in one batched forward. ``info["guard"]``
    gains ``perplexity`` (the mean over the scored replies, None if all were blank).

    Args:
        env: A TextGym env.
        reference_model: The frozen reference LM's name (see :mod:`textgym.models`).
    """

    def __init__(self, env: gym.Env, reference_model: str = "default") -> None:
        super().__init__(env)
        self._scorer = _ReferenceScorer(reference_model)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step; at episode end add the reference perplexity to the guard metrics."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and "messages" in info:
            values = [v for v in self._scorer.perplexities(_reply_contexts(info["messages"])) if v is not None]
            info.setdefault("guard", {})["perplexity"] = sum(values) / len(values) if values else None
        return observation, reward, terminated, truncated, info


class KLPenalty(gym.Wrapper):
    """Subtract a KL-to-reference penalty from each reply's reward, for RL libraries that lack one.

    At the end of each reply (one reference forward per reply, not per token):
    ``reward -= coef * estimate``. With ``policy_logprob`` (a callable returning the
    policy's summed log-probability of the reply given the messages), ``estimate =
    log pi(reply) - log p_ref(reply)``, the sampled KL estimate. Without it the env
    cannot see the policy, and ``estimate = -log p_ref(reply)``, the reply's
    cross-entropy under the reference: the KL plus the policy's entropy, so it also
    penalises diverse sampling. ``info["kl_penalty"]`` holds ``estimate``, ``kind``
    (``"kl"`` or ``"cross_entropy"``), ``penalty`` and ``reference_logprob``. A blank reply
    has no tokens to score and gets no penalty. Trainers that have their own log-probs
    (the PPO baseline) compute the KL themselves and should not use this wrapper.

    Args:
        env: A TextGym env.
        coef: Penalty coefficient, >= 0.
        reference_model: The frozen reference LM's name.
        policy_logprob: Optional ``(messages, reply) -> log pi(reply | messages)``.
    """

    def __init__(
        self,
        env: gym.Env,
        coef: float = 0.05,
        reference_model: str = "default",
        policy_logprob: PolicyLogProb | None = None,
    ) -> None:
        super().__init__(env)
        if not (isinstance(coef, (int, float)) and math.isfinite(coef) and coef >= 0):
            raise ValueError(f"coef must be a finite number >= 0, got {coef!r}")
        self.coef = float(coef)
        self.policy_logprob = policy_logprob
        self._scorer = _ReferenceScorer(reference_model)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step; at the end of a reply subtract the penalty."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        if "reply" in info:
            context, reply = _reply_contexts(info["messages"])[-1]
            reference = self._scorer.logprob(context, reply)
            if self.policy_logprob is None:
                estimate, kind = -reference, "cross_entropy"
            else:
                estimate, kind = float(self.policy_logprob(context, reply)) - reference, "kl"
            if not reply.strip():
                estimate = 0.0
            penalty = self.coef * estimate
            reward = float(reward) - penalty
            info["kl_penalty"] = {
                "estimate": estimate,
                "kind": kind,
                "penalty": penalty,
                "reference_logprob": reference,
            }
        return observation, reward, terminated, truncated, info
