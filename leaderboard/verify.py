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
4. ``prompt``: each episode's prompt, started by :class:`textgym.core.TextEpisode` (the
   driver ``TextEnv.reset(seed=s)`` uses), has the recorded prompt id and messages.
5. ``reward``: replaying the generations turn by turn through the same driver gives the
   recorded turn rewards and ends the episode where and why the record says it ended.
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

Every number is compared with the absolute tolerance :data:`REWARD_ATOL`. This module
reads and orchestrates; episodes are replayed through the one episode driver in
:mod:`leaderboard.replay`, entry identity and copies live in :mod:`leaderboard.copies`
and the report types in :mod:`leaderboard.report`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import gymnasium as gym

import textgym
from leaderboard import safejson
from leaderboard.checkpoints import check_bundle_checkpoints
from leaderboard.copies import bundle_identity, content_fingerprints, find_copies
from leaderboard.replay import compare_metrics, rescore_episode
from leaderboard.report import (
    GENERATIONS,
    MANIFEST,
    MAX_EPISODES,
    MAX_GENERATIONS_BYTES,
    MAX_LINE_BYTES,
    MAX_LISTED_PROBLEMS,
    MAX_MANIFEST_BYTES,
    REWARD_ATOL,
    Bundle,
    Problem,
    Report,
    Rescored,
)
from leaderboard.stats import metrics, text_metrics
from leaderboard.tracks import (
    TRACKS,
    effective_env_kwargs,
    pinned_kwargs_problems,
    registered_spec,
    textgym_compatible,
)
from textgym.registration import make_task

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"


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
            compare_metrics(run["claimed"], rescored, f"run with training seed {run['training_seed']}", report)
    if report.rescored is not None:
        compare_metrics(bundle.manifest["claimed"], report.rescored, "the bundle", report)
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
    "GENERATIONS",
    "MANIFEST",
    "REWARD_ATOL",
    "Bundle",
    "Problem",
    "Report",
    "Rescored",
    "check_env",
    "check_track",
    "load_bundle",
    "measure_perplexity",
    "schema_errors",
    "verify_bundle",
]
