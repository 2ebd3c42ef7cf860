"""An SB3 vector env whose candidate-level envs share one batched proposer.

Each step of a candidate-level TextGym env ends with its LM proposing K replies for the
next turn, and that proposal is nearly all of the step's cost. :class:`BatchedProposalVecEnv`
steps its envs in threads through a :class:`textgym.lm.ProposalBatcher`, so the proposals of
all ``n_envs`` envs run as one batched generation, which reads the LM's weights once per
token for the whole batch. Token- and utterance-level envs, which propose
nothing, are stepped one after another exactly as by ``DummyVecEnv``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from textgym.lm import ProposalBatcher


def share_batcher(envs: Sequence[gym.Env]) -> ProposalBatcher | None:
    """Give every candidate-level env in ``envs`` one :class:`ProposalBatcher` as its proposer.

    Returns:
        The batcher, or None when the envs propose nothing (token or utterance level).
    """
    proposers = [getattr(env.unwrapped, "proposer", None) for env in envs]
    if not proposers or any(p is None for p in proposers):
        return None
    first = proposers[0]
    batcher = first if isinstance(first, ProposalBatcher) else ProposalBatcher(first)
    for env in envs:
        env.unwrapped.proposer = batcher
    return batcher


class BatchedProposalVecEnv(DummyVecEnv):
    """``DummyVecEnv`` that steps candidate-level envs concurrently with batched proposals.

    Same observations, rewards, dones, infos and auto-reset as ``DummyVecEnv``; use it as
    ``make_vec_env(env_id, n_envs, vec_env_cls=BatchedProposalVecEnv)``.

    Args:
        env_fns: Functions that make the envs.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        super().__init__(env_fns)
        self.batcher = share_batcher(self.envs)

    def _map(self, job: Callable[[int], Any]) -> list[Any]:
        indices = range(self.num_envs)
        if self.batcher is None:
            return [job(index) for index in indices]
        return self.batcher.map(job, indices)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env (and reset the finished ones) with one batched proposal round."""

        def step(index: int) -> tuple[Any, ...]:
            env = self.envs[index]
            obs, reward, terminated, truncated, info = env.step(self.actions[index])
            info["TimeLimit.truncated"] = truncated and not terminated
            reset_info = None
            if terminated or truncated:
                info["terminal_observation"] = obs
                obs, reset_info = env.reset()
            return obs, reward, terminated or truncated, info, reset_info

        for index, (obs, reward, done, info, reset_info) in enumerate(self._map(step)):
            self.buf_rews[index], self.buf_dones[index], self.buf_infos[index] = reward, done, info
            if reset_info is not None:
                self.reset_infos[index] = reset_info
            self._save_obs(index, obs)
        return self._obs_from_buf(), self.buf_rews.copy(), self.buf_dones.copy(), deepcopy(self.buf_infos)

    def reset(self) -> VecEnvObs:
        """Reset every env (with its pending seed and options) in one batched proposal round."""

        def reset(index: int) -> tuple[Any, Any]:
            options = {"options": self._options[index]} if self._options[index] else {}
            return self.envs[index].reset(seed=self._seeds[index], **options)

        for index, (obs, info) in enumerate(self._map(reset)):
            self.reset_infos[index] = info
            self._save_obs(index, obs)
        self._reset_seeds()
        self._reset_options()
        return self._obs_from_buf()
