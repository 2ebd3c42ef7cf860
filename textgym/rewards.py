"""Batch reward functions in TRL's shape: a task's reward for many completions at once.

``reward_function(env_id)`` returns ``reward(completions, prompt_id, **columns) -> list[float]``,
the signature TRL's ``GRPOTrainer`` calls reward functions with (its dataset's columns
arrive as keyword arguments, one list entry per completion). Each completion is played as
an episode of the env's text-level task (:func:`textgym.core.play_episode`), so a reward
is, by construction, what ``TextEnv.step`` gives for the same reply texts: there is one
scoring path. Each task module exports its function (``dialogue_reward``,
``summarization_reward``, ``sparse_completion_reward``; Sentiment's ``sentiment_reward``
needs no prompt).

A completion is a string (one reply) or, as TRL passes conversational completions, a list
of chat messages: its assistant messages are the replies, in order, and the messages
between them must be what the task says follows each reply (the user turns of a
Dialogue). The reward is the sum of the replies' rewards. A ``textgym_conversation``
column (what :mod:`textgym.integrations.trl`'s multi-turn rollout returns) takes the
place of the completion when present.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from textgym.core import Message, TextEpisode, TextTask, play_episode
from textgym.registration import env_class, env_ids, make_task

#: The column that carries a whole multi-turn conversation (the messages after the prompt).
CONVERSATION_COLUMN = "textgym_conversation"

Completion = str | Sequence[Mapping[str, str]]


@functools.lru_cache(maxsize=64)
def _cached_task(env_id: str, options_json: str) -> TextTask:
    return make_task(env_id, **json.loads(options_json))


def task_for(env_id: str, split: str | None = None, **task_options: Any) -> TextTask:
    """The text-level task of ``env_id`` with its registered arguments (and ``split``), cached per process.

    Raises:
        ValueError: ``env_id`` is not a registered TextGym id, or an argument is invalid.
    """
    if not isinstance(env_id, str) or env_id not in env_ids():
        raise ValueError(f"unknown env id {env_id!r}; TextGym ids: {', '.join(env_ids())}")
    if split is not None:
        task_options = {**task_options, "split": split}
    return _cached_task(env_id, json.dumps(task_options, sort_keys=True))


def completion_replies(completion: Any, what: str = "completion") -> tuple[list[str], list[list[Message]]]:
    """The replies of a completion and the messages that followed each reply but the last.

    >>> completion_replies("Paris.")
    (['Paris.'], [])
    >>> completion_replies([{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "How are you?"},
    ...                     {"role": "assistant", "content": "Fine."}])
    (['Hi.', 'Fine.'], [[{'role': 'user', 'content': 'How are you?'}]])

    Raises:
        TypeError: ``completion`` is neither a string nor a list of messages.
        ValueError: A message is malformed, there is no assistant message, or the list
            does not start with one.
    """
    if isinstance(completion, str):
        return [completion], []
    if not isinstance(completion, Sequence) or not completion:
        raise TypeError(f"{what} must be a str or a non-empty list of chat messages, got {completion!r:.80}")
    replies: list[str] = []
    between: list[list[Message]] = []
    for index, message in enumerate(completion):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise ValueError(f"{what}[{index}] must be a {{'role', 'content'}} dict with str content: {message!r:.80}")
        role = message.get("role")
        if role == "assistant":
            replies.append(message["content"])
            between.append([])
        elif not replies:
            raise ValueError(f"{what} must start with an assistant message, got role {role!r} at index {index}")
        else:
            between[-1].append({"role": str(role), "content": message["content"]})
    return replies, between[:-1]


def _column(columns: Mapping[str, Any], name: str, count: int) -> list[Any] | None:
    values = columns.get(name)
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        values = [values] * count
    if len(values) != count:
        raise ValueError(f"column {name!r} has {len(values)} values for {count} completions")
    return list(values)


def _check_lengths(completions: Any, prompt_ids: Any) -> None:
    if isinstance(completions, (str, bytes)) or not isinstance(completions, Sequence):
        raise TypeError(f"completions must be a list, got {type(completions).__name__}")
    if isinstance(prompt_ids, (str, bytes)) or not isinstance(prompt_ids, Sequence):
        raise TypeError(f"prompt_id must be a list with one id per completion, got {prompt_ids!r:.80}")
    if len(prompt_ids) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(prompt_ids)} prompt ids")


def score_episodes(
    env_id: str,
    completions: Sequence[Completion],
    prompt_ids: Sequence[str],
    splits: Sequence[str | None] | None = None,
) -> list[TextEpisode]:
    """Play each completion as an episode of ``env_id``'s task, from its prompt id; return the episodes.

    Raises:
        TypeError: ``completions`` is not a list, or a completion is neither text nor messages.
        ValueError: Lengths differ, a prompt id is unknown in its split, or a conversation
            does not follow the task (see :func:`textgym.core.play_episode`).
    """
    _check_lengths(completions, prompt_ids)
    splits = list(splits) if splits is not None else [None] * len(completions)
    episodes = []
    for index, (completion, prompt_id, split) in enumerate(zip(completions, prompt_ids, splits, strict=True)):
        replies, following = completion_replies(completion, f"completion {index}")
        # A copy of the cached task: its episode state is the copy's own (see TextTask), so
        # scoring from several threads at once cannot mix episodes.
        task = copy.copy(task_for(env_id, split))
        episode = play_episode(task, replies, prompt_id=prompt_id, next_messages=following)
        episodes.append(episode)
    return episodes


def _same_task(row_env_id: Any, env_id: str) -> bool:
    task_for(row_env_id)  # names an unknown id
    return env_class(row_env_id) is env_class(env_id)


def reward_function(env_id: str, split: str | None = None) -> Callable[..., list[float | None]]:
    """A reward function for ``env_id``'s task in TRL's shape, ``reward(completions, prompt_id, **columns)``.

    The task is rebuilt from the env's registered arguments (cached per process) and each
    completion is scored from its ``prompt_id``. Columns the function reads: ``prompt_id``
    (required), ``split`` (default: ``split``, else the task's default ``"train"``),
    ``env_id`` (rows of another env get ``None``, which TRL reads as "not applicable", so
    one trainer can mix tasks) and ``textgym_conversation``; others are ignored.

    Args:
        env_id: A registered TextGym id (any granularity of a task scores alike).
        split: The split of every prompt id, when the rows carry no ``split`` column.

    Raises:
        ValueError: ``env_id`` is not a registered TextGym id.
    """
    task_for(env_id, split)  # fail now, naming the id, rather than at the first batch
    name = env_class(env_id).task_class.__name__.removesuffix("Task")
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")

    def reward(
        completions: Sequence[Completion], prompt_id: Sequence[str] | None = None, **columns: Any
    ) -> list[float | None]:
        if prompt_id is None:
            raise ValueError(f"{snake}_reward needs a 'prompt_id' column (one id per completion)")
        _check_lengths(completions, prompt_id)
        count = len(completions)
        conversations = _column(columns, CONVERSATION_COLUMN, count)
        scored = conversations if conversations is not None else completions
        env_of = _column(columns, "env_id", count)
        splits = _column(columns, "split", count) or [split] * count
        mine = [index for index in range(count) if env_of is None or _same_task(env_of[index], env_id)]
        episodes = score_episodes(
            env_id, [scored[i] for i in mine], [prompt_id[i] for i in mine], [splits[i] for i in mine]
        )
        rewards: list[float | None] = [None] * count
        for index, episode in zip(mine, episodes, strict=True):
            rewards[index] = episode.total_reward
        return rewards

    reward.__name__ = reward.__qualname__ = f"{snake}_reward"
    reward.__doc__ = (
        f"The {name} reward of each completion, scored by replaying it through {env_id}'s task; "
        "see :func:`textgym.rewards.reward_function`."
    )
    return reward
