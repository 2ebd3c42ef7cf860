"""Scoring a policy on fixed prompts, at every granularity: the one evaluation loop of the baselines.

:func:`evaluate_policy` plays an LM policy (token or utterance level, sampled or greedy)
with batched, KV-cached generation; :func:`evaluate_q_policy` plays a candidate picker (the
DQN's greedy Q policy) with the proposals of all running episodes batched. Episode ``i``
resets with seed ``seed + i`` in both, so every policy of a track sees the same prompts
(:func:`evaluate_policy` can also be given each episode's prompt id, to play a split once).

:func:`evaluate_lm` and :func:`evaluate_candidates` give both one signature, the
:data:`Evaluator` that the algorithm table (:mod:`baselines.algorithms`) names: the algorithm
and an :class:`EvaluationRequest`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import obs_as_tensor

from baselines.algorithms import algorithm
from baselines.common.candidates import CANDIDATE_KEYS, candidate_env, candidate_shape, run_candidate_episodes
from textgym.stats import EVAL_SEED_BASE, bootstrap_ci
from textgym.wrappers import RecordGenerations, ReferencePerplexity


@dataclass(frozen=True)
class EvaluationRequest:
    """What an algorithm's evaluation plays: the arguments of :func:`evaluate_policy` but the policy.

    Attributes:
        env_id: A TextGym id of a granularity the algorithm plays.
        env_kwargs: ``gym.make`` arguments (e.g. ``model``, ``split``).
        episodes: Number of episodes; episode ``i`` resets with ``seed + i``.
        seed: Base seed of the prompts, and of the sampling.
        deterministic: Greedy instead of sampled replies (a candidate picker is always greedy).
        record_path: JSONL file the generations are appended to, or None.
        reference_model: The frozen reference LM for guard perplexity, or None (an LM policy's only).
        proposal_cache: Where a candidate-level evaluation keeps the LM's candidate sets, or
            None (see :func:`baselines.common.candidates.run_candidate_episodes`).
    """

    env_id: str
    env_kwargs: dict[str, Any]
    episodes: int = 32
    seed: int = EVAL_SEED_BASE
    deterministic: bool = False
    record_path: str | None = None
    reference_model: str | None = None
    proposal_cache: str | None = None


#: An algorithm's evaluation, as the table names it: ``(algorithm, request) -> result``; the result
#: holds at least ``episodes``, ``deterministic``, ``reward_mean``, ``reward_ci95`` and ``rewards``.
Evaluator = Callable[[Any, EvaluationRequest], dict[str, Any]]


def evaluate_on_split(
    model: Any, algo: str, env_id: str, env_kwargs: dict[str, Any], split: str, **request: Any
) -> dict[str, Any]:
    """Play ``algo``'s evaluation (its table entry's evaluator) of ``model`` on ``split`` of ``env_id``.

    Args:
        model: The trained algorithm.
        algo: Its key in :data:`baselines.algorithms.ALGOS`.
        env_id: The env id to play.
        env_kwargs: ``gym.make`` arguments of the training envs; ``split`` replaces theirs.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        **request: The other :class:`EvaluationRequest` fields (``episodes``, ``seed``, ...).

    Raises:
        baselines.algorithms.UnknownAlgorithmError: ``algo`` is not in the table.
    """
    evaluate = algorithm(algo).load("evaluate")
    return evaluate(model, EvaluationRequest(env_id, {**env_kwargs, "split": split}, **request))


def reward_summary(rewards: list[float]) -> dict[str, Any]:
    """``reward_mean``, ``reward_ci95`` (bootstrap) and the per-episode ``rewards``."""
    return {"reward_mean": float(np.mean(rewards)), "reward_ci95": bootstrap_ci(rewards), "rewards": rewards}


def guard_summary(guards: list[dict[str, Any]]) -> dict[str, float]:
    """``reply_words_mean`` and ``distinct_2_mean`` over episodes' guard metrics (0 where an episode has none)."""
    return {
        "reply_words_mean": float(np.mean([g.get("reply_words", 0.0) for g in guards])),
        "distinct_2_mean": float(np.mean([g.get("distinct_2", 0.0) for g in guards])),
    }


def perplexity_summary(guards: list[dict[str, Any]]) -> dict[str, float | None]:
    """``perplexity_mean`` and ``perplexity_median`` over episodes' guard metrics (None where none has one).

    The median is reported because one rare one-word reply can lift the mean by orders of magnitude.
    """
    values = [guard["perplexity"] for guard in guards if guard.get("perplexity") is not None]
    return {
        "perplexity_mean": float(np.mean(values)) if values else None,
        "perplexity_median": float(np.median(values)) if values else None,
    }


def make_eval_envs(
    env_id: str, env_kwargs: dict[str, Any], episodes: int, record_path: str | None, reference_model: str | None
) -> list[gym.Env]:
    """One env per episode, each wrapped to record generations and (optionally) reference perplexity."""
    envs = []
    for _ in range(episodes):
        env = gym.make(env_id, **env_kwargs)
        if reference_model:
            env = ReferencePerplexity(env, reference_model=reference_model)
        if record_path:
            env = RecordGenerations(env, record_path)
        envs.append(env)
    return envs


@torch.no_grad()
def evaluate_policy(
    policy: Any,
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int = 32,
    seed: int = EVAL_SEED_BASE,
    deterministic: bool = False,
    record_path: str | None = None,
    reference_model: str | None = None,
    sampling_seed: int | None = None,
    prompt_ids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` fixed-prompt episodes with an LM policy at token or utterance level.

    Args:
        policy: A :class:`~baselines.policies.LMActorCriticPolicy`.
        env_id: A token- or utterance-level TextGym id.
        env_kwargs: ``gym.make`` arguments (e.g. ``model``, ``split``).
        episodes: Number of episodes; episode ``i`` resets with ``seed + i``.
        seed: Base seed of the prompts, and of the sampling unless ``sampling_seed`` is given.
        deterministic: Greedy instead of sampled replies.
        record_path: JSONL file for the generations (appended).
        reference_model: Name of the frozen reference LM for guard perplexity, or None.
        sampling_seed: Seed of the sampled replies (None: ``seed``), to draw other replies to the same prompts.
        prompt_ids: The prompt of each episode (``reset(options={"prompt_id": ...})``), one per
            episode, instead of the prompt seed ``seed + i`` draws: e.g. every prompt of a split once.

    Returns:
        ``reward_mean``, ``reward_ci95``, ``rewards`` (per episode), ``perplexity_mean`` and
        ``perplexity_median`` (:func:`perplexity_summary`), ``reply_words_mean``, ``distinct_2_mean``
        and ``episodes``.

    Raises:
        ValueError: ``prompt_ids`` does not hold one id per episode.
    """
    if prompt_ids is not None and len(prompt_ids) != episodes:
        raise ValueError(f"prompt_ids holds {len(prompt_ids)} ids for {episodes} episodes: give one per episode")
    torch.manual_seed(seed if sampling_seed is None else sampling_seed)
    envs = make_eval_envs(env_id, env_kwargs, episodes, record_path, reference_model)
    options = [None if prompt_ids is None else {"prompt_id": prompt_ids[i]} for i in range(episodes)]
    observations = [env.reset(seed=seed + i, options=options[i])[0] for i, env in enumerate(envs)]
    rewards = [0.0] * episodes
    guards: list[dict[str, Any]] = [{} for _ in range(episodes)]
    active = list(range(episodes))
    policy.set_training_mode(False)
    while active:
        batch = {key: np.stack([observations[i][key] for i in active]) for key in observations[active[0]]}
        base = envs[active[0]].unwrapped
        replies = policy.generate(obs_as_tensor(batch, policy.device), base.max_reply_tokens, deterministic).cpu()
        still = []
        for row, index in enumerate(active):
            env = envs[index]
            if env.unwrapped.granularity == "utterance":
                steps = [replies[row].numpy()]
            else:
                steps = [int(token) for token in replies[row]]
            for action in steps:
                observation, reward, terminated, truncated, info = env.step(action)
                rewards[index] += float(reward)
                if terminated or truncated:
                    guards[index] = info.get("guard", {})
                    break
                if "reply" in info:
                    still.append(index)  # next turn: generate again from the new context
                    break
            observations[index] = observation
        active = still
    for env in envs:
        env.close()
    return {
        "episodes": episodes,
        "deterministic": deterministic,
        **reward_summary(rewards),
        **perplexity_summary(guards),
        **guard_summary(guards),
    }


def evaluate_q_policy(
    model: BaseAlgorithm | BasePolicy,
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int = 32,
    seed: int = EVAL_SEED_BASE,
    record_path: str | None = None,
    parallel: int = 32,
    proposal_cache: str | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` fixed-prompt episodes with the greedy Q policy (arg-max over valid candidates).

    Args:
        model: A ``DQN`` with :class:`LMQPolicy` (or the policy itself).
        env_id: A candidate-level TextGym id.
        env_kwargs: ``gym.make`` arguments (e.g. ``model``, ``split``, ``num_candidates``).
        episodes: Number of episodes; episode ``i`` resets with ``seed + i``.
        seed: Base seed of the prompts (and of the env's candidate sampling).
        record_path: JSONL file the generations are appended to (in episode order), through
            :class:`textgym.wrappers.RecordGenerations`.
        parallel: Episodes played at once, their proposals batched.
        proposal_cache: A directory where the LM's candidate sets are kept and read back
            (runs evaluating the same prompts generate each set once), or None.

    Returns:
        ``reward_mean``, ``reward_ci95``, ``rewards`` (per episode), ``episodes``,
        ``deterministic`` (True), ``top_candidate_rate`` (how often candidate 0 was picked),
        ``reply_words_mean`` and ``distinct_2_mean``.

    Raises:
        ValueError: The env is not candidate level, or its K or reply budget differs
            from the policy's.
    """
    policy = getattr(model, "policy", model)
    env = candidate_env(env_id, env_kwargs)
    k, length = candidate_shape(policy.observation_space, policy.action_space)
    base = env.unwrapped
    shape = (base.num_candidates, base.max_reply_tokens)
    env.close()
    if shape != (k, length):
        raise ValueError(
            f"the policy was trained with K={k} candidates of {length} tokens but {env_id} with {env_kwargs} gives "
            f"K={shape[0]} of {shape[1]}; pass the training num_candidates and max_reply_tokens"
        )
    policy.set_training_mode(False)  # acting never changes the feature statistics
    acting = threading.Lock()  # the feature cache is not thread-safe

    def play(env: gym.Env, index: int, batcher: Any) -> tuple[float, dict, list[int]]:
        observation, _ = env.reset(seed=seed + index)
        total, picks = 0.0, []
        while True:
            batch = {key: torch.as_tensor(observation[key][None]) for key in CANDIDATE_KEYS}
            with acting, torch.no_grad():
                action = int(policy._predict(batch, deterministic=True)[0])
            picks.append(action)
            observation, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            if terminated or truncated:
                return total, info.get("guard", {}), picks

    played = run_candidate_episodes(env_id, env_kwargs, episodes, play, parallel, record_path, proposal_cache)
    rewards = [total for total, _, _ in played]
    guards = [guard for _, guard, _ in played]
    picks = [pick for _, _, episode_picks in played for pick in episode_picks]
    return {
        "episodes": episodes,
        "deterministic": True,
        **reward_summary(rewards),
        "top_candidate_rate": float(np.mean([pick == 0 for pick in picks])),
        **guard_summary(guards),
    }


def evaluate_lm(model: Any, request: EvaluationRequest) -> dict[str, Any]:
    """:data:`Evaluator` of an algorithm whose policy is an LM: :func:`evaluate_policy` of ``model.policy``."""
    fields = dataclasses.asdict(request)
    del fields["proposal_cache"]  # an LM policy writes its own replies: nothing is proposed
    return evaluate_policy(model.policy, **fields)


def evaluate_candidates(model: Any, request: EvaluationRequest) -> dict[str, Any]:
    """:data:`Evaluator` of a candidate picker: :func:`evaluate_q_policy`.

    It always picks greedily (``request.deterministic`` is not read), and its replies are the
    env LM's own proposals, so no reference perplexity is measured (``request.reference_model``
    is not read).
    """
    return evaluate_q_policy(
        model,
        request.env_id,
        request.env_kwargs,
        request.episodes,
        request.seed,
        request.record_path,
        proposal_cache=request.proposal_cache,
    )
