"""Candidate-level envs: the observation's keys and shape, and episodes played many at once with batched proposals.

Used by the candidate-level evaluation (:mod:`baselines.common.evaluation`), the DQN policy
and reference pickers (:mod:`baselines.dqn`) and the benchmarks' random agent.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym

from textgym.files import append_lines
from textgym.lm import ProposalBatcher
from textgym.wrappers import RecordGenerations

#: Keys a candidate-level observation holds.
CANDIDATE_KEYS = ("input_ids", "attention_mask", "candidate_ids", "candidate_mask")


def candidate_shape(observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> tuple[int, int]:
    """``(K, max_reply_tokens)`` of a candidate-level env, or a ValueError naming what is wrong.

    Raises:
        ValueError: The spaces are not those of a candidate-level TextGym env.
    """
    keys = set(observation_space.spaces) if isinstance(observation_space, gym.spaces.Dict) else set()
    if not isinstance(action_space, gym.spaces.Discrete) or not set(CANDIDATE_KEYS) <= keys:
        raise ValueError(
            "LMQPolicy / DQN needs a candidate-level env (Discrete(K) actions and 'candidate_ids' / "
            f"'candidate_mask' observations, e.g. TextGym/SentimentCandidate-v0); got action space {action_space} "
            f"and observation keys {sorted(keys)}. Token- and utterance-level envs have no candidates: "
            "train them with PPO (baselines.ppo.FastLMPPO or LMActorCriticPolicy)"
        )
    k = int(action_space.n)
    flat = int(observation_space["candidate_ids"].shape[0])
    if flat % k:
        raise ValueError(f"candidate_ids has {flat} entries, not a multiple of the {k} candidates")
    return k, flat // k


def candidate_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)``, refused unless it is candidate level.

    Raises:
        ValueError: The env proposes no candidates (token or utterance level).
    """
    env = gym.make(env_id, **env_kwargs)
    if env.unwrapped.granularity != "candidate":
        env.close()
        raise ValueError(
            f"{env_id} is a {env.unwrapped.granularity}-level env: it proposes no candidates; the DQN baseline and "
            "its references need a candidate-level id, e.g. TextGym/SentimentCandidate-v0"
        )
    return env


def branch(game: gym.Env, proposer: Any) -> gym.Env:
    """A deep copy of the unwrapped candidate-level env ``game``, to try an action on without playing it.

    The copy reloads its LM by name, so its proposals go to ``proposer``: the batcher
    :func:`run_candidate_episodes` hands to ``play``, to go on playing the copy, or one that
    skips the LM where the copy's next turn is never looked at.
    """
    copied = copy.deepcopy(game)
    copied.proposer = proposer
    return copied


def run_candidate_episodes(
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int,
    play: Callable[[gym.Env, int, Any], Any],
    parallel: int,
    record_path: str | None = None,
    proposal_cache: str | None = None,
) -> list[Any]:
    """``play(env, index, batcher)`` for every episode index, ``parallel`` episodes at a time.

    Each episode gets its own env; their proposals go through one
    :class:`textgym.lm.ProposalBatcher`, so the LM proposes for all running episodes in one
    batch.

    Args:
        env_id: A candidate-level TextGym id.
        env_kwargs: ``gym.make`` arguments.
        episodes: Number of episodes (indices ``0 .. episodes - 1``).
        play: Plays episode ``index`` on its fresh ``env`` (each in its own thread) and
            returns its result; an env copied inside must get ``batcher`` as its proposer.
        parallel: Episodes run at once.
        record_path: JSONL file the generations are appended to, in episode order.
        proposal_cache: A directory where the LM's candidate sets are kept
            (:class:`baselines.proposal_vec_env.StoredProposals`, namespaced by ``env_id`` and
            ``env_kwargs``): a request made before, by any run given the directory, is answered
            from it. None: every set is generated.

    Returns:
        The results of ``play``, in episode order.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel!r}")
    probe = candidate_env(env_id, env_kwargs)
    proposer = probe.unwrapped.proposer
    if proposal_cache:
        from baselines.proposal_vec_env import StoredProposals

        namespace = json.dumps([env_id, env_kwargs], sort_keys=True, default=str)
        proposer = StoredProposals(proposer, proposal_cache, namespace)
    batcher = ProposalBatcher(proposer)
    probe.close()
    with tempfile.TemporaryDirectory(prefix="textgym-episodes-") as scratch:

        def episode(index: int) -> Any:
            env = candidate_env(env_id, env_kwargs)
            env.unwrapped.proposer = batcher
            if record_path:
                env = RecordGenerations(env, Path(scratch) / f"{index:06d}.jsonl")
            try:
                return play(env, index, batcher)
            finally:
                env.close()

        results = []
        for first in range(0, episodes, parallel):
            results += batcher.map(episode, range(first, min(first + parallel, episodes)))
        if record_path:  # the recorder's lines, as written, in episode order, appended in one durable write
            lines = [(Path(scratch) / f"{index:06d}.jsonl").read_text(encoding="utf-8") for index in range(episodes)]
            append_lines(record_path, "".join(lines))
    return results
