"""The text-level task contract and the one episode driver.

A task is written once, at the text level (:class:`TextTask`): ``reset`` gives the
conversation so far as chat messages, ``step`` takes the agent's reply text and returns
the reward, whether the task is over and a JSON-serialisable info. It knows nothing of
tokens, spaces, torch or SB3, so an RL engine can drive it with text alone.

:class:`TextEpisode` is the one place that says how an episode of a task starts, goes on
and ends. The Gymnasium env (:class:`textgym.text_env.TextEnv`, which views a task at
token, candidate or utterance level), the engine adapters, the batch reward functions
and the leaderboard's verifier all play episodes through it.
"""

from __future__ import annotations

import math
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from textgym.checks import check_integer
from textgym.metrics.diversity import distinct_n, repetition_rate
from textgym.text import words

Message = dict[str, str]
ROLES = ("system", "user", "assistant")


def validate_text(text: Any, what: str) -> str:
    """Return ``text`` if it is usable model input, else raise naming ``what`` and the value.

    Emoji ZWJ sequences, right-to-left scripts and other valid Unicode pass unchanged.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: ``text`` is empty, whitespace only, holds a NUL or another control
            character, or a lone surrogate.

    >>> validate_text("Hi 👩‍💻 שלום", "message")
    'Hi 👩‍💻 שלום'
    >>> validate_text("  ", "message")
    Traceback (most recent call last):
    ...
    ValueError: message is empty or whitespace only: '  '
    """
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}: {text!r:.80}")
    if not text.strip():
        raise ValueError(f"{what} is empty or whitespace only: {text!r}")
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError(f"{what} holds a lone surrogate {char!r} at index {index}: {text!r:.80}")
        if category == "Cc" and char not in "\n\t\r":
            raise ValueError(f"{what} holds control character {char!r} at index {index}: {text!r:.80}")
    return text


def validate_messages(messages: Any, what: str = "messages") -> list[Message]:
    """Check a chat conversation: a non-empty list of ``{"role", "content"}`` dicts with valid text."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"{what} must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.80}")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise ValueError(f"{what}[{index}] must be a dict with keys 'role' and 'content', got {message!r:.80}")
        if message["role"] not in ROLES:
            raise ValueError(f"{what}[{index}] has unknown role {message['role']!r}; expected one of {ROLES}")
        checked.append({"role": message["role"], "content": validate_text(message["content"], f"{what}[{index}]")})
    return checked


@dataclass
class TaskPrompt:
    """What a task's ``reset`` gives: the conversation the agent replies to.

    Attributes:
        messages: Chat messages, oldest first; the agent writes the next assistant turn.
        prompt_id: A stable id of this prompt within the task and split.
        info: JSON-serialisable extras (never the reference answer).
    """

    messages: list[Message]
    prompt_id: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TurnResult:
    """What a task's ``step`` returns for one agent reply.

    Attributes:
        reward: A finite float.
        terminated: True when the task is over (e.g. last turn answered).
        next_messages: Messages that follow the reply (e.g. the next user turn).
        info: JSON-serialisable extras, e.g. reward components.
    """

    reward: float
    terminated: bool
    next_messages: list[Message] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class TextTask(ABC):
    """A language task at the text level: messages in, reply text out.

    Subclasses implement :meth:`reset` and :meth:`step` and draw every random number
    from the ``rng`` they are given, so a task is reproducible from the env's seed.
    Constructor arguments must be JSON values, so a task can be rebuilt from a spec.
    The current episode's state lives in attributes that ``reset`` and ``step`` assign
    anew (never mutate in place), so shallow copies of one task, which share its data,
    can play episodes side by side (an engine steps many trajectories at once).
    """

    @abstractmethod
    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> TaskPrompt:
        """Start an episode and return the conversation the agent replies to."""

    @abstractmethod
    def step(self, reply: str) -> TurnResult:
        """Score the agent's reply and say what comes next."""

    def prompt_ids(self) -> Sequence[str] | None:
        """Every prompt id of this task's split, in a fixed order; None when prompts are generated without end."""
        return None

    def reference_reply(self) -> str | None:
        """A reference reply to the current turn, or None when the task has none.

        A demonstration from the task's data (Summarization's reference summary), for a
        supervised warm start before RL (:mod:`baselines.sft`); never part of the reward's
        interface. None outside an episode.
        """
        return None


def _json_value(value: Any, what: str) -> Any:
    """Convert NumPy scalars to Python and check the value is JSON-serialisable and finite."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} is not finite: {value!r}")
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{what}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{what}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{what} is not JSON-serialisable: {type(value).__name__}")


def guard_metrics(replies: Sequence[tuple[str, bool, Mapping[str, float]]]) -> dict[str, Any]:
    """Cheap statistics of an episode's replies that expose reward hacking and degenerate output.

    Args:
        replies: ``(text, finished, reward_components)`` for each reply of the episode.

    Returns:
        ``reply_words`` (mean words per reply), ``distinct_1`` and ``distinct_2`` (over all
        replies), ``repetition_2`` (the highest within-reply rate of repeated bigrams),
        ``empty_replies``, ``unfinished_replies`` (cut by the token budget) and
        ``reward_components`` (each component summed over the replies).

    >>> guard_metrics([("ok ok ok ok", True, {"f1": 0.5}), ("", False, {"f1": 0.0})])["repetition_2"]
    0.6666666666666666
    """
    texts = [text for text, _, _ in replies]
    components: dict[str, float] = {}
    for _, _, reply_components in replies:
        for name, value in reply_components.items():
            components[name] = components.get(name, 0.0) + float(value)
    return {
        "reply_words": sum(len(words(text)) for text in texts) / max(len(texts), 1),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "repetition_2": max(repetition_rate(text, 2) for text in texts),
        "empty_replies": sum(not text.strip() for text in texts),
        "unfinished_replies": sum(not finished for _, finished, _ in replies),
        "reward_components": components,
    }


#: ``end_reason`` of an episode the task ended.
TASK_OVER = "task_over"
#: ``end_reason`` of an episode a reply cut by its token budget ended (see ``cut_reply_ends``).
REPLY_TOKEN_BUDGET = "reply_token_budget"


class TextEpisode:
    """The rules of one episode of a :class:`TextTask`, at the text level: the one episode driver.

    :class:`~textgym.text_env.TextEnv`, the engine adapters (:mod:`textgym.integrations`),
    the batch reward functions (:mod:`textgym.rewards`) and the leaderboard's verifier all
    play episodes through this class, so how an episode starts, goes on and ends is
    written once.

    ``reset`` draws the prompt and validates its messages; each ``step`` scores one reply
    with the task, validates what the task returns and appends the reply and the next
    messages to :attr:`messages`. The episode ends when the task says it is over
    (``end_reason`` :data:`TASK_OVER`), when a reply that did not finish is scored and
    ``cut_reply_ends`` is set (:data:`REPLY_TOKEN_BUDGET`, the episode is truncated), or
    when the caller ends it with :meth:`end` (an engine's turn or length budget).
    Stepping before ``reset`` or after the end raises ``ResetNeeded``.

    Args:
        task: The task to play.
        cut_reply_ends: Whether a reply cut by its token budget (``finished=False``) ends
            the episode, as at ``TextEnv``'s token level (see
            :func:`textgym.text_env.reply_budget_truncates`).

    Attributes:
        prompt: The validated prompt of the current episode.
        messages: The conversation so far (prompt, replies, next messages).
        rewards: The reward of each reply so far.
        replies: ``(text, finished, reward_components)`` of each reply, for :func:`guard_metrics`.
        state: ``"not_started"``, ``"running"`` or ``"over"``.
        terminated: Whether the task said it is over.
        truncated: Whether the episode ended before the task was over, or by a cut reply.
        end_reason: Why the episode ended (:data:`TASK_OVER`, :data:`REPLY_TOKEN_BUDGET`
            or the reason given to :meth:`end`); None while it runs.
    """

    def __init__(self, task: TextTask, cut_reply_ends: bool = False) -> None:
        self.task = task
        self.cut_reply_ends = bool(cut_reply_ends)
        self.state = "not_started"
        self.terminated = self.truncated = False
        self.end_reason: str | None = None

    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> TaskPrompt:
        """Start an episode: the task draws (or, with ``options["prompt_id"]``, takes) a prompt."""
        prompt = self.task.reset(rng, options)
        messages = validate_messages(prompt.messages, f"prompt {prompt.prompt_id!r} messages")
        self.prompt = TaskPrompt(messages, prompt.prompt_id, _json_value(prompt.info, "prompt info"))
        self.messages: list[Message] = [dict(m) for m in messages]
        self.rewards: list[float] = []
        self.replies: list[tuple[str, bool, dict[str, float]]] = []
        self.state, self.terminated, self.truncated, self.end_reason = "running", False, False, None
        return self.prompt

    @property
    def turn(self) -> int:
        """Replies given so far in this episode."""
        return len(self.rewards)

    @property
    def total_reward(self) -> float:
        """The sum of the rewards so far."""
        return float(sum(self.rewards))

    def step(self, reply: str, finished: bool = True) -> TurnResult:
        """Score one reply and say what comes next.

        Args:
            reply: The reply text.
            finished: Whether the reply ended on its own (False when a token budget cut it);
                recorded for the guard metrics, and it ends the episode when
                ``cut_reply_ends`` is set.

        Returns:
            The task's :class:`TurnResult`, its messages validated and its info JSON-checked.

        Raises:
            gymnasium.error.ResetNeeded: Before ``reset`` or after the episode ended.
            ValueError: The task returned a non-finite reward or invalid next messages.
        """
        if self.state == "not_started":
            raise gym.error.ResetNeeded("step() called before reset(); call reset() first")
        if self.state == "over":
            raise gym.error.ResetNeeded("step() called after the episode ended; call reset() first")
        if not isinstance(reply, str):
            raise TypeError(f"a reply must be a str, got {type(reply).__name__}: {reply!r:.80}")
        result = self.task.step(reply)
        reward = float(result.reward)
        if not math.isfinite(reward):
            raise ValueError(
                f"{type(self.task).__name__} returned a non-finite reward {result.reward!r} for {reply!r:.80}"
            )
        terminated = bool(result.terminated)
        next_messages = (
            validate_messages(result.next_messages, "task next_messages")
            if result.next_messages and not terminated
            else []
        )
        info = _json_value(result.info, "task info")
        self.rewards.append(reward)
        self.replies.append((reply, bool(finished), dict(info.get("reward_components", {}))))
        self.messages += [{"role": "assistant", "content": reply}, *next_messages]
        if terminated:
            self.state, self.terminated, self.end_reason = "over", True, TASK_OVER
        if not finished and self.cut_reply_ends:
            # A cut reply is still scored; the budget, not the task, ended the episode.
            self.state, self.truncated, self.end_reason = "over", True, REPLY_TOKEN_BUDGET
        return TurnResult(reward, terminated, next_messages, info)

    def end(self, reason: str) -> None:
        """End a running episode before the task is over (an engine's turn or length budget ran out).

        Args:
            reason: The ``end_reason`` to report, e.g. ``"max_turns"``.
        """
        if self.state != "running":
            raise gym.error.ResetNeeded(f"end({reason!r}) called on an episode that is {self.state}")
        self.state, self.truncated, self.end_reason = "over", True, reason

    def guard(self) -> dict[str, Any]:
        """:func:`guard_metrics` of the replies so far."""
        return guard_metrics(self.replies)

    def outcome(self) -> dict[str, Any]:
        """What an ended episode reports: ``end_reason``, ``episode_reward`` and ``guard``."""
        return {"end_reason": self.end_reason, "episode_reward": self.total_reward, "guard": self.guard()}


def start_episode(
    task: TextTask, *, seed: int | None = None, prompt_id: str | None = None, cut_reply_ends: bool = False
) -> TextEpisode:
    """An episode of ``task``, reset as ``TextEnv.reset`` resets it.

    The prompt is the one ``TextEnv.reset(seed=seed)`` draws or, with ``prompt_id``, the
    one ``reset(options={"prompt_id": prompt_id})`` gives.

    Args:
        task: The task.
        seed: The reset seed (with no ``prompt_id``).
        prompt_id: The prompt to play.
        cut_reply_ends: See :class:`TextEpisode`.
    """
    episode = TextEpisode(task, cut_reply_ends)
    rng, _ = seeding.np_random(None if seed is None else check_integer(seed, "seed", minimum=0))
    episode.reset(rng, None if prompt_id is None else {"prompt_id": prompt_id})
    return episode


def play_episode(
    task: TextTask,
    replies: Sequence[str],
    *,
    seed: int | None = None,
    prompt_id: str | None = None,
    next_messages: Sequence[Sequence[Message]] | None = None,
) -> TextEpisode:
    """Play a whole episode of ``task`` with the given reply texts; return the episode.

    Args:
        task: The task.
        replies: The agent's replies, in order; fewer than the episode allows leave it running.
        seed: The reset seed (with no ``prompt_id``), see :func:`start_episode`.
        prompt_id: The prompt to play.
        next_messages: What the conversation held after each reply but the last (e.g. the
            user turns of a recorded multi-turn conversation); each must equal what the
            task says follows.

    Raises:
        ValueError: More replies than the episode has turns, or recorded next messages
            that differ from the task's.
    """
    episode = start_episode(task, seed=seed, prompt_id=prompt_id)
    for index, reply in enumerate(replies):
        result = episode.step(reply)
        if index == len(replies) - 1:
            break
        if episode.state == "over":
            raise ValueError(
                f"prompt {episode.prompt.prompt_id!r}: the episode ended after reply {index}, "
                f"but {len(replies)} replies were given"
            )
        if next_messages is not None:
            recorded = [dict(m) for m in next_messages[index]] if index < len(next_messages) else None
            if recorded != result.next_messages:
                raise ValueError(
                    f"prompt {episode.prompt.prompt_id!r}: after reply {index} the task says "
                    f"{result.next_messages!r:.120} follows, the conversation holds {recorded!r:.120}"
                )
    return episode
