"""Generation recorder, guard metrics, reference perplexity and the KL penalty wrapper."""

import json
import math

import gymnasium as gym
import numpy as np
import pytest

import textgym
from textgym.metrics.functional import perplexity
from textgym.wrappers import KLPenalty, RecordGenerations, ReferencePerplexity, read_records


def reply_action(env, text):
    base = env.unwrapped
    ids = base.tokenizer(text, add_special_tokens=False)["input_ids"] + [min(base.end_ids)]
    action = np.full(base.max_reply_tokens, base.pad_id, dtype=np.int64)
    action[: len(ids)] = ids
    return action


def make(tiny_model, **kwargs):
    return gym.make("TextGym/DialogueUtterance-v0", model=tiny_model, max_reply_tokens=16, **kwargs)


def test_recorder_appends_one_line_per_episode_and_never_overwrites(tmp_path, tiny_model):
    path = tmp_path / "runs" / "generations.jsonl"
    path.parent.mkdir()
    path.write_text('{"earlier": true}\n', encoding="utf-8")
    env = RecordGenerations(make(tiny_model, num_turns=1), path)
    _, info = env.reset(seed=7)
    prompt = info["messages"]
    _, reward, terminated, *_ = env.step(reply_action(env, "hello there"))
    assert terminated
    _, second_info = env.reset()
    env.step(reply_action(env, "again"))
    env.close()
    records = read_records(path)
    assert len(records) == 3 and records[0] == {"earlier": True}
    first, second = records[1], records[2]
    assert first["env_id"] == "TextGym/DialogueUtterance-v0" and first["env_version"] == 0
    assert first["textgym_version"] == textgym.__version__ and first["env_kwargs"]["model"] == tiny_model
    assert first["seed"] == 7 and first["episode_index"] == 0 and first["prompt"] == prompt
    assert first["prompt_id"] == info["prompt_id"] and first["generations"] == ["hello there"]
    assert first["turn_rewards"] == [reward] and first["reward"] == reward
    assert first["guard"]["distinct_1"] == 1.0 and first["end_reason"] == "task_over" and first["terminated"]
    assert second["seed"] == 7 and second["episode_index"] == 1 and second["prompt_id"] == second_info["prompt_id"]
    assert second["generations"] == ["again"]


def test_guard_metrics_flag_degenerate_output(tiny_model):
    env = make(tiny_model, num_turns=1)
    env.reset(seed=0)
    *_, info = env.step(reply_action(env, "great great great great great great"))
    guard = info["guard"]
    assert guard["distinct_1"] == pytest.approx(1 / 6) and guard["repetition_2"] == pytest.approx(4 / 5)
    assert guard["empty_replies"] == 0 and guard["unfinished_replies"] == 0
    assert set(guard["reward_components"]) == {"unigram_f1"}
    json.dumps(info, allow_nan=False)


def test_reference_perplexity_matches_the_metric(tiny_model):
    env = ReferencePerplexity(make(tiny_model, num_turns=1), reference_model=tiny_model)
    env.reset(seed=0)
    *_, info = env.step(reply_action(env, "I like trains"))
    context = env.unwrapped.tokenizer.apply_chat_template(
        info["messages"][:-1], tokenize=False, add_generation_prompt=True
    )
    expected = perplexity(["I like trains"], model=tiny_model, contexts=[context])[0]
    assert info["guard"]["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert info["guard"]["perplexity"] > 1.0


def test_kl_penalty_cross_entropy_and_exact_kl(tiny_model):
    plain = make(tiny_model, num_turns=1)
    plain.reset(seed=0)
    _, base_reward, *_ = plain.step(reply_action(plain, "I like trains"))

    env = KLPenalty(make(tiny_model, num_turns=1), coef=0.1, reference_model=tiny_model)
    env.reset(seed=0)
    _, reward, *_, info = env.step(reply_action(env, "I like trains"))
    penalty = info["kl_penalty"]
    assert penalty["kind"] == "cross_entropy" and penalty["reference_logprob"] < 0
    assert penalty["estimate"] == pytest.approx(-penalty["reference_logprob"])
    assert reward == pytest.approx(base_reward - 0.1 * penalty["estimate"])
    # Cross-check against the metric: sum log p = -tokens * log(perplexity).
    context = env.unwrapped.tokenizer.apply_chat_template(
        info["messages"][:-1], tokenize=False, add_generation_prompt=True
    )
    tokens = len(env.unwrapped.tokenizer("I like trains", add_special_tokens=False)["input_ids"])
    ppl = perplexity(["I like trains"], model=tiny_model, contexts=[context])[0]
    assert penalty["reference_logprob"] == pytest.approx(-tokens * math.log(ppl), rel=1e-5)

    # A policy identical to the reference has zero KL.
    same = KLPenalty(
        make(tiny_model, num_turns=1),
        coef=0.1,
        reference_model=tiny_model,
        policy_logprob=lambda messages, reply: penalty["reference_logprob"],
    )
    same.reset(seed=0)
    _, reward, *_, info = same.step(reply_action(same, "I like trains"))
    assert info["kl_penalty"]["kind"] == "kl" and reward == pytest.approx(base_reward)


@pytest.mark.parametrize("coef", [-1.0, float("nan"), "0.1"])
def test_kl_penalty_rejects_bad_coef(tiny_model, coef):
    with pytest.raises(ValueError, match="coef must be a finite number >= 0"):
        KLPenalty(make(tiny_model), coef=coef, reference_model=tiny_model)


def test_prompt_pool_draws_one_pool_per_seed_and_starts_only_its_prompts(tiny_model):
    from textgym.wrappers import PromptPool

    first = PromptPool(gym.make("TextGym/Sentiment-v0", model=tiny_model), 5, seed=3)
    second = PromptPool(gym.make("TextGym/Sentiment-v0", model=tiny_model), 5, seed=3)
    other = PromptPool(gym.make("TextGym/Sentiment-v0", model=tiny_model), 5, seed=4)
    assert first.pool == second.pool != other.pool and len(set(first.pool)) == 5
    split = first.unwrapped.task.prompt_ids()
    assert set(first.pool) <= set(split)
    # Envs of one pool reset with different seeds still start only prompts of the pool, and all of them.
    started = {first.reset(seed=11)[1]["prompt_id"], second.reset(seed=12)[1]["prompt_id"]}
    started |= {env.reset()[1]["prompt_id"] for env in (first, second) for _ in range(30)}
    assert started == set(first.pool)
    # A prompt asked for is started, pool or not.
    outside = next(p for p in split if p not in first.pool)
    assert first.reset(options={"prompt_id": outside})[1]["prompt_id"] == outside
    # A pool larger than the split is the split.
    assert sorted(PromptPool(gym.make("TextGym/Sentiment-v0", model=tiny_model), 10**6).pool) == sorted(split)


def test_prompt_pool_of_generated_problems_and_bad_sizes(tiny_model):
    from textgym.wrappers import PromptPool

    env = PromptPool(gym.make("TextGym/SparseCompletion-v0", model=tiny_model), 6, seed=0)
    assert len(set(env.pool)) == 6
    assert {env.reset()[1]["prompt_id"] for _ in range(40)} == set(env.pool)
    for size in (0, -2):
        with pytest.raises(ValueError, match=f"prompt pool size must be an integer >= 1, got {size}"):
            PromptPool(gym.make("TextGym/Sentiment-v0", model=tiny_model), size)


def test_prompt_pool_repeats_each_drawn_prompt_in_a_row(tiny_model):
    from textgym.wrappers import PromptPool

    env = PromptPool(gym.make("TextGym/Sentiment-v0", model=tiny_model), 8, seed=1, repeats=3)
    started = [env.reset(seed=5)[1]["prompt_id"]] + [env.reset()[1]["prompt_id"] for _ in range(11)]
    runs = [started[i : i + 3] for i in range(0, 12, 3)]
    assert all(len(set(run)) == 1 for run in runs) and len({run[0] for run in runs}) > 1
    # A prompt asked for does not count as a repeat; a new seed starts a new run of repeats.
    env.reset(seed=5)
    outside = next(p for p in env.unwrapped.task.prompt_ids() if p != started[0])
    assert env.reset(options={"prompt_id": outside})[1]["prompt_id"] == outside
    assert [env.reset()[1]["prompt_id"] for _ in range(2)] == [started[0]] * 2
    assert env.reset(seed=5)[1]["prompt_id"] == started[0]
    with pytest.raises(ValueError, match="prompt repeats must be an integer >= 1, got 0"):
        PromptPool(gym.make("TextGym/Sentiment-v0", model=tiny_model), 4, repeats=0)


def test_prompt_pool_holds_only_prompts_whose_first_context_fits(tiny_model):
    from textgym.wrappers import PromptPool

    env = gym.make("TextGym/Summarization-v0", model=tiny_model)
    task, chat = env.unwrapped.task, env.unwrapped.chat
    length = {
        prompt_id: len(chat.encode(task.reset(np.random.default_rng(0), {"prompt_id": prompt_id}).messages))
        for prompt_id in task.prompt_ids()
    }
    limit = int(np.median(list(length.values())))
    short = {prompt_id for prompt_id, tokens in length.items() if tokens <= limit}
    assert 0 < len(short) < len(length)
    pool = PromptPool(env, 12, seed=2, max_prompt_tokens=limit)
    assert len(pool.pool) == 12 and set(pool.pool) <= short
    assert pool.pool == PromptPool(gym.make("TextGym/Summarization-v0", model=tiny_model), 12, 2, 1, limit).pool
    assert {pool.reset()[1]["prompt_id"] for _ in range(60)} == set(pool.pool)
    # More than fit: the pool is every short prompt; none short enough: a clear error.
    assert set(PromptPool(env, 10**6, seed=2, max_prompt_tokens=limit).pool) == short
    with pytest.raises(ValueError, match="max_prompt_tokens 1: no prompt of the split"):
        PromptPool(env, 4, max_prompt_tokens=1)
    with pytest.raises(ValueError, match="max_prompt_tokens must be an integer >= 1, got 0"):
        PromptPool(env, 4, max_prompt_tokens=0)
