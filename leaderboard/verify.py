"""Verify a result bundle with the library's own code: rebuild every prompt, re-score every generation.

A bundle is a directory holding ``bundle.json`` (the manifest, see
``schema/bundle.schema.json``), ``generations.jsonl`` (one line per episode as
:class:`textgym.wrappers.RecordGenerations` writes it, plus ``training_seed``; see
``schema/generation.schema.json``) and optionally ``checkpoint/<name>/`` directories.

:func:`verify_bundle` checks, and reports every failure as a :class:`Problem` with a
short code and a sentence:

1. ``path`` / ``too_large`` / ``malformed`` / ``hostile`` / ``schema``: the files are
   regular files within the size limits, strict JSON, and valid against the schemas.
2. ``env`` / ``env_version`` / ``textgym_version`` / ``env_kwargs``: the env id is a
   registered TextGym id at the registered version, the textgym version is compatible
   (same major.minor as the installed one), every line agrees with the manifest, and
   the env arguments are the track's (only ``model`` and ``render_mode`` are free).
3. ``track``: the claimed track is an official one; there are at least as many runs
   as the track's training seeds, with distinct seeds; each run has exactly one
   episode per prompt seed of the track, each reset with its own seed
   (``episode_index`` 0); no episode is duplicated, none is missing, none extra.
4. ``prompt``: each episode's prompt, rebuilt at the text level exactly as
   ``TextEnv.reset(seed=s)`` builds it (the task class, ``np_random(s)``), has the
   recorded prompt id and messages.
5. ``reward``: replaying the generations turn by turn through ``task.step`` gives the
   recorded turn rewards and ends the episode where the record says it ended.
6. ``claim``: each episode's reward, each run's mean and CI and the pooled mean and CI
   equal the re-scored numbers.
7. ``guard``: the guard metrics are recomputed from the generations
   (:func:`textgym.core.guard_metrics`); an episode whose recorded guard numbers differ is
   rejected. The entry's text metrics (:func:`leaderboard.stats.text_metrics`) come from the
   recomputed values only; the bundle's are never used. With ``perplexity=True`` the
   replies' perplexity is measured under the env's LM (``perplexity``, when it cannot be).
8. ``copy``: given the listed entries, a bundle whose episodes are those of a listed
   entry (run for run, exactly or after whitespace and case normalisation) is rejected,
   naming that entry: entries are identified by the content of their episodes, not by
   their manifest.

Every number is compared with the absolute tolerance :data:`REWARD_ATOL`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.utils import seeding

import textgym
from leaderboard import safejson
from leaderboard.checkpoints import check_bundle_checkpoints
from leaderboard.stats import metrics, text_metrics
from leaderboard.tracks import (
    TRACKS,
    Track,
    effective_env_kwargs,
    pinned_kwargs_problems,
    registered_spec,
    textgym_compatible,
)
from textgym.core import TextEpisode
from textgym.registration import make_task
from textgym.stats import bootstrap_ci

#: Absolute tolerance on every compared number: turn and episode rewards, means, CI bounds.
REWARD_ATOL = 1e-4
#: Size limits of what is read from a bundle.
MAX_MANIFEST_BYTES = 1 << 20
MAX_GENERATIONS_BYTES = 64 << 20
MAX_LINE_BYTES = 1 << 20
MAX_EPISODES = 20_000
#: At most this many problems are listed; the rest are counted.
MAX_LISTED_PROBLEMS = 40
#: Guard metrics recomputed from the text and compared with the record's (others are ignored, never used).
CHECKED_GUARD_KEYS = ("reply_words", "distinct_1", "distinct_2", "repetition_2", "empty_replies")

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
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


# -- reading ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _validators() -> dict[str, Any]:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {}
    for name in ("bundle", "generation", "entries"):
        schemas[name] = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    registry = Registry().with_resources(
        [(schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()]
    )
    return {name: Draft202012Validator(schema, registry=registry) for name, schema in schemas.items()}


def schema_errors(instance: Any, schema: str, what: str, limit: int = 5) -> list[str]:
    """Schema violations of ``instance`` against ``schema`` (``"bundle"``, ``"generation"``, ``"entries"``)."""
    errors = sorted(_validators()[schema].iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    messages = []
    for error in errors[:limit]:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        message = error.message if len(error.message) <= 240 else f"{error.message[:100]}...{error.message[-100:]}"
        messages.append(f"{what} at {where}: {message}")
    if len(errors) > limit:
        messages.append(f"{what}: {len(errors) - limit} more schema violations")
    return messages


def load_bundle(path: str | Path, report: Report) -> Bundle | None:
    """Read and schema-check a bundle directory; on failure add problems to ``report`` and return None."""
    root = Path(path)
    if root.is_symlink() or not root.is_dir():
        report.add("path", f"bundle {str(root)!r} is not a directory")
        return None
    try:
        manifest_text = safejson.read_limited(root / MANIFEST, MAX_MANIFEST_BYTES, MANIFEST)
        manifest = safejson.loads(manifest_text, MANIFEST)
        generations_text = safejson.read_limited(root / GENERATIONS, MAX_GENERATIONS_BYTES, GENERATIONS)
        lines = list(safejson.iter_jsonl(generations_text, MAX_LINE_BYTES, MAX_EPISODES, GENERATIONS))
    except safejson.UnsafeInputError as error:
        report.add(error.code, str(error))
        return None
    messages = schema_errors(manifest, "bundle", MANIFEST)
    records = []
    for number, record in lines:
        errors = schema_errors(record, "generation", f"{GENERATIONS} line {number}", limit=3)
        messages += errors
        if not errors:
            records.append({**record, "_line": number})
        if len(messages) > MAX_LISTED_PROBLEMS:
            break
    if not lines:
        messages.append(f"{GENERATIONS} holds no episodes")
    for message in messages:
        report.add("schema", message)
    if messages:
        return None
    digest = hashlib.sha256(manifest_text.encode("utf-8") + b"\0" + generations_text.encode("utf-8")).hexdigest()
    return Bundle(root, manifest, records, digest)


# -- checks -----------------------------------------------------------------------------


def _registered_versions(env_id: str) -> list[str]:
    namespace, name, _ = gym.envs.registration.parse_env_id(env_id)
    return sorted(i for i in textgym.env_ids() if gym.envs.registration.parse_env_id(i)[:2] == (namespace, name))


def check_env(bundle: Bundle, report: Report) -> bool:
    """Env id, version, textgym version and env arguments; False when the env cannot be rebuilt."""
    env = bundle.manifest["env"]
    env_id, version = env["id"], env["version"]
    try:
        spec = registered_spec(env_id)
    except KeyError:
        others = _registered_versions(env_id)
        if others:
            report.add("env_version", f"{env_id} is not registered; this textgym registers {', '.join(others)}")
        else:
            report.add("env", f"{env_id!r} is not a registered TextGym env id")
        return False
    if spec.version != version:
        report.add(
            "env_version", f"env version {version} differs from the registered {env_id} (version {spec.version})"
        )
        return False
    claimed = bundle.manifest["textgym_version"]
    if not textgym_compatible(claimed):
        report.add(
            "textgym_version",
            f"textgym {claimed} is incompatible with the installed textgym {textgym.__version__} "
            "(rewards are only comparable within one major.minor version)",
        )
    fields = (
        ("env_id", env_id, "env"),
        ("env_version", version, "env_version"),
        ("textgym_version", claimed, "textgym_version"),
        ("env_kwargs", env["kwargs"], "env_kwargs"),
    )
    for record in bundle.records:
        for key, expected, code in fields:
            if record[key] != expected:
                report.add(
                    code,
                    f"{GENERATIONS} line {record['_line']}: {key} {record[key]!r:.80} differs from "
                    f"bundle.json's {expected!r:.80}",
                )
    track = bundle.manifest["track"]
    for message in pinned_kwargs_problems(env_id, env["kwargs"], track["split"]):
        report.add("env_kwargs", message)
    return True


def check_track(bundle: Bundle, report: Report) -> dict[int, list[dict[str, Any]]]:
    """The claimed track, the runs and the episode set; returns each run's episodes in prompt-seed order."""
    claimed = bundle.manifest["track"]
    track = bundle.track
    runs: dict[int, list[dict[str, Any]]] = {}
    if track is None:
        report.add("track", f"unknown track {claimed['name']!r}; official tracks: {', '.join(sorted(TRACKS))}")
        return runs
    official = track.as_claim(bundle.manifest["env"]["id"])
    for key, value in official.items():
        if claimed[key] != value:
            report.add("track", f"track {track.name!r} has {key}={value!r}, the bundle claims {claimed[key]!r:.80}")
    seeds = [run["training_seed"] for run in bundle.manifest["runs"]]
    if len(set(seeds)) != len(seeds):
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        report.add("track", f"training seeds {repeated} are listed more than once in bundle.json runs")
    if len(set(seeds)) < track.training_seeds:
        report.add(
            "track",
            f"track {track.name!r} needs {track.training_seeds} training seeds (independent runs); "
            f"the bundle has {len(set(seeds))}",
        )
    by_key: dict[tuple[int, int], dict[str, Any]] = {}
    wanted = set(track.prompt_seeds)
    for record in bundle.records:
        where = f"{GENERATIONS} line {record['_line']}"
        seed, training_seed = record["seed"], record["training_seed"]
        if training_seed not in seeds:
            report.add("track", f"{where}: training seed {training_seed} is not one of bundle.json's runs {seeds}")
            continue
        if seed not in wanted:
            report.add("track", f"{where}: prompt seed {seed} is not one of the track's {track.prompt_seed_base}..")
            continue
        if record["episode_index"] != 0:
            report.add(
                "track",
                f"{where}: episode_index {record['episode_index']}; every episode must be reset with its own "
                "prompt seed (episode_index 0)",
            )
            continue
        if (training_seed, seed) in by_key:
            first = by_key[(training_seed, seed)]["_line"]
            report.add(
                "track",
                f"{where}: duplicate episode: prompt seed {seed} of training seed {training_seed} "
                f"already appears on line {first}",
            )
            continue
        by_key[(training_seed, seed)] = record
    for training_seed in sorted(set(seeds)):
        episodes = [by_key[(training_seed, s)] for s in track.prompt_seeds if (training_seed, s) in by_key]
        missing = [s for s in track.prompt_seeds if (training_seed, s) not in by_key]
        if missing:
            shown = ", ".join(str(s) for s in missing[:8]) + (" ..." if len(missing) > 8 else "")
            report.add(
                "track",
                f"training seed {training_seed} has {len(episodes)} of the {track.episodes} episodes the track "
                f"needs; missing prompt seeds {shown}",
            )
        runs[training_seed] = episodes
    return runs


def start_episode(task: Any, seed: int) -> TextEpisode:
    """The episode ``env.reset(seed=seed)`` starts, at the text level (:class:`textgym.core.TextEpisode`)."""
    episode = TextEpisode(task)
    episode.reset(seeding.np_random(seed)[0])
    return episode


def _where(record: dict[str, Any]) -> str:
    seeds = f"training seed {record['training_seed']}, prompt seed {record['seed']}"
    return f"{GENERATIONS} line {record['_line']} ({seeds})"


def rescore_episode(task: Any, record: dict[str, Any], granularity: str, report: Report) -> Rescored | None:
    """Rebuild one episode's prompt, replay its generations and recompute its guard metrics.

    Returns:
        The re-scored episode, or None when it cannot be replayed (the reason is added to ``report``).
    """
    where = _where(record)
    try:
        episode = start_episode(task, record["seed"])
    except Exception as error:  # noqa: BLE001 - any failure of the task is a reason, not a crash
        report.add("prompt", f"{where}: the task could not rebuild the prompt: {error}")
        return None
    prompt_id, messages = episode.prompt.prompt_id, episode.prompt.messages
    if prompt_id != record["prompt_id"]:
        report.add(
            "prompt", f"{where}: the seed gives prompt id {prompt_id!r}, the record says {record['prompt_id']!r:.80}"
        )
        return None
    if messages != record["prompt"]:
        index = next(
            (i for i, (a, b) in enumerate(zip(messages, record["prompt"], strict=False)) if a != b), len(messages)
        )
        report.add(
            "prompt",
            f"{where}: the recorded prompt messages differ from those of prompt {prompt_id!r} (message {index})",
        )
        return None
    generations, turn_rewards = record["generations"], record["turn_rewards"]
    if len(turn_rewards) != len(generations):
        report.add("reward", f"{where}: {len(generations)} generations but {len(turn_rewards)} turn rewards")
        return None
    for turn, text in enumerate(generations):
        last = turn == len(generations) - 1
        if episode.state == "over":
            report.add(
                "reward",
                f"{where}: the task ended after generation {turn - 1}, yet the record holds {len(generations)} "
                "generations",
            )
            return None
        try:
            # As TextEnv: only a token-level reply cut by the budget is unfinished, and it ends the episode.
            result = episode.step(text, finished=not (last and record["truncated"]))
        except Exception as error:  # noqa: BLE001
            report.add("reward", f"{where}: the task refused generation {turn}: {error}")
            return None
        if abs(result.reward - turn_rewards[turn]) > REWARD_ATOL:
            report.add(
                "reward",
                f"{where}: generation {turn} scores {result.reward:.6g}, the record claims {turn_rewards[turn]:.6g}",
            )
        if last and not result.terminated and not record["truncated"]:
            report.add(
                "reward", f"{where}: the task is not over after the last generation and the record is not truncated"
            )
            return None
    total = episode.total_reward
    # As TextEnv reports it: terminated when the task is over; truncated (token level only) when
    # the last reply ran into the token budget, which ends the episode whether or not the task is over.
    if record["terminated"] != bool(result.terminated):
        report.add(
            "reward",
            f"{where}: the record says terminated={record['terminated']}, the task says {bool(result.terminated)}",
        )
    if record["truncated"]:
        if granularity != "token" or record["end_reason"] != "reply_token_budget":
            report.add("reward", f"{where}: only a token-level reply budget truncates an episode")
    elif record["end_reason"] != "task_over":
        report.add("reward", f"{where}: end_reason {record['end_reason']!r} of an episode the task ended")
    if abs(total - record["reward"]) > REWARD_ATOL:
        report.add("claim", f"{where}: the episode claims reward {record['reward']:.6g}, re-scored {total:.6g}")
    guard = episode.guard()
    check_guard(record, guard, granularity, report)
    return Rescored(total, list(generations), guard, episode.messages)


def _guard_mismatch(claimed: Any, value: float) -> bool:
    return isinstance(claimed, bool) or not isinstance(claimed, int | float) or abs(claimed - value) > REWARD_ATOL


def check_guard(record: dict[str, Any], guard: dict[str, Any], granularity: str, report: Report) -> None:
    """Compare an episode's recorded guard metrics with those recomputed from its generations.

    Only what the text determines is compared: :data:`CHECKED_GUARD_KEYS`, each reward
    component, and ``unfinished_replies`` at token level (elsewhere a reply's end token is
    not in the text). Other recorded keys (a perplexity, say) are ignored: nothing the
    bundle says about its guard metrics is ever used.
    """
    claimed = record.get("guard")
    if not claimed:
        return
    where = _where(record)
    keys = [*CHECKED_GUARD_KEYS, *(("unfinished_replies",) if granularity == "token" else ())]
    wrong = [
        f"{key} {claimed[key]!r:.20} (recomputed {guard[key]:.6g})"
        for key in keys
        if key in claimed and _guard_mismatch(claimed[key], guard[key])
    ]
    components = claimed.get("reward_components")
    if components is not None:
        recomputed = guard["reward_components"]
        if not isinstance(components, dict) or set(components) != set(recomputed):
            names = sorted(components) if isinstance(components, dict) else components
            wrong.append(f"reward_components {names!r:.80} (recomputed {sorted(recomputed)})")
        else:
            wrong += [
                f"reward_components.{name} {components[name]!r:.20} (recomputed {recomputed[name]:.6g})"
                for name in sorted(recomputed)
                if _guard_mismatch(components[name], recomputed[name])
            ]
    if wrong:
        report.add("guard", f"{where}: the recorded guard metrics differ from the generations': {'; '.join(wrong)}")


def _compare_metrics(claimed: dict[str, Any], rescored: dict[str, Any], what: str, report: Report) -> None:
    if claimed["episodes"] != rescored["episodes"]:
        report.add("claim", f"{what} claims {claimed['episodes']} episodes; the bundle holds {rescored['episodes']}")
    if abs(claimed["mean_reward"] - rescored["mean_reward"]) > REWARD_ATOL:
        report.add(
            "claim",
            f"{what} claims mean reward {claimed['mean_reward']:.6g}; re-scored it is "
            f"{rescored['mean_reward']:.6g} (tolerance {REWARD_ATOL:g})",
        )
    for bound, name in enumerate(("lower", "upper")):
        if abs(claimed["ci95"][bound] - rescored["ci95"][bound]) > REWARD_ATOL:
            report.add(
                "claim",
                f"{what} claims a 95% CI {name} bound of {claimed['ci95'][bound]:.6g}; re-scored it is "
                f"{rescored['ci95'][bound]:.6g} (tolerance {REWARD_ATOL:g})",
            )


# -- content, copies, text ----------------------------------------------------------------


def normalize_text(text: str) -> str:
    r"""A generation as copies are compared: whitespace runs collapsed to one space, trimmed, case-folded.

    >>> normalize_text("  Love  it\n WONDERFUL ")
    'love it wonderful'
    """
    return " ".join(text.split()).casefold()


def _digest(env_id: str, episodes: Sequence[tuple[int, Sequence[str]]]) -> str:
    text = safejson.dumps([env_id, [[seed, list(generations)] for seed, generations in episodes]])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_fingerprints(env_id: str, runs: Mapping[int, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Fingerprints of a bundle's episodes, one pair per run: what identifies an entry, whatever its manifest says.

    Each run (training seed) is fingerprinted by SHA-256 over the env id and its episodes'
    (prompt seed, generations) in prompt-seed order: ``sha256`` of the generations as
    written, ``normalized_sha256`` after :func:`normalize_text`. The training seed itself
    is left out, so relabelling or reordering runs changes nothing.

    Returns:
        ``{"runs": [{"training_seed", "sha256", "normalized_sha256"}, ...]}`` by training seed.
    """
    fingerprints = []
    for training_seed in sorted(runs):
        episodes = sorted((record["seed"], record["generations"]) for record in runs[training_seed])
        normalized = [(seed, [normalize_text(text) for text in generations]) for seed, generations in episodes]
        fingerprints.append(
            {
                "training_seed": training_seed,
                "sha256": _digest(env_id, episodes),
                "normalized_sha256": _digest(env_id, normalized),
            }
        )
    return {"runs": fingerprints}


def identity(env_id: str, track: str, submitter: str, name: str) -> tuple[str, str, str, str]:
    """The leaderboard row an entry belongs to: env id, track, submitter and name (whitespace and case ignored).

    A submission with the identity of a listed entry is a new version of that entry.
    """
    return env_id, track, normalize_text(submitter), normalize_text(name)


def bundle_identity(manifest: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """:func:`identity` of the entry a bundle would become."""
    return identity(manifest["env"]["id"], manifest["track"]["name"], manifest["submitter"], manifest["name"])


def entry_identity(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """:func:`identity` of a listed entry."""
    return identity(entry["env_id"], entry["track"], entry["submitter"], entry["name"])


def describe_entry(entry: Mapping[str, Any]) -> str:
    """A listed entry in a sentence: its name, submitter, id, env and date."""
    return (
        f"entry {entry['name']!r:.120} by {entry['submitter']!r:.80} (id {entry['id'][:12]}, {entry['env_id']}, "
        f"submitted {entry['submitted']})"
    )


def describe_guard(text: Mapping[str, Any]) -> str:
    """An entry's guard metrics in a sentence."""
    line = (
        f"distinct-2 {text['distinct_2']:.3f} (distinct-1 {text['distinct_1']:.3f}), repetition "
        f"{text['repetition_2']:.3f}, {text['reply_words']:.1f} words per reply"
    )
    if text.get("perplexity_median") is not None:
        line += f", perplexity {text['perplexity_median']:.1f} (median) under {text['perplexity_model']!r}"
    return line


def _seeds(seeds: Sequence[int]) -> str:
    return f"training seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


@dataclass(frozen=True)
class Copy:
    """A listed entry whose episodes a would-be entry repeats.

    Attributes:
        entry: The listed entry.
        runs: The would-be entry's training seeds whose episodes are the listed entry's.
        source_runs: The listed entry's training seeds they repeat.
        exact: True when the generations are the same as written, False when only after normalisation.
        same_entry: True when the listed entry is an earlier version of the same entry (same :func:`identity`).
    """

    entry: dict[str, Any]
    runs: tuple[int, ...]
    source_runs: tuple[int, ...]
    exact: bool
    same_entry: bool

    def sentence(self) -> str:
        """The reason, naming the listed entry."""
        how = "exactly" if self.exact else "after whitespace and case normalisation"
        if self.same_entry:
            return (
                f"nothing new: every run's episodes equal ({how}) those of the listed version of this entry, "
                f"{describe_entry(self.entry)}"
            )
        return (
            f"the episodes of {_seeds(self.runs)} are those of {_seeds(self.source_runs)} of listed "
            f"{describe_entry(self.entry)}, {how}; entries are identified by their episodes, not by the name or "
            "submitter in bundle.json"
        )


def find_copies(
    env_id: str,
    own: tuple[str, str, str, str],
    digest: str,
    content: Mapping[str, Any],
    listed: Sequence[Mapping[str, Any]],
) -> tuple[list[Copy], dict[str, Any] | None]:
    """The listed entries whose episodes a would-be entry repeats, run for run.

    A run copies a listed run of the same env when their fingerprints
    (:func:`content_fingerprints`) match, exactly or after whitespace and case
    normalisation. Runs shared with an earlier version of the same entry (same
    :func:`identity`) are allowed, since a deterministic run can be reproduced, but not all
    of them: a version must differ from the one it updates. The very same bundle (same
    files, ``digest``) is not a copy: it is returned as the second item.

    Args:
        env_id: The would-be entry's env id.
        own: Its :func:`identity`.
        digest: Its bundle's digest (the entry id).
        content: Its :func:`content_fingerprints`.
        listed: The listed entries, oldest first.

    Returns:
        The copies found (none when the episodes are new) and the listed entry that is this
        very bundle, if any.
    """
    copies, same_bundle = [], None
    runs = content["runs"]
    for entry in listed:
        if entry["env_id"] != env_id or "content" not in entry:
            continue
        if entry["id"] == digest:
            same_bundle = dict(entry)
            continue
        theirs = {run["normalized_sha256"]: run for run in entry["content"]["runs"]}
        copied = [run for run in runs if run["normalized_sha256"] in theirs]
        if not copied:
            continue
        same_entry = entry_identity(entry) == own
        everything = sorted(r["normalized_sha256"] for r in runs) == sorted(
            r["normalized_sha256"] for r in entry["content"]["runs"]
        )
        if same_entry and not everything:
            continue
        copies.append(
            Copy(
                entry=dict(entry),
                runs=tuple(run["training_seed"] for run in copied),
                source_runs=tuple(sorted({theirs[run["normalized_sha256"]]["training_seed"] for run in copied})),
                exact=all(theirs[run["normalized_sha256"]]["sha256"] == run["sha256"] for run in copied),
                same_entry=same_entry,
            )
        )
    return copies, same_bundle


def measure_perplexity(report: Report, model: str) -> None:
    """Add the replies' perplexity under ``model`` to ``report.guard`` (median and mean over episodes).

    Each episode's value is the mean perplexity of its non-blank replies given the
    conversation before each (chat template), as :class:`textgym.wrappers.ReferencePerplexity`
    measures it during evaluation; a problem ``perplexity`` is added when the LM cannot
    score them.
    """
    from baselines.evaluate import perplexity_summary
    from textgym.wrappers.reference import _ReferenceScorer, _reply_contexts

    try:
        scorer = _ReferenceScorer(model)
        guards = []
        for episode in report.episodes.values():
            values = [v for v in scorer.perplexities(_reply_contexts(episode.messages)) if v is not None]
            guards.append({"perplexity": sum(values) / len(values) if values else None})
    except Exception as error:  # noqa: BLE001 - a model that cannot load or score is a reason, not a crash
        report.add("perplexity", f"the reference LM {model!r} could not score the replies: {error}")
        return
    summary = perplexity_summary(guards)
    if report.guard is not None and summary["perplexity_median"] is not None:
        report.guard.update(summary, perplexity_model=model)


def verify_bundle(
    path: str | Path, listed: Sequence[Mapping[str, Any]] | None = None, perplexity: bool = False
) -> Report:
    """Verify a bundle by re-scoring (see the module docstring); never raises on bad input.

    Args:
        path: The bundle directory.
        listed: The listed entries to check for copies against (none by default).
        perplexity: Also measure the replies' perplexity under the env's LM (loads it).
    """
    report = Report()
    bundle = load_bundle(path, report)
    report.bundle = bundle
    if bundle is None:
        return report
    if not check_env(bundle, report):
        return report
    runs = check_track(bundle, report)
    for run in bundle.manifest["runs"]:
        if run.get("checkpoint"):
            try:
                directory = safejson.safe_path(bundle.path, run["checkpoint"], "checkpoint")
            except safejson.UnsafeInputError as error:
                report.add(error.code, str(error))
                continue
            if not directory.is_dir():
                report.add(
                    "path", f"checkpoint {run['checkpoint']!r} of training seed {run['training_seed']} is missing"
                )
    check_bundle_checkpoints(bundle, report)  # trained from the model and revision the manifest claims
    env = bundle.manifest["env"]
    try:
        task = make_task(env["id"], **env["kwargs"])
    except Exception as error:  # noqa: BLE001
        report.add("env_kwargs", f"the task of {env['id']} cannot be built from these env kwargs: {error}")
        return report
    effective = effective_env_kwargs(env["id"], env["kwargs"])
    pooled: list[float] = []
    for training_seed in sorted(runs):
        scored = []
        for record in runs[training_seed]:
            episode = rescore_episode(task, record, effective["granularity"], report)
            if episode is not None:
                report.episodes[(training_seed, record["seed"])] = episode
                scored.append(episode.reward)
        if scored:
            report.rescored_runs[training_seed] = metrics(scored)
        pooled += scored
    if pooled:
        report.rescored = metrics(pooled)
    for run in bundle.manifest["runs"]:
        rescored = report.rescored_runs.get(run["training_seed"])
        if rescored is not None:
            _compare_metrics(run["claimed"], rescored, f"run with training seed {run['training_seed']}", report)
    if report.rescored is not None:
        _compare_metrics(bundle.manifest["claimed"], report.rescored, "the bundle", report)
    if report.episodes:
        replies: dict[int, list[list[str]]] = {}
        for (training_seed, _), episode in sorted(report.episodes.items()):
            replies.setdefault(training_seed, []).append(episode.replies)
        report.guard = text_metrics(replies, [episode.guard for episode in report.episodes.values()])
    if runs and all(runs.values()):
        report.content = content_fingerprints(env["id"], runs)
        if listed:
            copies, report.listed_as = find_copies(
                env["id"], bundle_identity(bundle.manifest), bundle.digest, report.content, listed
            )
            for copy in copies:
                report.add("copy", copy.sentence())
    if perplexity and report.ok:
        measure_perplexity(report, effective["model"])
    return report


__all__ = [
    "REWARD_ATOL",
    "Bundle",
    "Problem",
    "Report",
    "Rescored",
    "bootstrap_ci",
    "content_fingerprints",
    "load_bundle",
    "verify_bundle",
]
