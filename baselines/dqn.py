r"""A Q-network over LM-proposed candidates, for stock stable-baselines3 DQN.

``DQN(LMQPolicy, env, policy_kwargs=dict(model="default"))`` learns to pick one of the K
replies that a candidate-level TextGym env proposes each turn (``Discrete(K)`` actions):

* **DRRN-style scoring.** ``Q(s, k) = head(phi(context, candidate k))``: one head with
  shared weights scores every candidate, so a candidate's value depends on its text, not
  its slot. ``phi`` comes from a frozen causal LM that reads the context once (KV cache)
  and then the K candidates as one batch continuing that cache.
* **Frozen, shared trunk.** The LM is not a submodule of either Q-network: the online and
  target networks hold the same :class:`CandidateEncoder`, so the target network copies
  only the small head, and checkpoints hold only the head and the feature statistics (the
  trunk is reloaded by model name). On CPU the encoder reuses the frozen LM the env
  itself proposes with (:func:`textgym.models.load_shared_causal_lm`): one copy per process.
* **Feature cache.** The frozen LM gives the same features for the same ids, so features
  are computed once per distinct observation (when the policy acts, or at the first
  replay of an observation that was acted on at random) and looked up afterwards:
  a gradient step costs the head alone, and many gradient steps per env step are cheap.
* **Features that a small head can use.** Per candidate: the mean over its tokens of the
  hidden states of a middle layer of the LM (what the reply says), the context's last
  hidden state (what was asked), the LM's log-probabilities of the candidate (mean,
  minimum, sum per token budget: how plausible it is), its length, whether it is empty and
  whether it is candidate 0 (the LM's greedy reply). Pooling the candidate's tokens
  matters most: on Sentiment, a head fitted on the candidate's *last* hidden state picks
  far worse replies than one fitted on the mean (offline probe in the PR notes). Each
  dimension is standardised with statistics of the first encoded candidates (unlabelled,
  then frozen), since a few hidden dimensions carry offsets ~100x the median one.
* **Greedy start.** The head's last layer starts at zero, so all candidates tie and the
  untrained greedy policy is the LM's own top candidate (ties go to index 0).
* **Masking.** Duplicate candidates (the env's ``action_masks()``) are recognised from the
  observed ids and never chosen greedily (a duplicate is the same reply, so its value
  stays in the bootstrap ``max`` and its transitions still train the head).

Observations stay integer ids in SB3's replay buffer: the policy reads them directly and
never calls SB3's preprocessing (which would cast them to float). For bookkeeping,
:func:`replay_bytes_per_transition` gives the buffer's size per transition.

Reference scores for the same fixed prompts (random valid candidate, the LM's top
candidate, best-of-K oracle) come from :func:`candidate_references`::

    python -m baselines.dqn --env TextGym/SentimentCandidate-v0 --model default --episodes 32 \
        --out runs/sentiment_refs.json
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from textgym.files import append_lines
from textgym.lm import forward, new_cache, positions_from_mask

#: Keys a candidate-level observation holds.
CANDIDATE_KEYS = ("input_ids", "attention_mask", "candidate_ids", "candidate_mask")
#: Number of scalar features per candidate (see :meth:`CandidateEncoder.encode`).
NUM_SCALARS = 6


def candidate_shape(observation_space: gym.spaces.Space, action_space: gym.spaces.Space) -> tuple[int, int]:
    """``(K, max_reply_tokens)`` of a candidate-level env, or a ValueError naming what is wrong.

    Raises:
        ValueError: The spaces are not those of a candidate-level TextGym env.
    """
    keys = set(observation_space.spaces) if isinstance(observation_space, gym.spaces.Dict) else set()
    if not isinstance(action_space, gym.spaces.Discrete) or not set(CANDIDATE_KEYS) <= keys:
        raise ValueError(
            "LMQPolicy / DQN needs a candidate-level env (Discrete(K) actions and 'candidate_ids' / "
            f"'candidate_mask' observations, e.g. TextGym/SentimentCandidate-v0); got action space {action_space} "
            f"and observation keys {sorted(keys)}. Token- and utterance-level envs have no candidates: "
            "train them with PPO (baselines.ppo.FastLMPPO or LMActorCriticPolicy)"
        )
    k = int(action_space.n)
    flat = int(observation_space["candidate_ids"].shape[0])
    if flat % k:
        raise ValueError(f"candidate_ids has {flat} entries, not a multiple of the {k} candidates")
    return k, flat // k


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
    """

    def __init__(
        self,
        model: str,
        num_candidates: int,
        reply_tokens: int,
        feature_layer: int | None = None,
        cache_size: int = 20_000,
        statistics_limit: int = 512,
    ) -> None:
        from textgym.models import load_shared_causal_lm

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
        self.feature_dim = 2 * self.hidden_size + NUM_SCALARS
        self.cache_size = int(cache_size)
        self.cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.statistics = FeatureStatistics(self.feature_dim, statistics_limit)
        self.hits = self.misses = 0
        self.update_statistics = False
        self.encode_batch = 16  # observations per trunk forward (bounds the memory of the hidden states)

    def to(self, device: torch.device) -> CandidateEncoder:
        """Run the trunk on ``device`` (a frozen copy is loaded for a non-CPU device)."""
        device = torch.device(device)
        if next(self.lm.parameters()).device != device:
            from textgym.models import load_causal_lm, load_shared_causal_lm

            if device.type == "cpu":
                self.lm = load_shared_causal_lm(self.model_name)
            else:
                self.lm = load_causal_lm(self.model_name, device=device).requires_grad_(False)
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
            rows = [first[key] for key in unique]
            for start in range(0, len(rows), self.encode_batch):
                chunk = rows[start : start + self.encode_batch]
                encoded = self.encode({key: value[chunk] for key, value in arrays.items()})
                if self.update_statistics:
                    self.statistics.update(encoded.to(self.statistics.total.device))
                for row, features in zip(chunk, encoded.cpu().to(torch.float16), strict=True):
                    self.cache[keys[row]] = features  # half precision: half the memory, ample for features
        out = []
        for key in keys:
            self.cache.move_to_end(key)
            out.append(self.cache[key])
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return torch.stack(out).to(self.device, torch.float32)

    @torch.no_grad()
    def encode(self, obs: dict[str, np.ndarray]) -> torch.Tensor:
        """Run the frozen LM on B observations: (B, K, feature_dim) raw (unstandardised) features.

        The context is read once with a KV cache; the cache is repeated K times and the K
        right-padded candidates continue it as one batch. Per candidate: the mean hidden
        state of its tokens at ``layer``, the context's last hidden state at ``layer``, and
        the scalars mean / minimum / budget-normalised sum of the candidate's token
        log-probabilities, its length as a fraction of the budget, an empty flag and a
        candidate-0 flag.
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
        features = torch.cat([mean_hidden, context_hidden.repeat_interleave(k, 0), scalars], -1)
        return features.reshape(batch, k, self.feature_dim)


def duplicate_mask(candidate_ids: torch.Tensor, candidate_mask: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """(B, K) bool, True for a candidate whose ids repeat an earlier candidate's (the env masks those).

    >>> ids = torch.tensor([[5, 6, 5, 6, 7, 0]])
    >>> duplicate_mask(ids, torch.tensor([[1, 1, 1, 1, 1, 0]]), 3).tolist()
    [[False, True, False]]
    """
    batch = candidate_ids.shape[0]
    real = candidate_mask.long()
    rows = (candidate_ids.long() * real + (real - 1)).reshape(batch, num_candidates, -1)  # padding reads -1
    same = (rows[:, :, None, :] == rows[:, None, :, :]).all(-1)  # (B, K, K)
    earlier = torch.ones(num_candidates, num_candidates, dtype=torch.bool, device=rows.device).tril(-1)
    return (same & earlier).any(-1)


class LMQNetwork(BasePolicy):
    """Q(s, k) for every candidate k: a head with shared weights over frozen-LM candidate features.

    Args:
        observation_space: The candidate-level env's Dict space.
        action_space: ``Discrete(K)``.
        encoder: The shared :class:`CandidateEncoder` (not a submodule).
        net_arch: Hidden sizes of the head's MLP.
        activation_fn: The MLP's activation.
    """

    action_space: gym.spaces.Discrete

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Discrete,
        encoder: CandidateEncoder,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(observation_space, action_space)
        self.encoder = encoder
        self.num_candidates, self.reply_tokens = candidate_shape(observation_space, action_space)
        self.net_arch, self.activation_fn = list(net_arch), activation_fn
        layers: list[nn.Module] = []
        width = encoder.feature_dim
        for size in self.net_arch:
            layers += [nn.Linear(width, size), activation_fn()]
            width = size
        last = nn.Linear(width, 1)
        nn.init.zeros_(last.weight)  # every candidate ties at first: greedy = candidate 0, the LM's own
        nn.init.zeros_(last.bias)
        self.head = nn.Sequential(*layers, last)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K) Q-values of every candidate, repeated ones included (they are the same reply)."""
        expected = self.num_candidates * self.reply_tokens
        if obs["candidate_ids"].shape[-1] != expected:
            raise ValueError(
                f"observation holds {obs['candidate_ids'].shape[-1]} candidate tokens but this Q-network was "
                f"built for K={self.num_candidates} candidates of {self.reply_tokens} tokens ({expected}); "
                "evaluate with the num_candidates and max_reply_tokens it was trained with"
            )
        features = self.encoder(obs).to(self.device)
        return self.head(self.encoder.statistics(features)).squeeze(-1)

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = True) -> torch.Tensor:
        """The greedy candidate: arg-max Q over the distinct candidates (ties: the lowest index)."""
        q_values = self(observation)
        repeated = duplicate_mask(observation["candidate_ids"], observation["candidate_mask"], self.num_candidates)
        return q_values.masked_fill(repeated.to(q_values.device), -torch.inf).argmax(dim=1).reshape(-1)

    def extract_features(self, obs: Any, features_extractor: Any = None) -> Any:
        """Not used: the encoder reads the integer ids itself (SB3's preprocessing would cast them to float)."""
        raise NotImplementedError("LMQNetwork reads observations directly")

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(net_arch=self.net_arch, activation_fn=self.activation_fn, encoder=self.encoder)
        return data


class LMQPolicy(DQNPolicy):
    """DQN policy for candidate-level TextGym envs: online and target :class:`LMQNetwork` over one frozen LM.

    Policy kwargs (``policy_kwargs=dict(...)`` in SB3):
        model: A model name: ``"default"``, ``"tiny"``, a local directory or a hub id. It
            must share the env's tokenizer (its vocabulary is checked against the ids).
        torch_threads: Threads for torch on CPU (None leaves torch's setting).
        feature_layer: The LM hidden layer of the features (None: the middle one).
        net_arch: Hidden sizes of the Q head's MLP (default ``[64]``).
        cache_size: Observations whose features the encoder keeps.
        statistics_limit: Candidates that define the feature standardisation.

    Raises:
        ValueError: The env is not candidate level, or the model's vocabulary is smaller
            than the env's token ids.
    """

    q_net: LMQNetwork
    q_net_target: LMQNetwork

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        lr_schedule: Any,
        model: str = "default",
        torch_threads: int | None = None,
        feature_layer: int | None = None,
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        cache_size: int = 20_000,
        statistics_limit: int = 512,
        **kwargs: Any,
    ) -> None:
        num_candidates, reply_tokens = candidate_shape(observation_space, action_space)
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.model_name = model
        self.feature_layer, self.cache_size, self.statistics_limit = feature_layer, cache_size, statistics_limit
        encoder = CandidateEncoder(model, num_candidates, reply_tokens, feature_layer, cache_size, statistics_limit)
        vocab = int(encoder.lm.get_input_embeddings().weight.shape[0])
        env_vocab = int(observation_space["candidate_ids"].high.max()) + 1
        if vocab < env_vocab:
            raise ValueError(
                f"model {model!r} has {vocab} input tokens but the env's ids go up to {env_vocab - 1}; "
                "use the env's own model (its tokenizer defines the ids)"
            )
        self.encoder = encoder
        kwargs.pop("features_extractor_class", None)
        kwargs.pop("features_extractor_kwargs", None)
        kwargs.pop("normalize_images", None)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[64] if net_arch is None else list(net_arch),
            activation_fn=activation_fn,
            **kwargs,
        )
        # The feature statistics are state to checkpoint, held once by the policy (not per Q-network).
        self.feature_statistics = encoder.statistics

    def make_q_net(self) -> LMQNetwork:
        """A Q-network on the shared encoder: only its head is new."""
        return LMQNetwork(
            self.observation_space,
            self.action_space,
            self.encoder,
            self.net_args["net_arch"],
            self.net_args["activation_fn"],
        ).to(self.device)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> LMQPolicy:
        # .to(device) moves the heads and the statistics; the trunk follows (it is no submodule).
        result = super()._apply(fn, *args, **kwargs)
        if "feature_statistics" in self._modules:
            self.encoder.to(self.feature_statistics.total.device)
        return result

    def extract_features(self, obs: Any, features_extractor: Any = None) -> Any:
        """Not used: the encoder reads the integer ids itself (SB3's preprocessing would cast them to float)."""
        raise NotImplementedError("LMQPolicy reads observations directly")

    def set_training_mode(self, mode: bool) -> None:
        """Training mode also lets newly encoded observations define the feature statistics."""
        super().set_training_mode(mode)
        self.encoder.update_statistics = bool(mode)

    def q_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K) Q-values of the online network."""
        return self.q_net(obs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for name in ("features_extractor_class", "features_extractor_kwargs", "normalize_images"):
            data.pop(name, None)
        data.update(
            model=self.model_name,
            feature_layer=self.feature_layer,
            cache_size=self.cache_size,
            statistics_limit=self.statistics_limit,
        )
        return data


# -- the CLI's builder ------------------------------------------------------------------


def build_dqn(args: Any, env: Any) -> DQN:
    """Stock SB3 ``DQN`` with :class:`LMQPolicy` for ``baselines.train`` arguments on vector env ``env``.

    Args:
        args: A :class:`baselines.train.Args` (``algo == "dqn"``).
        env: A candidate-level TextGym vector env.

    Raises:
        ValueError: ``env`` is not candidate level, or an argument only PPO supports is set.
    """
    candidate_shape(env.observation_space, env.action_space)
    if getattr(args, "lora_r", 0):
        raise ValueError("--lora-r is for PPO: the DQN baseline keeps the LM frozen and trains a Q head")
    if getattr(args, "bf16", False):
        raise ValueError("--bf16 is for PPO; the DQN baseline runs its frozen LM in float32")
    learning_rate: Any = args.learning_rate
    if args.lr_schedule == "linear":
        learning_rate = lambda progress: args.learning_rate * progress  # noqa: E731
    policy_kwargs: dict[str, Any] = {
        "model": args.model,
        "torch_threads": args.torch_threads,
        "net_arch": [args.q_hidden] if args.q_hidden else [],
        "feature_layer": None if args.feature_layer == -1 else args.feature_layer,
        "cache_size": max(20_000, 2 * args.buffer_size),
    }
    return DQN(
        LMQPolicy,
        env,
        learning_rate=learning_rate,
        buffer_size=args.buffer_size,
        learning_starts=args.learning_starts,
        batch_size=args.batch_size,
        gamma=args.gamma,
        train_freq=args.train_freq,
        gradient_steps=args.gradient_steps,
        target_update_interval=args.target_update_interval,
        exploration_fraction=args.exploration_fraction,
        exploration_final_eps=args.exploration_final_eps,
        max_grad_norm=args.max_grad_norm,
        policy_kwargs=policy_kwargs,
        seed=args.seed,
        device=args.device,
        verbose=0,
    )


def replay_bytes_per_transition(model: DQN) -> float:
    """Bytes the replay buffer spends per stored transition (observation and next observation as ids)."""
    buffer = model.replay_buffer
    arrays = [buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    for name in ("observations", "next_observations"):
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            arrays += list(value.values())
        elif value is not None:
            arrays.append(value)
    return sum(array.nbytes for array in arrays) / (buffer.buffer_size * buffer.n_envs)


def run_stats(model: DQN) -> dict[str, Any]:
    """Replay-buffer bytes per transition and feature-cache counters of a DQN run."""
    encoder = model.policy.encoder
    cached = sum(features.numel() * features.element_size() for features in encoder.cache.values())
    return {
        "replay_bytes_per_transition": replay_bytes_per_transition(model),
        "feature_cache_entries": len(encoder.cache),
        "feature_cache_bytes": cached,
        "feature_cache_hits": encoder.hits,
        "feature_cache_misses": encoder.misses,
        "trunk_parameters_shared": sum(p.numel() for p in encoder.lm.parameters()),
        "head_parameters": sum(p.numel() for p in model.policy.q_net.parameters()),
    }


# -- evaluation and references ----------------------------------------------------------


def _candidate_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    env = gym.make(env_id, **env_kwargs)
    if env.unwrapped.granularity != "candidate":
        env.close()
        raise ValueError(
            f"{env_id} is a {env.unwrapped.granularity}-level env: it proposes no candidates; the DQN baseline and "
            "its references need a candidate-level id, e.g. TextGym/SentimentCandidate-v0"
        )
    return env


def _summary(rewards: list[float]) -> dict[str, Any]:
    from baselines.evaluate import bootstrap_ci

    return {"reward_mean": float(np.mean(rewards)), "reward_ci95": bootstrap_ci(rewards), "rewards": rewards}


def run_candidate_episodes(
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int,
    play: Callable[[gym.Env, int, Any], Any],
    parallel: int,
    record_path: str | None = None,
) -> list[Any]:
    """``play(env, index, batcher)`` for every episode index, ``parallel`` episodes at a time.

    Each episode gets its own env; their proposals go through one
    :class:`textgym.lm.ProposalBatcher`, so the LM proposes for all running episodes in one
    batch.

    Args:
        env_id: A candidate-level TextGym id.
        env_kwargs: ``gym.make`` arguments.
        episodes: Number of episodes (indices ``0 .. episodes - 1``).
        play: Plays episode ``index`` on its fresh ``env`` (each in its own thread) and
            returns its result; an env copied inside must get ``batcher`` as its proposer.
        parallel: Episodes run at once.
        record_path: JSONL file the generations are appended to, in episode order.

    Returns:
        The results of ``play``, in episode order.
    """
    from textgym.lm import ProposalBatcher
    from textgym.wrappers import RecordGenerations

    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel!r}")
    probe = _candidate_env(env_id, env_kwargs)
    batcher = ProposalBatcher(probe.unwrapped.proposer)
    probe.close()
    with tempfile.TemporaryDirectory(prefix="textgym-episodes-") as scratch:

        def episode(index: int) -> Any:
            env = _candidate_env(env_id, env_kwargs)
            env.unwrapped.proposer = batcher
            if record_path:
                env = RecordGenerations(env, Path(scratch) / f"{index:06d}.jsonl")
            try:
                return play(env, index, batcher)
            finally:
                env.close()

        results = []
        for first in range(0, episodes, parallel):
            results += batcher.map(episode, range(first, min(first + parallel, episodes)))
        if record_path:  # the recorder's lines, as written, in episode order, appended in one durable write
            lines = [(Path(scratch) / f"{index:06d}.jsonl").read_text(encoding="utf-8") for index in range(episodes)]
            append_lines(record_path, "".join(lines))
    return results


@torch.no_grad()
def evaluate_q_policy(
    model: Any,
    env_id: str,
    env_kwargs: dict[str, Any],
    episodes: int = 32,
    seed: int = 10_000,
    record_path: str | None = None,
    parallel: int = 32,
) -> dict[str, Any]:
    """Play ``episodes`` fixed-prompt episodes with the greedy Q policy (arg-max over valid candidates).

    Args:
        model: A ``DQN`` with :class:`LMQPolicy` (or the policy itself).
        env_id: A candidate-level TextGym id.
        env_kwargs: ``gym.make`` arguments (e.g. ``model``, ``split``, ``num_candidates``).
        episodes: Number of episodes; episode ``i`` resets with ``seed + i``.
        seed: Base seed of the prompts (and of the env's candidate sampling).
        record_path: JSONL file the generations are appended to (in episode order), through
            :class:`textgym.wrappers.RecordGenerations`.
        parallel: Episodes played at once, their proposals batched.

    Returns:
        ``reward_mean``, ``reward_ci95``, ``rewards`` (per episode), ``episodes``,
        ``deterministic`` (True), ``top_candidate_rate`` (how often candidate 0 was picked),
        ``reply_words_mean`` and ``distinct_2_mean``.

    Raises:
        ValueError: The env is not candidate level, or its K or reply budget differs
            from the policy's.
    """
    policy = getattr(model, "policy", model)
    env = _candidate_env(env_id, env_kwargs)
    k, length = candidate_shape(policy.observation_space, policy.action_space)
    base = env.unwrapped
    shape = (base.num_candidates, base.max_reply_tokens)
    env.close()
    if shape != (k, length):
        raise ValueError(
            f"the policy was trained with K={k} candidates of {length} tokens but {env_id} with {env_kwargs} gives "
            f"K={shape[0]} of {shape[1]}; pass the training num_candidates and max_reply_tokens"
        )
    policy.set_training_mode(False)  # acting never changes the feature statistics
    acting = threading.Lock()  # the feature cache is not thread-safe

    def play(env: gym.Env, index: int, batcher: Any) -> tuple[float, dict, list[int]]:
        observation, _ = env.reset(seed=seed + index)
        total, picks = 0.0, []
        while True:
            batch = {key: torch.as_tensor(observation[key][None]) for key in CANDIDATE_KEYS}
            with acting, torch.no_grad():
                action = int(policy.q_net._predict(batch)[0])
            picks.append(action)
            observation, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            if terminated or truncated:
                return total, info.get("guard", {}), picks

    played = run_candidate_episodes(env_id, env_kwargs, episodes, play, parallel, record_path)
    rewards = [total for total, _, _ in played]
    guards = [guard for _, guard, _ in played]
    picks = [pick for _, _, episode_picks in played for pick in episode_picks]
    return {
        "episodes": episodes,
        "deterministic": True,
        **_summary(rewards),
        "top_candidate_rate": float(np.mean([pick == 0 for pick in picks])),
        "reply_words_mean": float(np.mean([g.get("reply_words", 0.0) for g in guards])),
        "distinct_2_mean": float(np.mean([g.get("distinct_2", 0.0) for g in guards])),
    }


def candidate_references(
    env_id: str, env_kwargs: dict[str, Any], episodes: int = 32, seed: int = 10_000, parallel: int = 32
) -> dict:
    """Reference rewards of three candidate pickers on the same fixed prompts (episode ``i`` resets with ``seed + i``).

    * ``random``: a uniformly random valid candidate (``action_masks()``) each turn, drawn
      with ``numpy.random.default_rng([seed, i])`` in episode ``i``;
    * ``top``: candidate 0, the LM's own greedy reply;
    * ``best_of_k``: an oracle that tries every valid candidate on a deep copy of the env
      and keeps the one with the highest immediate reward (ties: the lowest index),
      continuing from that copy (myopic across the turns of a multi-turn episode).

    All three start from the same reset, so the first turn's candidates are identical.
    ``parallel`` episodes run at once with their proposals batched.

    Returns:
        ``{"random": ..., "top": ..., "best_of_k": ...}``, each with ``reward_mean``,
        ``reward_ci95`` and per-episode ``rewards``, plus ``env``, ``env_kwargs``,
        ``episodes`` and ``seed``.

    Raises:
        ValueError: The env is not candidate level.
    """

    def twin(game: Any, batcher: Any) -> Any:
        copied = copy.deepcopy(game)  # the copy reloads its LM by name: route it through the batcher again
        copied.proposer = batcher
        return copied

    def play(env: gym.Env, index: int, batcher: Any) -> dict[str, float]:
        env.reset(seed=seed + index)
        rng = np.random.default_rng([seed, index])
        totals = {}
        for name in ("random", "top", "best_of_k"):
            game = twin(env.unwrapped, batcher)
            total, done = 0.0, False
            while not done:
                valid = np.flatnonzero(game.action_masks())
                if name == "random":
                    result = game.step(int(rng.choice(valid)))
                elif name == "top":
                    result = game.step(0)
                else:
                    trials = []
                    for action in valid:
                        branch = twin(game, batcher)
                        trials.append((branch.step(int(action)), branch))
                    best = max(range(len(trials)), key=lambda i: (trials[i][0][1], -i))
                    result, game = trials[best]
                total += float(result[1])
                done = bool(result[2] or result[3])
            totals[name] = total
        return totals

    played = run_candidate_episodes(env_id, env_kwargs, episodes, play, parallel)
    return {
        "env": env_id,
        "env_kwargs": env_kwargs,
        "episodes": episodes,
        "seed": seed,
        **{name: _summary([totals[name] for totals in played]) for name in ("random", "top", "best_of_k")},
    }


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally save) :func:`candidate_references` for a candidate-level id."""
    import textgym  # noqa: F401

    parser = argparse.ArgumentParser(description="Reference rewards of a candidate-level env: random, top, best-of-K.")
    parser.add_argument("--env", required=True, help="a candidate-level TextGym id")
    parser.add_argument("--model", default="default", help="the env's LM")
    parser.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    parser.add_argument("--num-candidates", type=int, default=0, help="K (0: the id's registered value)")
    parser.add_argument("--max-reply-tokens", type=int, default=0, help="reply budget (0: the id's registered value)")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seed", type=int, default=10_000, help="episode i resets with seed + i")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=32, help="episodes played at once, proposals batched")
    parser.add_argument("--out", default=None, help="JSON file for the result")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    kwargs: dict[str, Any] = {"model": args.model, "split": args.split}
    if args.num_candidates:
        kwargs["num_candidates"] = args.num_candidates
    if args.max_reply_tokens:
        kwargs["max_reply_tokens"] = args.max_reply_tokens
    try:
        result = candidate_references(args.env, kwargs, args.episodes, args.seed, args.parallel)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    brief = {
        name: [round(result[name]["reward_mean"], 4), [round(x, 4) for x in result[name]["reward_ci95"]]]
        for name in ("random", "top", "best_of_k")
    }
    print(json.dumps({"env": args.env, "episodes": args.episodes, **brief}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
