"""Checkpoints as safetensors plus JSON: loadable without executing anything from the files.

A checkpoint directory holds ``policy.safetensors`` (every policy tensor: LM, value or Q
head), ``optimizer.safetensors`` with ``optimizer.json`` (the optimizer's state, for
resuming) and ``checkpoint.json`` (algorithm, model name, env id and kwargs, policy
kwargs, counters, textgym version). No pickle is written or read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted or made for another model or env."""


def save_checkpoint(directory: str | os.PathLike, policy: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (a temporary sibling renamed into place); return its path."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in policy.state_dict().items()}
        # Tied weights (e.g. embeddings and LM head) share storage; safetensors wants distinct tensors.
        seen: dict[int, str] = {}
        for name, tensor in list(tensors.items()):
            key = tensor.untyped_storage().data_ptr()
            if key in seen:
                tensors[name] = tensor.clone()
            seen.setdefault(key, name)
        save_file(tensors, str(staging / "policy.safetensors"))
        optimizer = getattr(policy, "optimizer", None)
        if optimizer is not None:
            state = optimizer.state_dict()
            flat = {
                f"{index}.{key}": value.detach().cpu().contiguous()
                for index, values in state["state"].items()
                for key, value in values.items()
                if torch.is_tensor(value)
            }
            save_file(flat, str(staging / "optimizer.safetensors"))
            (staging / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"]}))
        meta = {"format_version": CHECKPOINT_FORMAT_VERSION, **metadata}
        (staging / "checkpoint.json").write_text(json.dumps(meta, indent=2, allow_nan=False))
        if target.exists():
            previous = target.with_name(f".{target.name}-previous")
            shutil.rmtree(previous, ignore_errors=True)
            target.rename(previous)
            staging.rename(target)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``checkpoint.json`` of a checkpoint directory."""
    path = Path(directory) / "checkpoint.json"
    if not path.is_file():
        raise CheckpointError(f"{str(directory)!r} is not a checkpoint: {path.name} is missing")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint metadata {str(path)!r} is corrupted: {error}") from error
    if not isinstance(meta, dict) or meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(directory)!r} has an unknown format version")
    return meta


def load_checkpoint(directory: str | os.PathLike, policy: torch.nn.Module, load_optimizer: bool = True) -> dict:
    """Load a checkpoint into ``policy`` (and its optimizer); return the metadata.

    Raises:
        CheckpointError: Files missing or corrupted, or tensors that do not fit ``policy``
            (a checkpoint of another model).
    """
    meta = read_metadata(directory)
    try:
        tensors = load_file(str(Path(directory) / "policy.safetensors"))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {str(directory)!r} has unreadable weights: {error}") from error
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(name for name in set(expected) & set(tensors) if expected[name].shape != tensors[name].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"checkpoint {str(directory)!r} (model {meta.get('model')!r}) does not fit this policy: "
            f"{len(missing)} missing tensors {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}"
        )
    policy.load_state_dict(tensors)
    optimizer = getattr(policy, "optimizer", None)
    optimizer_file = Path(directory) / "optimizer.safetensors"
    if load_optimizer and optimizer is not None and optimizer_file.is_file():
        flat = load_file(str(optimizer_file))
        groups = json.loads((Path(directory) / "optimizer.json").read_text())["param_groups"]
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            index, name = key.split(".", 1)
            state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    return meta
