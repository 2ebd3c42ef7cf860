"""The registry of TextGym ids: one flat table, string entry points, versioned ids.

Importing :mod:`textgym` registers every id; no env module is imported until
``gym.make`` needs it. One env class backs one task at every granularity through
``kwargs``. A change that affects learning bumps the version suffix.
"""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym

from textgym.text_env import TextEnv

NAMESPACE = "TextGym"

#: (id, entry point, kwargs)
ENV_TABLE: tuple[tuple[str, str, dict], ...] = (
    ("TextGym/Dialogue-v0", "textgym.envs.dialogue:DialogueEnv", {"granularity": "token"}),
    ("TextGym/DialogueCandidate-v0", "textgym.envs.dialogue:DialogueEnv", {"granularity": "candidate"}),
    ("TextGym/DialogueUtterance-v0", "textgym.envs.dialogue:DialogueEnv", {"granularity": "utterance"}),
    # summarization
    (
        "TextGym/Summarization-v0",
        "textgym.envs.summarization:SummarizationEnv",
        {"granularity": "token", "max_context_tokens": 512, "max_reply_tokens": 48},
    ),
    (
        "TextGym/SummarizationCandidate-v0",
        "textgym.envs.summarization:SummarizationEnv",
        {"granularity": "candidate", "max_context_tokens": 512, "max_reply_tokens": 48},
    ),
    (
        "TextGym/SummarizationUtterance-v0",
        "textgym.envs.summarization:SummarizationEnv",
        {"granularity": "utterance", "max_context_tokens": 512, "max_reply_tokens": 48},
    ),
    # sparse completion
    (
        "TextGym/SparseCompletion-v0",
        "textgym.envs.sparse_completion:SparseCompletionEnv",
        {"granularity": "token", "max_reply_tokens": 16},
    ),
    (
        "TextGym/SparseCompletionCandidate-v0",
        "textgym.envs.sparse_completion:SparseCompletionEnv",
        {"granularity": "candidate"},
    ),
    (
        "TextGym/SparseCompletionUtterance-v0",
        "textgym.envs.sparse_completion:SparseCompletionEnv",
        {"granularity": "utterance"},
    ),
    # sentiment
    ("TextGym/Sentiment-v0", "textgym.envs.sentiment:SentimentEnv", {"granularity": "token"}),
    ("TextGym/SentimentCandidate-v0", "textgym.envs.sentiment:SentimentEnv", {"granularity": "candidate"}),
    ("TextGym/SentimentUtterance-v0", "textgym.envs.sentiment:SentimentEnv", {"granularity": "utterance"}),
)


def register_envs() -> None:
    """Register every id of :data:`ENV_TABLE` with Gymnasium (idempotent)."""
    for env_id, entry_point, kwargs in ENV_TABLE:
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=dict(kwargs), disable_env_checker=False)


def env_ids() -> list[str]:
    """Every registered TextGym id."""
    return [env_id for env_id, _, _ in ENV_TABLE]


def registered_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of a TextGym id.

    Raises:
        KeyError: ``env_id`` is not a registered TextGym id.
    """
    if env_id not in env_ids() or env_id not in gym.registry:
        raise KeyError(env_id)
    return gym.registry[env_id]


def env_class(env_id: str) -> type:
    """The :class:`~textgym.text_env.TextEnv` subclass behind a registered TextGym id.

    Only ids of :func:`env_ids` are resolved, so the entry point loaded is always one of
    the library's own modules.

    Raises:
        KeyError: ``env_id`` is not a registered TextGym id.
    """
    spec = registered_spec(env_id)
    entry_point = spec.entry_point
    if not isinstance(entry_point, str) or not entry_point.startswith("textgym."):
        raise KeyError(env_id)
    cls = gym.envs.registration.load_env_creator(entry_point)
    if not (isinstance(cls, type) and issubclass(cls, TextEnv)):
        raise KeyError(env_id)
    return cls


def _defaults(function: Any) -> dict[str, Any]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def env_parameter_names() -> set[str]:
    """The :class:`~textgym.text_env.TextEnv` constructor arguments (everything else goes to the task)."""
    return set(_defaults(TextEnv.__init__))


def effective_env_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every env and task argument's value for ``gym.make(env_id, **kwargs)``: defaults, then registry, then kwargs."""
    cls = env_class(env_id)
    values = {**_defaults(TextEnv.__init__), **_defaults(cls.task_class.__init__)}
    return {**values, **registered_spec(env_id).kwargs, **kwargs}


def task_options(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments the env passes to its task's constructor for ``gym.make(env_id, **kwargs)``."""
    merged = {**registered_spec(env_id).kwargs, **kwargs}
    return {name: value for name, value in merged.items() if name not in env_parameter_names()}


def make_task(env_id: str, **kwargs: Any) -> Any:
    """The text-level task ``gym.make(env_id, **kwargs)`` builds, without loading a tokenizer or LM.

    Raises:
        KeyError: ``env_id`` is not a registered TextGym id.
    """
    return env_class(env_id).task_class(**task_options(env_id, kwargs))
