"""A bundle's checkpoints: safe to open, and trained from the base model the bundle names.

A checkpoint of format version 2 (:mod:`baselines.checkpoint`) holds only the tensors that
training changed; the rest is the base model, rebuilt by name when the checkpoint loads.
Its ``checkpoint.json`` records that base model (``base_model``: name, revision, SHA-256
of its weight files). A bundle whose manifest names another model or another revision than
its checkpoints' base model claims something the checkpoints do not support, and is
rejected (code ``checkpoint``) by :func:`check_bundle_checkpoints`, which verification runs
on every bundle, and again by the re-run before anything is loaded. A format-1 checkpoint
holds every tensor and records no base model; only its model name is compared.

Nothing here imports torch or loads a model: the files are checked as JSON and by size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leaderboard import safejson

if TYPE_CHECKING:
    from leaderboard.report import Bundle, Report

MAX_CHECKPOINT_JSON_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 8 << 30
#: The files of a bundled checkpoint, with their size limits.
CHECKPOINT_FILES = (("checkpoint.json", MAX_CHECKPOINT_JSON_BYTES), ("policy.safetensors", MAX_WEIGHTS_BYTES))
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_checkpoint_base(manifest_model: dict[str, Any], checkpoint_meta: dict[str, Any]) -> list[str]:
    """Why a checkpoint's base model is not the model a bundle's manifest claims (empty when it is).

    Args:
        manifest_model: The manifest's ``model`` object (``id``, ``revision``, ...).
        checkpoint_meta: The checkpoint's ``checkpoint.json``.

    Returns:
        One sentence per problem, naming both sides.

    >>> meta = {"format_version": 2, "base_model": {"name": "tiny", "revision": "r1", "sha256": "0" * 64}}
    >>> check_checkpoint_base({"id": "tiny", "revision": "r1"}, meta)
    []
    >>> check_checkpoint_base({"id": "tiny", "revision": "r2"}, meta)
    ["the bundle claims model revision 'r2', but the checkpoint was trained from base model 'tiny' revision 'r1'"]
    """
    if checkpoint_meta.get("format_version") == 1:  # every tensor is in the file: no base model recorded
        if checkpoint_meta.get("model") != manifest_model.get("id"):
            return [
                f"the bundle claims model {manifest_model.get('id')!r:.80}, but the checkpoint is of model "
                f"{checkpoint_meta.get('model')!r:.80}"
            ]
        return []
    base = checkpoint_meta.get("base_model")
    if not isinstance(base, dict) or not all(isinstance(base.get(key), str) for key in ("name", "revision", "sha256")):
        return [f"the checkpoint records no base model (name, revision, sha256) it was trained from: {base!r:.120}"]
    problems = []
    if not _SHA256.match(base["sha256"]):
        problems.append(f"the checkpoint's base model sha256 {base['sha256']!r:.80} is not a SHA-256 hex digest")
    if base["name"] != manifest_model.get("id"):
        problems.append(
            f"the bundle claims model {manifest_model.get('id')!r:.80}, but the checkpoint was trained from base "
            f"model {base['name']!r:.80}"
        )
    elif base["revision"] != manifest_model.get("revision"):
        problems.append(
            f"the bundle claims model revision {manifest_model.get('revision')!r:.130}, but the checkpoint was "
            f"trained from base model {base['name']!r:.80} revision {base['revision']!r:.130}"
        )
    return problems


def checkpoint_directory(bundle: Bundle, run: dict[str, Any]) -> Path:
    """The run's checkpoint directory inside the bundle, its files checked to be regular and within limits.

    Raises:
        leaderboard.safejson.UnsafeInputError: A path leaves the bundle, a file is missing,
            a symbolic link or too large.
    """
    directory = safejson.safe_path(bundle.path, run["checkpoint"], "checkpoint")
    for name, limit in CHECKPOINT_FILES:
        path = directory / name
        if path.is_symlink() or not path.is_file():
            raise safejson.UnsafeInputError("path", f"checkpoint {run['checkpoint']!r} lacks a regular {name}")
        if path.stat().st_size > limit:
            raise safejson.UnsafeInputError("too_large", f"{run['checkpoint']}/{name} is over {limit} bytes")
    return directory


def read_checkpoint_metadata(directory: Path, what: str) -> Any:
    """A bundled checkpoint's ``checkpoint.json``, read as strict, size-limited JSON.

    Raises:
        leaderboard.safejson.UnsafeInputError: It is too large or not strict JSON.
    """
    return safejson.load_json_file(directory / "checkpoint.json", MAX_CHECKPOINT_JSON_BYTES, what)


def check_bundle_checkpoints(bundle: Bundle, report: Report) -> None:
    """Check every run's checkpoint of ``bundle`` against the manifest's model; problems go in ``report``.

    Runs without a checkpoint are skipped (a re-run reports them), and so are checkpoint
    directories that are missing or outside the bundle (:func:`leaderboard.verify.verify_bundle`
    reports those). A checkpoint file that is missing or not safe to open is reported with
    its ``path`` / ``too_large`` / ``malformed`` code, a base model that differs from the
    manifest's model with code ``checkpoint``.
    """
    model = bundle.manifest["model"]
    for run in bundle.manifest["runs"]:
        if not run.get("checkpoint"):
            continue
        what = f"checkpoint of training seed {run['training_seed']}"
        try:
            if not safejson.safe_path(bundle.path, run["checkpoint"], "checkpoint").is_dir():
                continue
        except safejson.UnsafeInputError:
            continue
        try:
            meta = read_checkpoint_metadata(checkpoint_directory(bundle, run), what)
        except safejson.UnsafeInputError as error:
            report.add(error.code, str(error))
            continue
        if not isinstance(meta, dict):
            report.add("checkpoint", f"{what}: checkpoint.json is not a JSON object")
            continue
        for problem in check_checkpoint_base(model, meta):
            report.add("checkpoint", f"{what}: {problem}")
