"""Sentiment: prompts, VADER reward, env."""

import math

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers the ids)
from textgym.data import SPLITS, split_of
from textgym.envs.sentiment import OPENERS, SUBJECTS, SentimentTask, review_prompts, sentiment_reward


def vader_compound(valence_sum):
    """VADER's normalisation of a summed valence (alpha = 15), rounded as VADER rounds."""
    return round(valence_sum / math.sqrt(valence_sum**2 + 15), 4)


def test_prompts_are_deterministic_and_distinct():
    prompts = review_prompts()
    assert len(prompts) == len(OPENERS) * len(SUBJECTS) == 300
    assert prompts == review_prompts()
    assert len(set(prompts.values())) == len(prompts)
    assert prompts["plain.film-was"] == "The film was"
    assert prompts["honestly.acting"] == "Honestly, the acting in this movie"
    assert all(text[0].isupper() and not text.endswith(" ") for text in prompts.values())


def test_splits_are_disjoint_and_cover_every_prompt():
    by_split = {split: {key for key, _ in SentimentTask(split=split).prompts} for split in SPLITS}
    assert len(by_split["validation"]) >= 20 and len(by_split["test"]) >= 20
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]
    assert set().union(*by_split.values()) == set(review_prompts())
    assert all(split_of(key) == "validation" for key in by_split["validation"])


def test_reward_hand_checked_values():
    # Lexicon valences: great 3.1, terrible -2.1, good 1.9; "not" flips and damps by -0.74.
    assert sentiment_reward(["was great."]) == [vader_compound(3.1)]
    assert sentiment_reward(["was terrible."]) == [vader_compound(-2.1)]
    assert sentiment_reward(["was not good."]) == [vader_compound(1.9 * -0.74)]
    assert sentiment_reward(["", "   ", "the film was a film."]) == [0.0, 0.0, 0.0]


def test_reward_accepts_trl_conventions():
    conversational = [[{"role": "assistant", "content": "was great."}]]
    assert sentiment_reward(conversational, prompts=["x"], extra_column=[1]) == [vader_compound(3.1)]
    with pytest.raises(TypeError, match="a completion must be a str"):
        sentiment_reward([3])


def test_rewards_stay_in_range():
    texts = ["AMAZING!!! best film EVER, I loved it so much", "awful awful horrible disgusting waste"]
    high, low = sentiment_reward(texts)
    assert 0.9 < high <= 1.0 and -1.0 <= low < -0.9


def test_registered_ids():
    for env_id, granularity in [
        ("TextGym/Sentiment-v0", "token"),
        ("TextGym/SentimentCandidate-v0", "candidate"),
        ("TextGym/SentimentUtterance-v0", "utterance"),
    ]:
        spec = gym.spec(env_id)
        assert spec.kwargs["granularity"] == granularity
        assert spec.entry_point == "textgym.envs.sentiment:SentimentEnv"


def test_token_level_reward_equals_the_pure_function(tiny_model):
    env = gym.make("TextGym/Sentiment-v0", model=tiny_model).unwrapped
    _, info = env.reset(seed=0, options={"prompt_id": "honestly.film-was"})
    assert info["prompt_id"] == "honestly.film-was"
    assert info["messages"] == [
        {"role": "system", "content": "Continue the movie review. Write only the words that come next."},
        {"role": "user", "content": "Honestly, the film was"},
    ]
    for token in env.tokenizer(" wonderful and moving.", add_special_tokens=False)["input_ids"]:
        _, reward, terminated, truncated, _ = env.step(token)
        assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, info = env.step(min(env.end_ids))
    assert terminated and not truncated and info["reply"] == "wonderful and moving."
    assert reward == sentiment_reward([info["reply"]])[0] > 0.5
    assert info["reward_components"] == {"vader_compound": reward}


def test_utterance_level_and_empty_reply(tiny_model):
    env = gym.make("TextGym/SentimentUtterance-v0", model=tiny_model).unwrapped
    env.reset(seed=0)
    end = min(env.end_ids)
    _, reward, terminated, _, info = env.step(np.full(env.max_reply_tokens, end))
    assert terminated and info["reply"] == "" and reward == 0.0
    env.reset(seed=0)
    ids = env.tokenizer(" dull and boring.", add_special_tokens=False)["input_ids"]
    _, reward, terminated, _, info = env.step(np.array(ids + [end] * (env.max_reply_tokens - len(ids))))
    assert terminated and reward == sentiment_reward(["dull and boring."])[0] < 0


def test_prompt_id_rebuilds_the_prompt_and_bad_options_raise(tiny_model):
    env = gym.make("TextGym/Sentiment-v0", model=tiny_model)
    _, first = env.reset(seed=5)
    _, again = env.reset(seed=6, options={"prompt_id": first["prompt_id"]})
    assert again["messages"] == first["messages"]
    test_id = next(key for key in review_prompts() if split_of(key) == "test")
    for options, message in [
        ({"prompt_id": "nope.nothing"}, "unknown prompt_id"),
        ({"prompt_id": test_id}, "unknown prompt_id"),
        ({"prompt_id": 7}, "unknown prompt_id 7: a prompt_id is a str, got int"),
        ({"seed": 1}, "unknown reset options"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.reset(options=options)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        SentimentTask(split="dev")
    with pytest.raises(ValueError, match="system_prompt is empty"):
        SentimentTask(system_prompt=" ")
    with pytest.raises(TypeError, match="SentimentEnv"):
        gym.make("TextGym/Sentiment-v0", model="tiny", dataset="imdb")
