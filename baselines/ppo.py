"""A fast PPO for token-level LM envs: KV-cached batched collection, one forward per packed row in training.

:class:`FastLMPPO` is stock SB3 ``PPO`` with :class:`~baselines.policies.LMActorCriticPolicy`
and the same objective (SB3's own ``train`` loop computes every loss), changed in three places:

* **Collection.** Instead of one full forward over every env's whole context per step,
  a :class:`ContinuousDecoder` keeps one KV cache for all envs and feeds each step's
  tokens in one batched forward; the cache appends in place (no copy of itself per
  step). An env that starts a new reply (or whose observation window slides) restarts
  from its new observation, re-encoding only what it does not share with the row's
  tokens so far (a new prompt shares the chat template and system prompt; a dialogue's
  next turn shares the whole conversation). Every sampled token comes with exactly the
  log-probability and value that the stock policy computes from that step's observation.
* **Training.** Minibatches are whole *segments* (runs of steps in which each observation
  is the previous one plus the previous action), packed into rows that hold the prompt
  prefix all segments share once; one forward per row gives every step's log-probability
  and value. When only the top layers train (``trainable_layers``), the frozen layers'
  output at every token is kept from collection: training, the reference's forward and the
  cache refresh after an update run only the layers above it.
* **KL to a frozen reference.** After each rollout, one reference forward per batch of
  segments gives ``log p_ref`` of every sampled token; ``reward_t -= beta * (log pi_old -
  log p_ref)``, with ``beta`` adapted towards a target KL per reply. The reference lives
  in the algorithm, outside the policy, and is never saved.

It also watches for silent failures (see :class:`TrainingMonitor`).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples

from baselines.policies import LMActorCriticPolicy, SegmentBatch, top_layers
from textgym.lm import forward, new_cache, sample_from_logits
from textgym.models import load_causal_lm


def _cache_tensors(cache: Any) -> list[tuple[Any, str, str]]:
    """(holder, key attribute, value attribute) for every layer of a transformers KV cache."""
    if hasattr(cache, "layers"):
        return [(layer, "keys", "values") for layer in cache.layers]
    return [(cache, f"key_cache.{i}", f"value_cache.{i}") for i in range(len(cache.key_cache))]  # transformers 4


def _get(holder: Any, name: str) -> torch.Tensor:
    if "." in name:
        attribute, index = name.split(".")
        return getattr(holder, attribute)[int(index)]
    return getattr(holder, name)


def _set(holder: Any, name: str, value: torch.Tensor) -> None:
    if "." in name:
        attribute, index = name.split(".")
        getattr(holder, attribute)[int(index)] = value
    else:
        setattr(holder, name, value)


def _real_tokens(input_ids: Sequence[np.ndarray], attention_mask: Sequence[np.ndarray]) -> list[list[int]]:
    """The unpadded token ids of each observation (rows of ids and of their mask)."""
    return [ids[mask == 1].astype(np.int64).tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]


def _shared_prefix(sequences: list[np.ndarray], limit: int) -> int:
    """Length of the longest prefix all ``sequences`` share, at most ``limit``."""
    length = min(limit, *(len(sequence) for sequence in sequences))
    first = sequences[0][:length]
    for sequence in sequences[1:]:
        differs = np.flatnonzero(sequence[:length] != first[:length])
        length = int(differs[0]) if len(differs) else length
    return max(length, 0)


def _common_prefix(first: list[int], second: list[int], limit: int) -> int:
    """Length of the longest common prefix of two token lists, at most ``limit``."""
    length = 0
    for a, b in zip(first[:limit], second[:limit], strict=False):
        if a != b:
            break
        length += 1
    return length


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
        fresh_layers, layers = _cache_tensors(fresh), _cache_tensors(self.cache)
        for layer in range(self.depth, len(layers)):
            (holder, key, value), (fresh_holder, fresh_key, fresh_value) = layers[layer], fresh_layers[layer]
            _set(holder, key, _get(fresh_holder, fresh_key))
            _set(holder, value, _get(fresh_holder, fresh_value))
        current = _real_tokens(observations["input_ids"], observations["attention_mask"])
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
        observed = _real_tokens(observations["input_ids"][rows], observations["attention_mask"][rows])
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
            kept = [_common_prefix(self.tokens[r], new, len(new) - 1) for r, new in zip(rows, observed, strict=True)]
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
            for layer, (holder, key, value) in enumerate(_cache_tensors(self.cache)):
                pasts = []
                for name in (key, value):
                    tensor = _get(holder, name)
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
            for holder, key, value in _cache_tensors(self.cache):
                for name in (key, value):
                    tensor = _get(holder, name)
                    pad = tensor.new_zeros(*tensor.shape[:2], grow, tensor.shape[3])
                    _set(holder, name, torch.cat([pad, tensor], dim=2))
            self.mask = torch.cat([self.mask.new_zeros(self.n_rows, grow), self.mask], dim=1)
            width = new_width
        for (holder, key, value), (fresh_holder, fresh_key, fresh_value) in zip(
            _cache_tensors(self.cache), _cache_tensors(fresh), strict=True
        ):
            for name, fresh_name in ((key, fresh_key), (value, fresh_value)):
                tensor = _get(holder, name)
                tensor[rows_t] = 0
                tensor[rows_t, :, width - new_width :] = _get(fresh_holder, fresh_name).to(tensor.dtype)
        self.mask[rows_t] = 0
        self.mask[rows_t, width - new_width :] = mask
        self._compact()

    def _compact(self) -> None:
        """Drop leading columns that are masked out in every row (views: later appends stay in place)."""
        first = int(torch.argmax(self.mask.any(dim=0).long()))
        if first == 0:
            return
        for holder, key, value in _cache_tensors(self.cache):
            for name in (key, value):
                _set(holder, name, _get(holder, name)[:, :, first:])
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


class SegmentRolloutBuffer(DictRolloutBuffer):
    """A Dict rollout buffer that knows where segments start and yields segment-grouped minibatches."""

    def reset(self) -> None:
        """Clear the buffer."""
        super().reset()
        self.segment_starts = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.trunk_states: dict[tuple[int, int], torch.Tensor] = {}
        self._open_segment = np.zeros(self.n_envs, dtype=np.int64)

    def mark_segment_starts(self, starts: np.ndarray) -> None:
        """Record, for the step about to be added, which envs start a new segment."""
        self.segment_starts[self.pos] = starts
        self._open_segment[starts] = self.pos

    def store_trunk_states(self, env: int, states: torch.Tensor) -> None:
        """Keep the frozen-trunk states of ``env``'s latest segment, in token order.

        ``states`` covers at least the segment's first observation and all its actions but the last.
        """
        self.trunk_states[(env, int(self._open_segment[env]))] = states

    def segments(self) -> list[tuple[int, int, int]]:
        """``(env, first step, length)`` of every segment in the buffer."""
        found = []
        for env in range(self.n_envs):
            starts = np.flatnonzero(self.segment_starts[:, env]).tolist()
            starts = ([0] if not starts or starts[0] != 0 else []) + starts
            ends = starts[1:] + [self.buffer_size]
            found += [(env, start, end - start) for start, end in zip(starts, ends, strict=True)]
        return found

    def segment_batch(self, segments: list[tuple[int, int, int]]) -> tuple[SegmentBatch, np.ndarray, np.ndarray]:
        """Pack ``segments`` into rows for one forward; also return the step and env index of each transition.

        A segment's tokens are its first observation's and its actions but the last. Each
        row holds the prefix that all segments share (chat template and system prompt)
        once, then whole segments without that prefix, up to :data:`PACK_TOKENS` tokens,
        masked so that a segment sees the prefix and itself only. So no row is padded to
        the longest segment, and the shared prefix is computed once per row.
        """
        sequences, observed, rows, cols = [], [], [], []
        for env, start, length in segments:
            first_ids = self.observations["input_ids"][start, env]
            first_mask = self.observations["attention_mask"][start, env]
            real = first_ids[first_mask == 1].astype(np.int64)
            actions = self.actions[start : start + length - 1, env, 0].astype(np.int64)
            sequences.append(np.concatenate([real, actions]))
            observed.append(len(real))
            rows += range(start, start + length)
            cols += [env] * length
        prefix = _shared_prefix(sequences, limit=min(observed) - 1) if len(sequences) > 1 else 0
        packs: list[list[int]] = [[]]
        used = [prefix]
        for number, sequence in enumerate(sequences):
            if packs[-1] and used[-1] + len(sequence) - prefix > PACK_TOKENS:
                packs.append([])
                used.append(prefix)
            packs[-1].append(number)
            used[-1] += len(sequence) - prefix
        width = max(used)
        ids = np.zeros((len(packs), width), dtype=np.int64)
        owner = np.full((len(packs), width), -2)  # -2: padding, -1: the shared prefix, n: segment n
        positions = np.zeros((len(packs), width), dtype=np.int64)
        place: list[tuple[int, int]] = [(0, 0)] * len(sequences)  # (row, column of the segment's first token)
        for row, pack in enumerate(packs):
            ids[row, :prefix], owner[row, :prefix], positions[row, :prefix] = sequences[0][:prefix], -1, range(prefix)
            column = prefix
            for number in pack:
                rest = sequences[number][prefix:]
                ids[row, column : column + len(rest)] = rest
                owner[row, column : column + len(rest)] = number
                positions[row, column : column + len(rest)] = range(prefix, len(sequences[number]))
                place[number] = (row, column)
                column += len(rest)
        segment_index, position = [], []
        for number, ((_, _, length), real) in enumerate(zip(segments, observed, strict=True)):
            row, column = place[number]
            segment_index += [row] * length
            position += range(column + real - 1 - prefix, column + real - 1 - prefix + length)
        # Query i sees key j <= i of the shared prefix or of its own segment (padding sees padding).
        same = (owner[:, None, :] == -1) | (owner[:, None, :] == owner[:, :, None])
        allowed = same & np.tril(np.ones((width, width), dtype=bool))
        batch = SegmentBatch(
            input_ids=torch.as_tensor(ids, device=self.device),
            attention_mask=torch.as_tensor(allowed[:, None], device=self.device),
            segment_index=torch.as_tensor(segment_index, device=self.device),
            position=torch.as_tensor(position, device=self.device),
            position_ids=torch.as_tensor(positions, device=self.device),
            trunk_states=self._packed_trunk_states(segments, sequences, prefix, packs, width),
        )
        return batch, np.asarray(rows), np.asarray(cols)

    def _packed_trunk_states(
        self,
        segments: list[tuple[int, int, int]],
        sequences: list[np.ndarray],
        prefix: int,
        packs: list[list[int]],
        width: int,
    ) -> torch.Tensor | None:
        """(rows, width, H) kept trunk states in the layout of :meth:`segment_batch`, if every segment has them."""
        kept = [self.trunk_states.get((env, start)) for env, start, _ in segments]
        if not kept or any(states is None for states in kept):
            return None
        for segment, states, sequence in zip(segments, kept, sequences, strict=True):
            if len(states) - len(sequence) not in (0, 1):  # the segment's last action may have been fed too
                raise RuntimeError(f"segment {segment} kept {len(states)} trunk states for {len(sequence)} tokens")
        layout = kept[0].new_zeros(len(packs), width, kept[0].shape[-1])
        for row, pack in enumerate(packs):
            parts = [kept[0][:prefix]] + [kept[n][prefix : len(sequences[n])] for n in pack]
            packed = torch.cat(parts)
            layout[row, : len(packed)] = packed
        return layout

    def get(self, batch_size: int | None = None):  # type: ignore[override]
        """Yield minibatches of whole segments holding about ``batch_size`` transitions each."""
        segments = self.segments()
        order = np.random.permutation(len(segments))
        batch_size = batch_size or self.buffer_size * self.n_envs
        group: list[tuple[int, int, int]] = []
        for index in order:
            group.append(segments[index])
            if sum(length for *_, length in group) >= batch_size:
                yield self._samples(group)
                group = []
        if group:
            yield self._samples(group)

    def _samples(self, segments: list[tuple[int, int, int]]) -> DictRolloutBufferSamples:
        batch, rows, cols = self.segment_batch(segments)

        def take(array: np.ndarray) -> torch.Tensor:
            return self.to_torch(array[rows, cols])

        return DictRolloutBufferSamples(
            observations=batch,  # type: ignore[arg-type]
            actions=take(self.actions),
            old_values=take(self.values).flatten(),
            old_log_prob=take(self.log_probs).flatten(),
            advantages=take(self.advantages).flatten(),
            returns=take(self.returns).flatten(),
        )


#: Tokens per packed training row: attention over a row costs its length squared, so long rows are split.
PACK_TOKENS = 512

#: Largest mean |ratio - 1| on an update's first minibatch that the monitor accepts, float32 and bf16.
FP32_RATIO_TOLERANCE, BF16_RATIO_TOLERANCE = 1e-3, 1e-2


class KLController:
    """Adaptive KL coefficient (Ziegler et al. 2019): steer the sampled KL per reply towards a target.

    Args:
        coef: Initial coefficient ``beta`` (0 disables the penalty).
        target: Target KL per reply in nats; None keeps ``beta`` fixed.
        horizon: Env steps over which ``beta`` may change by a factor of about e.
    """

    def __init__(self, coef: float, target: float | None = None, horizon: int = 10_000) -> None:
        if not (math.isfinite(coef) and coef >= 0):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {coef!r}")
        if target is not None and not (math.isfinite(target) and target > 0):
            raise ValueError(f"target_kl_per_reply must be > 0, got {target!r}")
        self.coef, self.target, self.horizon = float(coef), target, horizon

    def update(self, kl_per_reply: float, steps: int) -> None:
        """Move ``coef`` after a rollout of ``steps`` env steps whose mean KL per reply was ``kl_per_reply``."""
        if self.target is None or self.coef == 0:
            return
        error = float(np.clip(kl_per_reply / self.target - 1.0, -0.2, 0.2))
        self.coef *= 1.0 + error * steps / self.horizon


@dataclass
class TrainingMonitor:
    """Silent-failure warnings for LM RL, logged and printed with ``warnings.warn``.

    Flags a rollout whose rewards all tie, a negative KL estimate, PPO ratios away from 1
    before the first update (sampling and training log-probs disagree), replies collapsing
    in length or into repetition, and one reward component dominating the reward. Keeps
    sample generations for periodic dumps.
    """

    ratio_tolerance: float = FP32_RATIO_TOLERANCE
    samples: deque = field(default_factory=lambda: deque(maxlen=8))
    first_reply_words: float | None = None
    issued: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record and emit one warning."""
        self.issued.append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def check_rollout(self, reply_rewards: list[float], guards: list[dict], components: list[dict]) -> None:
        """Checks on the replies and episodes a rollout finished."""
        if len(reply_rewards) >= 2 and float(np.std(reply_rewards)) == 0.0:
            self.warn(
                f"all {len(reply_rewards)} reply rewards of this rollout tie at {reply_rewards[0]:.4g}: no signal"
            )
        if guards:
            words = float(np.mean([g["reply_words"] for g in guards]))
            if self.first_reply_words is None:
                self.first_reply_words = words
            elif words < 0.25 * self.first_reply_words:
                self.warn(f"length collapse: {words:.1f} words per reply, from {self.first_reply_words:.1f}")
            repetition = float(np.mean([g["repetition_2"] for g in guards]))
            if repetition > 0.5:
                self.warn(f"repetition collapse: {repetition:.0%} of reply bigrams repeat")
        totals: dict[str, float] = {}
        for reply_components in components:
            for name, value in reply_components.items():
                totals[name] = totals.get(name, 0.0) + abs(float(value))
        grand = sum(totals.values())
        if len(totals) > 1 and grand > 0:
            name, value = max(totals.items(), key=lambda item: item[1])
            if value / grand > 0.95:
                self.warn(f"reward component {name!r} makes {value / grand:.0%} of the reward")

    def check_kl(self, kl_per_token: float) -> None:
        """A sampled KL below zero means log-probs are mismatched or too few samples."""
        if kl_per_token < -1e-3:
            self.warn(f"negative KL estimate {kl_per_token:.4f} per token: policy and reference log-probs disagree")

    def check_ratios(self, mean_abs_ratio_error: float) -> None:
        """Before any update the PPO ratio must be 1."""
        if mean_abs_ratio_error > self.ratio_tolerance:
            self.warn(
                f"PPO ratios before the first update are {mean_abs_ratio_error:.2e} away from 1: sampling and "
                "training log-probs disagree (dropout on? a different dtype or model between the two?)"
            )


class FastLMPPO(PPO):
    """PPO for token-level TextGym envs with KV-cached collection and segment-grouped training.

    Args:
        env: A token-level TextGym env or vector env.
        policy_kwargs: For :class:`~baselines.policies.LMActorCriticPolicy` (``model`` etc.).
        kl_coef: Initial KL penalty coefficient ``beta`` (0 disables it and the reference).
        target_kl_per_reply: Target of the adaptive controller, nats per reply (None: fixed).
        kl_horizon: Horizon of the adaptive controller in env steps.
        check_ratios: Check that PPO ratios are 1 on each update's first minibatch, before
            its first optimizer step (read from SB3's own forward: no extra cost).
        bf16: bfloat16 autocast for collection and training (CUDA only).
        nan_guard: Keep an in-memory copy of the weights before each update; if the loss or a
            weight turns non-finite, restore it and raise ``FloatingPointError``.
        bootstrap_truncated: A reply cut by the token budget ends its episode as truncated;
            True bootstraps it from the value of its last observation, as SB3 does for time
            limits; False treats the end as final, as evaluation does (the later turns of a
            dialogue are lost), so that the policy learns to finish its replies.
        **kwargs: Passed to SB3 ``PPO`` (``n_steps``, ``batch_size``, ``learning_rate``, ...).
    """

    def __init__(
        self,
        env: Any,
        policy_kwargs: dict[str, Any] | None = None,
        kl_coef: float = 0.05,
        target_kl_per_reply: float | None = 6.0,
        kl_horizon: int = 10_000,
        check_ratios: bool = True,
        bf16: bool = False,
        nan_guard: bool = True,
        bootstrap_truncated: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("rollout_buffer_class", SegmentRolloutBuffer)
        self.kl = KLController(kl_coef, target_kl_per_reply, kl_horizon)
        # bf16 rounds the cached-decoding and segment forwards differently: on an H200 the first
        # minibatch's mean |ratio - 1| was about 1.1e-3 under bf16 autocast, so 1e-3 would warn on
        # every update; an actual mismatch (dropout, another model) is orders of magnitude larger.
        self.monitor = TrainingMonitor(ratio_tolerance=BF16_RATIO_TOLERANCE if bf16 else FP32_RATIO_TOLERANCE)
        self.check_ratios, self.bf16, self.nan_guard = check_ratios, bf16, nan_guard
        self.bootstrap_truncated = bootstrap_truncated
        self.reference = None
        self._shares_trunk: bool | None = None
        self._decoder: ContinuousDecoder | None = None
        self._split_works: bool | None = None  # checked on the first rollout that keeps trunk states
        self._reference_top: Any = None
        super().__init__(LMActorCriticPolicy, env, policy_kwargs=policy_kwargs, **kwargs)
        if bf16 and self.device.type != "cuda":
            raise ValueError(f"bf16 autocast needs a CUDA device, got {self.device}")
        if not isinstance(self.action_space, spaces.Discrete):
            raise ValueError(
                f"FastLMPPO drives token-level envs (Discrete(V) actions), got {self.action_space}; "
                "use stock PPO with LMActorCriticPolicy for utterance-level envs"
            )
        self.max_reply_tokens = int(self.env.get_attr("max_reply_tokens")[0])
        self.last_rollout: dict[str, float] = {}

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "reference",
            "_reference_top",
            "_decoder",
            "monitor",
            "_weight_backup",
        ]

    def _reference_model(self) -> Any:
        if self.reference is None:
            self.reference = load_causal_lm(self.policy.model_name, device=self.device).requires_grad_(False)
        return self.reference

    def _reference_shares_trunk(self) -> bool:
        """Whether the policy's frozen trunk equals the reference's, so the reference can start from its states.

        Checked once, weight by weight: a policy whose bottom layers were trained before
        they were frozen (another run's checkpoint) gets the reference's full forward.
        """
        if self._shares_trunk is None:
            depth, reference = self.policy.frozen_depth, self._reference_model().base_model
            policy_base = self.policy._base()
            pairs = [(policy_base.get_input_embeddings(), reference.get_input_embeddings())]
            pairs += list(zip(policy_base.layers[:depth], reference.layers[:depth], strict=True))
            self._shares_trunk = all(
                torch.equal(mine, theirs)
                for module, other in pairs
                for mine, theirs in zip(module.state_dict().values(), other.state_dict().values(), strict=True)
            )
            self._reference_top = top_layers(reference, depth) if self._shares_trunk else None
        return self._shares_trunk

    # -- collection -------------------------------------------------------------------

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16)

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        """Fill the buffer with KV-cached, batched sampling (see the module docstring)."""
        with self._autocast():
            return self._collect(env, callback, rollout_buffer, n_rollout_steps)

    def _collect(self, env, callback, rollout_buffer, n_rollout_steps: int) -> bool:
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        callback.on_rollout_start()
        keep_states = self.policy.frozen_depth > 0 and self._split_works is not False
        decoder = self._decoder
        if keep_states and decoder is not None and decoder.n_rows == self.n_envs and decoder.depth:
            decoder.refresh(self._last_obs)  # the frozen trunk's cache outlives the update
        else:
            decoder = ContinuousDecoder(self.policy, self.n_envs, keep_trunk_states=keep_states)
            decoder.restart(np.arange(self.n_envs), self._last_obs)
            if keep_states and self._split_works is None and not self._check_split(decoder):
                keep_states = False
                decoder = ContinuousDecoder(self.policy, self.n_envs)
                decoder.restart(np.arange(self.n_envs), self._last_obs)
        self._decoder = decoder if keep_states else None
        segment_starts = np.ones(self.n_envs, dtype=bool)
        reply_rewards: list[float] = []
        guards: list[dict] = []
        components: list[dict] = []
        replies = 0
        for _ in range(n_rollout_steps):
            tokens = sample_from_logits(decoder.logits)
            log_probs = decoder.logits.gather(-1, tokens[:, None]).squeeze(-1) - torch.logsumexp(decoder.logits, -1)
            log_probs = log_probs.cpu()
            values, actions = decoder.values.cpu(), tokens.cpu().numpy()
            new_obs, rewards, dones, infos = env.step(actions)
            # Logs and checks read the task's rewards, not their whitened copy (VecNormalize) that PPO trains on.
            task_rewards = rewards if self._vec_normalize_env is None else self._vec_normalize_env.get_original_reward()
            self.num_timesteps += self.n_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            window_full = self._last_obs["attention_mask"][:, 0] == 1
            reply_ended = np.array(["reply" in info for info in infos]) | dones
            for index, info in enumerate(infos):
                if "reply" in info:
                    replies += 1
                    reply_rewards.append(float(task_rewards[index]))
                    components.append(info.get("reward_components", {}))
                    self.monitor.samples.append(info["reply"])
                if "guard" in info:
                    guards.append(info["guard"])
            # Rows whose next observation is not "this one plus the token" start over from it.
            next_starts = reply_ended | window_full
            restart = np.flatnonzero(next_starts)
            # Truncated (not terminated) episodes bootstrap from their last observation, as SB3 does.
            cut = [i for i, info in enumerate(infos) if dones[i] and info.get("TimeLimit.truncated")]
            cut = cut if self.bootstrap_truncated else []
            if len(restart) < self.n_envs or cut:
                decoder.feed(tokens)
            if cut:
                rewards[cut] += self.gamma * self._terminal_values(decoder, cut, infos)
            rollout_buffer.mark_segment_starts(segment_starts)
            rollout_buffer.add(
                self._last_obs,
                actions.reshape(-1, 1),
                rewards,
                self._last_episode_starts,
                values,
                log_probs,
            )
            for env_index in restart if keep_states else ():
                rollout_buffer.store_trunk_states(env_index, decoder.trunk_states(env_index))
            if len(restart):
                decoder.restart(restart, new_obs)
            segment_starts = next_starts
            self._last_obs, self._last_episode_starts = new_obs, dones
        # Segments still open at the end of the rollout (the others were stored when they ended).
        for env_index in np.flatnonzero(~segment_starts) if keep_states else ():
            rollout_buffer.store_trunk_states(env_index, decoder.trunk_states(env_index))
        self.logger.record("rollout/prefix_tokens_reused", decoder.reused_tokens)
        self.logger.record("rollout/prefix_tokens_encoded", decoder.encoded_tokens)

        self._penalise_kl(rollout_buffer, max(replies, 1))
        self.monitor.check_rollout(reply_rewards, guards, components)
        self.last_rollout.update(
            reply_reward_mean=float(np.mean(reply_rewards)) if reply_rewards else float("nan"),
            replies=replies,
        )
        if reply_rewards:
            self.logger.record("rollout/reply_reward_mean", self.last_rollout["reply_reward_mean"])
        last_values = decoder.values.detach().float()[:, None]  # the values of new_obs, computed with them
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    @torch.no_grad()
    def _check_split(self, decoder: ContinuousDecoder) -> bool:
        """Whether the layers above the frozen trunk, run alone from its kept states, give the full LM's logits.

        True for decoders built like Llama (``layers`` then ``norm``); another architecture
        gets a warning and the whole LM in training, once.
        """
        states = decoder.trunk_states(0)[None]
        mask = torch.ones(1, states.shape[1], dtype=torch.long, device=states.device)
        logits, _ = self.policy._heads(self.policy.top_forward(states, mask)[:, -1])
        error = float((logits - decoder.logits[:1]).abs().max() / decoder.logits[:1].std())
        self._split_works = error < (5e-2 if self.bf16 else 1e-3)
        if not self._split_works:
            self.monitor.warn(
                f"{type(self.policy.lm).__name__} cannot be run from layer {self.policy.frozen_depth} on (logits off "
                f"by {error:.2g} standard deviations): training runs the whole LM instead of the trainable layers"
            )
        return self._split_works

    @torch.no_grad()
    def _terminal_values(self, decoder: ContinuousDecoder, cut: list[int], infos: list[dict]) -> np.ndarray:
        """Values of the last observations of truncated episodes.

        The decoder has just fed each row its last action, so only what a terminal
        observation adds to the row's tokens (at a dialogue's next turn: the end of the
        reply and the next user message) is encoded.
        """
        terminals = [infos[i]["terminal_observation"] for i in cut]
        observed = _real_tokens([t["input_ids"] for t in terminals], [t["attention_mask"] for t in terminals])
        return decoder.values_of(np.asarray(cut), observed).float().cpu().numpy()

    def _train_watching_first_minibatch(self) -> dict[str, torch.Tensor]:
        """Run SB3's update, keeping the first minibatch's old and new log-probs.

        SB3 evaluates the first minibatch before its first optimizer step, so its new
        log-probs are the current policy's: their ratios to the rollout's must be 1. Reading
        them here costs nothing, where a separate check would cost one more forward.
        """
        first: dict[str, torch.Tensor] = {}
        buffer_get, evaluate_actions = self.rollout_buffer.get, self.policy.evaluate_actions

        def get(batch_size: int | None = None) -> Any:
            for sample in buffer_get(batch_size):
                first.setdefault("old_log_prob", sample.old_log_prob.detach())
                yield sample

        def evaluate(observations: Any, actions: torch.Tensor) -> Any:
            values, log_prob, entropy = evaluate_actions(observations, actions)
            first.setdefault("log_prob", log_prob.detach())
            return values, log_prob, entropy

        self.rollout_buffer.get, self.policy.evaluate_actions = get, evaluate
        try:
            super().train()
        finally:
            del self.rollout_buffer.get, self.policy.evaluate_actions
        return first

    @torch.no_grad()
    def _penalise_kl(self, buffer: SegmentRolloutBuffer, replies: int) -> None:
        """Subtract ``beta * (log pi_old - log p_ref)`` from every step's reward; adapt ``beta``."""
        if self.kl.coef == 0:
            return
        reference = self._reference_model()
        segments = buffer.segments()
        kl = np.zeros((buffer.buffer_size, buffer.n_envs), dtype=np.float32)
        chunk = max(1, self.batch_size // max(1, self.max_reply_tokens))
        for begin in range(0, len(segments), chunk):
            batch, rows, cols = buffer.segment_batch(segments[begin : begin + chunk])
            if batch.trunk_states is not None and self._reference_shares_trunk():
                model, inputs = self._reference_top, {"input_ids": None, "inputs_embeds": batch.trunk_states}
            else:
                model, inputs = reference.base_model, {"input_ids": batch.input_ids}
            hidden = forward(model, attention_mask=batch.attention_mask, position_ids=batch.positions(), **inputs)
            hidden = hidden.last_hidden_state
            hidden = hidden[batch.segment_index, batch.position]
            logits = reference.get_output_embeddings()(hidden).float()
            actions = torch.as_tensor(buffer.actions[rows, cols, 0], device=self.device).long()
            reference_log_probs = logits.gather(-1, actions[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            reference_log_probs = reference_log_probs.cpu().numpy()
            kl[rows, cols] = buffer.log_probs[rows, cols] - reference_log_probs
        buffer.rewards -= self.kl.coef * kl
        kl_per_token, kl_per_reply = float(kl.mean()), float(kl.sum()) / replies
        self.monitor.check_kl(kl_per_token)
        self.logger.record("rollout/kl_per_token", kl_per_token)
        self.logger.record("rollout/kl_per_reply", kl_per_reply)
        self.logger.record("rollout/kl_coef", self.kl.coef)
        self.last_rollout.update(kl_per_token=kl_per_token, kl_per_reply=kl_per_reply, kl_coef=self.kl.coef)
        self.kl.update(kl_per_reply, buffer.buffer_size * buffer.n_envs)

    # -- training ---------------------------------------------------------------------

    def train(self) -> None:
        """SB3's PPO update over segment-grouped minibatches, with a ratio sanity check on the first one."""
        # With no entropy bonus the entropy is only logged: no backward pass over (batch, V) for it.
        self.policy.differentiable_entropy = self.ent_coef != 0
        # Only trained weights can turn non-finite: frozen layers need no copy.
        trained = {name: p for name, p in self.policy.named_parameters() if p.requires_grad}
        backup = self._backup_weights(trained) if self.nan_guard else None
        try:
            with self._autocast():
                if self.check_ratios:
                    first = self._train_watching_first_minibatch()
                    if len(first) == 2:
                        log_ratio = first["log_prob"].float() - first["old_log_prob"].float()
                        error = float((torch.exp(log_ratio) - 1).abs().mean())
                        self.logger.record("train/initial_ratio_error", error)
                        self.monitor.check_ratios(error)
                else:
                    super().train()
        except (ValueError, RuntimeError) as error:
            # NaN weights after one minibatch make the next one fail inside torch.distributions.
            if backup is None or not self._restore_if_non_finite(trained, backup, float("nan")):
                raise
            raise self._nan_error(float("nan")) from error
        loss = self.logger.name_to_value.get("train/loss", 0.0)
        if backup is not None and self._restore_if_non_finite(trained, backup, loss):
            raise self._nan_error(loss)

    @torch.no_grad()
    def _backup_weights(self, trained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copy the trained weights into buffers kept across updates (fresh copies would cost page faults each time)."""
        kept = getattr(self, "_weight_backup", {})
        if kept.keys() != trained.keys() or any(kept[n].shape != p.shape for n, p in trained.items()):
            kept = {name: torch.empty_like(p) for name, p in trained.items()}
        for name, p in trained.items():
            kept[name].copy_(p)
        self._weight_backup = kept
        return kept

    def _restore_if_non_finite(
        self, trained: dict[str, torch.Tensor], backup: dict[str, torch.Tensor], loss: float
    ) -> bool:
        """Put the weights from before the update back if the update made them (or the loss) non-finite."""
        with torch.no_grad():  # a sum is NaN or inf when any element is (finite weights cannot overflow it)
            sums = torch.stack([value.sum(dtype=torch.float64) for value in trained.values()])
        if bool(torch.isfinite(sums).all()):
            self._non_finite = []
        else:
            self._non_finite = [name for name, value in trained.items() if not torch.isfinite(value).all()]
        if not self._non_finite and math.isfinite(loss):
            return False
        with torch.no_grad():
            for name, value in backup.items():
                trained[name].copy_(value)
        return True

    def _nan_error(self, loss: float) -> FloatingPointError:
        return FloatingPointError(
            f"PPO update {self._n_updates} produced loss {loss!r} and non-finite weights in {self._non_finite[:3]}; "
            "the weights from before this update were restored (save a checkpoint now); lower the "
            "learning rate or check the rewards for NaN"
        )
