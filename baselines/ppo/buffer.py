"""The rollout buffer of :class:`~baselines.ppo.FastLMPPO`: segments, and their packing into training rows."""

from __future__ import annotations

from typing import Any

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
        # Filled only with a group baseline: each step's prompt, whether its episode ended at that step, and
        # the step's reward before the KL penalty (where episodes start is SB3's ``episode_starts``).
        self.prompt_keys = np.full((self.buffer_size, self.n_envs), None, dtype=object)
        self.episode_ends = np.zeros((self.buffer_size, self.n_envs), dtype=bool)
        self.task_rewards = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)

    def mark_episodes(self, prompts: list[Any], ends: np.ndarray) -> None:
        """Record, for the step about to be added, each env's prompt and whether its episode ends there."""
        self.prompt_keys[self.pos] = prompts
        self.episode_ends[self.pos] = ends

    def apply_group_baseline(self) -> float:
        """Replace the advantages of whole episodes by their return to go less a leave-one-out group mean.

        A group is the episodes of the rollout that started and ended in it on the same prompt
        (from any env). Each member's step ``t`` gets ``G_t - mean of the others' task
        rewards``: its (discounted) return to go, KL penalties included, less the mean episode
        reward (before the KL penalty) of the group's other members (RLOO, Kool et al. 2019;
        Ahmadian et al. 2024). Whether a reply beat the other replies to the same prompt then
        decides the sign, not how hard the prompt is; a group whose rewards tie gives its
        replies only their KL terms. Steps of other episodes keep the critic's GAE advantages.
        With one reply per episode the baseline is exactly leave-one-out; the returns the
        critic is trained on are unchanged.

        Returns:
            The fraction of the rollout's steps whose advantages were replaced.
        """
        groups: dict[Any, list[tuple[int, int, int]]] = {}
        for env in range(self.n_envs):
            breaks = np.flatnonzero(self.episode_starts[1:, env]) + 1
            for first, end in zip([0, *breaks.tolist()], [*breaks.tolist(), self.buffer_size], strict=True):
                last = end - 1
                if self.episode_starts[first, env] and self.episode_ends[last, env]:
                    groups.setdefault(self.prompt_keys[first, env], []).append((env, first, last))
        replaced = 0
        for members in groups.values():
            if len(members) < 2:
                continue
            totals = np.array([self.task_rewards[first : last + 1, env].sum() for env, first, last in members])
            for (env, first, last), total in zip(members, totals, strict=True):
                baseline = (totals.sum() - total) / (len(members) - 1)
                to_go, running = np.zeros(last - first + 1, dtype=np.float32), 0.0
                for offset in range(last - first, -1, -1):
                    running = self.rewards[first + offset, env] + self.gamma * running
                    to_go[offset] = running
                self.advantages[first : last + 1, env] = to_go - baseline
                replaced += last - first + 1
        return replaced / (self.buffer_size * self.n_envs)

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
