"""One task, every engine: for the same prompts and reply texts, every adapter gives TextEnv's rewards and ends.

For every registered id, episodes are played through ``TextEnv`` (token, candidate or
utterance actions, the tiny model) and their reply texts then replayed through TRL's
reward function, SkyRL's env, verl's ``textgym_agent`` loop (with a scripted server) and
verl's ``compute_score``. Each engine's part needs its engine: TRL and SkyRL are in the
default environment, verl in the second one (see .ci/run, which requires all three there).
"""

import gymnasium as gym
import numpy as np
import pytest
from engine_check import require_engine

import textgym
from textgym.envs.sparse_completion import generate_problem

ALL_IDS = textgym.env_ids()
SPLIT = "validation"
TEXTS = [
    "I love it, a wonderful film.",
    "Answer: 42",
    "the cat sat on the mat",
    "Hello there, fine thanks",
    "No.",
]


def spelled_action(env, text):
    """The action(s) that write ``text`` (its ids as data) and end the reply."""
    base = env.unwrapped
    ids = base.chat.encode_text(text)[: base.max_reply_tokens - 1] + [min(base.end_ids)]
    if base.granularity == "token":
        return ids
    action = np.full(base.max_reply_tokens, base.pad_id, dtype=np.int64)
    action[: len(ids)] = ids
    return [action]


def play(env_id, seed, tiny_model):
    """One TextEnv episode; its prompt, replies, turn rewards and whether each reply ended the episode."""
    env = gym.make(env_id, model=tiny_model, split=SPLIT, max_reply_tokens=24, num_candidates=3)
    _, info = env.reset(seed=seed)
    case = {"env_id": env_id, "prompt_id": info["prompt_id"], "prompt": info["messages"], "replies": [], "turns": []}
    texts = TEXTS[seed % len(TEXTS) :] + TEXTS
    # Right answers too, so that rewards of 1 (and Dialogue's partial F1) are compared, not only zeros.
    if env_id.startswith("TextGym/SparseCompletion") and seed % 2 == 0:
        texts = [f"Answer: {generate_problem(info['prompt_id']).answer}"]
    if env_id.startswith("TextGym/Dialogue"):
        task = env.unwrapped.task
        turns = task.conversations[task._by_id[info["prompt_id"]]].turns
        texts = [turn.references[0] if (i + seed) % 2 == 0 else TEXTS[i] for i, turn in enumerate(turns)]
    done = False
    while not done:
        if env.unwrapped.granularity == "candidate":
            actions = [len(case["replies"]) % 3]
        else:
            actions = spelled_action(env, texts[len(case["replies"])])
        for action in actions:
            _, reward, terminated, truncated, info = env.step(action)
            if "reply" in info:
                break
        done = terminated or truncated
        assert not truncated  # every scripted reply ends within its budget
        case["replies"].append(info["reply"])
        case["turns"].append((float(reward), bool(terminated)))
    case["messages"] = info["messages"]
    return case


@pytest.fixture(scope="module")
def cases(tiny_model):
    return [play(env_id, seed, tiny_model) for env_id in ALL_IDS for seed in (0, 1)]


def rows_needed(env_id):
    """Every prompt of a finite split; a generated task's first two (reset seeds 0 and 1, the cases' seeds)."""
    return 2 if "SparseCompletion" in env_id else None


def conversation_after_prompt(case):
    return case["messages"][len(case["prompt"]) :]


def total(case):
    return sum(reward for reward, _ in case["turns"])


def test_the_cases_cover_every_id_and_tell_rewards_apart(cases):
    assert {case["env_id"] for case in cases} == set(ALL_IDS)
    assert any(len(case["turns"]) > 1 for case in cases)  # multi-turn Dialogue
    assert any(total(case) == pytest.approx(1.0) for case in cases if "SparseCompletion" in case["env_id"])
    for task in ("Dialogue", "Summarization", "SparseCompletion", "Sentiment"):
        assert any(total(case) > 0.1 for case in cases if case["env_id"] == f"TextGym/{task}-v0"), task


def test_trl_reward_function_gives_textenv_rewards(cases):
    require_engine("trl")
    from textgym.integrations.trl import make_dataset, reward_function

    for case in cases:
        rows = make_dataset(case["env_id"], SPLIT, n=rows_needed(case["env_id"]))
        row = next(r for r in rows if r["prompt_id"] == case["prompt_id"])
        assert row["prompt"] == case["prompt"]
        completion = conversation_after_prompt(case) if len(case["turns"]) > 1 else case["replies"][0]
        (reward,) = reward_function(case["env_id"])([completion], prompt_id=[row["prompt_id"]], split=[row["split"]])
        assert reward == pytest.approx(total(case), abs=1e-6), case["env_id"]


def test_skyrl_env_gives_textenv_rewards_and_ends(cases):
    require_engine("skyrl-gym")
    import skyrl_gym

    from textgym.integrations.skyrl import dataset_rows, register

    register()
    for case in cases:
        row = next(
            r
            for r in dataset_rows(case["env_id"], SPLIT, n=rows_needed(case["env_id"]))
            if r["extra_info"]["prompt_id"] == case["prompt_id"]
        )
        extras = {key: value for key, value in row.items() if key not in ("prompt", "env_class")}
        env = skyrl_gym.make(row["env_class"], env_config={}, extras=extras)
        messages, _ = env.init(row["prompt"])
        assert messages == case["prompt"]
        for reply, (reward, terminated) in zip(case["replies"], case["turns"], strict=True):
            output = env.step(reply)
            assert output["reward"] == pytest.approx(reward, abs=1e-6), case["env_id"]
            assert output["done"] == terminated


def verl_rows(env_id):
    from textgym.integrations.verl import dataset_rows

    return dataset_rows(env_id, SPLIT, n=rows_needed(env_id))


def test_verl_agent_loop_gives_textenv_rewards_and_ends(cases, tiny_model):
    require_engine("verl")
    from verl_stand_in import play_row

    from textgym.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model)
    for case in cases:
        row = next(r for r in verl_rows(case["env_id"]) if r["extra_info"]["prompt_id"] == case["prompt_id"])
        output, server = play_row(row, case["replies"], tokenizer)
        assert output.reward_score == pytest.approx(total(case), abs=1e-6), case["env_id"]
        turn_scores = output.extra_fields["turn_scores"]
        assert turn_scores == pytest.approx([reward for reward, _ in case["turns"]], abs=1e-6)
        assert len(server.calls) == len(case["turns"])  # the episode ended where TextEnv's did


def test_verl_compute_score_gives_textenv_rewards_for_single_turn_tasks(cases):
    require_engine("verl")
    from textgym.integrations.verl import compute_score

    single = [case for case in cases if "Dialogue" not in case["env_id"]]
    assert single
    for case in single:
        row = next(r for r in verl_rows(case["env_id"]) if r["extra_info"]["prompt_id"] == case["prompt_id"])
        score = compute_score(
            row["data_source"], case["replies"][0], row["reward_model"]["ground_truth"], row["extra_info"]
        )
        assert score == pytest.approx(total(case), abs=1e-6), case["env_id"]
