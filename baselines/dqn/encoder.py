"""Frozen-LM candidate features for the DQN's Q head, computed once per observation and cached."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from baselines.common.candidates import CANDIDATE_KEYS
from textgym.chat import chat_encoder
from textgym.lm import forward, new_cache, positions_from_mask
from textgym.metrics.functional import rouge
from textgym.models import eos_token_ids, load_causal_lm, load_shared_causal_lm, resolve_model_path

#: Number of scalar features per candidate (see :meth:`CandidateEncoder.encode`).
NUM_SCALARS = 6


class FeatureStatistics(nn.Module):
    """Per-dimension mean and standard deviation of the features, from the first encoded candidates.

    The statistics accumulate, from the observations that training batches first bring
    to the encoder, until ``limit`` candidates have been seen, and are frozen afterwards,
    so the head's inputs stop moving once training is under way; acting and evaluation
    never change them.

    Args:
        dim: Feature dimension.
        limit: Candidates that define the statistics.
    """

    def __init__(self, dim: int, limit: int = 512) -> None:
        super().__init__()
        self.limit = int(limit)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("total_squares", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Add (N, dim) features while fewer than ``limit`` candidates have been seen."""
        if self.count >= self.limit or features.numel() == 0:
            return
        flat = features.reshape(-1, features.shape[-1]).to(self.total)
        self.count += flat.shape[0]
        self.total += flat.sum(0)
        self.total_squares += (flat * flat).sum(0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Standardise ``features`` (..., dim); the identity before any update."""
        if self.count == 0:
            return features
        mean = self.total / self.count
        variance = (self.total_squares / self.count - mean * mean).clamp(min=0.0)
        std = variance.sqrt().clamp(min=1e-3)
        return ((features - mean.to(features)) / std.to(features)).clamp(-10.0, 10.0)


class CandidateEncoder:
    """Frozen-LM features of (context, candidate) pairs, cached by the observed ids.

    Not an ``nn.Module`` on purpose: the online and target Q-networks hold the same encoder,
    so the frozen trunk exists once and no optimizer, target update or checkpoint sees it.

    Args:
        model: A model name for :mod:`textgym.models`; it must share the env's tokenizer.
        num_candidates: K.
        reply_tokens: Tokens per candidate row of the observation.
        feature_layer: The hidden layer whose states describe the context and the
            candidates (0 = embeddings, negative counts from the last); None takes the
            middle layer.
        cache_size: Observations whose features are kept (least recently used are dropped).
        statistics_limit: Candidates that define the feature standardisation.
        feature_store: A directory where every encoded observation's features are also kept
            (``.npy``, half precision, namespaced by model, layer, K and reply tokens) and read
            back, by this encoder or another given the directory: runs on the same prompts
            (the seeds of a recipe, their evaluations) then run the trunk on each once between
            them. None: features live in memory only.
        guide_model: A second model that shares the env's tokenizer, e.g. a supervised
            fine-tune on the task's references (``python -m baselines.sft``). Each observation
            then also gets the guide's greedy reply to the context, and each candidate one more
            feature, just before the scalars: its ROUGE-L F-measure against that reply (how
            much of what the guide would say it says). None: no guide feature.

    Raises:
        ValueError: ``feature_layer`` is out of range, or ``guide_model``'s vocabulary is
            not ``model``'s.
    """

    def __init__(
        self,
        model: str,
        num_candidates: int,
        reply_tokens: int,
        feature_layer: int | None = None,
        cache_size: int = 20_000,
        statistics_limit: int = 512,
        feature_store: str | os.PathLike | None = None,
        guide_model: str | None = None,
    ) -> None:
        self.model_name = model
        self.num_candidates, self.reply_tokens = int(num_candidates), int(reply_tokens)
        self.lm = load_shared_causal_lm(model)  # frozen, float32, CPU; shared with the env's proposer
        config = self.lm.config
        layers = int(config.num_hidden_layers)
        layer = layers // 2 if feature_layer is None else int(feature_layer)
        if not -(layers + 1) <= layer <= layers:
            raise ValueError(f"feature_layer must be in [{-(layers + 1)}, {layers}] for model {model!r}, got {layer}")
        self.layer = layer % (layers + 1)
        self.hidden_size = int(config.hidden_size)
        self.guide_model = guide_model
        self.guide = None
        if guide_model is not None:
            self.guide = load_shared_causal_lm(guide_model)
            vocab, guide_vocab = (int(m.get_input_embeddings().weight.shape[0]) for m in (self.lm, self.guide))
            if guide_vocab != vocab:
                raise ValueError(
                    f"guide_model {guide_model!r} has {guide_vocab} input tokens but model {model!r} has {vocab}: "
                    "the guide must share the env's tokenizer (e.g. a fine-tune of the env's model)"
                )
            self.chat = chat_encoder(model)  # decodes replies as the env scores them
            self.guide_end_ids = list(eos_token_ids(self.chat.tokenizer, resolve_model_path(guide_model)))
        #: The last ``scalar_dim`` features of a candidate: the guide's agreement (if any) and the scalars.
        self.scalar_dim = (guide_model is not None) + NUM_SCALARS
        self.feature_dim = 2 * self.hidden_size + self.scalar_dim
        self.cache_size = int(cache_size)
        self.cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.statistics = FeatureStatistics(self.feature_dim, statistics_limit)
        self.hits = self.misses = self.stored_hits = self.encoded = 0
        self.update_statistics = False
        self.encode_batch = 16  # observations per trunk forward (bounds the memory of the hidden states)
        self.feature_store: Path | None = None
        if feature_store is not None:
            fields = [model, self.layer, self.num_candidates, self.reply_tokens, self.feature_dim]
            namespace = json.dumps(fields if guide_model is None else [*fields, guide_model])
            self.feature_store = Path(feature_store) / hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:16]
            self.feature_store.mkdir(parents=True, exist_ok=True)

    def to(self, device: torch.device) -> CandidateEncoder:
        """Run the trunk on ``device`` (a frozen copy is loaded for a non-CPU device)."""
        device = torch.device(device)
        if next(self.lm.parameters()).device != device:
            if device.type == "cpu":
                self.lm = load_shared_causal_lm(self.model_name)
                if self.guide_model is not None:
                    self.guide = load_shared_causal_lm(self.guide_model)
            else:
                self.lm = load_causal_lm(self.model_name, device=device).requires_grad_(False)
                if self.guide_model is not None:
                    self.guide = load_causal_lm(self.guide_model, device=device).requires_grad_(False)
        return self

    @property
    def device(self) -> torch.device:
        """Where the trunk runs."""
        return next(self.lm.parameters()).device

    def _keys(self, obs: dict[str, np.ndarray]) -> list[bytes]:
        rows = len(obs["input_ids"])
        return [
            hashlib.blake2b(b"".join(obs[key][row].tobytes() for key in CANDIDATE_KEYS), digest_size=16).digest()
            for row in range(rows)
        ]

    def __call__(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features (B, K, feature_dim), float32 on the trunk's device, from the cache where possible.

        Newly encoded observations update :attr:`statistics` while :attr:`update_statistics`
        is set (the policy sets it in training mode only).
        """
        arrays = {key: obs[key].detach().cpu().numpy() for key in CANDIDATE_KEYS}
        keys = self._keys(arrays)
        missing = [row for row, key in enumerate(keys) if key not in self.cache]
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        if missing:
            unique = list(dict.fromkeys(keys[row] for row in missing))
            first = {key: next(row for row in missing if keys[row] == key) for key in unique}
            stored = {key: self._read(key) for key in unique} if self.feature_store else {}
            stored = {key: features for key, features in stored.items() if features is not None}
            self.stored_hits += len(stored)
            if stored:
                if self.update_statistics:
                    self.statistics.update(torch.stack(list(stored.values())).float().to(self.statistics.total.device))
                self.cache.update(stored)
            rows = [first[key] for key in unique if key not in stored]
            self.encoded += len(rows)
            for start in range(0, len(rows), self.encode_batch):
                chunk = rows[start : start + self.encode_batch]
                encoded = self.encode({key: value[chunk] for key, value in arrays.items()})
                if self.update_statistics:
                    self.statistics.update(encoded.to(self.statistics.total.device))
                for row, features in zip(chunk, encoded.cpu().to(torch.float16), strict=True):
                    self.cache[keys[row]] = features  # half precision: half the memory, ample for features
                    if self.feature_store:
                        self._write(keys[row], features)
        out = []
        for key in keys:
            self.cache.move_to_end(key)
            out.append(self.cache[key])
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return torch.stack(out).to(self.device, torch.float32)

    def _read(self, key: bytes) -> torch.Tensor | None:
        """The stored features of ``key``, or None when missing or not (K, feature_dim) numbers."""
        try:
            array = np.load(self.feature_store / f"{key.hex()}.npy", allow_pickle=False)
        except (OSError, ValueError):
            return None
        if array.shape != (self.num_candidates, self.feature_dim) or not np.isfinite(array).all():
            return None
        return torch.from_numpy(array.astype(np.float16))

    def _write(self, key: bytes, features: torch.Tensor) -> None:
        # A temporary file renamed into place: runs sharing the directory never read half a file.
        handle, temporary = tempfile.mkstemp(dir=self.feature_store, prefix=".", suffix=".npy")
        with os.fdopen(handle, "wb") as file:
            np.save(file, features.numpy(), allow_pickle=False)
        os.replace(temporary, self.feature_store / f"{key.hex()}.npy")

    @torch.no_grad()
    def encode(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        """Run the frozen LM on B observations: (B, K, feature_dim) raw (unstandardised) features.

        The context is read once with a KV cache; the cache is repeated K times and the K
        right-padded candidates continue it as one batch. Per candidate: the mean hidden
        state of its tokens at ``layer``, the context's last hidden state at ``layer``, and
        the scalars mean / minimum / budget-normalised sum of the candidate's token
        log-probabilities, its length as a fraction of the budget, an empty flag and a
        candidate-0 flag; with a guide model, before the scalars, the candidate's agreement
        with the guide's reply (:meth:`guide_agreement`).
        """
        device, k, length = self.device, self.num_candidates, self.reply_tokens
        ids = torch.as_tensor(obs["input_ids"], device=device).long()
        mask = torch.as_tensor(obs["attention_mask"], device=device).long()
        if not bool(mask.any()):
            raise ValueError("observation has an empty context (attention_mask all zero)")
        first = int(mask.any(0).nonzero()[0])  # drop columns that are padding in every row
        ids, mask = ids[:, first:], mask[:, first:]
        batch = ids.shape[0]
        candidates = torch.as_tensor(obs["candidate_ids"], device=device).long().reshape(batch * k, length)
        candidate_mask = torch.as_tensor(obs["candidate_mask"], device=device).long().reshape(batch * k, length)
        positions = positions_from_mask(mask)
        cache = new_cache(self.lm)
        context = forward(self.lm, ids, mask, positions, cache=cache, logits_to_keep=1, output_hidden_states=True)
        context_hidden = context.hidden_states[self.layer][:, -1].float()  # left padding: newest token last
        first_logits = context.logits[:, -1].float()
        cache.batch_repeat_interleave(k)
        out = forward(
            self.lm,
            candidates,
            torch.cat([mask.repeat_interleave(k, 0), candidate_mask], 1),
            positions[:, -1:].repeat_interleave(k, 0) + 1 + torch.arange(length, device=device),
            cache=cache,
            output_hidden_states=True,
        )
        real = candidate_mask.float()
        tokens = real.sum(1)
        hidden = out.hidden_states[self.layer].float()
        mean_hidden = (hidden * real[..., None]).sum(1) / tokens.clamp(min=1)[:, None]
        logits = torch.cat([first_logits.repeat_interleave(k, 0)[:, None], out.logits[:, :-1].float()], 1)
        token_log_probs = torch.log_softmax(logits, -1).gather(-1, candidates[..., None]).squeeze(-1) * real
        mean_log_prob = token_log_probs.sum(1) / tokens.clamp(min=1)
        min_log_prob = token_log_probs.min(1).values  # 0 for an empty candidate
        rank0 = torch.zeros(batch, k, device=device)
        rank0[:, 0] = 1.0
        scalars = torch.stack(
            [
                mean_log_prob,
                min_log_prob,
                token_log_probs.sum(1) / length,
                tokens / length,
                (tokens == 0).float(),
                rank0.reshape(-1),
            ],
            -1,
        )
        parts = [mean_hidden, context_hidden.repeat_interleave(k, 0)]
        if self.guide is not None:
            parts.append(self.guide_agreement(ids, mask, candidates, candidate_mask).reshape(-1, 1))
        features = torch.cat([*parts, scalars], -1)
        return features.reshape(batch, k, self.feature_dim)

    @torch.no_grad()
    def guide_agreement(
        self, ids: torch.Tensor, mask: torch.Tensor, candidates: torch.Tensor, candidate_mask: torch.Tensor
    ) -> torch.Tensor:
        """ROUGE-L F of each candidate (rows of ``candidates``, K per context) against the guide's greedy reply.

        Args:
            ids: (B, T) left-padded context ids.
            mask: Their attention mask.
            candidates: (B * K, reply_tokens) right-padded candidate ids.
            candidate_mask: Their attention mask.

        Returns:
            (B * K,) float32 on the trunk's device; 0 for an empty candidate or an empty guide reply.
        """
        generated = self.guide.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=self.reply_tokens,
            do_sample=False,
            eos_token_id=self.guide_end_ids,
            pad_token_id=int(self.chat.tokenizer.pad_token_id),
        )[:, ids.shape[1] :]
        replies = [self.chat.decode_reply(row) for row in generated.tolist()]
        texts = [
            self.chat.decode_reply(row[: int(length)])
            for row, length in zip(candidates.tolist(), candidate_mask.sum(1).tolist(), strict=True)
        ]
        references = [reply for reply in replies for _ in range(self.num_candidates)]
        scored = [i for i, (text, reply) in enumerate(zip(texts, references, strict=True)) if text and reply]
        agreement = torch.zeros(len(texts), device=ids.device)
        if scored:
            values = rouge([texts[i] for i in scored], [references[i] for i in scored])["rougeL"]
            agreement[scored] = torch.tensor([float(v) for v in values], device=ids.device)
        return agreement
