"""textgym.integrations.trl: datasets, rewards and multi-turn rollouts in a real GRPOTrainer (tiny model, CPU)."""

import copy
import importlib
import importlib.metadata
import json
import math
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from engine_check import require_engine

require_engine("trl")

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

import textgym  # noqa: E402
from textgym.core import play_episode  # noqa: E402
from textgym.envs.sentiment import sentiment_reward  # noqa: E402
from textgym.integrations import EngineVersionError, EpisodeSpec, prompt_rows  # noqa: E402
from textgym.integrations.trl import make_dataset, reward_function, rollout_function  # noqa: E402
from textgym.models import resolve_model_path  # noqa: E402
from textgym.rewards import task_for  # noqa: E402

SENTIMENT, DIALOGUE = "TextGym/Sentiment-v0", "TextGym/Dialogue-v0"
COLUMNS = ["prompt", "prompt_id", "env_id", "split", "textgym_episode"]
# Words the biased tiny model favours: VADER and the Dialogue references score some of them.
WORDS = [" great", " good", " bad", " terrible", " love", " I", " am", " fine", " you", " hello", " yes", " thanks"]
BUDGET = 8


def biased_tiny_model(tokenizer):
    """The tiny random model, its logits pinned so the end token has probability 0.3 and WORDS together 0.55.

    A random model over 49k tokens would never end a reply nor write a word a reward
    scores, which would leave the multi-turn and reward checks nothing to check.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny"), dtype=torch.float32)
    word_ids = [tokenizer.encode(word, add_special_tokens=False) for word in WORDS]
    assert all(len(ids) == 1 for ids in word_ids), word_ids
    ids = torch.tensor([tokenizer.eos_token_id] + [ids[0] for ids in word_ids])
    shares = torch.tensor([0.3] + [0.55 / len(WORDS)] * len(WORDS))
    log_ratio = torch.log(shares / (1 - shares.sum()))

    def pin(_module, _inputs, logits):
        pinned = logits.clone()
        pinned[..., ids] = torch.logsumexp(logits.detach(), dim=-1, keepdim=True) + log_ratio
        return pinned

    model.lm_head.register_forward_hook(pin)
    return model


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(tiny_model))


def grpo_config(tmp_path, **overrides):
    options = {
        "output_dir": str(tmp_path / "grpo"),
        "per_device_train_batch_size": 4,
        "num_generations": 2,
        "max_completion_length": BUDGET,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-4,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        "bf16": False,
    }
    return GRPOConfig(**{**options, **overrides})


class Recorder:
    """A reward function that calls another and keeps what TRL passed and what it returned."""

    def __init__(self, reward):
        self.reward, self.calls = reward, []
        self.__name__ = reward.__name__

    def __call__(self, completions, **columns):
        rewards = self.reward(completions, **columns)
        self.calls.append({"completions": completions, **columns, "rewards": rewards})
        return rewards


# -- make_dataset --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "n"),
    [(DIALOGUE, None), ("TextGym/SummarizationUtterance-v0", None), (SENTIMENT, None), (SENTIMENT, 3)]
    + [("TextGym/SparseCompletion-v0", 5)],
)
def test_make_dataset_holds_every_prompt_of_the_split_in_trls_conversational_format(env_id, n):
    split = "validation"
    dataset = make_dataset(env_id, split, n)
    task = task_for(env_id, split)
    expected = prompt_rows(env_id, split, n)
    assert dataset.column_names == COLUMNS
    assert len(dataset) == (n if n is not None else len(task.prompt_ids()))
    assert [(row["prompt_id"], row["prompt"]) for row in dataset] == expected
    assert set(dataset["env_id"]) == {env_id} and set(dataset["split"]) == {split}
    assert dataset[0]["prompt"][-1]["role"] == "user"
    for row in dataset:
        spec = EpisodeSpec.from_json(row["textgym_episode"])
        assert (spec.env_id, spec.prompt_id, spec.split, spec.task_options) == (env_id, row["prompt_id"], split, {})
        assert spec.textgym_version == textgym.__version__
        assert spec.start().prompt.messages == row["prompt"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("TextGym/Nope-v0", "train"), "unknown env id 'TextGym/Nope-v0'"),
        ((SENTIMENT, "dev"), "split must be one of .* got 'dev'"),
        (("TextGym/SparseCompletion-v0", "train"), "generates its prompts without end; pass n"),
        ((SENTIMENT, "train", 0), "n must be an integer >= 1, got 0"),
        ((SENTIMENT, "validation", 10_000), "n=10000 but TextGym/Sentiment-v0 split 'validation' has only"),
    ],
)
def test_make_dataset_rejects_bad_input_naming_the_value(args, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(*args)


def test_make_dataset_rejects_a_non_integer_n_naming_it():
    with pytest.raises(TypeError, match="n must be an integer, got float: 2.0"):
        make_dataset(SENTIMENT, "train", 2.0)


def test_importing_the_adapter_with_trl_outside_the_supported_range_names_the_version(monkeypatch):
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.15.2" if name == "trl" else real_version(name))
    monkeypatch.delitem(sys.modules, "textgym.integrations.trl")
    with pytest.raises(EngineVersionError, match=r"trl 1\.15\.2 is installed, but .* supports trl>=1\.16,<1\.17"):
        importlib.import_module("textgym.integrations.trl")


# -- reward_function -----------------------------------------------------------------------


def test_reward_function_scores_dataset_rows_as_the_task_does():
    dataset = make_dataset(SENTIMENT, "validation", n=3)
    reward = reward_function(SENTIMENT)
    texts = ["was great.", "was terrible.", "was a film."]
    completions = [[{"role": "assistant", "content": text}] for text in texts]
    rows = {name: dataset[name] for name in dataset.column_names if name != "prompt"}
    assert reward.__name__ == "sentiment_reward"
    assert reward(completions, **rows) == pytest.approx(sentiment_reward(texts))
    # The rollout's textgym_prompt_id takes the place of the row's prompt_id.
    dialogue = make_dataset(DIALOGUE, "validation", n=2)
    first, second = dialogue["prompt_id"]
    with pytest.raises(ValueError, match="unknown prompt_id 'nope' in Dialogue split 'validation'"):
        reward_function(DIALOGUE)(["hi"], prompt_id=[first], textgym_prompt_id=["nope"], split=["validation"])
    scored = reward_function(DIALOGUE)(["hi"], prompt_id=[first], textgym_prompt_id=[second], split=["validation"])
    assert scored == [play_episode(task_for(DIALOGUE, "validation"), ["hi"], prompt_id=second).total_reward]


def other_version_spec():
    spec = json.loads(make_dataset(SENTIMENT, "validation", n=1)["textgym_episode"][0])
    return json.dumps({**spec, "textgym_version": "0.0.1"})


@pytest.mark.parametrize(
    ("completions", "columns", "error", "match"),
    [
        (["x"], {"prompt_id": ["nope.nope"], "split": ["validation"]}, ValueError, "unknown prompt_id 'nope.nope'"),
        ("great", {"prompt_id": ["a"]}, TypeError, "completions must be a list, got str"),
        (["a", "b"], {"prompt_id": ["plain.acting"]}, ValueError, "got 2 completions but 1 prompt ids"),
        ([42], {"prompt_id": ["plain.acting"], "split": ["train"]}, TypeError, "completion 0 must be a str"),
        ([[{"role": "user", "content": "hi"}]], {"prompt_id": ["plain.acting"]}, ValueError, "start with an assistant"),
        (["x"], {}, ValueError, "needs a 'prompt_id' column"),
        (["x"], {"prompt_id": ["x"], "textgym_episode": [other_version_spec()]}, ValueError, "textgym 0.0.1"),
        (["x"], {"prompt_id": ["x"], "textgym_episode": ["{not json"]}, ValueError, "not valid JSON"),
    ],
)
def test_reward_function_rejects_malformed_rows_naming_the_value(completions, columns, error, match):
    with pytest.raises(error, match=match):
        reward_function(SENTIMENT)(completions, **columns)


def test_reward_function_checks_each_rows_spec_against_the_row():
    row = make_dataset(SENTIMENT, "validation", n=2)
    specs, (first, second) = row["textgym_episode"], row["prompt_id"]
    with pytest.raises(ValueError, match=f"prompt_id {second!r} differs from its episode spec's {first!r}"):
        reward_function(SENTIMENT)(["x", "y"], prompt_id=[second, first], textgym_episode=specs, split="validation")
    spec = json.dumps({**json.loads(specs[0]), "task_options": {"system_prompt": "Be kind."}})
    with pytest.raises(ValueError, match="sets task options"):
        reward_function(SENTIMENT)(["x"], prompt_id=[first], textgym_episode=[spec], split="validation")
    with pytest.raises(ValueError, match="unknown env id 'TextGym/Nope-v0'"):
        reward_function("TextGym/Nope-v0")


def test_rows_of_another_env_get_none_never_nan_or_zero():
    rewards = reward_function(SENTIMENT)(
        ["great", "great"], prompt_id=["plain.acting", "ai-004"], env_id=[SENTIMENT, DIALOGUE], split="train"
    )
    assert rewards[0] == pytest.approx(sentiment_reward(["great"])[0]) and rewards[0] > 0
    assert rewards[1] is None


# -- a real GRPOTrainer --------------------------------------------------------------------


def test_grpo_trainer_trains_on_sentiment_through_make_dataset_and_reward_function(tmp_path, tokenizer):
    dataset = make_dataset(SENTIMENT, "train")
    prompt_of = dict(zip(dataset["prompt_id"], dataset["prompt"], strict=True))
    reward = Recorder(reward_function(SENTIMENT))
    trainer = GRPOTrainer(
        model=biased_tiny_model(tokenizer),
        processing_class=tokenizer,
        reward_funcs=reward,
        args=grpo_config(tmp_path),
        train_dataset=dataset,
    )
    trainer.train()

    assert trainer.state.global_step == 2 and len(reward.calls) == 2
    task = task_for(SENTIMENT, "train")
    every_reward = []
    for step, call in enumerate(reward.calls, start=1):
        texts = [completion[0]["content"] for completion in call["completions"]]
        assert len(texts) == 4 and call["split"] == ["train"] * 4 and call["env_id"] == [SENTIMENT] * 4
        # TRL scored the completions it generated, each with its own row's prompt id.
        assert texts == tokenizer.batch_decode(call["completion_ids"], skip_special_tokens=True)
        assert all(prompt == prompt_of[pid] for prompt, pid in zip(call["prompts"], call["prompt_id"], strict=True))
        expected = [
            play_episode(task, [text], prompt_id=pid).total_reward
            for text, pid in zip(texts, call["prompt_id"], strict=True)
        ]
        assert call["rewards"] == pytest.approx(expected, abs=1e-12)
        assert call["rewards"] == pytest.approx(sentiment_reward(texts), abs=1e-12)
        # ... and trained on those rewards.
        logged = next(entry for entry in trainer.state.log_history if entry.get("step") == step)
        assert logged["rewards/sentiment_reward/mean"] == pytest.approx(np.mean(call["rewards"]), abs=1e-6)
        every_reward += call["rewards"]
    assert all(math.isfinite(r) for r in every_reward) and len(set(every_reward)) > 1  # not all 0


def context_of(observation):
    return observation["input_ids"][observation["attention_mask"] == 1].tolist()


def test_dialogue_rollout_plays_whole_episodes_token_in_token_out_inside_grpo_trainer(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")  # TRL warns that rollout_func is experimental
    full = make_dataset(DIALOGUE, "train")
    hello = [i for i, row in enumerate(full) if row["prompt"][-1]["content"] == "Hello"]
    assert len(hello) == 2  # two conversations open with "Hello": the rollout must say which one it played
    dataset = full.select(hello + [0, 1])
    hello_ids = [full[i]["prompt_id"] for i in hello]
    id_of = {json.dumps(row["prompt"]): row["prompt_id"] for row in full}

    rollout, calls = rollout_function(DIALOGUE, "train"), []
    model = biased_tiny_model(tokenizer)
    initial = copy.deepcopy(model)

    def recorded_rollout(prompts, trainer):
        output = rollout(prompts, trainer)
        calls.append((copy.deepcopy(prompts), output))
        return output

    reward = Recorder(reward_function(DIALOGUE))
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward,
        args=grpo_config(tmp_path),
        train_dataset=dataset,
        rollout_func=recorded_rollout,
    )
    trainer.train()
    assert trainer.state.global_step == 2 and len(calls) == 2 and len(reward.calls) == 2

    env = gym.make("TextGym/Dialogue-v0", model="tiny", split="train", max_reply_tokens=BUDGET, max_context_tokens=4096)
    multi_turn = 0
    hello_played = set()
    for step, ((prompts, output), call) in enumerate(zip(calls, reward.calls, strict=True)):
        # TRL passes each prompt num_generations times in a row; the rollout returns one completion for each.
        assert len(prompts) == 4 and prompts[0] == prompts[1] and prompts[2] == prompts[3]
        assert {len(output[key]) for key in output} == {4}
        played = output["textgym_prompt_id"]
        assert played[0] == played[1] and played[2] == played[3]
        for index in range(4):
            prompt_ids, ids = output["prompt_ids"][index], output["completion_ids"][index]
            mask, logprobs = output["env_mask"][index], output["logprobs"][index]
            assert len(ids) == len(mask) == len(logprobs) and mask[0] == 1
            assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0)
            assert all(lp < 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 1)
            if prompts[index][-1]["content"] == "Hello":  # the split's Hello conversations in turn, step by step
                assert played[index] == hello_ids[step % 2]
                hello_played.add(played[index])
            else:
                assert played[index] == id_of[json.dumps(prompts[index])]
            # Replay the generated tokens (env_mask 1) through TextEnv at token level: its context
            # after each reply must be exactly the ids TRL trains on (the env's user turns are the
            # env_mask-0 ids), and it must end where the rollout ended, with the same reward.
            observation, info = env.reset(options={"prompt_id": played[index]})
            assert info["messages"] == prompts[index] and context_of(observation) == prompt_ids
            env_rewards, done, replies = [], False, 0
            for position, (token, generated) in enumerate(zip(ids, mask, strict=True)):
                if not generated:
                    continue
                assert not done, "the rollout generated past the end of the env's episode"
                observation, r, terminated, truncated, info = env.step(token)
                done = terminated or truncated
                if "reply" in info:
                    env_rewards.append(r)
                    replies += 1
                    if not done:
                        resumes = mask.index(1, position + 1)
                        assert resumes > position + 1  # the env's user turn sits between the replies
                        assert context_of(observation) == prompt_ids + ids[:resumes]
            assert done and replies == len(env_rewards) >= 1
            multi_turn += replies > 1
            conversation = output["textgym_conversation"][index]
            assert conversation == info["messages"][len(prompts[index]) : len(prompts[index]) + len(conversation)]
            assert [m["content"] for m in conversation if m["role"] == "assistant"] == [
                m["content"] for m in info["messages"][len(prompts[index]) :] if m["role"] == "assistant"
            ]
            assert call["rewards"][index] == pytest.approx(sum(env_rewards), abs=1e-12)
            assert call["textgym_prompt_id"][index] == played[index]
    assert hello_played, "no step drew a Hello row: the ambiguous prompt was not checked"
    assert multi_turn >= 2, "no episode went past its first reply: nothing token-in/token-out was checked"

    # The logprobs are the sampling distribution's (temperature 1) under the model that sampled them.
    prompts, output = calls[0]
    with torch.no_grad():
        for prompt_ids, ids, mask, logprobs in zip(
            output["prompt_ids"], output["completion_ids"], output["env_mask"], output["logprobs"], strict=True
        ):
            logits = initial(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1]
            expected = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
            generated = torch.tensor(mask, dtype=torch.bool)
            assert torch.allclose(torch.tensor(logprobs)[generated], expected[generated], atol=1e-4)


def test_rollout_function_rejects_bad_input_naming_the_value(tmp_path):
    from types import SimpleNamespace

    rollout = rollout_function(DIALOGUE, "validation")
    prompt = make_dataset(DIALOGUE, "validation", n=1)[0]["prompt"]

    def trainer(**overrides):
        return SimpleNamespace(args=grpo_config(tmp_path, **overrides), state=SimpleNamespace(global_step=0))

    with pytest.raises(ValueError, match="GRPOConfig top_p=0.9 is not supported"):
        rollout([prompt, prompt], trainer(top_p=0.9))
    with pytest.raises(ValueError, match="GRPOConfig repetition_penalty=1.2 is not supported"):
        rollout([prompt, prompt], trainer(repetition_penalty=1.2))
    with pytest.raises(ValueError, match="generation_kwargs"):
        rollout([prompt, prompt], trainer(generation_kwargs={"num_beams": 2}))
    other = [prompt[0], {"role": "user", "content": "What is the airspeed of an unladen swallow?"}]
    with pytest.raises(ValueError, match="prompt not in TextGym/Dialogue-v0 split 'validation' .*unladen swallow"):
        rollout([other, other], trainer())
    with pytest.raises(ValueError, match="rollout prompt"):
        rollout(["Hello", "Hello"], trainer())
    with pytest.raises(ValueError, match="max_reply_tokens must be an integer >= 1, got 0"):
        rollout_function(DIALOGUE, "train", max_reply_tokens=0)
    with pytest.raises(ValueError, match="unknown env id 'TextGym/Nope-v0'"):
        rollout_function("TextGym/Nope-v0")


def test_the_throughput_benchmarks_trl_arm_trains_through_the_public_api(monkeypatch, tiny_model):
    import importlib.util
    from pathlib import Path

    import textgym.integrations.trl as adapter

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "trl_throughput.py"
    spec = importlib.util.spec_from_file_location("trl_throughput", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    made, built = [], []
    monkeypatch.setattr(adapter, "make_dataset", lambda *a: made.append(a) or make_dataset(*a))
    monkeypatch.setattr(adapter, "reward_function", lambda *a: built.append(a) or reward_function(*a))

    args = benchmark.parse_args([f"--model={tiny_model}", "--seconds=0", "--arms=trl", "--max-new-tokens=4"])
    result = benchmark.run_trl(args)  # a zero budget stops after the first optimizer step
    assert made == [(SENTIMENT, "train")] and built == [(SENTIMENT,)]
    assert result["updates"] == 1 and result["completions"] == 8
    assert 8 <= result["generated_tokens"] <= 8 * 4
    assert all(math.isfinite(result[key]) for key in ("reward_before", "reward_after", "seconds"))
