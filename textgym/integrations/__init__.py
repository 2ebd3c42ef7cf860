"""Hand textgym tasks to the RL engines people train language models with: TRL, SkyRL and verl.

Every adapter plays episodes through :class:`textgym.core.TextEpisode` and scores through
the task's own ``step``, so an engine gives the same rewards and episode ends as
:class:`textgym.text_env.TextEnv` for the same reply texts. Engines train whole replies: the
token and candidate granularities, and DQN over candidates, stay textgym's own (SB3) path.

A row of an engine's dataset names its episode with an :class:`EpisodeSpec` (JSON): the
env id, the prompt id, the split, any task arguments that differ from the registered ones
and the textgym version that wrote it. An engine worker rebuilds the task from it
(cheaply, cached per process), so the env is importable by module path and driven by JSON.

Modules (each needs its engine, installed through the extra of the same name):

* :mod:`textgym.integrations.trl`: ``make_dataset`` and ``reward_function`` for
  ``GRPOTrainer``, and a multi-turn rollout for Dialogue.
* :mod:`textgym.integrations.skyrl`: a ``skyrl_gym`` ``BaseTextEnv`` over any id, its
  registration and a parquet exporter of SkyRL dataset rows.
* :mod:`textgym.integrations.verl`: the ``textgym_agent`` agent loop, ``compute_score``
  and a parquet exporter of verl dataset rows.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import textgym
from textgym.checks import check_integer
from textgym.core import Message, TextEpisode, start_episode
from textgym.rewards import task_for

#: The engine versions the adapters were tested with (the extras of pyproject.toml pin the same).
SUPPORTED_ENGINES: dict[str, str] = {
    "trl": ">=1.16,<1.17",
    "skyrl-gym": ">=0.4,<0.5",
    "verl": ">=0.9.1,<0.10",
    # Not an engine adapter: Ray runs baselines.vec_env.RayVecEnv, benchmark jobs and leaderboard re-runs.
    "ray": ">=2.60,<2.61",
}


class EngineVersionError(ImportError):
    """An engine that is missing or outside the version range an adapter supports."""


def require_engine(distribution: str) -> str:
    """Check that ``distribution`` is installed within :data:`SUPPORTED_ENGINES`; return its version.

    Raises:
        EngineVersionError: It is not installed, or its version is outside the range.
    """
    from packaging.specifiers import SpecifierSet

    wanted = SUPPORTED_ENGINES[distribution]
    extra = distribution.split("-")[0]
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise EngineVersionError(
            f"textgym's {extra} adapter needs {distribution}{wanted}; install it with pip install 'textgym[{extra}]'"
        ) from error
    if version not in SpecifierSet(wanted):
        raise EngineVersionError(
            f"{distribution} {version} is installed, but textgym's {extra} adapter supports {distribution}{wanted} "
            f"(pip install 'textgym[{extra}]')"
        )
    return version


def _compatible(version: str) -> bool:
    """Same major.minor as the installed textgym: a patch release never changes a prompt or a reward."""
    return str(version).split(".")[:2] == textgym.__version__.split(".")[:2]


@dataclass(frozen=True)
class EpisodeSpec:
    """Which episode of which task a dataset row stands for, as JSON.

    Attributes:
        env_id: A registered TextGym id.
        prompt_id: The prompt within the split.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        task_options: Task arguments that differ from the id's registered ones (JSON values).
        textgym_version: The textgym version that wrote the spec.
    """

    env_id: str
    prompt_id: str
    split: str = "train"
    task_options: dict[str, Any] = field(default_factory=dict)
    textgym_version: str = textgym.__version__

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict."""
        return asdict(self)

    def to_json(self) -> str:
        """The spec as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, value: str | Mapping[str, Any]) -> EpisodeSpec:
        """Read a spec from a JSON string or dict, checking every field.

        Raises:
            ValueError: Malformed JSON, a missing or unknown field, a value of the wrong
                type, an unregistered env id, or a spec written by an incompatible textgym.
        """
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"textgym episode spec is not valid JSON: {error}: {value!r:.80}") from error
        if not isinstance(value, Mapping):
            raise ValueError(f"textgym episode spec must be a JSON object, got {value!r:.80}")
        names = {"env_id", "prompt_id", "split", "task_options", "textgym_version"}
        unknown, missing = sorted(set(value) - names), sorted({"env_id", "prompt_id"} - set(value))
        if unknown or missing:
            raise ValueError(f"textgym episode spec: unknown fields {unknown}, missing {missing}: {dict(value)!r:.100}")
        spec = cls(**dict(value))
        for name in ("env_id", "prompt_id", "split", "textgym_version"):
            if not isinstance(getattr(spec, name), str):
                raise ValueError(f"textgym episode spec field {name!r} must be a string, got {getattr(spec, name)!r}")
        if not isinstance(spec.task_options, Mapping):
            raise ValueError(f"textgym episode spec task_options must be an object, got {spec.task_options!r:.80}")
        if not _compatible(spec.textgym_version):
            raise ValueError(
                f"textgym episode spec was written by textgym {spec.textgym_version}, which scores differently from "
                f"the installed textgym {textgym.__version__}; export the dataset again"
            )
        spec.task()  # names an unknown env id, split or task argument now
        return spec

    def task(self) -> Any:
        """The text-level task (cached per process)."""
        return task_for(self.env_id, self.split, **self.task_options)

    def start(self, cut_reply_ends: bool = False) -> TextEpisode:
        """A fresh episode of this spec's task, reset to its prompt.

        Each episode plays its own shallow copy of the cached task, so episodes can
        interleave (an engine steps many trajectories at once) while sharing its data.

        Args:
            cut_reply_ends: Whether a reply cut by its token budget ends the episode
                (see :class:`textgym.core.TextEpisode`).

        Raises:
            ValueError: The prompt id is not in the split.
        """
        # A task keeps its current episode in attributes that reset/step rebind (the
        # Dialogue turn, the posed problem): a copy gives each episode its own.
        return start_episode(copy.copy(self.task()), seed=0, prompt_id=self.prompt_id, cut_reply_ends=cut_reply_ends)


def prompt_rows(env_id: str, split: str, n: int | None = None, **task_options: Any) -> list[tuple[str, list[Message]]]:
    """``(prompt_id, messages)`` of a split's prompts: every prompt (the first ``n``), in the data's order.

    A task whose prompts are generated without end (SparseCompletion) needs ``n``: its
    prompts are those ``TextEnv.reset(seed=i)`` draws for ``i`` in ``range(n)``.

    Raises:
        ValueError: An unknown env id, or ``n`` missing for a generated task or not a positive integer.
    """
    if n is not None:
        n = check_integer(n, "n", minimum=1)
    task = task_for(env_id, split, **task_options)
    ids = task.prompt_ids()
    if ids is None:
        if n is None:
            raise ValueError(f"{env_id} generates its prompts without end; pass n, the number of prompts")
        prompts = [start_episode(task, seed=seed).prompt for seed in range(n)]
    else:
        prompts = [start_episode(task, seed=0, prompt_id=prompt_id).prompt for prompt_id in list(ids)[:n]]
    return [(prompt.prompt_id, prompt.messages) for prompt in prompts]


__all__ = ["SUPPORTED_ENGINES", "EngineVersionError", "EpisodeSpec", "prompt_rows", "require_engine"]
