"""Record every finished episode's generations to a JSON Lines file."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym

from textgym.files import AppendOnlyFile

RECORD_FORMAT_VERSION = 1


class RecordGenerations(gym.Wrapper):
    """Append one JSON line per finished episode: the raw material of benchmark bundles and submissions.

    Each line holds ``format_version``, ``env_id``, ``env_version``, ``env_kwargs`` (the
    spec's keyword arguments), ``textgym_version``, ``seed`` (the last seed given to
    ``reset``) and ``episode_index`` (episodes since that seed), ``prompt_id``, ``prompt``
    (the messages at reset), ``generations`` (the agent's replies, in order), ``turn_rewards``,
    ``reward`` (their sum), ``terminated``, ``truncated``, ``end_reason`` and ``guard``
    (the guard metrics of the final info, if any).

    Crash safety: the file is only ever appended to. Each episode's line is written with one
    ``write`` (newline included) and fsynced before ``step`` returns, so a recorded episode
    survives a crash and lines of several recorders of one file never interleave. A crash
    in the middle of a write can leave only the last line torn (no newline); opening the
    file for recording again cuts it (:func:`textgym.files.repair_jsonl_tail`), and
    :func:`read_records` skips it.

    Args:
        env: A TextGym env (any wrapper stack over :class:`textgym.text_env.TextEnv`).
        path: The JSONL file; parent directories are created.
    """

    def __init__(self, env: gym.Env, path: str | os.PathLike) -> None:
        super().__init__(env)
        self.path = Path(path)
        self._file = AppendOnlyFile(self.path)
        self._seed: int | None = None
        self._episode_index = -1
        self._episode: dict[str, Any] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset and start recording a new episode."""
        observation, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._seed, self._episode_index = int(seed), -1
        self._episode_index += 1
        spec = self.env.spec
        self._episode = {
            "format_version": RECORD_FORMAT_VERSION,
            "env_id": spec.id if spec else None,
            "env_version": spec.version if spec else None,
            "env_kwargs": dict(spec.kwargs) if spec else {},
            "textgym_version": _textgym_version(),
            "seed": self._seed,
            "episode_index": self._episode_index,
            "prompt_id": info.get("prompt_id"),
            "prompt": info.get("messages"),
            "generations": [],
            "turn_rewards": [],
        }
        return observation, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step; when a reply ends note it, when the episode ends write its line."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        if self._episode is not None and "reply" in info:
            self._episode["generations"].append(info["reply"])
            self._episode["turn_rewards"].append(float(reward))
        if self._episode is not None and (terminated or truncated):
            self._episode.update(
                reward=sum(self._episode["turn_rewards"]),
                terminated=bool(terminated),
                truncated=bool(truncated),
                end_reason=info.get("end_reason"),
                guard=info.get("guard"),
            )
            self._file.write(json.dumps(self._episode, ensure_ascii=False, allow_nan=False) + "\n")
            self._episode = None
        return observation, reward, terminated, truncated, info

    def close(self) -> None:
        """Close the file and the env."""
        self._file.close()
        super().close()


def _textgym_version() -> str:
    import textgym

    return textgym.__version__


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a generations file written by :class:`RecordGenerations`.

    A last line without its newline that does not parse is the torn end of a write cut
    short by a crash: it is skipped with a warning. Any other line that does not parse
    raises ``json.JSONDecodeError``.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    records = [json.loads(line) for line in lines[:-1] if line.strip()]
    if lines[-1].strip():  # no newline after it
        try:
            records.append(json.loads(lines[-1]))
        except json.JSONDecodeError:
            warnings.warn(f"{path}: skipped a torn last line (a write interrupted by a crash)", stacklevel=2)
    return records
