"""The rollout buffer of :class:`~baselines.ppo.FastLMPPO`: segments, and their packing into training rows."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples

from baselines.policies import SegmentBatch
from baselines.ppo.cache import shared_prefix

#: Tokens per packed training row: attention over a row costs its length squared, so long rows are split.
PACK_TOKENS = 512


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
        prefix = shared_prefix(sequences, limit=min(observed) - 1) if len(sequences) > 1 else 0
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
