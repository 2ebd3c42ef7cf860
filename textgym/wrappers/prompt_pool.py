"""Episodes drawn from a fixed pool of a task's prompts."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from textgym.checks import check_integer


class PromptPool(gym.Wrapper):
    """Start every episode from one of ``size`` prompts of the env's split, drawn once with ``seed``.

    A training run on a small pool meets each prompt many times, so whatever it caches per
    context (a DQN's proposals and features, see ``baselines.proposal_vec_env``) is used
    again. Every env built with the same ``size`` and ``seed`` holds the same pool, whatever
    its own reset seed. ``reset(options={"prompt_id": ...})`` still starts the prompt asked for.

    With ``repeats`` > 1 each prompt drawn is played that many episodes in a row. A token-level
    PPO rollout keeps each env's context in its KV cache (``baselines.ppo.ContinuousDecoder``),
    so the repeats of a long prompt read it once, not once per episode, as long as prompt and
    reply fit the observation window (a context that fills it slides it every step, and the
    cache cannot keep a row whose first tokens change); and the policy samples several
    replies to one prompt per rollout.

    With ``max_prompt_tokens`` the pool holds only prompts whose first context (the
    chat-template encoding of the prompt's messages) is at most that many tokens: e.g. the
    observation window less the reply budget, so that no prompt of the pool slides the
    window while the reply is written. The task and its evaluation are unchanged; only the
    training prompts are chosen.

    Args:
        env: A TextGym env (its ``unwrapped.task`` draws the pool).
        size: Prompts in the pool; a split with fewer prompts is taken whole.
        seed: Seeds the draw of the pool.
        repeats: Episodes played in a row on each prompt drawn.
        max_prompt_tokens: Longest first context of a prompt of the pool (``None``: any).

    Raises:
        ValueError: ``size``, ``seed``, ``repeats`` or ``max_prompt_tokens`` is not an integer
            >= 1 (>= 0 for ``seed``), or no prompt of the split is short enough.
    """

    def __init__(
        self, env: gym.Env, size: int, seed: int = 0, repeats: int = 1, max_prompt_tokens: int | None = None
    ) -> None:
        super().__init__(env)
        size = check_integer(size, "prompt pool size", minimum=1)
        seed = check_integer(seed, "prompt pool seed", minimum=0)
        self.repeats = check_integer(repeats, "prompt repeats", minimum=1)
        self._current: str | None = None
        self._left = 0
        if max_prompt_tokens is not None:
            max_prompt_tokens = check_integer(max_prompt_tokens, "max_prompt_tokens", minimum=1)
        self.max_prompt_tokens = max_prompt_tokens
        task = env.unwrapped.task
        draw = np.random.default_rng(seed)
        ids = task.prompt_ids()
        if ids is not None and max_prompt_tokens is None:
            picked = draw.choice(len(ids), size=min(size, len(ids)), replace=False)
            self.pool = [ids[int(index)] for index in sorted(picked)]
        elif ids is not None:  # the first ``size`` short enough prompts of a seeded order
            fitting: list[int] = []
            for index in draw.permutation(len(ids)).tolist():
                if len(fitting) == size:
                    break
                if self._fits(ids[index]):
                    fitting.append(index)
            self.pool = [ids[index] for index in sorted(fitting)]
        else:  # a task whose prompts have no end (generated problems): draw distinct ids
            pool: dict[str, None] = {}
            for _ in range(100 * size):
                prompt_id = task.draw_prompt_id(draw)
                if prompt_id not in pool and self._fits(prompt_id):
                    pool[prompt_id] = None
                if len(pool) == size:
                    break
            self.pool = list(pool)
        if not self.pool:
            raise ValueError(
                f"max_prompt_tokens {max_prompt_tokens}: no prompt of the split has a first context that short"
            )
        self.pool_seed = seed
        self._pick = np.random.default_rng(seed)

    def _fits(self, prompt_id: str) -> bool:
        """Whether the first context of ``prompt_id`` is at most ``max_prompt_tokens`` tokens."""
        if self.max_prompt_tokens is None:
            return True
        env = self.env.unwrapped
        prompt = env.task.reset(np.random.default_rng(0), {"prompt_id": prompt_id})
        return len(env.chat.encode(prompt.messages)) <= self.max_prompt_tokens

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset with a prompt of the pool (a seed also re-seeds which one), unless ``options`` names one."""
        if seed is not None:
            self._pick = np.random.default_rng([check_integer(seed, "seed", minimum=0), self.pool_seed])
            self._left = 0
        if not (isinstance(options, dict) and options.get("prompt_id") is not None):
            if self._left == 0:
                self._current, self._left = self.pool[int(self._pick.integers(len(self.pool)))], self.repeats
            self._left -= 1
            options = {**(options or {}), "prompt_id": self._current}
        return self.env.reset(seed=seed, options=options)
