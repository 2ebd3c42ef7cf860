"""Reference agents every baseline is measured from: random actions and the LM acting greedily."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from textgym.lm import forward, positions_from_mask, sample


class RandomAgent:
    """Uniformly random valid actions (candidate level: among the unmasked candidates)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observation: dict[str, np.ndarray], env: gym.Env) -> Any:
        """Draw an action for ``env`` (unused observation kept for a common signature)."""
        base = env.unwrapped
        if base.granularity == "candidate":
            return int(self.rng.choice(np.flatnonzero(base.action_masks())))
        if base.granularity == "token":
            return int(self.rng.integers(base.vocab_size))
        return self.rng.integers(base.vocab_size, size=base.max_reply_tokens)


class GreedyLMAgent:
    """The env's own LM acting greedily at any granularity.

    Token level: the arg-max next token of the observed context. Utterance level: the
    greedy reply generated from the observed context. Candidate level: candidate 0,
    which the env guarantees to be the LM's greedy reply.

    Args:
        model: A model name for :func:`textgym.models.load_shared_causal_lm`; it must share
            the env's tokenizer.
    """

    def __init__(self, model: str = "default") -> None:
        from textgym.models import load_shared_causal_lm

        self.model = load_shared_causal_lm(model)

    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], env: gym.Env) -> Any:
        """Return the greedy action for ``observation`` in ``env``."""
        base = env.unwrapped
        if base.granularity == "candidate":
            return 0
        ids = torch.as_tensor(observation["input_ids"], dtype=torch.long)[None]
        mask = torch.as_tensor(observation["attention_mask"], dtype=torch.long)[None]
        if base.granularity == "token":
            logits = forward(self.model, ids, mask, positions_from_mask(mask), logits_to_keep=1).logits
            return int(logits[0, -1].argmax())
        reply = sample(
            self.model,
            ids,
            mask,
            max_new_tokens=base.max_reply_tokens,
            end_ids=sorted(base.end_ids),
            pad_id=base.pad_id,
            greedy=torch.ones(1, dtype=torch.bool),
        )
        return reply.tokens[0].numpy()


def play_episode(env: gym.Env, agent: Any, seed: int | None = None, options: dict | None = None) -> dict[str, Any]:
    """Run one episode; return its total reward, length, end reason and final info."""
    observation, info = env.reset(seed=seed, options=options)
    total, steps, prompt_id = 0.0, 0, info.get("prompt_id")
    while True:
        observation, reward, terminated, truncated, info = env.step(agent.act(observation, env))
        total += float(reward)
        steps += 1
        if terminated or truncated:
            return {
                "prompt_id": prompt_id,
                "reward": total,
                "steps": steps,
                "terminated": terminated,
                "truncated": truncated,
                "end_reason": info.get("end_reason"),
                "info": info,
            }
