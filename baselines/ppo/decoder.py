"""KV-cached, batched decoding across the envs of a rollout (see :class:`ContinuousDecoder`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from baselines.policies import LMActorCriticPolicy
from baselines.ppo.cache import cache_tensors, common_prefix, get_tensor, real_tokens, set_tensor
from textgym.lm import new_cache


class ContinuousDecoder:
    """Batched KV-cached decoding across envs, where any row can restart from a new observation.

    Every env step feeds all rows one token (one forward); rows whose env started a new
    reply (or whose observation window slid) restart from their new observation. A
    restart keeps the cached keys and values of the longest prefix the new observation
    shares with the row's tokens so far (the chat template and system prompt of a new
    prompt; the whole conversation so far at the next turn of a dialogue) and encodes only
    the rest, then splices the row into the shared cache, right-aligned, with masked zeros
    on the left. So a rollout costs about one forward per step, not one per step and env,
    and each row's outputs are the policy's outputs for that env's current observation.

    With ``keep_trunk_states``, the hidden states entering the policy's first trainable
    layer (see :attr:`LMActorCriticPolicy.frozen_depth`) are kept for every token of every
    row, so training can start from them.

    Attributes:
        logits: (n_rows, V) next-token logits for each row's current observation.
        values: (n_rows,) values of the same observations.
        tokens: Each row's tokens, in order (its real cache columns).
    """

    def __init__(self, policy: LMActorCriticPolicy, n_rows: int, keep_trunk_states: bool = False) -> None:
        self.policy, self.n_rows = policy, n_rows
        self.depth = policy.frozen_depth if keep_trunk_states else 0
        self.cache = new_cache(policy.lm)
        self.mask: torch.Tensor | None = None
        self.tokens: list[list[int]] = [[] for _ in range(n_rows)]
        self._states: list[list[torch.Tensor]] = [[] for _ in range(n_rows)]
        self.next_position = torch.zeros(n_rows, 1, dtype=torch.long, device=policy.device)
        self.logits = torch.zeros(n_rows, policy.vocab_size, device=policy.device)
        self.values = torch.zeros(n_rows, device=policy.device)
        self.reused_tokens = self.encoded_tokens = 0

    @torch.no_grad()
    def refresh(self, observations: dict[str, np.ndarray]) -> None:
        """After an update, bring the cache up to date with the policy's new weights, cheaply.

        The frozen trunk's keys and values are still right; only the layers above it are
        recomputed, from the kept trunk states, with every row's logits and values. Rows
        whose tokens are not their observation (the env was reset in between) then restart.
        """
        if not self.depth or self.mask is None:
            raise RuntimeError("refresh needs a decoder that keeps trunk states and has started")
        self.reused_tokens = self.encoded_tokens = 0
        states = self.trunk_states(0).new_zeros(self.n_rows, self.mask.shape[1], self.trunk_states(0).shape[-1])
        for row in range(self.n_rows):
            states[row, torch.nonzero(self.mask[row]).flatten()] = self.trunk_states(row)
        fresh = new_cache(self.policy.lm)
        hidden = self.policy.top_forward(states, self.mask, cache=fresh)
        self.logits, self.values = self.policy._heads(hidden[:, -1])
        fresh_layers, layers = cache_tensors(fresh), cache_tensors(self.cache)
        for layer in range(self.depth, len(layers)):
            (holder, key, value), (fresh_holder, fresh_key, fresh_value) = layers[layer], fresh_layers[layer]
            set_tensor(holder, key, get_tensor(fresh_holder, fresh_key))
            set_tensor(holder, value, get_tensor(fresh_holder, fresh_value))
        current = real_tokens(observations["input_ids"], observations["attention_mask"])
        stale = [row for row, tokens in enumerate(current) if tokens != self.tokens[row]]
        if stale:
            self.restart(np.asarray(stale), observations)

    def trunk_states(self, row: int) -> torch.Tensor:
        """(len(tokens[row]), H) frozen-trunk output at each of the row's tokens."""
        chunks = self._states[row]
        if len(chunks) != 1:
            chunks[:] = [torch.cat(chunks)]
        return chunks[0]

    @torch.no_grad()
    def restart(self, rows: np.ndarray, observations: dict[str, np.ndarray]) -> None:
        """Encode the observations of ``rows`` (past a prefix already cached) and splice them into the cache."""
        rows = np.asarray(rows)
        observed = real_tokens(observations["input_ids"][rows], observations["attention_mask"][rows])
        fresh, mask, positions, kept, (logits, values, states) = self._encode(rows, observed)
        rows_t = torch.as_tensor(rows, device=self.policy.device)
        self.logits[rows_t], self.values[rows_t] = logits, values
        self.next_position[rows_t] = positions[:, -1:] + 1
        width = positions.shape[1]
        for index, (row, new, keep) in enumerate(zip(rows, observed, kept, strict=True)):
            if self.depth:
                kept_states = self.trunk_states(row)[:keep] if keep else states.new_zeros(0, states.shape[-1])
                self._states[row] = [kept_states, states[index, width - (len(new) - keep) :]]
            self.tokens[row] = new
        if self.mask is None:  # first restart of all rows: the fresh cache is the cache
            self.cache, self.mask = fresh, mask
            return
        self._splice(rows_t, fresh, mask)

    @torch.no_grad()
    def values_of(self, rows: np.ndarray, observed: list[list[int]]) -> torch.Tensor:
        """Values of other token sequences for ``rows``, reusing the prefix each shares with its row."""
        *_, (_, values, _) = self._encode(np.asarray(rows), observed)
        return values

    def _encode(self, rows: np.ndarray, observed: list[list[int]]) -> tuple[Any, torch.Tensor, torch.Tensor, list, Any]:
        """A fresh cache of ``rows`` holding ``observed``: the kept prefix copied, the rest encoded.

        Returns:
            The cache, its (rows, width) mask, the encoded tokens' (rows, suffix width)
            positions, the kept prefix lengths and :meth:`LMActorCriticPolicy.step_outputs`.
        """
        device = self.policy.device
        if not all(observed):
            raise ValueError(f"observations of rows {rows.tolist()} include one without tokens")
        if self.mask is None:
            kept = [0] * len(rows)
        else:  # keep at least one token to encode: its output gives the row's logits
            kept = [common_prefix(self.tokens[r], new, len(new) - 1) for r, new in zip(rows, observed, strict=True)]
        past, width = max(kept), max(len(new) - k for new, k in zip(observed, kept, strict=True))
        fresh = new_cache(self.policy.lm)
        past_mask = torch.zeros(len(rows), past, dtype=torch.long, device=device)
        if past:
            # (restarted row, its past column) <- (cache row, cache column) for each kept token
            target_row, target_col, source_row, source_col = [], [], [], []
            for index, (row, keep) in enumerate(zip(rows, kept, strict=True)):
                columns = torch.nonzero(self.mask[row]).flatten()[:keep]
                target_row += [index] * keep
                target_col += range(past - keep, past)
                source_row += [int(row)] * keep
                source_col += columns.tolist()
            targets = (torch.as_tensor(target_row, device=device), torch.as_tensor(target_col, device=device))
            sources = (torch.as_tensor(source_row, device=device), torch.as_tensor(source_col, device=device))
            for layer, (holder, key, value) in enumerate(cache_tensors(self.cache)):
                pasts = []
                for name in (key, value):
                    tensor = get_tensor(holder, name)
                    kept_part = tensor.new_zeros(len(rows), tensor.shape[1], past, tensor.shape[3])
                    kept_part[targets[0], :, targets[1]] = tensor[sources[0], :, sources[1]]
                    pasts.append(kept_part)
                fresh.update(pasts[0], pasts[1], layer)
            past_mask[targets] = 1
        ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        positions = torch.zeros(len(rows), width, dtype=torch.long, device=device)
        for index, (new, keep) in enumerate(zip(observed, kept, strict=True)):
            suffix = new[keep:]
            ids[index, width - len(suffix) :] = torch.as_tensor(suffix, device=device)
            mask[index, width - len(suffix) :] = 1
            positions[index, width - len(suffix) :] = torch.arange(keep, len(new), device=device)
        mask = torch.cat([past_mask, mask], dim=1)
        outputs = self.policy.step_outputs(ids, mask, fresh, positions, self.depth)
        self.reused_tokens += sum(kept)
        self.encoded_tokens += sum(len(new) - k for new, k in zip(observed, kept, strict=True))
        return fresh, mask, positions, kept, outputs

    def _splice(self, rows_t: torch.Tensor, fresh: Any, mask: torch.Tensor) -> None:
        """Write a fresh cache of ``rows_t`` into the shared one, right-aligned."""
        width, new_width = self.mask.shape[1], mask.shape[1]
        if new_width > width:  # make room on the left for a longer prompt
            grow = new_width - width
            for holder, key, value in cache_tensors(self.cache):
                for name in (key, value):
                    tensor = get_tensor(holder, name)
                    pad = tensor.new_zeros(*tensor.shape[:2], grow, tensor.shape[3])
                    set_tensor(holder, name, torch.cat([pad, tensor], dim=2))
            self.mask = torch.cat([self.mask.new_zeros(self.n_rows, grow), self.mask], dim=1)
            width = new_width
        for (holder, key, value), (fresh_holder, fresh_key, fresh_value) in zip(
            cache_tensors(self.cache), cache_tensors(fresh), strict=True
        ):
            for name, fresh_name in ((key, fresh_key), (value, fresh_value)):
                tensor = get_tensor(holder, name)
                tensor[rows_t] = 0
                tensor[rows_t, :, width - new_width :] = get_tensor(fresh_holder, fresh_name).to(tensor.dtype)
        self.mask[rows_t] = 0
        self.mask[rows_t, width - new_width :] = mask
        self._compact()

    def _compact(self) -> None:
        """Drop leading columns that are masked out in every row (views: later appends stay in place)."""
        first = int(torch.argmax(self.mask.any(dim=0).long()))
        if first == 0:
            return
        for holder, key, value in cache_tensors(self.cache):
            for name in (key, value):
                set_tensor(holder, name, get_tensor(holder, name)[:, :, first:])
        self.mask = self.mask[:, first:]

    @torch.no_grad()
    def feed(self, tokens: torch.Tensor) -> None:
        """Append one token to every row and compute the next logits and values."""
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.logits, self.values, states = self.policy.step_outputs(
            tokens[:, None], self.mask, self.cache, self.next_position, self.depth
        )
        self.next_position = self.next_position + 1
        for row, token in enumerate(tokens.tolist()):
            self.tokens[row].append(token)
            if self.depth:
                self._states[row].append(states[row])
