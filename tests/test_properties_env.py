"""Property tests of TextEnv.step: arbitrary valid actions against the documented rules, invalid ones rejected.

A model of the documented behaviour (TextEnv's Observation Space and Episode End sections and
each task's Rewards section) follows every step and checks the env against it:

* every observation lies in the observation space, left-padded; at token level the newest token is last;
* every reward is finite, in the task's range, 0 inside a reply, and at a reply's end equal to the
  task's pure reward function of ``info["reply"]``, the decoded reply (the reference is looked
  up from the prompt id, never read from the env); a reply that copies the reference scores 1;
* an end token finishes a reply; a reply reaching ``max_reply_tokens`` is truncated and scored; the
  last reply terminates; ``end_reason``, ``episode_reward`` and the guard metrics agree;
* every info is JSON-serialisable;
* invalid actions (out of range, wrong dtype, NaN, wrong shape, step after the end) raise the
  documented TypeError, ValueError or ResetNeeded and leave the episode as it was.

Each token-level id takes 10,000 seeded random steps plus a Hypothesis state machine (whose failures
shrink to a short action sequence); utterance-level ids take Hypothesis-drawn whole-reply arrays.
The token-level env never runs the LM, so the tiny model's tokenizer suffices.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections import Counter
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from text_strategies import word_texts

import textgym  # noqa: F401  (registers the ids)
from textgym.core import validate_messages
from textgym.envs.dialogue import chatterbot_conversations, reply_score
from textgym.envs.sentiment import sentiment_reward
from textgym.envs.sparse_completion import generate_problem, verify
from textgym.envs.summarization import stdlib_examples, summary_reward
from textgym.text_env import as_index, as_token_array

TASKS = ("Dialogue", "Summarization", "SparseCompletion", "Sentiment")
STEPS_PER_TOKEN_ID = 10_000
POSITIVE_REVIEW = "This movie is wonderful, great and beautiful."
# Token strings a reply is often made of: words, digits, an answer marker.
COMMON_TEXT = [" the", " good", " great", " is", "Answer", ":", " 4", "2", "-", " Monday", ".", "\n"]


# -- the documented rewards, from the prompt id alone -------------------------------------------


class Oracle:
    """Each task's reward of a reply and a reply that copies the reference, looked up from public data."""

    def __init__(self, task: str) -> None:
        self.task = task

    @functools.cached_property
    def _conversations(self) -> dict[str, Any]:
        return {c.conversation_id: c for c in chatterbot_conversations()}

    @functools.cached_property
    def _examples(self) -> dict[str, Any]:
        return {e.example_id: e for e in stdlib_examples()}

    def reward(self, prompt_id: str, turn: int, reply: str) -> float:
        if self.task == "Dialogue":
            return reply_score(reply, list(self._conversations[prompt_id].turns[turn].references))
        if self.task == "Summarization":
            return summary_reward([reply], [self._examples[prompt_id].summary])[0]
        if self.task == "SparseCompletion":
            return 1.0 if verify(generate_problem(prompt_id), reply).correct else 0.0
        return sentiment_reward([reply])[0]

    def copy(self, prompt_id: str, turn: int) -> str:
        if self.task == "Dialogue":
            return self._conversations[prompt_id].turns[turn].references[0]
        if self.task == "Summarization":
            return self._examples[prompt_id].summary
        if self.task == "SparseCompletion":
            return generate_problem(prompt_id).answer
        return POSITIVE_REVIEW

    def copy_scores(self, text: str, reward: float) -> bool:
        """What a reply equal to ``copy(...)`` must score."""
        if self.task == "Sentiment":
            return reward > 0.5
        if self.task == "Summarization" and not re.search("[a-z0-9]", text.lower()):
            return reward == 0.0  # ROUGE sees no token
        return reward == 1.0


REWARD_RANGES = {
    "Dialogue": (0.0, 1.0),
    "Summarization": (0.0, 1.0),
    "SparseCompletion": (0.0, 1.0),
    "Sentiment": (-1.0, 1.0),
}


def check_observation(space: gym.spaces.Dict, observation: dict[str, np.ndarray]) -> None:
    assert space.contains(observation), {k: (v.dtype, v.shape, v.min(), v.max()) for k, v in observation.items()}
    mask = observation["attention_mask"]
    padding = len(mask) - int(mask.sum())
    assert mask.sum() >= 1 and not mask[:padding].any() and mask[padding:].all(), "not left-padded"


def check_json(info: dict[str, Any]) -> None:
    json.dumps(info, allow_nan=False)


# -- the model of one env ------------------------------------------------------------------------


class EnvModel:
    """Steps an env and checks each result against what the documentation predicts."""

    def __init__(self, env: gym.Env, task: str) -> None:
        self.env = env
        self.unwrapped = env.unwrapped
        self.oracle = Oracle(task)
        self.low, self.high = REWARD_RANGES[task]
        self.end_ids = sorted(self.unwrapped.end_ids)
        self.special_ids = sorted(set(self.unwrapped.tokenizer.added_tokens_decoder) - set(self.end_ids))
        self.vocab = self.unwrapped.vocab_size
        self.max_reply = self.unwrapped.max_reply_tokens
        self.granularity = self.unwrapped.granularity
        self.over = True
        self.steps = 0
        self.counts: Counter[str] = Counter()

    # -- episode start

    def reset(self, seed: int | None = None, same_prompt: bool = False) -> None:
        options = {"prompt_id": self.prompt_id} if same_prompt else None
        observation, info = self.env.reset(seed=seed, options=options)
        check_observation(self.env.observation_space, observation)
        check_json(info)
        assert info["turn"] == 0 and validate_messages(info["messages"]) == info["messages"]
        assert isinstance(info["context_truncated"], bool)
        if same_prompt:
            assert info["prompt_id"] == self.prompt_id
        self.prompt_id = info["prompt_id"]
        self.num_turns = info.get("num_turns", 1)  # Dialogue says how many; the others have one
        self.turn = 0
        self.tokens: list[int] = []
        self.replies: list[tuple[str, bool]] = []
        self.rewards: list[float] = []
        self.copying: str | None = None
        self.observation = observation
        self.counts["reset" if self.over else "reset_mid_episode"] += 1
        self.over = False

    # -- token level

    def step_token(self, token: int, form: str = "int") -> None:
        """One valid token action, given as a Python int or another documented integer form."""
        action = {
            "int": token,
            "int64": np.int64(token),
            "int32": np.int32(token),
            "0-d": np.array(token),
            "1-element": np.array([token], dtype=np.int64),
        }[form]
        if self.over:
            self.step_after_end(action)
            return
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        check_observation(self.env.observation_space, observation)
        check_json(info)
        assert isinstance(reward, float) and math.isfinite(reward)
        ends = token in self.end_ids
        if not ends and len(self.tokens) + 1 < self.max_reply:
            self.tokens.append(token)
            assert (reward, terminated, truncated, info) == (0.0, False, False, {"turn": self.turn})
            # The reply written so far extends the context: the newest token is last.
            assert observation["input_ids"][-1] == token and observation["attention_mask"][-1] == 1
            for key in ("input_ids", "attention_mask"):
                assert np.array_equal(observation[key][:-1], self.observation[key][1:]), key
            self.observation = observation
            return
        if not ends:
            self.tokens.append(token)
        text = self.unwrapped.tokenizer.decode(self.tokens, skip_special_tokens=True).strip()
        self.end_reply(observation, reward, terminated, truncated, info, text, finished=ends)

    def start_copy(self) -> list[int]:
        """The tokens of a reply that copies the reference, then an end token (if it fits the budget)."""
        text = self.oracle.copy(self.prompt_id, self.turn)
        tokens = self.unwrapped.tokenizer(text, add_special_tokens=False)["input_ids"]
        self.copying = text if len(tokens) < self.max_reply else None
        return [*tokens, self.end_ids[0]]

    # -- utterance level

    def step_utterance(self, action: Any) -> None:
        if self.over:
            self.step_after_end(action)
            return
        tokens = np.asarray(action).astype(np.int64).tolist()
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        check_observation(self.env.observation_space, observation)
        check_json(info)
        assert isinstance(reward, float) and math.isfinite(reward)
        ends = [i for i, token in enumerate(tokens) if token in self.end_ids]
        self.tokens = tokens[: ends[0]] if ends else tokens
        text = self.unwrapped.tokenizer.decode(self.tokens, skip_special_tokens=True).strip()
        self.end_reply(observation, reward, terminated, truncated, info, text, finished=bool(ends))

    # -- reply end, shared

    def end_reply(self, observation, reward, terminated, truncated, info, text: str, finished: bool) -> None:
        last_turn = self.turn + 1 == self.num_turns
        assert info["reply"] == text and info["reply_finished"] is finished
        # Token level: a reply cut by the budget truncates; at the other levels length never truncates.
        assert truncated is (self.granularity == "token" and not finished)
        assert terminated is last_turn
        assert reward == self.oracle.reward(self.prompt_id, self.turn, text), (self.prompt_id, self.turn, text)
        assert self.low <= reward <= self.high
        if self.copying is not None and finished:
            assert text == self.copying.strip() and self.oracle.copy_scores(text, reward), (text, reward)
            self.counts["copied_reference"] += 1
        self.copying = None
        self.rewards.append(reward)
        self.replies.append((text, finished))
        self.counts["finished" if finished else "cut_by_budget"] += 1
        if terminated or truncated:
            self.end_episode(info, terminated, truncated)
            self.counts["cut_mid_conversation" if not terminated else "both" if truncated else "task_over"] += 1
        else:
            assert info["turn"] == self.turn + 1
            assert info["messages"][-2] == {"role": "assistant", "content": text}
            assert info["messages"][-1]["role"] == "user"
            self.turn += 1
            self.tokens = []
        self.observation = observation

    def end_episode(self, info: dict[str, Any], terminated: bool, truncated: bool) -> None:
        assert info["end_reason"] == ("reply_token_budget" if truncated else "task_over")
        assert info["episode_reward"] == pytest.approx(sum(self.rewards))
        # A conversation cut before its last turn returns the next turn's context (to bootstrap from).
        reply_at = -1 if terminated else -2
        assert info["messages"][reply_at] == {"role": "assistant", "content": self.replies[-1][0]}
        assert terminated or info["messages"][-1]["role"] == "user"
        guard = info["guard"]
        assert guard["empty_replies"] == sum(not text for text, _ in self.replies)
        assert guard["unfinished_replies"] == sum(not finished for _, finished in self.replies)
        for name in ("reply_words", "distinct_1", "distinct_2", "repetition_2"):
            assert math.isfinite(guard[name]) and guard[name] >= 0.0
        assert all(math.isfinite(v) for v in guard["reward_components"].values())
        self.over = True

    # -- errors

    def step_after_end(self, action: Any) -> None:
        with pytest.raises(gym.error.ResetNeeded, match="after the episode ended; call env.reset"):
            self.env.step(action)
        self.counts["step_after_end"] += 1

    def step_invalid(self, action: Any, error: type[Exception], message: str) -> None:
        """An invalid action raises ``error`` with ``message`` and changes nothing (later steps check that)."""
        assert not self.over
        with pytest.raises(error) as raised:
            self.env.step(action)
        assert message in str(raised.value), (action, str(raised.value))
        self.counts["invalid_action"] += 1


def invalid_token_actions(vocab: int, token: int) -> list[tuple[Any, type[Exception], str]]:
    """Documented errors of token-level actions (see textgym.text_env.as_index)."""
    return [
        (vocab, ValueError, f"action {vocab} is out of range [0, {vocab})"),
        (-1 - token, ValueError, f"action {-1 - token} is out of range"),
        (2**70 + token, ValueError, "is out of range"),
        (np.uint64(2**63 + token), ValueError, "is out of range"),
        (float(token), TypeError, "must be an integer, got float"),
        (np.float32(token), TypeError, "must be an integer, got float"),
        (float("nan"), ValueError, "action is NaN"),
        (np.array([np.nan]), ValueError, "action is NaN"),
        (True, TypeError, "got bool"),
        (None, TypeError, "got None"),
        (str(token), TypeError, "got str"),
        (np.array([token, token]), ValueError, "single integer, got an array of shape (2,)"),
        (np.array([], dtype=np.int64), ValueError, "single integer, got an array of shape (0,)"),
        (complex(token), TypeError, "must be an integer, got complex"),
    ]


@functools.cache
def make_env(env_id: str) -> gym.Env:
    return gym.make(env_id, model="tiny")


def task_of(env_id: str) -> str:
    return next(task for task in TASKS if env_id.startswith(f"TextGym/{task}"))


TOKEN_IDS = [f"TextGym/{task}-v0" for task in TASKS]
UTTERANCE_IDS = [f"TextGym/{task}Utterance-v0" for task in TASKS]


# -- token level: 10,000 seeded random steps per id ----------------------------------------------


def seeded_token_run(env: gym.Env, task: str, steps: int, seed: int) -> EnvModel:
    """Drive a token-level env with seeded random valid actions, resets and invalid probes."""
    model = EnvModel(env, task)
    rng = np.random.default_rng(seed)
    tokenizer = model.unwrapped.tokenizer
    common = [tokenizer(text, add_special_tokens=False)["input_ids"][-1] for text in COMMON_TEXT]
    forms = ["int", "int64", "int32", "0-d", "1-element"]
    plan: list[int] = []
    model.reset(seed=int(rng.integers(2**32)))
    while model.steps < steps:
        if model.over:
            plan = []  # a copy cut by the budget ends with its episode
            if rng.random() < 0.1:
                model.step_token(int(rng.integers(model.vocab)))
            else:
                model.reset(seed=int(rng.integers(2**32)) if rng.random() < 0.5 else None)
            continue
        if plan:
            model.step_token(plan.pop(0), forms[int(rng.integers(len(forms)))])
            continue
        draw = rng.random()
        if draw < 0.005:
            model.reset(seed=int(rng.integers(2**32)) if rng.random() < 0.5 else None, same_prompt=rng.random() < 0.3)
        elif draw < 0.025:
            invalid = invalid_token_actions(model.vocab, int(rng.integers(model.vocab)))
            model.step_invalid(*invalid[int(rng.integers(len(invalid)))])
        elif draw < 0.045 and not model.tokens:
            plan = model.start_copy()
        elif draw < 0.09:
            model.step_token(model.end_ids[int(rng.integers(len(model.end_ids)))])
        elif draw < 0.14:
            model.step_token(model.special_ids[int(rng.integers(len(model.special_ids)))])
            model.counts["special_token"] += 1
        elif draw < 0.3:
            model.step_token(common[int(rng.integers(len(common)))], forms[int(rng.integers(len(forms)))])
        else:
            model.step_token(int(rng.integers(model.vocab)), forms[int(rng.integers(len(forms)))])
    return model


@pytest.mark.parametrize("env_id", TOKEN_IDS)
def test_token_level_10000_random_steps(env_id, tiny_model):
    env = make_env(env_id)
    start = time.perf_counter()
    model = seeded_token_run(env, task_of(env_id), STEPS_PER_TOKEN_ID, seed=0)
    elapsed = time.perf_counter() - start  # printed with -s; includes the first use of the task's data
    print(f"{env_id}: {model.steps} checked steps in {elapsed:.2f} s; {dict(model.counts)}")
    assert model.steps == STEPS_PER_TOKEN_ID
    # The run reached every documented path, so the checks above were exercised.
    paths = ["finished", "cut_by_budget", "copied_reference", "task_over", "both", "reset_mid_episode"]
    paths += ["invalid_action", "step_after_end", "special_token"]
    if env_id == "TextGym/Dialogue-v0":
        paths.append("cut_mid_conversation")  # truncated, not terminated: the next turn's context is returned
    for path in paths:
        assert model.counts[path] >= 5, (path, model.counts)


@pytest.mark.parametrize("env_id", TOKEN_IDS)
def test_token_level_small_budgets(env_id, tiny_model):
    # Contexts cut to a few tokens and replies of one token upward: the edges of both budgets.
    counts = Counter()

    @settings(max_examples=6, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(8, 40), st.integers(1, 6), st.integers(0, 2**32 - 1))
    def check(max_context_tokens, max_reply_tokens, seed):
        env = gym.make(
            env_id, model=tiny_model, max_context_tokens=max_context_tokens, max_reply_tokens=max_reply_tokens
        )
        counts.update(seeded_token_run(env, task_of(env_id), 150, seed).counts)

    check()
    assert counts["cut_by_budget"] and counts["finished"], counts


# -- token level: a Hypothesis state machine (failures shrink to a short action sequence) ---------


def token_machine(env_id: str) -> type[RuleBasedStateMachine]:
    env = make_env(env_id)
    vocab = env.unwrapped.vocab_size
    end_ids = sorted(env.unwrapped.end_ids)
    special_ids = sorted(set(env.unwrapped.tokenizer.added_tokens_decoder) - set(end_ids))
    seeds = st.integers(0, 2**32 - 1)
    tokens = st.integers(0, vocab - 1)

    class TokenEnvMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = EnvModel(env, task_of(env_id))

        @initialize(seed=seeds)
        def start(self, seed):
            self.model.reset(seed=seed)

        def step(self, token, form="int"):
            if self.model.over:  # a step after the end is refused; the env's own generator picks the next prompt
                self.model.step_after_end(token)
                self.model.reset()
            self.model.step_token(token, form)

        @rule(token=tokens, form=st.sampled_from(["int", "int64", "int32", "0-d", "1-element"]))
        def any_token(self, token, form):
            self.step(token, form)

        @rule(token=st.sampled_from(end_ids))
        def end_token(self, token):
            self.step(token)

        @rule(token=st.sampled_from(special_ids))
        def special_token(self, token):
            self.step(token)

        @rule(run=st.lists(tokens.filter(lambda t: t not in end_ids), min_size=1, max_size=64))
        def run_of_tokens(self, run):
            for token in run:  # long runs reach max_reply_tokens
                self.step(token)

        @rule()
        def copy_reference(self):
            if self.model.over or self.model.tokens:
                return
            for token in self.model.start_copy():
                self.model.step_token(token)
                if self.model.over:
                    break

        @rule(seed=seeds, same_prompt=st.booleans())
        def reset(self, seed, same_prompt):
            self.model.reset(seed=seed, same_prompt=same_prompt)

        @rule(token=tokens, index=st.integers(0, len(invalid_token_actions(vocab, 0)) - 1))
        def invalid_action(self, token, index):
            if not self.model.over:
                self.model.step_invalid(*invalid_token_actions(vocab, token)[index])

    return TokenEnvMachine


@pytest.mark.parametrize("env_id", TOKEN_IDS)
def test_token_level_state_machine(env_id, tiny_model):
    run_state_machine_as_test(
        token_machine(env_id),
        settings=settings(max_examples=25, stateful_step_count=30, suppress_health_check=[HealthCheck.too_slow]),
    )


# -- utterance level -----------------------------------------------------------------------------


def utterance_actions(env: gym.Env) -> st.SearchStrategy:
    """Whole replies: random ids with end and special tokens anywhere, in several integer forms."""
    unwrapped = env.unwrapped
    length, vocab = unwrapped.max_reply_tokens, unwrapped.vocab_size
    end_ids = sorted(unwrapped.end_ids)
    special = sorted(unwrapped.tokenizer.added_tokens_decoder)
    token = st.one_of(st.integers(0, vocab - 1), st.sampled_from(special))
    ids = st.lists(token, min_size=length, max_size=length)
    with_end = st.tuples(ids, st.integers(0, length - 1), st.sampled_from(end_ids)).map(
        lambda t: t[0][: t[1]] + [t[2]] + t[0][t[1] + 1 :]
    )
    form = st.sampled_from([np.int64, np.int32, np.uint16, "list"])
    return st.tuples(st.one_of(ids, with_end, st.just("copy")), form)


def invalid_utterance_actions(length: int, vocab: int) -> st.SearchStrategy:
    """Documented errors of utterance-level actions (see textgym.text_env.as_token_array)."""
    ids = st.lists(st.integers(0, vocab - 1), min_size=length, max_size=length)
    out_of_range = st.tuples(
        ids, st.integers(0, length - 1), st.one_of(st.integers(vocab, 2**62), st.integers(-(2**62), -1))
    )
    return st.one_of(
        st.just((None, TypeError, "got None")),
        st.integers(0, 3 * length)
        .filter(lambda n: n != length)
        .map(lambda n: (np.zeros(n, dtype=np.int64), ValueError, f"must have shape ({length},), got ({n},)")),
        st.just((np.zeros((1, length), dtype=np.int64), ValueError, f"got (1, {length})")),
        ids.map(lambda t: (np.array(t, dtype=np.float64), TypeError, "must hold integer token ids, got dtype float64")),
        ids.map(lambda t: (np.array(t, dtype=bool), TypeError, "got dtype bool")),
        st.tuples(ids, st.integers(0, length - 1)).map(
            lambda t: (np.array(t[0][: t[1]] + [np.nan] + t[0][t[1] + 1 :]), ValueError, f"holds NaN at index {t[1]}")
        ),
        out_of_range.map(
            lambda t: (
                np.array(t[0][: t[1]] + [t[2]] + t[0][t[1] + 1 :], dtype=np.int64),
                ValueError,
                f"action[{t[1]}] = {t[2]} is out of range [0, {vocab})",
            )
        ),
        ids.map(lambda t: ([str(x) for x in t], TypeError, "must hold integer token ids")),
    )


@pytest.mark.parametrize("env_id", UTTERANCE_IDS)
def test_utterance_level_arbitrary_arrays(env_id, tiny_model):
    env = make_env(env_id)
    model = EnvModel(env, task_of(env_id))
    length, vocab = env.unwrapped.max_reply_tokens, env.unwrapped.vocab_size
    actions = utterance_actions(env)
    invalid = invalid_utterance_actions(length, vocab)
    step = st.one_of(actions.map(lambda a: ("valid", a)), invalid.map(lambda a: ("invalid", a)))

    @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.integers(0, 2**32 - 1), st.lists(step, min_size=1, max_size=8))
    def check(seed, steps):
        model.reset(seed=seed)
        for kind, payload in steps:
            if kind == "invalid":
                if not model.over:
                    model.step_invalid(*payload)
                continue
            tokens, form = payload
            if model.over:  # a step after the end is refused; the env's own generator picks the next prompt
                model.step_after_end(np.zeros(length, dtype=np.int64))
                model.reset()
            if tokens == "copy":
                copy = model.start_copy()[: length - 1] + [model.end_ids[0]]
                tokens = copy + [0] * (length - len(copy))
            action = list(tokens) if form == "list" else np.array(tokens, dtype=form)
            model.step_utterance(action)
        # Every example ends on each documented path, whatever was drawn: an invalid action, a reply
        # with no end token, copies of the reference to the episode's end, then a step after it.
        if model.over:
            model.reset()
        model.step_invalid(None, TypeError, "got None")
        model.step_utterance(np.full(length, 100, dtype=np.int64))
        copied = model.counts["copied_reference"]
        for _ in range(8):  # new episodes until a reference fits the reply budget (a single-turn task is over now)
            if model.over:
                model.reset()
            while not model.over:
                copy = model.start_copy()[: length - 1] + [model.end_ids[0]]
                model.step_utterance(np.array(copy + [0] * (length - len(copy))))
            if model.counts["copied_reference"] > copied:
                break
        model.step_after_end(np.zeros(length, dtype=np.int64))

    check()
    for path in ("finished", "cut_by_budget", "step_after_end", "copied_reference", "invalid_action"):
        assert model.counts[path], (path, model.counts)


# -- action conversion -------------------------------------------------------------------------

SCALARS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.complex_numbers(max_magnitude=1e6),
    st.sampled_from([np.int8, np.int32, np.int64, np.uint16, np.uint64, np.float16, np.float64, np.bool_]).flatmap(
        lambda dtype: st.integers(0, 100).map(lambda n: dtype(n))
    ),
)
ARRAYS = st.tuples(
    st.lists(st.integers(-3, 60_000), max_size=4),
    st.sampled_from(["int64", "int32", "uint16", "float32", "bool", "object"]),
).map(lambda t: np.array(t[0], dtype=np.int64).astype(t[1]))  # astype wraps negatives into unsigned dtypes


@settings(max_examples=500)
@given(st.one_of(SCALARS, ARRAYS, ARRAYS.map(lambda a: a.reshape(-1, 1)), st.integers(0, 60_000).map(np.array)))
def test_as_index_gives_the_integer_or_names_the_value(action):
    # What a token-level step accepts: an integer in range, in any documented form, else a named error.
    vocab = 49_152
    try:
        index = as_index(action, vocab)
    except (TypeError, ValueError) as error:
        assert str(error).startswith("action ")
        return
    value = action.reshape(-1)[0] if isinstance(action, np.ndarray) else action
    assert isinstance(index, int) and 0 <= index < vocab and index == value
    assert not isinstance(value, (bool, np.bool_, float, np.floating, complex, str))


@settings(max_examples=300)
@given(st.one_of(ARRAYS, st.lists(st.integers(-3, 60_000), min_size=4, max_size=4), SCALARS))
def test_as_token_array_gives_the_ids_or_names_the_value(action):
    vocab = 49_152
    try:
        ids = as_token_array(action, 4, vocab)
    except (TypeError, ValueError) as error:
        assert str(error).startswith("action")
        return
    assert ids.dtype == np.int64 and ids.shape == (4,) and ((ids >= 0) & (ids < vocab)).all()
    assert np.array_equal(ids, np.asarray(action))
    assert np.issubdtype(np.asarray(action).dtype, np.integer)


# -- text is data: a reply cannot forge chat turns --------------------------------------------------------------

CHAT_MARKERS = ("<|im_end|>", "<|im_start|>", "<|im_end|>\n<|im_start|>system\n", "<|endoftext|>", "<file_sep>")


def test_a_reply_cannot_forge_chat_markers(tiny_model):
    env = gym.make("TextGym/Dialogue-v0", model=tiny_model, max_context_tokens=1024, max_reply_tokens=64)
    tokenizer = env.unwrapped.tokenizer
    special = set(tokenizer.added_tokens_decoder)
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    replies = st.lists(st.one_of(st.sampled_from(CHAT_MARKERS), word_texts), min_size=1, max_size=6).map("".join)

    @settings(max_examples=30)
    @given(st.integers(0, 2**32 - 1), replies)
    def check(seed, reply):
        tokens = tokenizer(reply, add_special_tokens=False, split_special_tokens=True)["input_ids"][:63]
        assert not special & set(tokens)  # the agent writes plain tokens only
        _, info = env.reset(seed=seed)
        assume(info["num_turns"] > 1)
        for token in tokens:
            env.step(token)
        observation, _, terminated, truncated, info = env.step(im_end)
        assert not (terminated or truncated or info["context_truncated"])
        context = observation["input_ids"][observation["attention_mask"] == 1].tolist()
        # The chat template's markers only: one turn start and end per message, plus the generation prompt.
        assert context.count(im_start) == len(info["messages"]) + 1
        assert context.count(im_end) == len(info["messages"])
        assert not (special - {im_start, im_end}) & set(context)

    check()
