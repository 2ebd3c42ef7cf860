"""Tracks: what a leaderboard entry must have measured to be ranked with the others.

A track fixes, for every TextGym env id, the split, the number of episodes, the prompt
seeds (episode ``i`` of every run is reset with ``prompt_seed_base + i``, as
:func:`baselines.evaluate.evaluate_policy` does) and the number of training seeds
(independent runs). It also pins the env: every ``gym.make`` keyword argument except
``model`` (the submitter's LM) and ``render_mode`` must have its registered value, and
``split`` the track's, so no entry can be measured on easier problems (another
difficulty, fewer task families, a format reward, a larger reply budget).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import textgym
from textgym.registration import (  # noqa: F401 - re-exported: the leaderboard's names for them
    effective_env_kwargs,
    env_class,
    env_parameter_names,
    registered_spec,
    task_options,
)

#: ``gym.make`` keyword arguments a submission may choose freely.
FREE_ENV_KWARGS = ("model", "render_mode")


@dataclass(frozen=True)
class Track:
    """One leaderboard track (it applies to every registered TextGym env id).

    Attributes:
        name: The track's name, as bundles claim it.
        split: The split every episode is drawn from.
        episodes: Episodes per run.
        prompt_seed_base: Episode ``i`` resets with seed ``prompt_seed_base + i``.
        training_seeds: Independent training runs required.
        description: One line for the page.
    """

    name: str
    split: str
    episodes: int
    prompt_seed_base: int
    training_seeds: int
    description: str

    @property
    def prompt_seeds(self) -> range:
        """The prompt seeds of one run, in episode order."""
        return range(self.prompt_seed_base, self.prompt_seed_base + self.episodes)

    def as_claim(self, env_id: str) -> dict[str, Any]:
        """The ``track`` object a bundle for ``env_id`` on this track holds."""
        return {
            "name": self.name,
            "env_id": env_id,
            "split": self.split,
            "episodes": self.episodes,
            "prompt_seed_base": self.prompt_seed_base,
            "training_seeds": self.training_seeds,
        }


TRACKS: dict[str, Track] = {
    "quick": Track(
        name="quick",
        split="validation",
        episodes=32,
        prompt_seed_base=10_000,
        training_seeds=3,
        description="validation split, 32 episodes per run (prompt seeds 10000..10031), 3 training seeds",
    ),
}

_VERSION = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})(?:[-+.][0-9A-Za-z.+-]{0,40})?$")


def parse_version(version: str) -> tuple[int, int, int]:
    """``(major, minor, patch)`` of a version string like ``"0.1.0"`` or ``"1.2.3.dev1"``.

    >>> parse_version("0.1.0")
    (0, 1, 0)

    Raises:
        ValueError: Not a version string.
    """
    match = _VERSION.match(version) if isinstance(version, str) else None
    if not match:
        raise ValueError(f"{version!r:.60} is not a version string like '0.1.0'")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def textgym_compatible(version: str, installed: str | None = None) -> bool:
    """Whether generations recorded under textgym ``version`` are scored alike by the installed textgym.

    Compatible means the same major and minor version: a patch release never changes a
    reward or a prompt (a change that does bumps the env's version suffix or the minor
    version).

    >>> textgym_compatible("0.1.3", "0.1.0"), textgym_compatible("0.2.0", "0.1.0")
    (True, False)
    """
    installed = installed or textgym.__version__
    try:
        return parse_version(version)[:2] == parse_version(installed)[:2]
    except ValueError:
        return False


def pinned_kwargs_problems(env_id: str, kwargs: dict[str, Any], split: str) -> list[str]:
    """What differs between ``kwargs`` and the registered env on ``split`` (empty when nothing does).

    ``model`` and ``render_mode`` are free; every other argument must take its
    registered value, and ``split`` must be the track's.
    """
    problems = []
    known = set(effective_env_kwargs(env_id, {}))
    for name in sorted(set(kwargs) - known):
        problems.append(f"env kwarg {name!r} is not an argument of {env_id}")
    actual = effective_env_kwargs(env_id, {k: v for k, v in kwargs.items() if k in known})
    expected = effective_env_kwargs(env_id, {"split": split})
    for name in sorted(known - set(FREE_ENV_KWARGS)):
        if _normalise(actual.get(name)) != _normalise(expected.get(name)):
            problems.append(
                f"env kwarg {name}={actual.get(name)!r:.80} differs from the track's {expected.get(name)!r:.80}"
            )
    return problems


def _normalise(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value
