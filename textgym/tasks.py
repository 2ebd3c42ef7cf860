"""The base of tasks whose episodes each start from one prompt of a split.

:class:`PromptSetTask` holds what every such task does alike, so each task module keeps
only what makes its task different (its data, its prompt, its reward):

* an episode's prompt is drawn with the env's ``rng`` or named by
  ``reset(options={"prompt_id": ...})``;
* reset options are checked (only ``prompt_id`` is known; it must be a str of the split);
* ``step`` before ``reset`` or after the episode ended raises :class:`TaskResetNeeded`;
* the episode's state is dropped when the episode ends.

The state of the running episode is one attribute that ``reset`` and ``step`` rebind and
never mutate, as :class:`textgym.core.TextTask` requires, so shallow copies of one task
(as :mod:`textgym.rewards` makes of a cached task) play episodes side by side.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.error import ResetNeeded

from textgym.core import TaskPrompt, TextTask, TurnResult
from textgym.data import DatasetError, check_split

#: The reset options a prompt-set task understands.
RESET_OPTIONS = ("prompt_id",)


class TaskResetNeeded(ResetNeeded, RuntimeError):
    """``step`` called on a task with no running episode.

    A :class:`gymnasium.error.ResetNeeded`, as ``TextEnv.step`` raises; also a
    ``RuntimeError``, as tasks raised before they shared this base.
    """


class PromptSetTask(TextTask):
    """A task that starts each episode from one prompt of its split.

    A subclass calls ``super().__init__(split)``, then :meth:`index_prompts` with its
    split's prompt ids (unless, like SparseCompletion, its prompts have no end: then it
    overrides :meth:`draw_prompt_id` and :meth:`check_prompt_id`), and implements
    :meth:`start_episode` and :meth:`score_reply`.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"``.

    Attributes:
        split: The split prompts come from.
    """

    _episode: Any = None
    _episode_ended = False

    def __init__(self, split: str = "train") -> None:
        self.split = check_split(split)
        self._ids: tuple[str, ...] = ()
        self._by_id: dict[str, int] = {}

    @property
    def task_name(self) -> str:
        """The task's name in messages: the class name without ``Task``."""
        return type(self).__name__.removesuffix("Task")

    def index_prompts(self, prompt_ids: Sequence[str], source: str, noun: str) -> None:
        """Record the split's prompt ids, in the data's order.

        Args:
            prompt_ids: The ids of the split's prompts.
            source: What the prompts come from, for the error.
            noun: What a prompt is called, for the error (``"conversations"``).

        Raises:
            DatasetError: The split has no prompts.
        """
        if not prompt_ids:
            raise DatasetError(f"{source} has no {noun} in split {self.split!r}")
        self._ids = tuple(prompt_ids)
        self._by_id = {prompt_id: index for index, prompt_id in enumerate(self._ids)}

    def prompt_ids(self) -> list[str] | None:
        """Every prompt id of this split, in the data's order."""
        return list(self._ids)

    def draw_prompt_id(self, rng: np.random.Generator) -> str:
        """A prompt id of the split, drawn uniformly with ``rng``."""
        return self._ids[int(rng.integers(len(self._ids)))]

    def check_prompt_id(self, prompt_id: str) -> None:
        """Raise ``ValueError`` naming ``prompt_id`` unless it is a prompt of this split."""
        if prompt_id not in self._by_id:
            raise ValueError(f"unknown prompt_id {prompt_id!r} in {self.task_name} split {self.split!r}")

    @abstractmethod
    def start_episode(self, prompt_id: str) -> tuple[TaskPrompt, Any]:
        """The prompt of ``prompt_id`` and the episode's first state (never mutated afterwards)."""

    @abstractmethod
    def score_reply(self, state: Any, reply: str) -> tuple[TurnResult, Any]:
        """Score ``reply`` in ``state``: the turn's result and the next state (dropped once the episode ends)."""

    @property
    def in_episode(self) -> bool:
        """Whether an episode is running: reset, and not yet terminated."""
        return self._episode is not None

    def reset(self, rng: np.random.Generator, options: Mapping[str, Any] | None = None) -> TaskPrompt:
        """Draw a prompt of the split with ``rng`` (or take ``options["prompt_id"]``) and start its episode.

        Raises:
            TypeError: ``options`` is not a mapping.
            ValueError: An unknown option, or a ``prompt_id`` that is not a str of this split.
        """
        prompt_id = self._requested_prompt_id(options)
        if prompt_id is None:
            prompt_id = self.draw_prompt_id(rng)
        prompt, state = self.start_episode(prompt_id)
        self._episode, self._episode_ended = state, False
        return prompt

    def step(self, reply: str) -> TurnResult:
        """Score ``reply``; the episode's state is dropped when the episode ends.

        Raises:
            TaskResetNeeded: Before ``reset`` or after the episode ended.
        """
        if self._episode is None:
            when = "after the episode ended" if self._episode_ended else "before reset()"
            raise TaskResetNeeded(f"{type(self).__name__}.step() called {when}; call reset() first")
        result, state = self.score_reply(self._episode, reply)
        over = bool(result.terminated)
        self._episode, self._episode_ended = (None if over else state), over
        return result

    def _requested_prompt_id(self, options: Mapping[str, Any] | None) -> str | None:
        if options is None:
            return None
        if not isinstance(options, Mapping):
            raise TypeError(f"reset options must be a dict, got {type(options).__name__}: {options!r:.80}")
        unknown = sorted(set(options) - set(RESET_OPTIONS), key=repr)
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; {self.task_name} accepts 'prompt_id'")
        prompt_id = options.get("prompt_id")
        if prompt_id is None:  # "no particular prompt", as when a caller forwards an optional id
            return None
        if not isinstance(prompt_id, str):
            # ValueError, as for any other prompt_id the split does not hold.
            kind = type(prompt_id).__name__
            raise ValueError(f"unknown prompt_id {prompt_id!r:.80}: a prompt_id is a str, got {kind}")
        self.check_prompt_id(prompt_id)
        return prompt_id
