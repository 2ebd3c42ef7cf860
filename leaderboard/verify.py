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

Every number is compared with the absolute tolerance :data:`REWARD_ATOL`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym
from gymnasium.utils import seeding

import textgym
from leaderboard import safejson
from leaderboard.checkpoints import check_bundle_checkpoints
from leaderboard.stats import bootstrap_ci, metrics
from leaderboard.tracks import (
    TRACKS,
    Track,
    effective_env_kwargs,
    env_class,
    pinned_kwargs_problems,
    registered_spec,
    task_options,
    textgym_compatible,
)
from textgym.core import validate_messages

#: Absolute tolerance on every compared number: turn and episode rewards, means, CI bounds.
REWARD_ATOL = 1e-4
#: Size limits of what is read from a bundle.
MAX_MANIFEST_BYTES = 1 << 20
MAX_GENERATIONS_BYTES = 64 << 20
MAX_LINE_BYTES = 1 << 20
MAX_EPISODES = 20_000
#: At most this many problems are listed; the rest are counted.
MAX_LISTED_PROBLEMS = 40

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
class Report:
    """What verification found.

    Attributes:
        bundle: The bundle, when it could be read.
        problems: Every reason to reject; empty when the bundle verifies.
        rescored: Pooled re-scored metrics (``mean_reward``, ``ci95``, ``episodes``).
        rescored_runs: Re-scored metrics per training seed.
        rerun: Re-run results per training seed, when a re-run was asked for.
    """

    bundle: Bundle | None = None
    problems: list[Problem] = field(default_factory=list)
    rescored: dict[str, Any] | None = None
    rescored_runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    rerun: dict[str, Any] | None = None

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


def make_task(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """The text-level task ``gym.make(env_id, **env_kwargs)`` would build (no language model is loaded)."""
    cls = env_class(env_id)
    return cls.task_class(**task_options(env_id, env_kwargs))


def rebuild_prompt(task: Any, seed: int) -> tuple[str, list[dict[str, str]]]:
    """The prompt id and messages of ``env.reset(seed=seed)``, at the text level.

    ``TextEnv.reset`` seeds ``np_random`` with ``seed`` (``gymnasium.utils.seeding.np_random``),
    then calls ``task.reset(np_random, options)`` and validates the messages; so does this.
    """
    rng, _ = seeding.np_random(seed)
    prompt = task.reset(rng, None)
    return prompt.prompt_id, validate_messages(prompt.messages, f"prompt {prompt.prompt_id!r} messages")


def rescore_episode(task: Any, record: dict[str, Any], granularity: str, report: Report) -> float | None:
    """Rebuild one episode's prompt and replay its generations; return the re-scored reward (None if unusable)."""
    where = (
        f"{GENERATIONS} line {record['_line']} (training seed {record['training_seed']}, prompt seed {record['seed']})"
    )
    try:
        prompt_id, messages = rebuild_prompt(task, record["seed"])
    except Exception as error:  # noqa: BLE001 - any failure of the task is a reason, not a crash
        report.add("prompt", f"{where}: the task could not rebuild the prompt: {error}")
        return None
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
    total = 0.0
    for turn, text in enumerate(generations):
        try:
            result = task.step(text)
            reward = float(result.reward)
            if not result.terminated and result.next_messages:
                validate_messages(result.next_messages, "task next_messages")
        except Exception as error:  # noqa: BLE001
            report.add("reward", f"{where}: the task refused generation {turn}: {error}")
            return None
        if abs(reward - turn_rewards[turn]) > REWARD_ATOL:
            report.add(
                "reward",
                f"{where}: generation {turn} scores {reward:.6g}, the record claims {turn_rewards[turn]:.6g}",
            )
        total += reward
        last = turn == len(generations) - 1
        if result.terminated and not last:
            report.add(
                "reward",
                f"{where}: the task ended after generation {turn}, yet the record holds {len(generations)} generations",
            )
            return None
        if last and not result.terminated and not record["truncated"]:
            report.add(
                "reward", f"{where}: the task is not over after the last generation and the record is not truncated"
            )
            return None
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
    return total


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


def verify_bundle(path: str | Path) -> Report:
    """Verify a bundle by re-scoring (see the module docstring); never raises on bad input."""
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
        task = make_task(env["id"], env["kwargs"])
    except Exception as error:  # noqa: BLE001
        report.add("env_kwargs", f"the task of {env['id']} cannot be built from these env kwargs: {error}")
        return report
    granularity = effective_env_kwargs(env["id"], env["kwargs"])["granularity"]
    pooled: list[float] = []
    for training_seed in sorted(runs):
        rewards = [rescore_episode(task, record, granularity, report) for record in runs[training_seed]]
        scored = [reward for reward in rewards if reward is not None]
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
    return report


__all__ = ["REWARD_ATOL", "Bundle", "Problem", "Report", "bootstrap_ci", "load_bundle", "verify_bundle"]
