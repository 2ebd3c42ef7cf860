"""textgym.integrations.skyrl: the SkyRL env gives TextEnv's rewards and episode ends, from exported rows."""

import importlib
import importlib.metadata
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from engine_check import require_engine

require_engine("skyrl-gym")

import skyrl_gym  # noqa: E402

import textgym  # noqa: E402, F401
from textgym.core import play_episode  # noqa: E402
from textgym.envs.sparse_completion import generate_problem  # noqa: E402
from textgym.integrations import EngineVersionError, EpisodeSpec  # noqa: E402
from textgym.integrations import skyrl as adapter  # noqa: E402
from textgym.rewards import task_for  # noqa: E402

DIALOGUE = "TextGym/Dialogue-v0"
SPARSE = "TextGym/SparseCompletion-v0"


def _extras(row: dict, max_turns: int | None = None) -> dict:
    """What SkyRL's generator passes as ``extras``: the row without prompt and env_class, plus max_turns."""
    extras = {key: value for key, value in row.items() if key not in ("prompt", "env_class")}
    if max_turns is not None:
        extras["max_turns"] = max_turns
    return extras


def _make(row: dict, max_turns: int | None = None) -> adapter.SkyRLTextEnv:
    """Build the env of a row as SkyRL's generator does."""
    return skyrl_gym.make(row["env_class"], env_config={}, extras=_extras(row, max_turns))


def _row(env_id: str, index: int = 0, n: int = 2) -> dict:
    return adapter.dataset_rows(env_id, "train", n=n)[index]


@pytest.fixture(scope="module", autouse=True)
def registered():
    adapter.register()
    yield
    skyrl_gym.envs.registration.deregister(adapter.ENV_CLASS)


def _replies(env_id: str, prompt_id: str) -> list[list[str]]:
    """Reply lists for a whole episode: one informed by the task's data (non-zero reward), one generic."""
    if env_id == DIALOGUE:
        task = task_for(DIALOGUE, "train")
        turns = task.conversations[task._by_id[prompt_id]].turns[: task.num_turns]
        return [[turn.references[0] for turn in turns], ["I do not know." for _ in turns]]
    if env_id == SPARSE:
        return [[f"Answer: {generate_problem(prompt_id).answer}"], ["no idea"]]
    if env_id == "TextGym/Summarization-v0":
        task = task_for(env_id, "train")
        return [[task.examples[task._by_id[prompt_id]].summary], ["This is a text."]]
    return [["a wonderful, moving and beautiful film that I loved"], ["a dull and boring mess"]]


def _text_env_episode(env_id: str, prompt_id: str, replies: list[str]) -> tuple[list[float], list[bool]]:
    """Rewards and terminations of TextEnv (utterance level, tiny model) for the same reply texts."""
    env = gym.make(env_id.replace("-v0", "Utterance-v0"), model="tiny").unwrapped
    env.reset(options={"prompt_id": prompt_id})
    end = min(env.end_ids)
    rewards, ends = [], []
    for reply in replies:
        ids = env.tokenizer.encode(reply, add_special_tokens=False) + [end]
        assert len(ids) <= env.max_reply_tokens, "a test reply must fit the utterance budget"
        action = np.full(env.max_reply_tokens, env.pad_id, dtype=np.int64)
        action[: len(ids)] = ids
        _, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        ends.append(terminated or truncated)
    return rewards, ends


@pytest.mark.parametrize("env_id", [DIALOGUE, "TextGym/Summarization-v0", SPARSE, "TextGym/Sentiment-v0"])
def test_whole_episode_matches_text_env(env_id, tiny_model):
    rows = adapter.dataset_rows(env_id, "train", n=2)
    nonzero = False
    for row in rows:
        prompt_id = row["extra_info"]["prompt_id"]
        for replies in _replies(env_id, prompt_id):
            if env_id == "TextGym/Summarization-v0":
                replies = [" ".join(r.split()[:20]) for r in replies]  # fit TextEnv's 48-token reply budget
            env = _make(row, max_turns=len(replies))
            messages, info = env.init(row["prompt"])
            assert messages == row["prompt"] and info["prompt_id"] == prompt_id
            outputs = [env.step(reply) for reply in replies]
            expected = play_episode(task_for(env_id, "train"), replies, prompt_id=prompt_id)
            text_rewards, text_ends = _text_env_episode(env_id, prompt_id, replies)

            rewards = [out["reward"] for out in outputs]
            assert rewards == pytest.approx(expected.rewards, abs=1e-6)
            assert rewards == pytest.approx(text_rewards, abs=1e-6)
            assert [out["done"] for out in outputs] == text_ends == [False] * (len(replies) - 1) + [True]
            nonzero |= any(reward > 0 for reward in rewards)
            # Observations are the task's next messages: the conversation equals the episode's.
            conversation = list(messages)
            for reply, out in zip(replies, outputs, strict=True):
                conversation += [{"role": "assistant", "content": reply}, *out["observations"]]
            assert conversation == expected.messages
            assert [out["metadata"]["reward"] for out in outputs] == rewards
            last = outputs[-1]["metadata"]
            assert last["end_reason"] == "task_over" and last["prompt_id"] == prompt_id
            assert last["episode_reward"] == pytest.approx(expected.total_reward)
            assert last["guard"] == expected.guard()
            metrics = env.get_metrics()
            assert metrics["episode_reward"] == pytest.approx(expected.total_reward)
            assert metrics["turns"] == len(replies) and metrics["distinct_1"] == expected.guard()["distinct_1"]
    assert nonzero, f"no reply scored above 0 on {env_id}: the comparison would not tell rewards apart"


def test_dialogue_is_multi_turn():
    row = _row(DIALOGUE)
    env = _make(row, max_turns=5)
    env.init(row["prompt"])
    first = env.step("Hello there.")
    assert not first["done"] and len(first["observations"]) == 1
    assert first["observations"][0]["role"] == "user" and first["observations"][0]["content"].strip()
    assert first["metadata"]["turn"] == 0 and "end_reason" not in first["metadata"]


def test_action_with_end_of_turn_string_scores_like_text_env(tiny_model):
    """An engine that keeps special tokens leaves the end token at the end of the text: TextEnv never sees it."""
    row = _row(SPARSE)
    prompt_id = row["extra_info"]["prompt_id"]
    answer = f"Answer: {generate_problem(prompt_id).answer}"
    adapter.register(tokenizer=tiny_model)
    try:
        assert "<|im_end|>" in skyrl_gym.registry[adapter.ENV_CLASS].kwargs["end_strings"]
        env = _make(row)
        env.init(row["prompt"])
        out = env.step(f"  {answer}<|im_end|>")
    finally:
        adapter.register()
    assert out["metadata"]["reply"] == answer
    assert out["reward"] == _text_env_episode(SPARSE, prompt_id, [answer])[0][0] == 1.0
    # Without the tokenizer's end strings the text is scored as it is (here: not a parsable answer).
    plain = _make(row)
    plain.init(row["prompt"])
    assert plain.step(f"{answer}<|im_end|>")["metadata"]["reply"] == f"{answer}<|im_end|>"


def test_interleaved_episodes_keep_their_own_state():
    """SkyRL steps many trajectories at once: envs of one task must not share the episode in progress."""
    rows = adapter.dataset_rows(SPARSE, "train", n=3)
    envs = [_make(row) for row in rows]
    for env, row in zip(envs, rows, strict=True):
        env.init(row["prompt"])
    for env, row in zip(envs, rows, strict=True):
        answer = generate_problem(row["extra_info"]["prompt_id"]).answer
        assert env.step(f"Answer: {answer}")["reward"] == 1.0

    dialogue_rows = adapter.dataset_rows(DIALOGUE, "train", n=2)
    a, b = (_make(row) for row in dialogue_rows)
    a.init(dialogue_rows[0]["prompt"])
    b.init(dialogue_rows[1]["prompt"])
    replies = ["Yes, I think so.", "Tell me more.", "Goodbye."]
    steps_a, steps_b = [], []
    for reply in replies:
        steps_a.append(a.step(reply))
        steps_b.append(b.step(reply))
    for row, steps in ((dialogue_rows[0], steps_a), (dialogue_rows[1], steps_b)):
        alone = play_episode(task_for(DIALOGUE, "train"), replies, prompt_id=row["extra_info"]["prompt_id"])
        assert [s["reward"] for s in steps] == alone.rewards
        assert [s["observations"] for s in steps[:-1]] == [alone.messages[i : i + 1] for i in (3, 5)], (
            "each env must follow its own conversation"
        )


def test_max_turns_ends_the_episode_early():
    row = _row(DIALOGUE)
    env = _make(row, max_turns=1)
    env.init(row["prompt"])
    with pytest.warns(UserWarning, match="generator.max_turns=1"):
        out = env.step("Hello.")
    assert out["done"] and out["observations"] == []
    assert out["metadata"]["end_reason"] == "max_turns" and out["reward"] == out["metadata"]["episode_reward"]
    cut = play_episode(task_for(DIALOGUE, "train"), ["Hello."], prompt_id=row["extra_info"]["prompt_id"])
    assert out["metadata"]["guard"] == cut.guard() and out["reward"] == cut.rewards[0]
    with pytest.raises(RuntimeError, match="ended"):
        env.step("More.")


def test_registration_is_idempotent_and_guards_names():
    adapter.register()
    adapter.register()
    env = _make(_row(SPARSE))
    assert isinstance(env, adapter.SkyRLTextEnv) and env.spec.id == adapter.ENV_CLASS
    with pytest.raises(ValueError, match="already registered to 'skyrl_gym.envs.gsm8k.env:GSM8kEnv'"):
        adapter.register("gsm8k")
    with pytest.raises(ValueError, match="env_class must be a non-empty string"):
        adapter.register("")


def _spec_row(**changes) -> dict:
    row = _row(DIALOGUE)
    spec = {**json.loads(row["reward_spec"][adapter.SPEC_FIELD]), **changes}
    return {**row, "reward_spec": {"method": "rule", adapter.SPEC_FIELD: json.dumps(spec)}}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"env_id": "TextGym/Nope-v0"}, "unknown env id 'TextGym/Nope-v0'"),
        ({"prompt_id": "no-such-conversation"}, "unknown prompt_id 'no-such-conversation'"),
        ({"split": "valid"}, "'valid'"),
        ({"textgym_version": "0.0.9"}, "written by textgym 0.0.9"),
        ({"answer": "42"}, r"unknown fields \['answer'\]"),
    ],
)
def test_bad_spec_names_the_value(changes, match):
    with pytest.raises(ValueError, match=match):
        _make(_spec_row(**changes))


@pytest.mark.parametrize(
    ("reward_spec", "match"),
    [
        ({"method": "rule", "textgym_spec": "{not json"}, "not valid JSON"),
        ({"method": "rule", "ground_truth": "4"}, r"\['textgym_spec'\] is missing"),
        (None, r"\['textgym_spec'\] is missing"),
    ],
)
def test_row_without_a_spec_is_named(reward_spec, match):
    with pytest.raises(ValueError, match=match):
        _make({"env_class": adapter.ENV_CLASS, "prompt": [], "reward_spec": reward_spec})


def test_bad_max_turns_and_actions():
    row = _row(DIALOGUE)
    with pytest.raises(ValueError, match="max_turns.*got 0"):
        _make(row, max_turns=0)
    env = _make(row)
    with pytest.raises(RuntimeError, match="before init"):
        env.step("Hi.")
    env.init(row["prompt"])
    for action in (None, 3, ["Hi."], b"Hi."):
        with pytest.raises(TypeError, match=f"must be the reply text \\(str\\), got {type(action).__name__}"):
            env.step(action)
    assert env.step("Hi.")["metadata"]["turn"] == 0  # a rejected action does not count as a turn


def test_init_rejects_another_prompt():
    rows = adapter.dataset_rows(DIALOGUE, "train", n=2)
    env = _make(rows[0])
    with pytest.raises(ValueError, match=r"differs from the task's at message 1: got \{'role': 'user'"):
        env.init(rows[1]["prompt"])
    with pytest.raises(ValueError, match="prompt must be a non-empty list"):
        env.init([])
    with pytest.raises(ValueError, match="prompt\\[0\\] must be a dict"):
        env.init(["What is AI?"])


def test_export_round_trip_through_skyrl_dataset_loading(tmp_path):
    from datasets import load_dataset

    path = adapter.export_dataset(SPARSE, "train", tmp_path / "sub" / "train.parquet", n=4)
    adapter.export_dataset(DIALOGUE, "train", tmp_path / "dialogue.parquet", n=3)
    expected = adapter.dataset_rows(SPARSE, "train", n=4)
    # As SkyRL's PromptDataset reads it, then its generator builds the env.
    loaded = load_dataset("parquet", data_files=str(path), keep_in_memory=True)["train"]
    assert loaded.column_names == ["data_source", "prompt", "env_class", "reward_spec", "extra_info"]
    assert [dict(row) for row in loaded] == expected
    for index, row in enumerate(loaded):
        row = dict(row)
        messages, env_class = row.pop("prompt"), row.pop("env_class")
        assert env_class == "textgym" and row["data_source"] == SPARSE and row["extra_info"]["index"] == index
        env = skyrl_gym.make(env_class, env_config={}, extras={**row, "max_turns": 1})
        env.init(messages)
        answer = f"Answer: {generate_problem(row['extra_info']['prompt_id']).answer}"
        assert env.step(answer)["reward"] == 1.0
    dialogue = load_dataset("parquet", data_files=str(tmp_path / "dialogue.parquet"))["train"]
    specs = [EpisodeSpec.from_json(row["reward_spec"]["textgym_spec"]) for row in dialogue]
    assert [spec.prompt_id for spec in specs] == [row["extra_info"]["prompt_id"] for row in dialogue]
    assert len(set(spec.prompt_id for spec in specs)) == 3 and all(spec.env_id == DIALOGUE for spec in specs)
    # pandas (another way to read it) gives arrays of message dicts: init accepts them.
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "dialogue.parquet")
    env = _make(frame.iloc[0].to_dict())
    assert env.init(frame.iloc[0]["prompt"])[0] == list(dialogue[0]["prompt"])


def test_export_task_options_reach_the_env(tmp_path):
    row = adapter.dataset_rows(DIALOGUE, "train", n=1, num_turns=1)[0]
    assert json.loads(row["reward_spec"]["textgym_spec"])["task_options"] == {"num_turns": 1}
    env = _make(row)
    env.init(row["prompt"])
    assert env.step("Hi.")["done"]


def test_export_bad_input(tmp_path):
    with pytest.raises(ValueError, match="must end in .parquet.*rows.json"):
        adapter.export_dataset(DIALOGUE, "train", tmp_path / "rows.json")
    with pytest.raises(ValueError, match="unknown env id 'TextGym/Nope-v0'"):
        adapter.export_dataset("TextGym/Nope-v0", "train", tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="pass n"):
        adapter.export_dataset(SPARSE, "train", tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        adapter.export_dataset(DIALOGUE, "train", tmp_path / "x.parquet", n=0)
    assert not (tmp_path / "x.parquet").exists()


def test_engine_outside_the_pinned_range_is_named(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.5.0" if name == "skyrl-gym" else real(name), raising=True
    )
    with warnings.catch_warnings(), pytest.raises(EngineVersionError, match=r"skyrl-gym 0\.5\.0 is installed"):
        importlib.reload(adapter)
