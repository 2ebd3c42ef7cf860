"""Dialogue: data, reward, multi-turn flow and what the agent may see."""

import json

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401
from textgym.data import SPLITS, split_of
from textgym.envs.dialogue import DialogueTask, chatterbot_conversations, reply_score, unigram_f1


@pytest.mark.parametrize(
    ("reply", "reference", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("paris!", "Paris.", 1.0),
        ("the the cat", "the cat", 2 * (2 / 3) * 1 / (2 / 3 + 1)),  # overlap 2: P = 2/3, R = 1
        ("a dog", "the cat", 0.0),
        ("", "the cat", 0.0),
    ],
)
def test_unigram_f1_hand_checked(reply, reference, expected):
    assert unigram_f1(reply, reference) == pytest.approx(expected)


def test_reply_score_takes_the_best_reference():
    assert reply_score("I am fine", ["Not bad.", "I am fine, thanks"]) == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_corpus_splits_are_disjoint_deterministic_and_nonempty():
    conversations = chatterbot_conversations()
    assert 250 < len(conversations) < 700  # ~1,950 exchanges grouped into 3-turn sessions
    ids = [c.conversation_id for c in conversations]
    assert len(set(ids)) == len(ids)
    sizes = {split: len(DialogueTask(split=split).conversations) for split in SPLITS}
    assert sum(sizes.values()) == len(conversations)
    assert sizes["validation"] > 15 and sizes["test"] > 15 and sizes["train"] > 5 * sizes["validation"]
    assert all(split_of(c.conversation_id) == "validation" for c in DialogueTask(split="validation").conversations)
    assert any(len(c.turns) >= 3 for c in conversations)


def utterance(env, text):
    tokenizer = env.unwrapped.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [min(env.unwrapped.end_ids)]
    action = np.full(env.unwrapped.max_reply_tokens, env.unwrapped.pad_id, dtype=np.int64)
    action[: len(ids)] = ids
    return action


def test_multi_turn_episode_scores_each_reply_and_shows_next_user_turn(tiny_model):
    env = gym.make("TextGym/DialogueUtterance-v0", model=tiny_model, split="validation", max_reply_tokens=24)
    task = env.unwrapped.task
    _, info = env.reset(seed=0)
    conversation = task.conversations[task._by_id[info["prompt_id"]]]
    while len(conversation.turns) < 3:  # pick a 3-turn conversation deterministically
        _, info = env.reset()
        conversation = task.conversations[task._by_id[info["prompt_id"]]]
    for turn in conversation.turns:
        # The references of the turn being answered never appear in what the agent sees.
        assert all(reference not in json.dumps(info) for reference in turn.references if len(reference) > 20)
        _, reward, terminated, truncated, info = env.step(utterance(env, turn.references[0]))
        assert reward == pytest.approx(1.0)
        assert info["reward_components"] == {"unigram_f1": pytest.approx(1.0)}
    assert terminated and not truncated and info["end_reason"] == "task_over"
    assert info["episode_reward"] == pytest.approx(3.0)
    assert [m["role"] for m in info["messages"]][:3] == ["system", "user", "assistant"]


def test_token_level_reward_only_at_reply_end_and_budget_truncates(tiny_model):
    env = gym.make("TextGym/Dialogue-v0", model=tiny_model, max_reply_tokens=5, num_turns=1)
    env.reset(seed=1)
    rewards, truncated = [], False
    for _ in range(5):
        _, reward, terminated, truncated, info = env.step(42)
        rewards.append(reward)
    # The one reply was cut: the task is over (terminated) and the budget cut it (truncated).
    assert rewards[:4] == [0.0] * 4 and truncated and terminated
    assert info["end_reason"] == "reply_token_budget" and info["reply_finished"] is False


def test_cut_reply_mid_conversation_truncates_at_the_next_turns_context(tiny_model):
    env = gym.make("TextGym/Dialogue-v0", model=tiny_model, max_reply_tokens=3, num_turns=3, split="validation")
    task = env.unwrapped.task
    _, info = env.reset(seed=0)
    while len(task.conversations[task._by_id[info["prompt_id"]]].turns) < 2:
        _, info = env.reset()
    for _ in range(3):
        observation, reward, terminated, truncated, info = env.step(42)
    assert truncated and not terminated and info["end_reason"] == "reply_token_budget"
    # The observation is the next user turn's context, the state to bootstrap from.
    assert info["messages"][-1]["role"] == "user" and info["turn"] == 1
    text = env.unwrapped.tokenizer.decode(observation["input_ids"][observation["attention_mask"] == 1])
    assert info["messages"][-1]["content"] in text


def test_token_level_observation_appends_each_token(tiny_model):
    env = gym.make("TextGym/Dialogue-v0", model=tiny_model, max_context_tokens=128)
    first, _ = env.reset(seed=0)
    second, *_ = env.step(1234)
    assert second["input_ids"][-1] == 1234 and second["attention_mask"].sum() == first["attention_mask"].sum() + 1
    np.testing.assert_array_equal(second["input_ids"][:-1][-10:], first["input_ids"][-10:])


def test_candidate_level_greedy_first_and_masks(tiny_model):
    env = gym.make("TextGym/DialogueCandidate-v0", model=tiny_model, num_candidates=4, max_reply_tokens=6)
    observation, info = env.reset(seed=0)
    assert len(info["candidates"]) == 4
    masks = env.unwrapped.action_masks()
    assert masks[0] and masks.dtype == bool
    assert masks.sum() == len(set(info["candidates"]))
    ids = observation["candidate_ids"].reshape(4, 6)
    mask = observation["candidate_mask"].reshape(4, 6)
    tokenizer = env.unwrapped.tokenizer
    for row, row_mask, text in zip(ids, mask, info["candidates"], strict=True):
        assert tokenizer.decode(row[row_mask == 1], skip_special_tokens=True).strip() == text
    _, reward, *_, step_info = env.step(2)
    assert step_info["reply"] == info["candidates"][2] and step_info["candidate"] == 2


def test_dailydialog_schema_adapter(tmp_path, tiny_model):
    records = [
        {"dialog": [f"hello {i}", f"hi there {i}", "how are you", "fine"], "act": [1, 2], "emotion": [0]}
        for i in range(60)
    ]
    path = tmp_path / "dd.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    task = DialogueTask(split="train", dataset=str(path))
    assert all(len(c.turns) == 2 for c in task.conversations)
    assert task.conversations[0].turns[1].references == ("fine",)
    env = gym.make("TextGym/DialogueUtterance-v0", model=tiny_model, dataset=str(path), max_reply_tokens=8)
    _, info = env.reset(seed=0)
    assert info["messages"][1]["content"].startswith("hello ")


def test_render_modes(tiny_model):
    env = gym.make("TextGym/Dialogue-v0", model=tiny_model, render_mode="ansi")
    _, info = env.reset(seed=0)
    text = env.render()
    assert info["messages"][1]["content"] in text and text.startswith("[system]")
