"""Perplexity of texts under a causal LM, batched; the model loads on first use and is shared per process."""

from __future__ import annotations

import math
from typing import Any

from textgym.checks import check_integer
from textgym.metrics.inputs import text_list


def _start_ids(tokenizer: Any) -> list[int]:
    """The special ids the tokenizer itself puts before a text (a BOS for Llama-2-style ones), else []."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for begin in range(len(full) - len(plain) + 1):
        if list(full[begin : begin + len(plain)]) == list(plain):
            return list(full[:begin])
    return []


def perplexity(
    texts: list[str], model: str = "default", contexts: list[str] | None = None, batch_size: int = 8
) -> list[float]:
    """Per-text perplexity under a causal LM: ``exp`` of the mean negative log-likelihood of the text's tokens.

    Each row is ``start + context_ids + text_ids``: ``start`` holds the special tokens the
    model's tokenizer adds on its own (a BOS for Llama-2-style tokenizers; none for
    SmolLM2), and context and text are tokenised separately, so the split between them
    is exact (put any separating space into the text, e.g. ``" Paris"``). Only text
    tokens are scored. With neither a start token nor a context the first text token has
    nothing to condition on and is not scored, so such a text needs at least two tokens.

    Rows are left-padded and scored ``batch_size`` at a time, one forward per batch.

    Args:
        texts: Texts to score, not blank.
        model: A model name for :func:`textgym.models.load_shared_causal_lm` (``"default"``,
            ``"tiny"``, a local directory or a cached hub id).
        contexts: Optional text to condition on, one per text (``""`` for none).
        batch_size: Rows per forward, >= 1.

    Returns:
        One perplexity (>= 1) per text.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: Empty or blank texts, ``contexts`` of another length, a text with no
            scorable token, or a row longer than the model's context window.
    """
    import torch

    from textgym.lm import forward, positions_from_mask
    from textgym.models import load_shared_causal_lm, load_tokenizer

    texts = text_list(texts, "texts", blank_ok=False)
    if contexts is not None:
        contexts = text_list(contexts, "contexts")
        if len(contexts) != len(texts):
            raise ValueError(f"contexts and texts differ in length: {len(contexts)} contexts, {len(texts)} texts")
    batch_size = check_integer(batch_size, "batch_size", minimum=1)

    tokenizer = load_tokenizer(model)
    lm = load_shared_causal_lm(model)
    start = _start_ids(tokenizer)
    limit = getattr(lm.config, "max_position_embeddings", None)
    rows: list[tuple[list[int], int]] = []  # (all ids, number of scored tokens at the end)
    for index, text in enumerate(texts):
        context = contexts[index] if contexts is not None else ""
        prefix = start + (tokenizer(context, add_special_tokens=False)["input_ids"] if context else [])
        target = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not prefix:
            prefix, target = target[:1], target[1:]
        if not target:
            raise ValueError(
                f"texts[{index}] ({text!r}) has no token to score: with no context the first token is not "
                "scored; pass a context or a longer text"
            )
        if limit is not None and len(prefix) + len(target) > limit:
            raise ValueError(
                f"texts[{index}] with its context is {len(prefix) + len(target)} tokens, over the model's "
                f"{limit}-token window"
            )
        rows.append((prefix + target, len(target)))

    pad_id = int(tokenizer.pad_token_id)
    device = next(lm.parameters()).device
    result = [0.0] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths share a batch
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            width = max(len(rows[i][0]) for i in chunk)
            keep = max(rows[i][1] for i in chunk) + 1  # logits from the last context token on
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            scored = torch.zeros((len(chunk), keep - 1), dtype=torch.bool)
            for row, i in enumerate(chunk):
                tokens, count = rows[i]
                ids[row, width - len(tokens) :] = torch.tensor(tokens)
                mask[row, width - len(tokens) :] = 1
                scored[row, keep - 1 - count :] = True
            ids, mask = ids.to(device), mask.to(device)
            logits = forward(lm, ids, mask, positions_from_mask(mask), logits_to_keep=keep).logits
            logits = logits[:, -keep:-1].float()  # position p predicts token p + 1
            targets = ids[:, width - keep + 1 :]
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1).cpu()
            log_probs = log_probs.double().masked_fill(~scored, 0.0)
            mean_nll = -log_probs.sum(-1) / scored.sum(-1)
            for row, i in enumerate(chunk):
                result[i] = math.exp(min(float(mean_nll[row]), 709.0))  # exp(709) ~ 8e307, short of inf
    return result
