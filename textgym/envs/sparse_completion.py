"""SparseCompletion: procedurally generated, verifiable one-answer tasks, rewarded once at the end.

Every problem is a pure function of its prompt id ``"family/dN/seed"`` (see
:func:`generate_problem`): the random numbers that build it come from SHA-256 of the id,
not from a library generator, so an id names the same problem on every platform and
NumPy / Python version, and the leaderboard can re-score replies from ids alone. The
env's ``rng`` draws the family, the difficulty and the problem seed.

Six families, each at difficulty 1, 2 and 3:

* ``arithmetic``: integer expressions (``+ -``; then ``* /`` and three terms; then
  parenthesised expressions whose result may be negative). Answer: a number.
* ``reverse``: the letters of a word in reverse order (short words, long words, random
  9-12 letter strings). Answer: a word.
* ``sort``: the letters of a word in alphabetical order (same three levels). Answer: a word.
* ``count``: how often a letter occurs in a word, in a random string, in a phrase
  (where it may occur 0 times). Answer: a number.
* ``date``: the weekday N days after a weekday; the date N days after a date; the date
  N days before or after a date across years and leap days. Answer: a weekday, a date.
* ``units``: a unit conversion with a rounding rule (metric scalings to a whole number;
  metric / imperial to 1 decimal place; with temperatures, gallons and speeds, to 2
  decimal places). Answer: a number.

Generators never pose a problem whose answer is among the values the question itself
states (e.g. ``10 - 5``, ``-40`` degrees, a palindrome to reverse, an already sorted
word), so echoing the question never scores. Answer extraction and verification are
the pure functions :func:`extract_answer` and :func:`verify`; their rules are written
in :func:`extract_answer`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from textgym.checks import is_integer
from textgym.core import TaskPrompt, TurnResult, validate_text
from textgym.data import split_of
from textgym.envs.sparse_completion_answers import (  # noqa: F401 - re-exported: the env's public names
    ANSWER_KINDS,
    WEEKDAYS,
    extract_answer,
)
from textgym.envs.sparse_completion_problems import (  # noqa: F401 - re-exported: the env's public names
    DIFFICULTIES,
    FAMILIES,
    SEED_RANGE,
    Problem,
    Verdict,
    generate_problem,
    make_prompt_id,
    parse_prompt_id,
    verify,
)
from textgym.rewards import reward_function
from textgym.tasks import PromptSetTask
from textgym.text_env import TextEnv

DEFAULT_SYSTEM_PROMPT = (
    "Solve the task. Reply with the final answer only, or, if you show your working, "
    "end with a line 'Answer: <final answer>'. Write numbers with digits."
)
# Draws of problem seeds before reset gives up finding one in its split (each draw falls
# in the split with probability >= 0.1, so this is never reached in practice).
_MAX_SEED_DRAWS = 10_000


def _check_families(families: Any) -> tuple[str, ...]:
    if families is None:
        return FAMILIES
    if isinstance(families, str):
        families = [families]
    if not isinstance(families, (list, tuple)) or not families:
        raise ValueError(f"families must be a non-empty list of names from {FAMILIES}, got {families!r}")
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; expected names from {FAMILIES}")
    if len(set(families)) != len(families):
        raise ValueError(f"families lists a name twice: {list(families)!r}")
    return tuple(families)


def _check_difficulties(difficulty: Any) -> tuple[int, ...]:
    levels = difficulty if isinstance(difficulty, (list, tuple)) else [difficulty]
    if not levels:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES} or a non-empty list of them, got {difficulty!r}")
    for level in levels:
        if not is_integer(level) or level not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {level!r}; expected one of {DIFFICULTIES} or a list of them")
    if len(set(levels)) != len(levels):
        raise ValueError(f"difficulty lists a level twice: {list(levels)!r}")
    return tuple(int(level) for level in levels)


def _check_format_reward(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"format_reward must be a number in [0, 1), got {value!r}")
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"format_reward must be a number in [0, 1), got {value!r}")
    return float(value)


class SparseCompletionTask(PromptSetTask):
    """Text-level SparseCompletion: see :class:`SparseCompletionEnv`."""

    def __init__(
        self,
        split: str = "train",
        difficulty: int | Sequence[int] = 1,
        families: str | Sequence[str] | None = None,
        format_reward: float = 0.0,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ) -> None:
        super().__init__(split)
        self.difficulties = _check_difficulties(difficulty)
        self.families = _check_families(families)
        self.format_reward = _check_format_reward(format_reward)
        self.system_prompt = validate_text(system_prompt, "system_prompt")

    def prompt_ids(self) -> None:
        """None: problems are generated without end."""
        return None

    def draw_prompt_id(self, rng: np.random.Generator) -> str:
        """Draw a family and a difficulty, then problem seeds until one is in this split."""
        family = self.families[int(rng.integers(len(self.families)))]
        difficulty = self.difficulties[int(rng.integers(len(self.difficulties)))]
        for _ in range(_MAX_SEED_DRAWS):
            prompt_id = make_prompt_id(family, difficulty, int(rng.integers(SEED_RANGE)))
            if split_of(prompt_id) == self.split:
                return prompt_id
        raise RuntimeError(f"no {family}/d{difficulty} problem in split {self.split!r} after {_MAX_SEED_DRAWS} draws")

    def check_prompt_id(self, prompt_id: str) -> None:
        """Any well-formed problem id of this split, of any family and difficulty (see :func:`parse_prompt_id`).

        Raises:
            ValueError: A malformed prompt id, or one of another split.
        """
        parse_prompt_id(prompt_id)
        if split_of(prompt_id) != self.split:
            raise ValueError(
                f"prompt_id {prompt_id!r} belongs to split {split_of(prompt_id)!r}, not this env's {self.split!r}"
            )

    def start_episode(self, prompt_id: str) -> tuple[TaskPrompt, Problem]:
        """Pose the problem ``prompt_id`` names; the state is the problem."""
        problem = generate_problem(prompt_id)
        messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": problem.question}]
        info = {"family": problem.family, "difficulty": problem.difficulty, "answer_kind": problem.kind}
        return TaskPrompt(messages, problem.prompt_id, info), problem

    def score_reply(self, problem: Problem, reply: str) -> tuple[TurnResult, None]:
        """Verify the reply: 1.0 if correct, ``format_reward`` if parsed but wrong, else 0.0; then stop."""
        verdict = verify(problem, reply)
        components = {
            "correct": 1.0 if verdict.correct else 0.0,
            "format": self.format_reward if verdict.parsed and not verdict.correct else 0.0,
        }
        info = {
            "parsed": verdict.parsed,
            "correct": verdict.correct,
            "family": problem.family,
            "difficulty": problem.difficulty,
            "answer_kind": problem.kind,
            "reward_components": components,
        }
        return TurnResult(components["correct"] + components["format"], True, [], info), None


class SparseCompletionEnv(TextEnv):
    """SparseCompletion: answer one generated, verifiable question; rewarded once, at the end.

    ## Description
    Each episode poses one procedurally generated problem with a single checkable answer,
    from six families: integer ``arithmetic``, ``reverse`` a word's letters, ``sort`` a
    word's letters, ``count`` a letter's occurrences, a ``date`` question (weekday after N
    days, date plus or minus N days) and a ``units`` conversion with a rounding rule, at
    difficulty 1, 2 or 3. The conversation is a system message stating the answer format
    and the question as the user message; the agent's one reply is its answer. Problems
    are infinite and rebuilt from their prompt id alone (``"family/dN/seed"``, see
    :func:`generate_problem`). The same task backs three ids, one per action granularity
    (see :class:`textgym.text_env.TextEnv`).

    ## Action Space
    * ``TextGym/SparseCompletion-v0``: ``Discrete(V)``, the next token of the reply (V =
      49,152 for the default SmolLM2 tokenizer). An end token ends the reply; the id
      sets ``max_reply_tokens=16`` (answers are short).
    * ``TextGym/SparseCompletionCandidate-v0``: ``Discrete(K)``, one of K replies that the
      env's LM proposes (its greedy reply first; ``action_masks()`` marks duplicates invalid).
    * ``TextGym/SparseCompletionUtterance-v0``: ``MultiDiscrete([V] * max_reply_tokens)``,
      the whole reply as token ids, read up to the first end token.

    ## Observation Space
    ``Dict(input_ids=Box(int32), attention_mask=Box(int8))`` of length
    ``max_context_tokens`` holding the chat-template context, left-padded; the candidate
    level adds ``candidate_ids`` and ``candidate_mask`` (K x ``max_reply_tokens``, flattened).

    ## Rewards
    Sparse: every step before the reply ends gives 0. When it ends, :func:`verify` reads
    the answer (rules in :func:`extract_answer`: the answer after an ``Answer:`` marker,
    else the last value of the answer's kind in the reply; lists and choices of different
    values are unparsed) and the reward is
    ``1.0`` if it equals the reference, ``format_reward`` if an answer was parsed but is
    wrong, and ``0.0`` if none could be parsed (empty reply, no value of the right kind,
    conflicting answers). ``info`` of the last step holds ``parsed``, ``correct``,
    ``family``, ``difficulty``, ``answer_kind`` and ``reward_components``
    (``{"correct": 1.0 or 0.0, "format": format_reward or 0.0}``, summing to the reward).
    The reference answer is never in observations, messages or info. For word answers
    almost any reply parses, so the format reward means little there.

    ## Starting State
    A family drawn uniformly from ``families`` and a difficulty uniformly from
    ``difficulty`` with ``self.np_random``, then problem seeds in ``[0, 2**32)`` until the
    prompt id falls in the env's split; or the problem named by
    ``reset(options={"prompt_id": ...})``, of any family and difficulty but of this split.

    ## Episode End
    Terminated after the one reply. At token level, also truncated when the reply
    reaches ``max_reply_tokens`` without an end token (the reply is still scored).

    ## Arguments
    ``split`` (``"train"``, ``"validation"``, ``"test"``; ``textgym.data.split_of(prompt_id)``
    decides, so the splits are disjoint), ``difficulty`` (1, 2 or 3, or a list of them;
    default 1), ``families`` (a list of names from ``arithmetic``, ``reverse``, ``sort``,
    ``count``, ``date``, ``units``; default all), ``format_reward`` (in [0, 1), default
    0.0), ``system_prompt``, plus the :class:`textgym.text_env.TextEnv` arguments
    (``granularity``, ``model``, ``max_context_tokens``, ``max_reply_tokens``,
    ``num_candidates``, ``proposal_temperature``, ``render_mode``).

    ## Version History
    * v0: Initial version.
    """

    task_class = SparseCompletionTask


#: The batch reward in TRL's shape (see :func:`textgym.rewards.reward_function`).
sparse_completion_reward = reward_function("TextGym/SparseCompletion-v0")
