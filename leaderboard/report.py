"""What verifying a bundle produces: the bundle as read, its problems and the re-scored numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import textgym
from leaderboard.copies import describe_entry, describe_guard
from leaderboard.tracks import TRACKS, Track

#: Absolute tolerance on every compared number: turn and episode rewards, means, CI bounds.
REWARD_ATOL = 1e-4
#: Size limits of what is read from a bundle.
MAX_MANIFEST_BYTES = 1 << 20
MAX_GENERATIONS_BYTES = 64 << 20
MAX_LINE_BYTES = 1 << 20
MAX_EPISODES = 20_000
#: At most this many problems are listed; the rest are counted.
MAX_LISTED_PROBLEMS = 40

MANIFEST = "bundle.json"
GENERATIONS = "generations.jsonl"


@dataclass(frozen=True)
class Problem:
    """One reason a bundle is rejected.

    Attributes:
        code: A short category (see the module docstring).
        message: One sentence that says what is wrong and where.
    """

    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


@dataclass
class Bundle:
    """A bundle read from disk: its manifest, its episodes and the digest of both files.

    Attributes:
        path: The bundle directory.
        manifest: ``bundle.json``.
        records: The lines of ``generations.jsonl``, each with ``_line`` (its line number) added.
        digest: SHA-256 of ``bundle.json`` and ``generations.jsonl``.
    """

    path: Path
    manifest: dict[str, Any]
    records: list[dict[str, Any]]
    digest: str

    @property
    def track(self) -> Track | None:
        """The official track the bundle claims, or None if it names none."""
        return TRACKS.get(self.manifest["track"]["name"])


@dataclass
class Rescored:
    """One episode replayed through the task.

    Attributes:
        reward: The re-scored episode reward.
        replies: Its generations.
        guard: Its guard metrics, recomputed from the generations.
        messages: The whole conversation (prompt, replies, the task's messages between them).
    """

    reward: float
    replies: list[str]
    guard: dict[str, Any]
    messages: list[dict[str, str]]


@dataclass
class Report:
    """What verification found.

    Attributes:
        bundle: The bundle, when it could be read.
        problems: Every reason to reject; empty when the bundle verifies.
        rescored: Pooled re-scored metrics (``mean_reward``, ``ci95``, ``episodes``).
        rescored_runs: Re-scored metrics per training seed.
        rerun: Re-run results per training seed, when a re-run was asked for.
        guard: The entry's guard metrics, recomputed from the generations
            (:func:`leaderboard.stats.text_metrics`), plus ``perplexity_median``,
            ``perplexity_mean`` and ``perplexity_model`` when measured.
        content: The content fingerprints of the episodes (:func:`content_fingerprints`).
        listed_as: The listed entry that is this very bundle (same files), if any.
        episodes: Each re-scored episode by (training seed, prompt seed).
    """

    bundle: Bundle | None = None
    problems: list[Problem] = field(default_factory=list)
    rescored: dict[str, Any] | None = None
    rescored_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    rerun: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None
    content: dict[str, Any] | None = None
    listed_as: dict[str, Any] | None = None
    episodes: dict[tuple[int, int], Rescored] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def add(self, code: str, message: str) -> None:
        """Record a problem."""
        self.problems.append(Problem(code, message))

    def codes(self) -> set[str]:
        """The codes of the problems found."""
        return {problem.code for problem in self.problems}

    def summary(self) -> str:
        """Human-readable lines: the verdict, then the reasons."""
        if self.ok:
            rescored = self.rescored or {}
            low, high = rescored.get("ci95", [float("nan")] * 2)
            lines = [
                f"OK: {rescored.get('episodes', 0)} episodes re-scored with textgym {textgym.__version__}; "
                f"mean reward {rescored.get('mean_reward', float('nan')):.4f} (95% CI {low:.4f}..{high:.4f}) "
                f"matches the claim within {REWARD_ATOL:g}"
            ]
            if self.rerun:
                lines.append(f"OK: re-run on held-out prompts: {self.rerun['summary']}")
            if self.guard:
                lines.append(f"guard metrics (recomputed from the generations): {describe_guard(self.guard)}")
            if self.listed_as:
                lines.append(f"note: this very bundle is already listed as {describe_entry(self.listed_as)}")
            return "\n".join(lines)
        lines = [f"REJECTED: {len(self.problems)} problem(s)"]
        lines += [f"  {problem}" for problem in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED_PROBLEMS} more")
        return "\n".join(lines)
