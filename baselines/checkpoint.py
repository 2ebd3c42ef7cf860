"""Checkpoints as safetensors plus JSON: loadable without executing anything from the files.

A checkpoint directory holds:

* ``checkpoint.json``: algorithm, env id and kwargs, model name, the **base model** it was
  trained from (``base_model``: name, revision and the SHA-256 of its weight files, see
  :func:`textgym.models.base_model_identity`), counters, KL coefficient, config, textgym
  version.
* ``policy.safetensors``: only the tensors that training changes. The pretrained LM's frozen
  parameters are left out, since loading rebuilds the base model by name: with
  ``trainable_layers`` the top layers, the final norm and the value head; with LoRA the
  adapters and the value head; with full fine-tuning every tensor; for DQN the Q heads and
  feature statistics (its LM trunk is never part of the policy).
* ``optimizer.safetensors`` and ``optimizer.json``: the optimizer's state, for resuming.
* ``resume.json`` (written by ``baselines.train``): what a deterministic resume needs besides the
  weights (random number generator states, counters, the evaluations so far).

No pickle is written or read. A checkpoint is written as a new hidden version directory and
switched into place atomically (:func:`textgym.files.replace_directory`): after a crash the
directory is the previous complete checkpoint or the new complete one. Format version 1
checkpoints (every policy tensor, no base model recorded) still load.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from textgym import files
from textgym.models import base_model_identity

CHECKPOINT_FORMAT_VERSION = 2
#: Versions :func:`read_metadata` accepts: 1 held every policy tensor, 2 only the trained ones.
SUPPORTED_FORMAT_VERSIONS = (1, 2)
METADATA_FILE = "checkpoint.json"
POLICY_FILE = "policy.safetensors"
RESUME_FILE = "resume.json"
#: Policies keep their pretrained LM as the submodule ``lm``; its frozen parameters are rebuilt from the base model.
BASE_MODEL_ATTRIBUTE = "lm"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted or made for another model or env."""


def _frozen_base_names(policy: torch.nn.Module) -> set[str]:
    """State-dict names of the base LM's frozen parameters that equal the base model's (not saved)."""
    lm = policy._modules.get(BASE_MODEL_ATTRIBUTE)
    if lm is None:
        return set()
    frozen = {
        f"{BASE_MODEL_ATTRIBUTE}.{name}"
        for name, parameter in lm.named_parameters(remove_duplicate=False)
        if not parameter.requires_grad
    }
    return frozen - getattr(policy, "_checkpoint_kept", set())


def _aliases(state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """For each state-dict name, the names of the same tensor (tied weights such as embeddings and LM head)."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, tensor in state.items():
        storage = tensor.untyped_storage().data_ptr() if tensor.numel() else name  # empty tensors share no data
        groups.setdefault((storage, tensor.storage_offset(), tuple(tensor.shape), tensor.dtype), []).append(name)
    return {name: names for names in groups.values() for name in names}


def trained_state_dict(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's tensors a checkpoint holds: its state dict without the base LM's frozen parameters.

    Tied weights are held once, under their first name. Frozen parameters that a loaded
    checkpoint set to values other than the base model's (e.g. a format-1 checkpoint of a
    fully trained LM, loaded into a policy that trains only its top layers) are kept, so
    that saving never drops trained weights.
    """
    frozen = _frozen_base_names(policy)
    state = policy.state_dict()
    aliases = _aliases(state)
    return {
        name: tensor
        for name, tensor in state.items()
        if name not in frozen and aliases[name][0] == name  # a tied weight once
    }


def _base_model_of(policy: torch.nn.Module) -> dict[str, str] | None:
    name = getattr(policy, "model_name", None)
    return base_model_identity(name) if isinstance(name, str) else None


def save_checkpoint(
    directory: str | os.PathLike,
    policy: torch.nn.Module,
    metadata: dict[str, Any],
    resume_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint of ``policy`` (and its optimizer) atomically; return its path.

    Args:
        directory: The checkpoint directory (a symbolic link to its current version).
        policy: The policy; ``policy.model_name`` names its base model, ``policy.optimizer``
            (if any) is saved too.
        metadata: JSON-serialisable metadata (algorithm, env, config, counters).
        resume_state: Extra JSON-serialisable state for a deterministic resume (``resume.json``).

    Returns:
        ``directory`` as a :class:`~pathlib.Path`.
    """
    target = Path(directory)
    version = files.new_version_directory(target)
    try:
        state = trained_state_dict(policy)
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
        # Views of one storage that are not tied weights (safetensors refuses shared storage) get their own copy.
        seen: set[int] = set()
        for name, tensor in list(tensors.items()):
            key = tensor.untyped_storage().data_ptr()
            if key in seen:
                tensors[name] = tensor.clone()
            seen.add(key)
        save_file(tensors, str(version / POLICY_FILE))
        optimizer = getattr(policy, "optimizer", None)
        if optimizer is not None:
            optimizer_state = optimizer.state_dict()
            flat = {
                f"{index}.{key}": value.detach().cpu().contiguous()
                for index, values in optimizer_state["state"].items()
                for key, value in values.items()
                if torch.is_tensor(value)
            }
            save_file(flat, str(version / "optimizer.safetensors"))
            (version / "optimizer.json").write_text(json.dumps({"param_groups": optimizer_state["param_groups"]}))
        if resume_state is not None:
            (version / RESUME_FILE).write_text(json.dumps(resume_state, allow_nan=True))
        everything = policy.state_dict()
        aliases = _aliases(everything)
        total = sum(tensor.numel() for name, tensor in everything.items() if aliases[name][0] == name)
        meta = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            **metadata,
            "base_model": _base_model_of(policy),
            "tensors": {"saved_elements": sum(t.numel() for t in tensors.values()), "policy_elements": total},
        }
        (version / METADATA_FILE).write_text(json.dumps(meta, indent=2, allow_nan=False))
        files.replace_directory(version, target)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    return target


def _pinned(directory: str | os.PathLike) -> Path:
    """The checkpoint's current version directory: every file of one load comes from the same version."""
    path = Path(directory)
    return path.resolve() if path.exists() else path


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``checkpoint.json`` of a checkpoint directory.

    Raises:
        CheckpointError: It is missing, not JSON, or of an unknown format version.
    """
    path = _pinned(directory) / METADATA_FILE
    if not path.is_file():
        raise CheckpointError(f"{str(directory)!r} is not a checkpoint: {METADATA_FILE} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint metadata {str(path)!r} is corrupted: {error}") from error
    if not isinstance(meta, dict) or meta.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"checkpoint {str(directory)!r} has format version {version!r}; this textgym reads versions "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}"
        )
    return meta


def read_resume_state(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The ``resume.json`` of a checkpoint directory, or None when it has none (format 1, or not from training).

    Raises:
        CheckpointError: The file is not JSON.
    """
    path = _pinned(directory) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint resume state {str(path)!r} is corrupted: {error}") from error


def check_base_model(meta: dict[str, Any], policy: torch.nn.Module, directory: str = "") -> None:
    """Check that ``policy`` was built from the base model the checkpoint was trained from.

    Raises:
        CheckpointError: The checkpoint names another base model, or the base model's weight
            files here have another SHA-256 than the trainer's (message names both).
    """
    recorded = meta.get("base_model")
    if recorded is None:  # format 1, or a policy without a named base model
        return
    if not isinstance(recorded, dict) or not all(isinstance(recorded.get(k), str) for k in ("name", "sha256")):
        raise CheckpointError(f"checkpoint {directory!r} has a malformed base_model entry: {recorded!r:.200}")
    local = _base_model_of(policy)
    if local is None:
        return
    if recorded["name"] != local["name"]:
        raise CheckpointError(
            f"checkpoint {directory!r} was trained from base model {recorded['name']!r}, but this policy is built "
            f"from {local['name']!r}"
        )
    if recorded["sha256"] != local["sha256"]:
        raise CheckpointError(
            f"checkpoint {directory!r} was trained from base model {recorded['name']!r} revision "
            f"{recorded.get('revision')!r} with weights sha256 {recorded['sha256']}, but that model here is "
            f"revision {local['revision']!r} with weights sha256 {local['sha256']}: the trained tensors would be "
            "applied to other weights"
        )


def load_checkpoint(directory: str | os.PathLike, policy: torch.nn.Module, load_optimizer: bool = True) -> dict:
    """Load a checkpoint into ``policy`` (built from the base model by name) and its optimizer; return the metadata.

    The base model's identity is checked first (:func:`check_base_model`); then every saved
    tensor is loaded, and every tensor the file leaves out must be a frozen base-model
    parameter, which ``policy`` already holds.

    Raises:
        CheckpointError: Files missing or corrupted, another base model, or tensors that do
            not fit ``policy`` (a checkpoint of another model or configuration).
    """
    shown = str(directory)
    directory = _pinned(directory)
    meta = read_metadata(directory)
    check_base_model(meta, policy, shown)
    try:
        tensors = load_file(str(directory / POLICY_FILE))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {shown!r} has unreadable weights: {error}") from error
    expected = policy.state_dict()
    frozen = _frozen_base_names(policy)
    aliases = _aliases(expected)
    # A tied weight is saved under one of its names; loading it sets every name.
    tied = {name for name in expected if any(alias in tensors for alias in aliases[name])}
    missing = sorted(set(expected) - set(tensors) - frozen - tied)
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(name for name in set(expected) & set(tensors) if expected[name].shape != tensors[name].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {shown!r} (model {meta.get('model')!r}) does not fit this policy: "
            f"{len(missing)} missing tensors {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}"
        )
    # Frozen tensors the file sets to other values than the base's are trained weights: keep saving them.
    changed = {name for name in frozen & set(tensors) if not torch.equal(expected[name].cpu(), tensors[name])}
    policy.load_state_dict(tensors, strict=False)
    if changed:
        policy._checkpoint_kept = getattr(policy, "_checkpoint_kept", set()) | changed
    optimizer = getattr(policy, "optimizer", None)
    optimizer_file = directory / "optimizer.safetensors"
    if load_optimizer and optimizer is not None and optimizer_file.is_file():
        try:
            flat = load_file(str(optimizer_file))
            groups = json.loads((directory / "optimizer.json").read_text())["param_groups"]
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in flat.items():
                index, name = key.split(".", 1)
                state.setdefault(int(index), {})[name] = value
            optimizer.load_state_dict({"state": state, "param_groups": groups})
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"checkpoint {shown!r} has an optimizer state that does not fit: {error}") from error
    return meta
