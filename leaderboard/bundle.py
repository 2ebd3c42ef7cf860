"""Write result bundles: from recorded episodes, or from ``baselines.train`` run directories.

``textgym-leaderboard bundle RUN_DIR [RUN_DIR ...] --out BUNDLE`` takes one run directory
per training seed (each holding ``config.json``, ``summary.json``,
``eval_generations.jsonl`` and ``checkpoint/``, as :mod:`baselines.train` writes them),
and writes ``BUNDLE/bundle.json``, ``BUNDLE/generations.jsonl`` (the episodes of each
run's final evaluation, with ``training_seed`` added) and
``BUNDLE/checkpoint/seed<N>/`` (``checkpoint.json`` and ``policy.safetensors``: the
trained tensors only, against the base model the checkpoint names; the optimizer and
resume state are left out). Claims are the runs' own numbers (``summary.json``'s final
evaluation); the pooled claim is computed over all episodes. The manifest's model revision
is the one the checkpoints record for their base model, so that a re-run rebuilds the
model they were trained from.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines.algorithms import algorithm
from leaderboard import safejson
from leaderboard.checkpoints import MAX_CHECKPOINT_JSON_BYTES
from leaderboard.stats import metrics
from leaderboard.tracks import TRACKS, Track
from leaderboard.verify import GENERATIONS, MANIFEST
from textgym.models import model_revision

MAX_RUN_FILE_BYTES = 256 << 20
RECORD_KEYS = (
    "format_version",
    "env_id",
    "env_version",
    "env_kwargs",
    "textgym_version",
    "seed",
    "episode_index",
    "prompt_id",
    "prompt",
    "generations",
    "turn_rewards",
    "reward",
    "terminated",
    "truncated",
    "end_reason",
    "guard",
)


class BundleError(ValueError):
    """Run directories that cannot make a bundle."""


@dataclass
class RunData:
    """One training seed's part of a bundle.

    Attributes:
        training_seed: The run's training seed.
        records: Its episodes, as :class:`textgym.wrappers.RecordGenerations` wrote them.
        claimed: Its claimed ``mean_reward``, ``ci95`` and ``episodes`` (default: computed from ``records``).
        checkpoint: A checkpoint directory to include, or None.
    """

    training_seed: int
    records: list[dict[str, Any]]
    claimed: dict[str, Any] | None = None
    checkpoint: Path | None = None


EVALUATIONS = ("final", "initial")


def select_track_episodes(
    records: Sequence[dict[str, Any]], track: Track, evaluation: str = "final"
) -> list[dict[str, Any]]:
    """The track's episodes from a run's recorded evaluations: for each prompt seed, its last (or first) record.

    ``baselines.train`` appends every evaluation (initial, periodic, final) to one file, each
    with episode ``i`` reset with seed ``10000 + i``; the last record of a seed is the final
    evaluation's, the first the initial one's (the untrained starting policy, when the run
    evaluated it).

    Raises:
        BundleError: A prompt seed of the track has no record.
    """
    if evaluation not in EVALUATIONS:
        raise BundleError(f"unknown evaluation {evaluation!r}; choose one of {EVALUATIONS}")
    latest: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.get("episode_index") == 0 and record.get("seed") in track.prompt_seeds:
            if evaluation == "final" or record["seed"] not in latest:
                latest[record["seed"]] = record
    missing = [seed for seed in track.prompt_seeds if seed not in latest]
    if missing:
        raise BundleError(f"no episode for prompt seeds {missing[:8]} of track {track.name!r}")
    return [latest[seed] for seed in track.prompt_seeds]


def make_bundle(
    out: str | Path,
    runs: Sequence[RunData],
    *,
    track: str = "quick",
    name: str,
    submitter: str,
    model: dict[str, Any],
    compute: dict[str, Any],
    notes: str | None = None,
    created: dt.date | None = None,
) -> Path:
    """Write a bundle directory from each run's recorded episodes; return its path.

    The env id, version, kwargs and textgym version are taken from the records (all must
    agree). Records get ``training_seed``; episodes are written by training seed, then
    prompt seed.

    Raises:
        BundleError: ``out`` exists, the runs are empty, or their records disagree.
    """
    out = Path(out)
    if out.exists():
        raise BundleError(f"{out} already exists; bundles are never overwritten")
    if not runs:
        raise BundleError("a bundle needs at least one run")
    if track not in TRACKS:
        raise BundleError(f"unknown track {track!r}; official tracks: {sorted(TRACKS)}")
    first = runs[0].records[0]
    env = {"id": first["env_id"], "version": first["env_version"], "kwargs": first["env_kwargs"]}
    lines, pooled, manifest_runs = [], [], []
    for run in sorted(runs, key=lambda r: r.training_seed):
        for record in sorted(run.records, key=lambda r: r["seed"]):
            if (record["env_id"], record["env_version"], record["env_kwargs"]) != (
                env["id"],
                env["version"],
                env["kwargs"],
            ):
                raise BundleError(f"training seed {run.training_seed}: episodes of different envs or env kwargs")
            lines.append(
                safejson.dumps({**{k: record.get(k) for k in RECORD_KEYS}, "training_seed": run.training_seed})
            )
        rewards = [record["reward"] for record in sorted(run.records, key=lambda r: r["seed"])]
        pooled += rewards
        checkpoint = None
        if run.checkpoint is not None:
            checkpoint = f"checkpoint/seed{run.training_seed}"
        manifest_runs.append(
            {"training_seed": run.training_seed, "checkpoint": checkpoint, "claimed": run.claimed or metrics(rewards)}
        )
    manifest: dict[str, Any] = {
        "format_version": 1,
        "name": name,
        "submitter": submitter,
        "created": (created or dt.datetime.now(dt.timezone.utc).date()).isoformat(),
        "track": TRACKS[track].as_claim(env["id"]),
        "env": env,
        "textgym_version": first["textgym_version"],
        "model": model,
        "runs": manifest_runs,
        "claimed": metrics(pooled),
        "compute": compute,
    }
    if notes:
        manifest["notes"] = notes
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / MANIFEST).write_text(safejson.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    (staging / GENERATIONS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for run in runs:
        if run.checkpoint is not None:
            target = staging / "checkpoint" / f"seed{run.training_seed}"
            target.mkdir(parents=True)
            source = Path(run.checkpoint).resolve()  # one version of a checkpoint that training may switch
            for file in ("checkpoint.json", "policy.safetensors"):
                shutil.copyfile(source / file, target / file)
    staging.rename(out)
    return out


def _read_json(path: Path) -> Any:
    return safejson.load_json_file(path, MAX_RUN_FILE_BYTES, str(path))


def _revision(run_dirs: Sequence[str | Path], model: str, claimed: str | None, shipped: bool) -> str:
    """The model revision of a bundle of runs: the one their checkpoints' base model records.

    Runs whose checkpoint records no base model (format 1) fall back to
    :func:`textgym.models.model_revision` of the model name.

    Raises:
        BundleError: The checkpoints record different revisions, or ``claimed`` differs from
            theirs while the bundle ships them (a re-run would refuse it).
    """
    recorded: dict[str, str] = {}
    for run_dir in map(Path, run_dirs):
        path = run_dir / "checkpoint" / "checkpoint.json"
        if path.is_file():
            base = safejson.load_json_file(path, MAX_CHECKPOINT_JSON_BYTES, str(path)).get("base_model")
            if isinstance(base, dict) and isinstance(base.get("revision"), str):
                recorded[str(run_dir)] = base["revision"]
    if len(set(recorded.values())) > 1:
        raise BundleError(f"the runs' checkpoints were trained from different revisions of {model!r}: {recorded}")
    if claimed is None:
        return next(iter(recorded.values()), None) or model_revision(model)
    if shipped and recorded and claimed not in recorded.values():
        raise BundleError(
            f"model revision {claimed!r} is not the revision {next(iter(recorded.values()))!r} the checkpoints were "
            "trained from"
        )
    return claimed


def bundle_from_run_dirs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    track: str = "quick",
    name: str | None = None,
    submitter: str = "textgym baselines",
    model_revision_text: str | None = None,
    hardware: str | None = None,
    include_checkpoints: bool = True,
    notes: str | None = None,
    evaluation: str = "final",
) -> Path:
    """Turn ``baselines.train`` run directories (one per training seed) into a bundle.

    ``evaluation="initial"`` bundles the runs' initial evaluations instead: the untrained
    starting policy (the LM itself), without checkpoints, named as such.

    Raises:
        BundleError: A run directory lacks a file, the runs are of different envs, models or
            algorithms, a seed repeats, or a run's summary disagrees with its generations.
    """
    if track not in TRACKS:
        raise BundleError(f"unknown track {track!r}; official tracks: {sorted(TRACKS)}")
    runs, configs, summaries = [], [], []
    for run_dir in map(Path, run_dirs):
        for file in ("config.json", "summary.json", "eval_generations.jsonl"):
            if not (run_dir / file).is_file():
                raise BundleError(f"{run_dir} is not a finished baselines.train run: {file} is missing")
        config, summary = _read_json(run_dir / "config.json"), _read_json(run_dir / "summary.json")
        text = safejson.read_limited(run_dir / "eval_generations.jsonl", MAX_RUN_FILE_BYTES, "eval_generations.jsonl")
        records = [record for _, record in safejson.iter_jsonl(text, 1 << 20, 1_000_000, str(run_dir))]
        episodes = select_track_episodes(records, TRACKS[track], evaluation)
        if evaluation == "initial" and not summary.get("initial"):
            raise BundleError(f"{run_dir} has no initial evaluation (it ran with --no-initial-eval)")
        final = summary.get(evaluation, {})
        claimed = metrics([record["reward"] for record in episodes])
        if final.get("episodes") == len(episodes) and final.get("reward_mean") is not None:
            if abs(final["reward_mean"] - claimed["mean_reward"]) > 1e-9:
                raise BundleError(
                    f"{run_dir}: summary.json's final reward {final['reward_mean']} is not the mean of the final "
                    f"evaluation's episodes ({claimed['mean_reward']})"
                )
            claimed = {"mean_reward": final["reward_mean"], "ci95": final["reward_ci95"], "episodes": len(episodes)}
        checkpoint = run_dir / "checkpoint" if include_checkpoints and evaluation == "final" else None
        if checkpoint is not None and not (checkpoint / "policy.safetensors").is_file():
            raise BundleError(f"{run_dir} has no checkpoint/policy.safetensors (pass --no-checkpoint to leave it out)")
        runs.append(RunData(int(config["seed"]), episodes, claimed, checkpoint))
        configs.append(config)
        summaries.append(summary)
    if not runs:
        raise BundleError("give at least one run directory")
    for key in ("env", "model", "algo"):
        values = {config.get(key) for config in configs}
        if len(values) > 1:
            raise BundleError(f"the runs differ in {key}: {sorted(map(str, values))}")
    seeds = [run.training_seed for run in runs]
    if len(set(seeds)) != len(seeds):
        raise BundleError(f"the runs repeat a training seed: {seeds}")
    config = configs[0]
    revision = _revision(run_dirs, config["model"], model_revision_text, any(run.checkpoint for run in runs))
    devices = sorted({str(summary.get("device", "unknown")) for summary in summaries})
    compute: dict[str, Any] = {
        "hardware": hardware or ", ".join(devices),
        "wall_time_s": float(sum(summary.get("wall_time_s", 0.0) for summary in summaries)),
        "env_steps": int(sum(summary.get("env_steps", 0) for summary in summaries)),
    }
    try:
        spec = algorithm(config["algo"])
    except ValueError as error:
        raise BundleError(f"{run_dirs[0]}: {error}") from error
    algo, title = (config["algo"], f"{config['algo'].upper()} baseline")
    if evaluation == "initial":
        algo, title = spec.starting_policy
    # How baselines.train evaluated the runs: PPO samples its replies, DQN takes its greedy (arg-max Q) choice.
    model = {"id": config["model"], "revision": revision, "algo": algo, "decoding": spec.decoding}
    env_name = config["env"].split("/")[-1]
    return make_bundle(
        out,
        runs,
        track=track,
        name=name or f"{title} ({env_name}, {config['model']})",
        submitter=submitter,
        model=model,
        compute=compute,
        notes=notes,
    )
