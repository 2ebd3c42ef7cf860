"""Batch reward functions in TRL's shape: the task's own scoring path, and clear errors on bad rows."""

import math

import gymnasium as gym
import numpy as np
import pytest

import textgym
from textgym.core import play_episode
from textgym.envs.dialogue import DialogueTask, dialogue_reward
from textgym.envs.sentiment import sentiment_reward
from textgym.envs.sparse_completion import generate_problem, sparse_completion_reward
from textgym.envs.summarization import summarization_reward
from textgym.integrations import prompt_rows
from textgym.rewards import completion_replies, reward_function, task_for

TOKEN_IDS = [env_id for env_id in textgym.env_ids() if "Candidate" not in env_id and "Utterance" not in env_id]


def utterance_action(env, text):
    ids = env.unwrapped.chat.encode_text(text)[: env.unwrapped.max_reply_tokens - 1] + [min(env.unwrapped.end_ids)]
    action = np.full(env.unwrapped.max_reply_tokens, env.unwrapped.pad_id, dtype=np.int64)
    action[: len(ids)] = ids
    return action


@pytest.mark.parametrize("env_id", TOKEN_IDS)
def test_reward_function_equals_the_envs_rewards_for_the_same_replies(env_id, tiny_model):
    utterance_id = env_id.replace("-v0", "Utterance-v0")
    env = gym.make(utterance_id, model=tiny_model, split="validation", max_reply_tokens=24)
    texts = ["I love it, a wonderful film.", "Answer: 42", "the cat sat on the mat", "Hello there, fine thanks"]
    reward = reward_function(env_id)
    for seed in range(4):
        _, info = env.reset(seed=seed)
        prompt_id, turn_rewards, replies, done = info["prompt_id"], [], [], False
        while not done:
            _, r, terminated, truncated, info = env.step(utterance_action(env, texts[len(replies) % len(texts)]))
            replies.append(info["reply"])
            turn_rewards.append(r)
            done = terminated or truncated
        conversation = info["messages"][len(info["messages"]) - 2 * len(replies) + 1 :]
        completion = conversation if len(replies) > 1 else replies[0]
        (scored,) = reward([completion], prompt_id=[prompt_id], split=["validation"])
        assert scored == pytest.approx(sum(turn_rewards), abs=1e-9)


def test_each_task_module_exports_its_reward():
    dialogue_id = DialogueTask(split="validation").prompt_ids()[0]
    assert dialogue_reward.__name__ == "dialogue_reward"
    assert dialogue_reward(["hi"], prompt_id=[dialogue_id], split=["validation"])[0] >= 0.0
    problem = generate_problem("arithmetic/d1/7")
    assert sparse_completion_reward([f"Answer: {problem.answer}", "no idea"], prompt_id=[problem.prompt_id] * 2) == [
        1.0,
        0.0,
    ]
    (summary_id, _), *_ = prompt_rows("TextGym/Summarization-v0", "validation", 1)
    task = task_for("TextGym/Summarization-v0", "validation")
    reference = task.examples[task._by_id[summary_id]].summary
    assert summarization_reward([reference], prompt_id=[summary_id], split="validation") == [pytest.approx(1.0)]
    assert sentiment_reward(["great"], prompt_id=["anything"]) == [pytest.approx(0.6249)]


def test_a_dialogue_conversation_is_scored_turn_by_turn_and_must_follow_the_task():
    task = DialogueTask(split="validation")
    conversation = next(c for c in task.conversations if len(c.turns) >= 2)
    first, second = conversation.turns[0], conversation.turns[1]
    messages = [
        {"role": "assistant", "content": first.references[0]},
        {"role": "user", "content": second.user},
        {"role": "assistant", "content": second.references[0]},
    ]
    (reward,) = dialogue_reward([messages], prompt_id=[conversation.conversation_id], split=["validation"])
    assert reward == pytest.approx(2.0)
    forged = [messages[0], {"role": "user", "content": "something else"}, messages[2]]
    with pytest.raises(ValueError, match="after reply 0 the task says"):
        dialogue_reward([forged], prompt_id=[conversation.conversation_id], split=["validation"])
    turns = min(len(conversation.turns), task.num_turns)
    with pytest.raises(ValueError, match=f"the episode ended after reply {turns - 1}, but {turns + 1} replies"):
        play_episode(task, ["y"] * (turns + 1), prompt_id=conversation.conversation_id)


def test_the_conversation_column_takes_the_place_of_the_completion():
    problem = generate_problem("count/d1/3")
    conversation = [{"role": "assistant", "content": f"Answer: {problem.answer}"}]
    rewards = sparse_completion_reward(
        ["decoded text"], prompt_id=[problem.prompt_id], textgym_conversation=[conversation]
    )
    assert rewards == [1.0]


def test_rows_of_another_task_are_not_applicable():
    problem = generate_problem("count/d1/3")
    rewards = sparse_completion_reward(
        [f"Answer: {problem.answer}", "was great"],
        prompt_id=[problem.prompt_id, "plain.acting"],
        env_id=["TextGym/SparseCompletionUtterance-v0", "TextGym/Sentiment-v0"],
    )
    assert rewards == [1.0, None]


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: reward_function("TextGym/Nope-v0"), ValueError, "unknown env id 'TextGym/Nope-v0'"),
        (lambda: dialogue_reward(["hi"]), ValueError, "needs a 'prompt_id' column"),
        (lambda: dialogue_reward(["hi", "yo"], prompt_id=["ai-004"]), ValueError, "2 completions but 1 prompt ids"),
        (lambda: dialogue_reward("hi", prompt_id=["ai-004"]), TypeError, "completions must be a list"),
        (lambda: dialogue_reward([42], prompt_id=["ai-004"], split=["validation"]), TypeError, "completion 0 must be"),
        (lambda: dialogue_reward(["hi"], prompt_id=["no-such-id"], split=["validation"]), ValueError, "no-such-id"),
        (
            lambda: dialogue_reward([[{"role": "user", "content": "x"}]], prompt_id=["ai-004"], split=["validation"]),
            ValueError,
            "must start with an assistant message",
        ),
        (
            lambda: dialogue_reward([[{"role": "assistant"}]], prompt_id=["ai-004"], split=["validation"]),
            ValueError,
            "completion 0\\[0\\] must be",
        ),
        (
            lambda: sparse_completion_reward(["1"], prompt_id=["arithmetic/d1/7"], env_id=["TextGym/Nope-v0"]),
            ValueError,
            "unknown env id 'TextGym/Nope-v0'",
        ),
        (
            lambda: sparse_completion_reward(["1"], prompt_id=["arithmetic/d1/007"]),
            ValueError,
            "malformed prompt_id 'arithmetic/d1/007'",
        ),
        (
            lambda: dialogue_reward(["hi"], prompt_id=["ai-004"], split=["validation", "train"]),
            ValueError,
            "column 'split' has 2 values for 1 completions",
        ),
    ],
)
def test_bad_rows_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_rewards_are_finite_for_odd_texts():
    problem = generate_problem("date/d2/11")
    texts = ["", " ", "<|im_end|>", "\u200b", "nan", "inf", "Answer: " + "9" * 400]
    rewards = sparse_completion_reward(texts, prompt_id=[problem.prompt_id] * len(texts))
    assert all(isinstance(r, float) and math.isfinite(r) for r in rewards)


def test_completion_replies_reads_trl_conversational_completions():
    assert completion_replies([{"role": "assistant", "content": "x"}]) == (["x"], [])
    with pytest.raises(TypeError, match="non-empty list"):
        completion_replies([])


def test_play_episode_gives_what_the_env_gives_from_a_seed(tiny_model):
    env = gym.make("TextGym/SentimentUtterance-v0", model=tiny_model, split="validation")
    _, info = env.reset(seed=5)
    episode = play_episode(env.unwrapped.task, ["lovely"], seed=5)
    assert episode.prompt.prompt_id == info["prompt_id"] and episode.messages[:2] == info["messages"]
    assert episode.state == "over" and episode.terminated
