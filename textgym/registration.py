"""The registry of TextGym ids: one flat table, string entry points, versioned ids.

Importing :mod:`textgym` registers every id; no env module is imported until
``gym.make`` needs it. One env class backs one task at every granularity through
``kwargs``. A change that affects learning bumps the version suffix.
"""

from __future__ import annotations

import gymnasium as gym

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
