"""Bad input gets a clear error naming the bad value, never a crash deep inside torch."""

import json

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401
from textgym.models import ModelNotFoundError


@pytest.fixture
def token_env(tiny_model):
    env = gym.make("TextGym/Dialogue-v0", model=tiny_model)
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (None, TypeError, "got None"),
        (49152, ValueError, "49152 is out of range [0, 49152)"),
        (-1, ValueError, "-1 is out of range"),
        (3.0, TypeError, "got float: 3.0"),
        (float("nan"), ValueError, "NaN"),
        (True, TypeError, "got bool"),
        ("7", TypeError, "got str: '7'"),
        (np.array([1, 2]), ValueError, "shape (2,)"),
        (np.array([np.nan]), ValueError, "NaN"),
        (np.array(2.5), TypeError, "got float: 2.5"),
    ],
)
def test_token_actions(token_env, action, error, message):
    with pytest.raises(error) as raised:
        token_env.unwrapped.step(action)
    assert message in str(raised.value)


def test_token_action_accepts_numpy_integers(token_env):
    for action in (np.int64(5), np.array(5), np.array([5], dtype=np.int32)):
        token_env.unwrapped.step(action)


@pytest.mark.parametrize(
    ("action", "error", "message"),
    [
        (None, TypeError, "got None"),
        (np.zeros(3, dtype=np.int64), ValueError, "shape (8,), got (3,)"),
        (np.zeros(8, dtype=np.float32), TypeError, "dtype float32"),
        (np.full(8, np.nan), ValueError, "NaN at index 0"),
        (np.array([0, 0, 0, 99999, 0, 0, 0, 0]), ValueError, "action[3] = 99999 is out of range"),
    ],
)
def test_utterance_actions(tiny_model, action, error, message):
    env = gym.make("TextGym/DialogueUtterance-v0", model=tiny_model, max_reply_tokens=8)
    env.reset(seed=0)
    with pytest.raises(error) as raised:
        env.unwrapped.step(action)
    assert message in str(raised.value)


def test_candidate_action_out_of_range(tiny_model):
    env = gym.make("TextGym/DialogueCandidate-v0", model=tiny_model, num_candidates=3, max_reply_tokens=4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action 3 is out of range \[0, 3\)"):
        env.unwrapped.step(3)


def test_step_before_reset_and_after_end(tiny_model):
    env = gym.make("TextGym/DialogueUtterance-v0", model=tiny_model, max_reply_tokens=4, num_turns=1).unwrapped
    with pytest.raises(gym.error.ResetNeeded, match="before reset"):
        env.step(np.zeros(4, dtype=np.int64))
    env.reset(seed=0)
    *_, terminated, truncated, info = env.step(np.zeros(4, dtype=np.int64))
    assert terminated and not truncated and info["end_reason"] == "task_over"
    with pytest.raises(gym.error.ResetNeeded, match="after the episode ended"):
        env.step(np.zeros(4, dtype=np.int64))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"colour": "red"}, TypeError, "colour"),
        ({"granularity": "word"}, ValueError, "'word'"),
        ({"max_context_tokens": 0}, ValueError, "max_context_tokens must be an integer >= 8, got 0"),
        ({"max_reply_tokens": 2.5}, TypeError, "max_reply_tokens must be an integer, got float: 2.5"),
        ({"split": "dev"}, ValueError, "'dev'"),
        ({"num_turns": 0}, ValueError, "num_turns must be an integer >= 1, got 0"),
        ({"render_mode": "rgb_array"}, ValueError, "'rgb_array'"),
    ],
)
def test_bad_constructor_arguments(tiny_model, kwargs, error, message):
    with pytest.raises(error) as raised:
        gym.make("TextGym/Dialogue-v0", model=tiny_model, **kwargs)
    assert message in str(raised.value)


def test_missing_model_path_is_named(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        gym.make("TextGym/Dialogue-v0", model=missing)


def test_unknown_reset_option_and_prompt_id(token_env):
    with pytest.raises(ValueError, match="unknown reset options \\['colour'\\]"):
        token_env.reset(options={"colour": 1})
    with pytest.raises(ValueError, match="unknown prompt_id 'nope'"):
        token_env.reset(options={"prompt_id": "nope"})


def write_dialogues(path, dialogues):
    path.write_text("\n".join(json.dumps({"dialog": d}) for d in dialogues), encoding="utf-8")
    return str(path)


def env_on(tmp_path, tiny_model, dialogue, **kwargs):
    # Many copies so that every split has records; every copy is the same bad conversation.
    source = write_dialogues(tmp_path / "d.jsonl", [dialogue] * 50)
    return gym.make("TextGym/DialogueUtterance-v0", model=tiny_model, dataset=source, **kwargs)


@pytest.mark.parametrize(
    ("utterance", "message"),
    [
        ("", "empty or whitespace only"),
        ("   \n\t", "empty or whitespace only"),
        ("hello\x00world", "control character '\\x00'"),
        ("bad \ud800 surrogate", "lone surrogate"),
    ],
)
def test_bad_context_text_is_rejected_by_name(tmp_path, tiny_model, utterance, message):
    with pytest.raises(ValueError) as raised:
        env_on(tmp_path, tiny_model, [utterance, "a reply"])
    assert message in str(raised.value) and "record 0 utterance 0" in str(raised.value)


@pytest.mark.parametrize(
    "utterance",
    ["Family: 👨‍👩‍👧‍👦 and 👩🏽‍💻 at work", "שלום, מה שלומך? مرحبا كيف حالك"],
)
def test_unicode_contexts_round_trip(tmp_path, tiny_model, utterance):
    env = env_on(tmp_path, tiny_model, [utterance, "a reply"])
    observation, info = env.reset(seed=0)
    assert info["messages"][-1]["content"] == utterance
    ids = observation["input_ids"][observation["attention_mask"] == 1]
    assert utterance in env.unwrapped.tokenizer.decode(ids)


def test_huge_context_is_truncated_on_the_left_and_flagged(tmp_path, tiny_model):
    budget = 64
    long_utterance = " ".join(f"word{i}" for i in range(100 * budget))
    env = env_on(tmp_path, tiny_model, [long_utterance, "a reply"], max_context_tokens=budget, max_reply_tokens=4)
    observation, info = env.reset(seed=0)
    assert info["context_truncated"] is True
    assert observation["attention_mask"].sum() == budget
    text = env.unwrapped.tokenizer.decode(observation["input_ids"])
    assert text.rstrip().endswith("assistant") and f"word{100 * budget - 1}" in text
    _, reward, *_ = env.step(np.zeros(4, dtype=np.int64))
    assert np.isfinite(reward)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("[]", "has no records"),
        ("{not json", "not valid JSON"),
        ('{"a": 1}\n[1, 2]', "record 1 is not a JSON object"),
        ('{"text": "hi"}', "none of the fields ('dialog', 'utterances', 'turns')"),
        ('{"dialog": ["only one"]}', "list of >= 2 utterances"),
    ],
)
def test_bad_dataset_files(tmp_path, tiny_model, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        gym.make("TextGym/Dialogue-v0", model=tiny_model, dataset=str(path))
    assert message in str(raised.value) and "bad.jsonl" in str(raised.value)


def test_missing_dataset_file(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="does not exist"):
        gym.make("TextGym/Dialogue-v0", model=tiny_model, dataset=str(tmp_path / "none.jsonl"))
