"""SparseCompletion: generators, prompt ids, splits, the verifier's false positives and negatives, the env."""

import datetime as dt
import itertools
import json
import math
import re
from decimal import Decimal

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers the ids)
from textgym.data import split_of
from textgym.envs.sparse_completion import (
    DEFAULT_SYSTEM_PROMPT,
    DIFFICULTIES,
    FAMILIES,
    WEEKDAYS,
    SparseCompletionEnv,
    SparseCompletionTask,
    extract_answer,
    generate_problem,
    make_prompt_id,
    parse_prompt_id,
    verify,
)

SWEEP = [make_prompt_id(f, d, s) for f, d, s in itertools.product(FAMILIES, DIFFICULTIES, range(40))]


def prompt_id_in(family, difficulty, split="train"):
    """The first seed whose prompt id of this family and difficulty falls in ``split``."""
    return next(pid for seed in range(1000) if split_of(pid := make_prompt_id(family, difficulty, seed)) == split)


def other_answer(problem):
    """A different answer of the same kind: wrong, but parseable."""
    if problem.kind == "number":
        return str(Decimal(problem.answer) + 1)
    if problem.kind == "word":
        return problem.answer + "x"
    if problem.kind == "weekday":
        return WEEKDAYS[(WEEKDAYS.index(problem.answer) + 1) % 7]
    return (dt.date.fromisoformat(problem.answer) + dt.timedelta(days=1)).isoformat()


# -- generators and prompt ids -----------------------------------------------------------


def test_pinned_problems_never_change():
    # The leaderboard re-scores replies from prompt ids: these must hold on every platform and version.
    pinned = {
        "arithmetic/d1/7": ("What is 7 + 10?", "17"),
        "arithmetic/d3/1": ("What is (43 - 72) * (7 + 19)?", "-754"),
        "reverse/d2/0": ("Reverse the letters of the word 'planet'. Give the result as one lowercase word.", "tenalp"),
        "sort/d2/0": ("Write the letters of the word 'pirate' in alphabetical order, as one lowercase word.", "aeiprt"),
        "count/d2/0": ("How many times does the letter 't' appear in the string 'vrhthttvvhtvhv'?", "4"),
        "date/d1/0": ("Today is Monday. What day of the week will it be in 15 days?", "Tuesday"),
        "date/d3/0": ("What is the date 780 days before 1998-03-16? Give the date as YYYY-MM-DD.", "1996-01-26"),
        "units/d3/1": ("Convert 2.6 degrees Celsius to degrees Fahrenheit. Round to 2 decimal places.", "36.68"),
    }
    generate_problem.cache_clear()
    for prompt_id, (question, answer) in pinned.items():
        problem = generate_problem(prompt_id)
        assert (problem.question, problem.answer) == (question, answer)


def test_generators_are_deterministic_and_depend_on_the_whole_id():
    first = [generate_problem(pid) for pid in SWEEP]
    generate_problem.cache_clear()
    assert first == [generate_problem(pid) for pid in SWEEP]
    for family, difficulty in itertools.product(FAMILIES, DIFFICULTIES):
        questions = {generate_problem(make_prompt_id(family, difficulty, s)).question for s in range(40)}
        assert len(questions) >= 10, (family, difficulty)


def test_generated_answers_are_well_formed_and_never_stated_by_the_prompt():
    for problem in map(generate_problem, SWEEP):
        family, difficulty, _ = parse_prompt_id(problem.prompt_id)
        assert (problem.family, problem.difficulty) == (family, difficulty)
        assert extract_answer(problem.answer, problem.kind) == problem.answer  # canonical form
        # Echoing the question, the system prompt or both never scores.
        for echo in (problem.question, DEFAULT_SYSTEM_PROMPT, f"{DEFAULT_SYSTEM_PROMPT}\n{problem.question}"):
            assert not verify(problem, echo).correct, (problem, echo)
        if problem.kind == "word":
            assert problem.answer.isalpha() and problem.answer.islower()
        if problem.family == "units":
            places = {"whole number": 0, "1 decimal": 1, "2 decimal": 2}
            rule = next(v for k, v in places.items() if k in problem.question)
            assert -Decimal(problem.answer).as_tuple().exponent <= rule


def test_difficulty_levels_differ():
    def mean_answer_size(family, difficulty):
        return np.mean([len(generate_problem(make_prompt_id(family, difficulty, s)).answer) for s in range(40)])

    assert mean_answer_size("arithmetic", 1) < mean_answer_size("arithmetic", 2)
    for family in ("reverse", "sort"):
        assert mean_answer_size(family, 1) < mean_answer_size(family, 2) < mean_answer_size(family, 3)
    assert generate_problem("date/d1/0").kind == "weekday" and generate_problem("date/d2/0").kind == "date"


def test_prompt_id_round_trip_through_reset():
    task = SparseCompletionTask(split="train", difficulty=[1, 2, 3])
    rng = np.random.default_rng(0)
    for _ in range(30):
        prompt = task.reset(rng)
        rebuilt = task.reset(np.random.default_rng(123), {"prompt_id": prompt.prompt_id})
        assert rebuilt.messages == prompt.messages and rebuilt.prompt_id == prompt.prompt_id
        assert rebuilt.info == prompt.info
        assert parse_prompt_id(prompt.prompt_id)[:2] == (prompt.info["family"], prompt.info["difficulty"])


def test_reset_is_seeded_by_the_rng():
    def ids(seed):
        task = SparseCompletionTask(difficulty=[1, 2, 3])
        rng = np.random.default_rng(seed)
        return [task.reset(rng).prompt_id for _ in range(20)]

    assert ids(1) == ids(1)
    assert ids(1) != ids(2)
    assert {parse_prompt_id(pid)[0] for pid in ids(1) + ids(2)} == set(FAMILIES)


def test_families_and_difficulty_restrict_what_reset_draws():
    task = SparseCompletionTask(families=["date", "units"], difficulty=3)
    rng = np.random.default_rng(0)
    drawn = {parse_prompt_id(task.reset(rng).prompt_id)[:2] for _ in range(30)}
    assert drawn == {("date", 3), ("units", 3)}
    assert {parse_prompt_id(SparseCompletionTask(families="count").reset(rng).prompt_id)[0]} == {"count"}


def test_splits_are_disjoint_and_follow_split_of():
    drawn = {}
    for split in ("train", "validation", "test"):
        task = SparseCompletionTask(split=split, difficulty=[1, 2, 3])
        rng = np.random.default_rng(0)
        drawn[split] = {task.reset(rng).prompt_id for _ in range(60)}
        assert all(split_of(pid) == split for pid in drawn[split])
    assert not drawn["train"] & drawn["validation"]
    assert not drawn["train"] & drawn["test"]
    assert not drawn["validation"] & drawn["test"]


def test_prompt_id_of_another_split_is_refused():
    test_id = prompt_id_in("arithmetic", 2, split="test")
    assert SparseCompletionTask(split="test").reset(None, {"prompt_id": test_id}).prompt_id == test_id
    with pytest.raises(ValueError, match=f"{test_id}.*split 'test'.*'train'"):
        SparseCompletionTask(split="train").reset(None, {"prompt_id": test_id})


def test_a_prompt_id_of_any_family_and_difficulty_is_rebuilt():
    # For re-scoring: the env's families / difficulty only restrict what reset draws.
    prompt_id = prompt_id_in("units", 3)
    prompt = SparseCompletionTask(families=["arithmetic"], difficulty=1).reset(None, {"prompt_id": prompt_id})
    assert prompt.info == {"family": "units", "difficulty": 3, "answer_kind": "number"}


@pytest.mark.parametrize(
    "prompt_id",
    ["arithmetic/2/5", "algebra/d1/5", "arithmetic/d4/5", "arithmetic/d1/-5", "arithmetic/d1/05", "", 123, None],
)
def test_malformed_prompt_ids_raise_naming_them(prompt_id):
    with pytest.raises(ValueError, match=re.escape(repr(prompt_id))):
        parse_prompt_id(prompt_id)
    if prompt_id is not None:  # None means "draw one"
        with pytest.raises(ValueError, match="prompt_id"):
            SparseCompletionTask().reset(np.random.default_rng(0), {"prompt_id": prompt_id})


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"split": "dev"}, "'dev'"),
        ({"difficulty": 4}, "4"),
        ({"difficulty": 0}, "0"),
        ({"difficulty": True}, "True"),
        ({"difficulty": "2"}, "'2'"),
        ({"difficulty": []}, r"\[\]"),
        ({"difficulty": [1, 1]}, r"\[1, 1\]"),
        ({"families": ["algebra"]}, "'algebra'"),
        ({"families": []}, r"\[\]"),
        ({"families": ["date", "date"]}, "date"),
        ({"format_reward": 1.0}, "1.0"),
        ({"format_reward": -0.1}, "-0.1"),
        ({"format_reward": math.nan}, "nan"),
        ({"format_reward": "0.1"}, "'0.1'"),
        ({"system_prompt": "  "}, "system_prompt"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, named):
    with pytest.raises(ValueError, match=named):
        SparseCompletionTask(**kwargs)


def test_unknown_reset_option_raises():
    with pytest.raises(ValueError, match="'family'"):
        SparseCompletionTask().reset(np.random.default_rng(0), {"family": "date"})


def test_unknown_answer_kind_and_non_string_reply_raise():
    with pytest.raises(ValueError, match="'fraction'"):
        extract_answer("1/2", "fraction")
    with pytest.raises(TypeError, match="int"):
        extract_answer(42, "number")


# -- the verifier: known false negatives (must accept) and false positives (must reject) --

CASES = {
    # prompt id: (accepted phrasings, rejected phrasings)
    "arithmetic/d1/7": (  # What is 7 + 10? -> 17
        [
            "17",
            "The answer is 17.",
            "**17**",
            "Answer: 17",
            "7 + 10 = 17",
            "17.0",
            "Final answer: $\\boxed{17}$",
            "I think it's 17!",
            "What is 7 + 10? 17",
            "Answer: 7 + 10 = 17",
            "Answer: 17 (I added 7 and 10)",
        ],
        [
            "18",
            "7 10 17",  # a list that repeats the question's numbers
            "7 + 10",  # the question echoed: its last number is 10
            "17 or 18",
            "18 or 17",
            "Answer: 17\nAnswer: 18",
            "The answer is 17, no wait, 18",  # a wrong number later
            "170",
            "1.7",
            "seventeen",
            "",
            "Answer: I don't know",
        ],
    ),
    "arithmetic/d3/1": (  # (43 - 72) * (7 + 19) -> -754
        ["-754", "−754", "The result is -754.", "Answer: **-754**", "(-29) * 26 = -754", "-754.00"],
        ["754", "26 - 754", "-29 * 26", "-754 or 754", "-7,54"],
    ),
    "reverse/d2/0": (  # planet -> tenalp
        [
            "tenalp",
            "TENALP",
            "The reversed word is tenalp.",
            "Answer: tenalp",
            "**tenalp**",
            "planet -> tenalp",
            "Reversing 'planet' gives 'tenalp'.",
            "Sure! tenalp",
        ],
        [
            "planet",  # the question's word echoed
            "tenlap",
            "tenalps",
            "aelnpt",  # sorted, not reversed
            "tenalp or tenlap",
            "tenalp/tenlap",
            "Answer: tenalp\nAnswer: tenlap",
            "t e n a l p",
            "",
        ],
    ),
    "sort/d2/0": (  # pirate -> aeiprt
        ["aeiprt", "AEIPRT", "Sorted: aeiprt", "The letters in order are aeiprt.", "Answer: **aeiprt**"],
        ["pirate", "aeiprtt", "aeiptr", "a e i p r t", "aeiprt / aeiptr", "etaripr"],
    ),
    "count/d2/0": (  # 't' in 'vrhthttvvhtvhv' -> 4
        ["4", "The letter 't' appears 4 times.", "There are 4 t's in the string.", "Answer: 4", "**4**", "4 times"],
        ["5", "3 or 4", "4, 5", "four", "Answer: 4\nAnswer: 5", "It appears 4 times... actually 5", "", "14"],
    ),
    "date/d1/0": (  # Monday + 15 days -> Tuesday
        ["Tuesday", "tuesday", "It will be Tuesday.", "Answer: Tuesday", "Monday + 15 days = Tuesday", "TUE", "Tue."],
        ["Monday", "Wednesday", "Tuesday or Wednesday", "Monday, Tuesday", "15", "", "I sat down"],
    ),
    "date/d3/0": (  # 780 days before 1998-03-16 -> 1996-01-26
        [
            "1996-01-26",
            "January 26, 1996",
            "26 January 1996",
            "Answer: 1996/01/26",
            "The date is 1996-01-26.",
            "1998-03-16 - 780 days = 1996-01-26",
            "Jan 26th 1996",
        ],
        ["1998-03-16", "1996-01-27", "01/26/1996", "1996-01-26 or 1996-01-27", "1996-02-30", "1996", ""],
    ),
    "units/d3/1": (  # 2.6 degrees Celsius -> 36.68 degrees Fahrenheit (2 decimal places)
        ["36.68", "36.68 degrees Fahrenheit", "Answer: 36.68", "2.6 * 9/5 + 32 = 36.68", "36.680", "**36.68 °F**"],
        ["36.7", "36.69", "2.6", "36.68 or 36.7", "36,68", "3668", "Answer: 36.68\nAnswer: 36.7"],
    ),
    "units/d2/1": (  # 128 kilometers -> 79.5 miles (1 decimal place; exactly 79.5355...)
        ["79.5", "79.50", "79.5 miles", "About 79.5 miles.", "Answer: 79.5"],
        ["79.54", "79.6", "80", "79", "128"],  # not rounded as asked, or rounded wrongly
    ),
}


@pytest.mark.parametrize("prompt_id", sorted(CASES))
def test_verifier_accepts_right_answers_phrased_naturally(prompt_id):
    problem = generate_problem(prompt_id)
    accepted, _ = CASES[prompt_id]
    assert len(accepted) >= 5
    for reply in accepted:
        verdict = verify(problem, reply)
        assert verdict.correct and verdict.parsed and verdict.extracted == problem.answer, (reply, verdict)


@pytest.mark.parametrize("prompt_id", sorted(CASES))
def test_verifier_rejects_wrong_or_ambiguous_answers(prompt_id):
    problem = generate_problem(prompt_id)
    _, rejected = CASES[prompt_id]
    assert len(rejected) >= 5
    for reply in rejected:
        assert not verify(problem, reply).correct, reply


def test_documented_limitations_of_the_rules():
    # Known false negatives, by design of the documented rules (extract_answer's docstring).
    tenalp = generate_problem("reverse/d2/0")
    assert verify(tenalp, "tenalp is the answer").extracted == "answer"  # the LAST word counts
    assert verify(tenalp, "Answer: the word tenalp").extracted == "the"  # the first word after a marker
    seventeen = generate_problem("arithmetic/d1/7")
    assert verify(seventeen, "The answer is 17 (7 + 10).").extracted == "10"  # no marker: the LAST number
    assert verify(seventeen, "Answer: 17 (7 + 10).").correct  # a marker fixes it


def test_every_family_is_covered_by_the_phrasing_cases():
    assert {parse_prompt_id(pid)[0] for pid in CASES} == set(FAMILIES)


@pytest.mark.parametrize(
    ("reply", "kind", "parsed"),
    [
        ("", "number", False),
        ("   ", "word", False),
        ("no digits here", "number", False),
        ("42 or 43", "number", False),
        ("17 25 42", "number", False),
        ("Answer: 42\nAnswer: 43", "number", False),
        ("Answer:", "number", False),
        ("Friday or Saturday", "weekday", False),
        ("43", "number", True),
        ("Answer: 42\nAnswer: 42.0", "number", True),  # markers that agree
        ("wrong", "word", True),
    ],
)
def test_parsed_means_one_unambiguous_answer(reply, kind, parsed):
    assert (extract_answer(reply, kind) is not None) is parsed


def test_verifier_sweep_over_generated_problems():
    # No scorer that gives everything 0, no verifier that accepts what it should not.
    for problem in map(generate_problem, SWEEP):
        answer, wrong = problem.answer, other_answer(problem)
        for reply in (
            answer,
            f"Answer: {answer}",
            f"The answer is {answer}.",
            f"**{answer}**",
            f"{problem.question}\n{answer}",
        ):
            assert verify(problem, reply).correct, (problem, reply)
        for reply in (wrong, f"Answer: {wrong}", f"{answer}, no wait, {wrong}"):
            verdict = verify(problem, reply)
            assert verdict.parsed and not verdict.correct, (problem, reply)
        for reply in (f"{answer} or {wrong}", f"{wrong} or {answer}", f"Answer: {answer}\nAnswer: {wrong}", ""):
            assert not verify(problem, reply).parsed, (problem, reply)


# -- the task's reward and info -------------------------------------------------------------


def posed(task, prompt_id):
    task.reset(None, {"prompt_id": prompt_id})
    return generate_problem(prompt_id)


@pytest.mark.parametrize("format_reward", [0.0, 0.1])
def test_reward_is_sparse_and_format_reward_only_for_parsed_wrong_answers(format_reward):
    task = SparseCompletionTask(format_reward=format_reward)
    prompt_id = prompt_id_in("arithmetic", 1)
    expectations = [("right", 1.0, True, True), ("wrong", format_reward, True, False), ("none", 0.0, False, False)]
    for which, reward, parsed, correct in expectations:
        problem = posed(task, prompt_id)
        reply = {"right": f"Answer: {problem.answer}", "wrong": other_answer(problem), "none": "no idea"}[which]
        result = task.step(reply)
        assert result.terminated and result.next_messages == []
        assert result.reward == pytest.approx(reward)
        assert result.info["parsed"] is parsed and result.info["correct"] is correct
        assert sum(result.info["reward_components"].values()) == pytest.approx(result.reward)
        assert result.info["family"] == "arithmetic" and result.info["difficulty"] == 1


def test_reference_answer_is_never_in_messages_or_info():
    task = SparseCompletionTask(difficulty=[1, 2, 3])
    rng = np.random.default_rng(7)
    for _ in range(60):
        prompt = task.reset(rng)
        problem = generate_problem(prompt.prompt_id)
        text = "\n".join(m["content"] for m in prompt.messages)
        assert extract_answer(text, problem.kind) != problem.answer
        assert not verify(problem, text).correct
        result = task.step(problem.answer)
        assert result.reward == 1.0
        for info in (prompt.info, result.info):
            flat = json.dumps(info)  # JSON-serialisable
            assert problem.answer not in [v for v in _leaves(info) if isinstance(v, str)], flat


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        SparseCompletionTask().step("42")


# -- the env ----------------------------------------------------------------------------------


def test_env_class_documents_the_gymnasium_sections():
    for section in ("Description", "Action Space", "Observation Space", "Rewards", "Starting State",
                    "Episode End", "Arguments", "Version History"):  # fmt: skip
        assert f"## {section}" in SparseCompletionEnv.__doc__


def test_registered_ids():
    ids = {"TextGym/SparseCompletion-v0": "token", "TextGym/SparseCompletionCandidate-v0": "candidate",
           "TextGym/SparseCompletionUtterance-v0": "utterance"}  # fmt: skip
    for env_id, granularity in ids.items():
        spec = gym.spec(env_id)
        assert spec.entry_point == "textgym.envs.sparse_completion:SparseCompletionEnv"
        assert spec.kwargs["granularity"] == granularity


def play_tokens(env, text):
    """Feed ``text`` token by token, then an end token; return every step's result."""
    tokens = env.unwrapped.tokenizer(text, add_special_tokens=False)["input_ids"]
    end = min(env.unwrapped.end_ids)
    return [env.step(token) for token in [*tokens, end]]


def test_token_env_rewards_the_right_answer_only_at_the_end(tiny_model):
    env = gym.make("TextGym/SparseCompletion-v0", model=tiny_model)
    _, info = env.reset(seed=0)
    problem = generate_problem(info["prompt_id"])
    assert info["family"] == problem.family and "answer" not in info
    steps = play_tokens(env, problem.answer)
    for _, reward, terminated, truncated, _ in steps[:-1]:
        assert reward == 0.0 and not terminated and not truncated
    _, reward, terminated, truncated, info = steps[-1]
    assert reward == 1.0 and terminated and not truncated
    assert info["correct"] and info["parsed"] and info["reward_components"] == {"correct": 1.0, "format": 0.0}


def test_token_env_gives_zero_for_a_wrong_answer(tiny_model):
    env = gym.make("TextGym/SparseCompletion-v0", model=tiny_model, format_reward=0.25)
    prompt_id = prompt_id_in("count", 2)
    env.reset(seed=0, options={"prompt_id": prompt_id})
    steps = play_tokens(env, other_answer(generate_problem(prompt_id)))
    assert all(step[1] == 0.0 for step in steps[:-1])
    _, reward, terminated, _, info = steps[-1]
    assert terminated and reward == 0.25 and info["parsed"] and not info["correct"]
    env.reset(seed=0, options={"prompt_id": prompt_id})
    _, reward, terminated, _, info = play_tokens(env, "no idea")[-1]
    assert terminated and reward == 0.0 and not info["parsed"]


def test_utterance_env_scores_a_whole_reply(tiny_model):
    env = gym.make("TextGym/SparseCompletionUtterance-v0", model=tiny_model)
    prompt_id = prompt_id_in("date", 2)
    env.reset(seed=0, options={"prompt_id": prompt_id})
    unwrapped = env.unwrapped
    tokens = unwrapped.tokenizer(f"Answer: {generate_problem(prompt_id).answer}", add_special_tokens=False)["input_ids"]
    action = np.full(unwrapped.max_reply_tokens, min(unwrapped.end_ids), dtype=np.int64)
    action[: len(tokens)] = tokens
    _, reward, terminated, truncated, info = env.step(action)
    assert reward == 1.0 and terminated and not truncated and info["correct"]


def test_env_prompt_id_option_and_split(tiny_model):
    env = gym.make("TextGym/SparseCompletion-v0", model=tiny_model, split="validation")
    _, info = env.reset(seed=3)
    assert split_of(info["prompt_id"]) == "validation"
    with pytest.raises(ValueError, match="split"):
        env.reset(options={"prompt_id": prompt_id_in("sort", 1)})
