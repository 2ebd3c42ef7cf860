r"""Train a recorded run again at this checkout and say whether it reproduces, update for update and reply for reply.

    python benchmarks/reproduce_run.py benchmarks/results/runs/ppo_dialoguev0_s0 --out runs/repro/ppo_dialoguev0_s0
    python benchmarks/reproduce_run.py RECORDED --out RERUN --compare-only    # two finished runs, nothing trained

The re-run takes the recorded run's ``config.json`` (the command line ``baselines.train`` would print for it) with two
changes. A time budget makes the update count depend on the machine's speed that day, so the re-run trains on
exactly the env steps the recorded run trained on (``summary.json``'s ``timesteps_trained``; for runs written before
that was recorded, the last rollout logged in ``tb/progress.csv``: a time limit stops a run inside a rollout, which
is neither logged nor trained on) and has no time limit. That replays the recorded updates only where nothing is
scheduled over ``--total-timesteps``, so a time-limited run with a linear learning-rate schedule or DQN's
exploration decay is refused. A run that was not stopped by its time limit is re-run with its own step count.
Files the recorded run read that now live elsewhere (stored proposals or features, a warm-start model) are given
with ``--moved FIELD=PATH``; the report names them.

Prints, and writes to ``OUT/reproduction.json``: the training flags that differ (other than the step count, time
limit and output folder), the first row of the training log (``tb/progress.csv``) whose figures differ (wall-clock
columns aside), the evaluation episodes whose replies or rewards differ, and both runs' initial and final mean
reward. Exits 0 when the runs are identical, 1 when they differ, 2 for a bad command line or run directory or
a re-run that failed. Torch's CPU kernels give the same numbers on the same CPU model with the same thread count
(the config's ``--torch-threads``), so the re-run should be made on the machine the recorded run names.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from provenance import REPO, commit, machine

from baselines.common.cli import option_owners
from baselines.common.config import Args, command_line, defaults_for
from textgym.wrappers.recorder import read_records

#: config.json fields a re-run is allowed to change: where it writes, how long it trains, how it is resumed.
REPLAY_FIELDS = ("out", "total_timesteps", "max_train_seconds", "resume", "progress_bar")
#: Fields naming files a run reads, which --moved may point elsewhere (stored proposals and features, local models).
PATH_FIELDS = ("proposal_cache", "train_proposal_cache", "feature_cache", "init_model", "guide_model")


class RunDirectoryError(ValueError):
    """A run directory that cannot be re-run or compared: the message names the folder and what is missing."""


def read_json(path: Path) -> dict[str, Any]:
    """A run file, or a :class:`RunDirectoryError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as problem:
        raise RunDirectoryError(f"cannot read {path}: {problem}") from problem


def progress_rows(run: Path) -> list[dict[str, str]]:
    """The rows of a run's ``tb/progress.csv`` (PPO: one a rollout), or none when it has no such file."""
    path = run / "tb" / "progress.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def timesteps_trained(run: Path, summary: dict[str, Any]) -> int:
    """The env steps of the rollouts ``run`` trained on."""
    if "timesteps_trained" in summary:
        return int(summary["timesteps_trained"])
    logged = [int(float(row["time/total_timesteps"])) for row in progress_rows(run) if row.get("time/total_timesteps")]
    if not logged:
        raise RunDirectoryError(f"{run}: summary.json has no timesteps_trained and tb/progress.csv logs no rollout")
    return max(logged)


def moved_files(pairs: list[str]) -> dict[str, str]:
    """``FIELD=PATH`` pairs as a dict, refusing fields that do not name files (:data:`PATH_FIELDS`)."""
    moved = {}
    for pair in pairs:
        field, _, path = pair.partition("=")
        if field not in PATH_FIELDS or not path:
            raise RunDirectoryError(f"--moved {pair!r}: give FIELD=PATH with FIELD one of {', '.join(PATH_FIELDS)}")
        moved[field] = path
    return moved


def replay_config(run: Path, moved: dict[str, str] | None = None) -> dict[str, Any]:
    """The recorded run's config with the step count it trained on, no time limit and ``moved`` files.

    Raises:
        RunDirectoryError: A missing file, or a time-limited run whose schedules span its planned total.
    """
    config, summary = read_json(run / "config.json"), read_json(run / "summary.json")
    unknown = sorted(set(config) - {item.name for item in dataclasses.fields(Args)})
    if unknown:
        raise RunDirectoryError(f"{run}/config.json has fields this checkout's baselines.train lacks: {unknown}")
    if not summary.get("stopped_by_time_limit"):
        return {**config, "max_train_seconds": 0.0, **(moved or {})}
    scheduled = []
    if config.get("lr_schedule", "constant") != "constant":
        scheduled.append(f"--lr-schedule {config['lr_schedule']}")
    reads_exploration = config.get("algo") in option_owners().get("exploration_fraction", [])  # DQN's epsilon decay
    if reads_exploration and config.get("exploration_fraction", 0) > 0:
        scheduled.append(f"--exploration-fraction {config['exploration_fraction']}")
    if scheduled:
        raise RunDirectoryError(
            f"{run} was stopped by its time limit and {' and '.join(scheduled)} is scheduled over its planned "
            f"--total-timesteps {config['total_timesteps']}: no step count replays its updates"
        )
    return {**config, "total_timesteps": timesteps_trained(run, summary), "max_train_seconds": 0.0, **(moved or {})}


def train_command(config: dict[str, Any], out: Path) -> list[str]:
    """The ``baselines.train`` command that trains ``config`` into ``out``, with this interpreter."""
    words = shlex.split(command_line(config))
    assert words[:3] == ["python", "-m", "baselines.train"]
    return [
        sys.executable,
        "-m",
        "baselines.train",
        *words[3:],
        "--out",
        str(out),
        "--sample-every",
        str(config.get("sample_every", 0)),
        "--no-progress-bar",
    ]


def differing_flags(
    recorded: dict[str, Any], rerun: dict[str, Any], moved: tuple[str, ...] = ()
) -> dict[str, list[Any]]:
    """Config fields (beyond :data:`REPLAY_FIELDS` and ``moved``) whose values differ: ``{field: [recorded, rerun]}``.

    A field a config lacks (an older run's, written before the field existed) counts as its current default, which
    is what a re-run from that config is given.
    """
    defaults = defaults_for(rerun.get("algo") or recorded.get("algo") or "ppo")
    differing = {}
    for name in sorted((set(recorded) | set(rerun)) - set(REPLAY_FIELDS) - set(moved)):
        values = [config.get(name, defaults.get(name)) for config in (recorded, rerun)]
        if values[0] != values[1]:
            differing[name] = values
    return differing


#: progress.csv columns of wall-clock time, which no re-run repeats.
WALL_CLOCK_COLUMNS = ("time/fps", "time/time_elapsed")


def first_differing_row(recorded: list[dict[str, str]], rerun: list[dict[str, str]]) -> dict[str, Any] | None:
    """The first pair of ``tb/progress.csv`` rows (in order: DQN logs several rows at one step count) whose logged
    figures differ, wall-clock columns aside; None if every row both runs logged is the same."""
    for index, (row, other) in enumerate(zip(recorded, rerun, strict=False)):
        for column in sorted((set(row) | set(other)) - set(WALL_CLOCK_COLUMNS)):
            if row.get(column, "") != other.get(column, ""):
                return {
                    "row": index,
                    "env_steps": row.get("time/total_timesteps", ""),
                    "column": column,
                    "recorded": row.get(column, ""),
                    "rerun": other.get(column, ""),
                }
    return None


def episodes(run: Path) -> list[dict[str, Any]]:
    """The evaluation records (``eval_generations.jsonl``), initial evaluation first."""
    path = run / "eval_generations.jsonl"
    if not path.is_file():
        raise RunDirectoryError(f"{run} holds no eval_generations.jsonl")
    return read_records(path)


def compare(
    recorded: Path, rerun: Path, rerun_commit: str | None = None, moved: dict[str, str] | None = None
) -> dict[str, Any]:
    """Everything the module docstring lists, as a JSON-ready dict; ``identical`` says whether the runs are.

    ``rerun_commit`` is the commit the re-run trained at; None takes what its summary.json records (runs written
    since it records one), else it stays unknown. ``moved`` names the file fields the re-run was pointed elsewhere
    (reported, not counted as differing flags).
    """
    recorded_config, rerun_config = read_json(recorded / "config.json"), read_json(rerun / "config.json")
    recorded_summary, rerun_summary = read_json(recorded / "summary.json"), read_json(rerun / "summary.json")
    recorded_episodes, rerun_episodes = episodes(recorded), episodes(rerun)
    differing = [
        index
        for index, (first, second) in enumerate(zip(recorded_episodes, rerun_episodes, strict=False))
        if (first["prompt_id"], first["generations"], first["reward"])
        != (second["prompt_id"], second["generations"], second["reward"])
    ]
    recorded_rows, rerun_rows = progress_rows(recorded), progress_rows(rerun)
    log_rows = [len(recorded_rows), len(rerun_rows)]
    row = first_differing_row(recorded_rows, rerun_rows)
    moved = moved or {}
    flags = differing_flags(recorded_config, rerun_config, tuple(moved))

    def rewards(summary: dict[str, Any]) -> dict[str, float | None]:
        return {tag: (summary.get(tag) or {}).get("reward_mean") for tag in ("initial", "final")}

    report = {
        "recorded": str(recorded),
        "rerun": str(rerun),
        "recorded_commit": recorded_summary.get("commit"),
        "rerun_commit": rerun_commit or rerun_summary.get("commit"),
        "compared_at": commit(),
        "machine": machine(),
        "flags_differing": flags,
        "moved": {field: [recorded_config.get(field), path] for field, path in moved.items()},
        "log_rows": log_rows,
        "first_differing_log_row": row,
        "episodes_compared": min(len(recorded_episodes), len(rerun_episodes)),
        "episode_counts": [len(recorded_episodes), len(rerun_episodes)],
        "episodes_differing": differing,
        "recorded_reward": rewards(recorded_summary),
        "rerun_reward": rewards(rerun_summary),
    }
    report["identical"] = (
        not flags
        and row is None
        and log_rows[0] == log_rows[1]
        and not differing
        and len(recorded_episodes) == len(rerun_episodes)
        and report["recorded_reward"] == report["rerun_reward"]
    )
    return report


def describe(report: dict[str, Any]) -> str:
    """A few lines a reader can paste into a results file."""
    recorded, rerun = report["recorded_reward"], report["rerun_reward"]
    verdict = "IDENTICAL" if report["identical"] else "DIFFERENT"
    lines = [
        f"{report['recorded']} (commit {report['recorded_commit'] or 'not recorded'}) -> {report['rerun']} "
        f"(commit {report['rerun_commit'] or 'unknown'}; compared on {report['machine']}): {verdict}",
        f"  reward initial {recorded['initial']} -> final {recorded['final']} recorded; "
        f"{rerun['initial']} -> {rerun['final']} re-run",
        f"  training log rows {report['log_rows'][0]} / {report['log_rows'][1]}, "
        f"first differing: {report['first_differing_log_row']}",
        f"  evaluation episodes {report['episode_counts'][0]} / {report['episode_counts'][1]}, "
        f"differing: {len(report['episodes_differing'])} {report['episodes_differing'][:8]}",
    ]
    if report["flags_differing"]:
        lines.append(f"  flags differing: {report['flags_differing']}")
    if report["moved"]:
        lines.append(f"  files read from elsewhere: {report['moved']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recorded", type=Path, help="the run directory to reproduce (config.json, summary.json, ...)")
    parser.add_argument("--out", type=Path, required=True, help="where the re-run is written (must not hold a run)")
    parser.add_argument("--compare-only", action="store_true", help="compare with a finished run in --out")
    parser.add_argument("--rerun-commit", default=None, help="with --compare-only: the commit --out was trained at")
    parser.add_argument(
        "--moved",
        action="append",
        default=[],
        metavar="FIELD=PATH",
        help=f"a file the recorded run read, now at PATH (FIELD: {', '.join(PATH_FIELDS)}); repeatable",
    )
    args = parser.parse_args(argv)
    rerun_commit = args.rerun_commit
    try:
        moved = moved_files(args.moved)
        if not args.compare_only:
            rerun_commit = commit()
            if (args.out / "config.json").exists():
                raise RunDirectoryError(f"{args.out} already holds a run; pass --compare-only to compare with it")
            command = train_command(replay_config(args.recorded, moved), args.out)
            print("$", " ".join(command[1:]), flush=True)
            trained = subprocess.run(command, cwd=REPO, check=False)
            if trained.returncode != 0:
                print(f"error: the re-run exited with code {trained.returncode}", file=sys.stderr)
                return 2
        report = compare(args.recorded, args.out, rerun_commit, moved)
    except RunDirectoryError as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    (args.out / "reproduction.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(describe(report))
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
