"""The DQN's Q-networks and policy: one head with shared weights scores every candidate on frozen-LM features."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.dqn.policies import DQNPolicy
from torch import nn

from baselines.common.candidates import candidate_shape
from baselines.common.config import Q_FEATURES
from baselines.dqn.encoder import CandidateEncoder


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


def check_q_features(value: str) -> str:
    """``value`` if it is one of :data:`~baselines.common.config.Q_FEATURES`, else a ValueError naming it."""
    if value not in Q_FEATURES:
        raise ValueError(f"q_features must be one of {', '.join(Q_FEATURES)}, got {value!r}")
    return value


class LMQNetwork(BasePolicy):
    """Q(s, k) for every candidate k: a head with shared weights over frozen-LM candidate features.

    Args:
        observation_space: The candidate-level env's Dict space.
        action_space: ``Discrete(K)``.
        encoder: The shared :class:`CandidateEncoder` (not a submodule).
        net_arch: Hidden sizes of the head's MLP.
        activation_fn: The MLP's activation.
        q_features: ``"all"``: the head reads every feature of a candidate; ``"scalars"``:
            only its scalars and guide agreement (see :meth:`CandidateEncoder.encode`).
    """

    action_space: gym.spaces.Discrete

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        action_space: gym.spaces.Discrete,
        encoder: CandidateEncoder,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.ReLU,
        q_features: str = "all",
    ) -> None:
        super().__init__(observation_space, action_space)
        self.encoder, self.q_features = encoder, check_q_features(q_features)
        self.num_candidates, self.reply_tokens = candidate_shape(observation_space, action_space)
        self.net_arch, self.activation_fn = list(net_arch), activation_fn
        layers: list[nn.Module] = []
        width = encoder.feature_dim if q_features == "all" else encoder.scalar_dim
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
        features = self.encoder.statistics(self.encoder(obs).to(self.device))
        if self.q_features == "scalars":
            features = features[..., -self.encoder.scalar_dim :]  # they close each candidate's features
        return self.head(features).squeeze(-1)

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
        data.update(
            net_arch=self.net_arch, activation_fn=self.activation_fn, encoder=self.encoder, q_features=self.q_features
        )
        return data


class LMQPolicy(DQNPolicy):
    """DQN policy for candidate-level TextGym envs: online and target :class:`LMQNetwork` over one frozen LM.

    Policy kwargs (``policy_kwargs=dict(...)`` in SB3):
        net_arch: Hidden sizes of the Q head's MLP (default ``[64]``).
        activation_fn: The MLP's activation.
        model: A model name: ``"default"``, ``"tiny"``, a local directory or a hub id. It
            must share the env's tokenizer (its vocabulary is checked against the ids).
        feature_layer: The LM hidden layer of the features (None: the middle one).
        q_features: What the Q head reads per candidate: ``"all"`` (the LM's hidden states and
            the scalars) or ``"scalars"`` (its log-probabilities under the LM, its length, two
            flags and, with ``guide_model``, its agreement with the guide). A few scalars
            cannot memorise the training prompts' candidate sets, which 1,158 features let a
            head do on a pool of a few hundred prompts.
        cache_size: Observations whose features the encoder keeps.
        statistics_limit: Candidates that define the feature standardisation.
        feature_store: A directory where the encoder keeps the features it computes, shared
            by the runs given it (:class:`CandidateEncoder`; None: in memory only).
        guide_model: A model sharing the env's tokenizer whose greedy reply each candidate is
            compared with, one more feature (:class:`CandidateEncoder`; None: none).
        torch_threads: Threads for torch on CPU (None leaves torch's setting).

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
        net_arch: list[int] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        model: str = "default",
        feature_layer: int | None = None,
        cache_size: int = 20_000,
        statistics_limit: int = 512,
        feature_store: str | None = None,
        guide_model: str | None = None,
        torch_threads: int | None = None,
        q_features: str = "all",
        **kwargs: Any,
    ) -> None:
        num_candidates, reply_tokens = candidate_shape(observation_space, action_space)
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.model_name, self.q_features = model, check_q_features(q_features)
        self.feature_layer, self.cache_size, self.statistics_limit = feature_layer, cache_size, statistics_limit
        self.feature_store, self.guide_model = feature_store, guide_model
        encoder = CandidateEncoder(
            model, num_candidates, reply_tokens, feature_layer, cache_size, statistics_limit, feature_store, guide_model
        )
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
            self.q_features,
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
            feature_store=self.feature_store,
            guide_model=self.guide_model,
            q_features=self.q_features,
        )
        return data
