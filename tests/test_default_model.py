"""The real default model, end to end and offline."""

import gymnasium as gym
import numpy as np

import textgym  # noqa: F401
from textgym.agents import GreedyLMAgent, play_episode
from textgym.lm import LocalLanguageModel


def test_default_model_answers_and_proposes_seeded_candidates():
    lm = LocalLanguageModel("default", temperature=0.7)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    first = lm.propose(messages, num_candidates=3, max_new_tokens=12, seed=0)
    assert "Paris" in first[0].text and first[0].finished
    assert lm.propose(messages, num_candidates=3, max_new_tokens=12, seed=0) == first
    # The greedy candidate does not depend on the seed.
    assert lm.propose(messages, num_candidates=3, max_new_tokens=12, seed=1)[0] == first[0]


def test_default_model_plays_the_same_reply_at_every_granularity():
    agent = GreedyLMAgent("default")
    replies = {}
    for env_id in ("TextGym/Dialogue-v0", "TextGym/DialogueCandidate-v0", "TextGym/DialogueUtterance-v0"):
        env = gym.make(env_id, split="validation", max_reply_tokens=12, num_turns=1, num_candidates=2)
        episode = play_episode(env, agent, seed=0)
        assert np.isfinite(episode["reward"])
        replies[env_id] = episode["info"]["reply"]
    assert len(set(replies.values())) == 1, replies
    assert len(next(iter(replies.values())).split()) >= 3
