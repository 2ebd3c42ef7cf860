"""What a deterministic resume needs besides the weights and the optimizer: the ``resume.json`` of a checkpoint."""

from __future__ import annotations

import base64
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecNormalize

#: Counters of SB3 algorithms that schedule their work (updates done, env steps seen by DQN's target updates).
ALGORITHM_COUNTERS = ("_n_updates", "_n_calls", "_episode_num")
EVAL_RECORDS = "eval_generations.jsonl"


def _bytes_text(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _text_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global random number generators, as JSON."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "torch": _bytes_text(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_bytes_text(generator) for generator in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`'s output."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(_text_bytes(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_text_bytes(generator) for generator in state["cuda"]])


def resume_state(
    model: Any, env: Any, out: Path, initial: dict[str, Any] | None, curve: list[dict[str, Any]], next_eval: float
) -> dict[str, Any]:
    """What a deterministic resume needs besides the weights and the optimizer (``resume.json``)."""
    records = out / EVAL_RECORDS
    state: dict[str, Any] = {
        "rng": rng_state(),
        "action_space_rng": model.action_space.np_random.bit_generator.state,
        "counters": {name: int(getattr(model, name)) for name in ALGORITHM_COUNTERS if hasattr(model, name)},
        "initial": initial,
        "curve": curve,
        "next_eval": None if math.isinf(next_eval) else int(next_eval),
        "eval_generations_bytes": records.stat().st_size if records.exists() else 0,
    }
    monitor = getattr(model, "monitor", None)
    if monitor is not None:
        state["monitor"] = {"first_reply_words": monitor.first_reply_words, "issued": list(monitor.issued)}
    if isinstance(env, VecNormalize):
        rms = env.ret_rms
        state["return_rms"] = {"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count)}
    return state


def restore_resume_state(model: Any, env: Any, state: dict[str, Any]) -> None:
    """Put :func:`resume_state`'s output back into a freshly built ``model`` and ``env``."""
    set_rng_state(state["rng"])
    model.action_space.np_random.bit_generator.state = state["action_space_rng"]
    for name, value in state["counters"].items():
        setattr(model, name, value)
    monitor = getattr(model, "monitor", None)
    if monitor is not None and "monitor" in state:
        monitor.first_reply_words = state["monitor"]["first_reply_words"]
        monitor.issued[:] = state["monitor"]["issued"]
    if isinstance(env, VecNormalize) and "return_rms" in state:
        saved = state["return_rms"]
        env.ret_rms.mean, env.ret_rms.var = np.float64(saved["mean"]), np.float64(saved["var"])
        env.ret_rms.count = saved["count"]


def resume_env_seed(seed: int, num_timesteps: int) -> int:
    """The envs' seed when a run resumes at ``num_timesteps``: fixed by the checkpoint, unlike the start's."""
    return int(np.random.SeedSequence([seed, num_timesteps]).generate_state(1)[0]) % (2**31 - 1)
