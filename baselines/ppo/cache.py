"""Version-independent access to a transformers KV cache, and the token-prefix arithmetic of cache reuse.

transformers 5 keeps a cache's tensors per layer (``cache.layers[i].keys``), transformers 4
in two lists (``cache.key_cache[i]``); the decoder reads and replaces them through
:func:`cache_tensors`, :func:`get_tensor` and :func:`set_tensor` so that it runs on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def cache_tensors(cache: Any) -> list[tuple[Any, str, str]]:
    """(holder, key attribute, value attribute) for every layer of a transformers KV cache."""
    if hasattr(cache, "layers"):
        return [(layer, "keys", "values") for layer in cache.layers]
    return [(cache, f"key_cache.{i}", f"value_cache.{i}") for i in range(len(cache.key_cache))]  # transformers 4


def get_tensor(holder: Any, name: str) -> torch.Tensor:
    """The tensor ``name`` (from :func:`cache_tensors`) of ``holder``."""
    if "." in name:
        attribute, index = name.split(".")
        return getattr(holder, attribute)[int(index)]
    return getattr(holder, name)


def set_tensor(holder: Any, name: str, value: torch.Tensor) -> None:
    """Replace the tensor ``name`` (from :func:`cache_tensors`) of ``holder`` with ``value``."""
    if "." in name:
        attribute, index = name.split(".")
        getattr(holder, attribute)[int(index)] = value
    else:
        setattr(holder, name, value)


def real_tokens(input_ids: Sequence[np.ndarray], attention_mask: Sequence[np.ndarray]) -> list[list[int]]:
    """The unpadded token ids of each observation (rows of ids and of their mask)."""
    return [ids[mask == 1].astype(np.int64).tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]


def shared_prefix(sequences: list[np.ndarray], limit: int) -> int:
    """Length of the longest prefix all ``sequences`` share, at most ``limit``."""
    length = min(limit, *(len(sequence) for sequence in sequences))
    first = sequences[0][:length]
    for sequence in sequences[1:]:
        differs = np.flatnonzero(sequence[:length] != first[:length])
        length = int(differs[0]) if len(differs) else length
    return max(length, 0)


def common_prefix(first: list[int], second: list[int], limit: int) -> int:
    """Length of the longest common prefix of two token lists, at most ``limit``."""
    length = 0
    for a, b in zip(first[:limit], second[:limit], strict=False):
        if a != b:
            break
        length += 1
    return length
