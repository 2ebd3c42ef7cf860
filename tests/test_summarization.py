"""Summarization: standard-library data, dataset adapters, reward, env."""

import json
import math
import re

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers the ids)
from textgym.data import SPLITS, DatasetError, split_of
from textgym.envs import summarization, summarization_data
from textgym.envs.summarization import (
    SummarizationTask,
    dataset_examples,
    extract_stdlib_pairs,
    stdlib_examples,
    summary_reward,
    summary_reward_components,
    truncate_words,
)

DOCTEST_LINE = re.compile(r"^\s*(>>>|\.\.\.)(\s|$)")
BODY = (
    "This paragraph explains the object at length, so that the source text is long "
    "enough to qualify. It goes on about arguments, return values and the errors that "
    "may be raised when something goes wrong in the middle of a call."
)


# -- standard-library data ------------------------------------------------------------------


def test_stdlib_pairs_are_plausible():
    examples = stdlib_examples()
    assert 800 <= len(examples) <= 2500
    ids = [e.example_id for e in examples]
    assert len(set(ids)) == len(ids)
    assert len({e.source for e in examples}) == len(examples)
    assert {"json.dumps", "textwrap.TextWrapper"} & set(ids)
    for example in examples:
        assert example.schema == "stdlib"
        assert 20 <= len(example.summary) <= 200 and "\n" not in example.summary
        assert len(example.source) >= 200
        assert not any(DOCTEST_LINE.match(line) for line in example.source.splitlines()), example.example_id
        assert not example.example_id.startswith(("test.", "idlelib.", "site-packages."))


def test_stdlib_cache_matches_a_fresh_extraction():
    cached = [(e.example_id, e.summary, e.source) for e in stdlib_examples()]
    assert cached == [tuple(pair) for pair in extract_stdlib_pairs()]


def test_stdlib_splits_are_disjoint_and_cover_the_data():
    by_split = {split: {e.example_id for e in SummarizationTask(split=split).examples} for split in SPLITS}
    assert all(by_split.values())
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]
    assert set().union(*by_split.values()) == {e.example_id for e in stdlib_examples()}
    assert all(split_of(i) == "test" for i in by_split["test"])


def write_fake_stdlib(root):
    module = f'''"""A fake module used to test the extraction.

{BODY}
"""


def documented(x):
    """Return the input unchanged, like identity.

    {BODY}

    >>> documented(1)
    1
    >>> documented(
    ...     2)
    2

    Trailing text after the example stays in the source.
    """


class Thing:
    """A thing with a short body.

    Too short to be a source.
    """

    def method(self):
        """Do the thing and report back.

        The method. {BODY}
        """


def signature_like():
    """signature_like(a, b) -> c

    {BODY}
    """


def copied():
    """Another opening paragraph that is long.

    {BODY}
    """
'''
    (root / "fakemod.py").write_text(module)
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text(f'"""The package that holds sub modules.\n\nThe package. {BODY}\n"""\n')
    (root / "pkg" / "broken.py").write_text("def (:\n")
    for skipped in ("test", "site-packages", "idlelib"):
        (root / skipped).mkdir()
        (root / skipped / "skipme.py").write_text(f'"""Should never be extracted at all.\n\n{BODY}\n"""\n')


def test_extraction_rules_on_a_fake_stdlib(tmp_path):
    write_fake_stdlib(tmp_path)
    pairs = extract_stdlib_pairs(tmp_path)
    assert pairs == extract_stdlib_pairs(tmp_path)  # deterministic
    by_id = {name: (summary, source) for name, summary, source in pairs}
    assert list(by_id) == ["fakemod", "fakemod.documented", "fakemod.Thing.method", "pkg"]
    summary, source = by_id["fakemod.documented"]
    assert summary == "Return the input unchanged, like identity."
    assert source == BODY + "\n\nTrailing text after the example stays in the source."
    assert by_id["fakemod"][0] == "A fake module used to test the extraction."
    assert by_id["fakemod.Thing.method"] == ("Do the thing and report back.", "The method. " + BODY)
    # "copied" repeats the body of "fakemod" and loses: one source, one split.
    assert by_id["fakemod"][1] == BODY


@pytest.fixture
def fresh_stdlib_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGYM_HOME", str(tmp_path))
    stdlib_examples.cache_clear()
    yield tmp_path
    stdlib_examples.cache_clear()


def test_stdlib_extraction_is_cached_on_disk(fresh_stdlib_cache, monkeypatch):
    fake = [("mod.func", "A summary of the function.", BODY)]
    monkeypatch.setattr(summarization_data, "extract_stdlib_pairs", lambda: fake)
    assert [(e.example_id, e.summary, e.source) for e in stdlib_examples()] == fake
    (cache,) = (fresh_stdlib_cache / "data").glob("summarization-stdlib-*.json")
    stdlib_examples.cache_clear()

    def fail():
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(summarization_data, "extract_stdlib_pairs", fail)
    assert stdlib_examples()[0].example_id == "mod.func"
    # A corrupt cache is rebuilt, not an error.
    cache.write_text("{not json")
    stdlib_examples.cache_clear()
    monkeypatch.setattr(summarization_data, "extract_stdlib_pairs", lambda: fake)
    assert stdlib_examples()[0].example_id == "mod.func"
    assert json.loads(cache.read_text())["pairs"] == [list(fake[0])]


# -- dataset adapters -----------------------------------------------------------------------


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return str(path)


SCHEMA_RECORDS = {
    "cnn_dailymail": lambda i: {"id": f"cnn{i}", "article": f"Article number {i} says things.", "highlights": "A."},
    "xsum": lambda i: {"id": f"x{i}", "document": f"Document number {i} says things.", "summary": "B."},
    "samsum": lambda i: {"id": f"s{i}", "dialogue": f"Ann: hi {i}\r\nBob: hello", "summary": "They greet."},
}


@pytest.mark.parametrize("schema", sorted(SCHEMA_RECORDS))
def test_adapters_detect_each_schema(tmp_path, schema):
    path = write_jsonl(tmp_path / "data.jsonl", [SCHEMA_RECORDS[schema](i) for i in range(40)])
    examples = dataset_examples(path)
    assert len(examples) == 40 and {e.schema for e in examples} == {schema}
    assert dataset_examples(path, schema=schema) == examples
    task = SummarizationTask(dataset=path, split="train")
    prompt = task.reset(np.random.default_rng(0))
    content = prompt.messages[-1]["content"]
    assert content.endswith(summarization.INSTRUCTIONS[schema])
    assert split_of(prompt.prompt_id) == "train"


def test_adapter_reads_a_json_array_and_defaults_ids_to_positions(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"document": f"Text {i}.", "summary": "S."} for i in range(3)]))
    assert [e.example_id for e in dataset_examples(str(path))] == ["000000", "000001", "000002"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("{broken", "not valid JSON"),
        ("[1, 2]", "record 0 is not a JSON object"),
        ('{"id": 1, "text": "x", "label": "y"}', "record 0 has fields ['id', 'label', 'text']"),
        ('{"article": "x", "highlights": "y"}\n{"article": "x"}', "record 1 has none of the fields ('highlights',)"),
        ('{"document": "  ", "summary": "y"}', "record 0 field 'document' is empty"),
        ('{"document": "x", "summary": ""}', "record 0 field 'summary' is empty"),
        ('{"document": 3, "summary": "y"}', "record 0 field 'document' must be a str"),
        ('{"id": "a", "document": "x", "summary": "y"}\n{"id": "a", "document": "z", "summary": "y"}', "repeats id"),
    ],
)
def test_bad_dataset_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=re.escape(message)) as error:
        dataset_examples(str(path))
    assert "bad.jsonl" in str(error.value)


def test_explicit_schema_is_checked(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SCHEMA_RECORDS["xsum"](0)])
    with pytest.raises(DatasetError, match=r"record 0 has none of the fields \('dialogue',\)"):
        dataset_examples(path, schema="samsum")
    with pytest.raises(ValueError, match="schema must be None or one of"):
        dataset_examples(path, schema="imdb")
    with pytest.raises(ValueError, match="without a dataset"):
        SummarizationTask(schema="xsum")


def test_split_without_examples_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [SCHEMA_RECORDS["xsum"](0)])
    other = next(split for split in SPLITS if split != split_of("x0"))
    with pytest.raises(DatasetError, match="no examples in split"):
        SummarizationTask(dataset=path, split=other)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_source_words": 0}, ValueError),
        ({"max_source_words": 2.5}, TypeError),
        ({"max_source_words": True}, TypeError),
        ({"length_penalty": -1.0}, ValueError),
        ({"length_penalty": math.nan}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    name, value = next(iter(kwargs.items()))
    with pytest.raises(error, match=f"{name} .*{value!r}"):
        SummarizationTask(**kwargs)


def test_numpy_integer_arguments_are_accepted():
    assert SummarizationTask(max_source_words=np.int64(40)).max_source_words == 40


# -- truncation -----------------------------------------------------------------------------


def test_truncate_words_keeps_layout():
    assert truncate_words("a b\nc", 5) == ("a b\nc", False)
    assert truncate_words("a  b\n\nc d", 3) == ("a  b\n\nc", True)


def huge_dataset(tmp_path):
    article = " ".join(f"word{i}" for i in range(5000))
    records = [{"id": f"h{i}", "article": article, "highlights": "REFERENCE-SENTINEL words."} for i in range(30)]
    return write_jsonl(tmp_path / "huge.jsonl", records)


def test_huge_source_is_truncated_and_the_instruction_comes_last(tmp_path):
    task = SummarizationTask(dataset=huge_dataset(tmp_path), max_source_words=50)
    prompt = task.reset(np.random.default_rng(0))
    user = prompt.messages[-1]["content"]
    assert user.startswith("word0 word1") and "word49\n\n" in user and "word50" not in user
    assert user.endswith(summarization.INSTRUCTIONS["cnn_dailymail"])
    assert prompt.info == {"schema": "cnn_dailymail", "source_words": 50, "source_truncated": True}


def test_env_left_truncation_never_cuts_the_instruction(tmp_path, tiny_model):
    env = gym.make(
        "TextGym/Summarization-v0", model=tiny_model, dataset=huge_dataset(tmp_path), max_context_tokens=64
    ).unwrapped
    observation, info = env.reset(seed=0)
    assert info["context_truncated"]
    context = env.tokenizer.decode(observation["input_ids"][observation["attention_mask"] == 1])
    assert summarization.INSTRUCTIONS["cnn_dailymail"] in context
    assert context.rstrip().endswith("assistant")


# -- reward ---------------------------------------------------------------------------------


def test_reward_hand_checked_values():
    # ROUGE-L F: LCS 3, P = 3/3, R = 3/6 -> F = 2/3.
    assert summary_reward(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx([2 / 3])
    # Porter stemming: cats -> cat, running/runs -> run.
    assert summary_reward(["Cats running!"], ["cat runs"]) == pytest.approx([1.0])
    # Length term: -0.5 * |3/6 - 1| = -0.25.
    parts = summary_reward_components(["the cat sat"], ["the cat sat on the mat"], length_penalty=0.5)
    assert parts == [{"rougeL": pytest.approx(2 / 3), "length": pytest.approx(-0.25)}]
    assert summary_reward(["the cat sat"], ["the cat sat on the mat"], 0.5) == pytest.approx([2 / 3 - 0.25])
    # Too long: 12 words for a 6-word reference, -0.5 * |2 - 1| = -0.5.
    long = "the cat sat on the mat and then sat on the dog"
    assert summary_reward_components([long], ["the cat sat on the mat"], 0.5)[0]["length"] == pytest.approx(-0.5)
    assert summary_reward(["dog"], ["the cat"]) == [0.0]


@pytest.mark.parametrize("reply", ["", "   ", "\n"])
def test_empty_reply_scores_zero_never_nan(reply):
    assert summary_reward([reply], ["a reference summary"]) == [0.0]
    assert summary_reward([reply], ["a reference summary"], length_penalty=0.3) == [pytest.approx(-0.3)]


def test_reward_argument_errors():
    with pytest.raises(ValueError, match="2 summaries but 1 references"):
        summary_reward(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="length_penalty"):
        summary_reward(["a"], ["b"], length_penalty=-0.1)


# -- env ------------------------------------------------------------------------------------


def test_registered_ids():
    for env_id, granularity in [
        ("TextGym/Summarization-v0", "token"),
        ("TextGym/SummarizationCandidate-v0", "candidate"),
        ("TextGym/SummarizationUtterance-v0", "utterance"),
    ]:
        spec = gym.spec(env_id)
        assert spec.kwargs["granularity"] == granularity and spec.kwargs["max_context_tokens"] == 512
        assert spec.entry_point == "textgym.envs.summarization:SummarizationEnv"


def test_token_level_reward_equals_the_pure_function(tiny_model):
    env = gym.make("TextGym/Summarization-v0", model=tiny_model, length_penalty=0.2).unwrapped
    example = env.task.examples[3]
    _, info = env.reset(seed=0, options={"prompt_id": example.example_id})
    assert info["prompt_id"] == example.example_id and info["messages"][1]["content"].startswith(example.source[:50])
    tokens = env.tokenizer("Return the value of the object.", add_special_tokens=False)["input_ids"]
    for token in tokens:
        _, reward, terminated, truncated, info = env.step(token)
        assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, info = env.step(min(env.end_ids))
    assert terminated and not truncated and info["reply_finished"]
    assert info["reply"] == "Return the value of the object."
    assert reward == pytest.approx(summary_reward([info["reply"]], [example.summary], length_penalty=0.2)[0])
    assert info["reward_components"] == summary_reward_components([info["reply"]], [example.summary], 0.2)[0]


def test_reference_never_appears_in_messages_or_info(tmp_path, tiny_model):
    env = gym.make("TextGym/SummarizationUtterance-v0", model=tiny_model, dataset=huge_dataset(tmp_path))
    _, info = env.reset(seed=1)
    ids = env.unwrapped.tokenizer("word0 word1", add_special_tokens=False)["input_ids"]
    action = np.array(ids + [min(env.unwrapped.end_ids)] * (env.unwrapped.max_reply_tokens - len(ids)))
    _, reward, terminated, _, step_info = env.step(action)
    assert terminated and np.isfinite(reward)
    assert "SENTINEL" not in json.dumps(info) + json.dumps(step_info)


def test_prompt_id_rebuilds_the_prompt_and_bad_options_raise(tiny_model):
    env = gym.make("TextGym/Summarization-v0", model=tiny_model)
    _, first = env.reset(seed=7)
    observation, again = env.reset(seed=99, options={"prompt_id": first["prompt_id"]})
    assert again["messages"] == first["messages"]
    test_id = next(e.example_id for e in stdlib_examples() if split_of(e.example_id) == "test")
    for options, message in [
        ({"prompt_id": "no.such.object"}, "unknown prompt_id"),
        ({"prompt_id": test_id}, "unknown prompt_id"),
        ({"prompt_id": 3}, "unknown prompt_id"),
        ({"temperature": 1.0}, "unknown reset options"),
        ({"prompt_id": first["prompt_id"], "extra": 1}, "unknown reset options"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.reset(options=options)
