"""An actor-critic policy whose actor is a causal LM, for stock stable-baselines3 PPO.

``PPO(LMActorCriticPolicy, env, policy_kwargs=dict(model="default"))`` trains an LM on a
TextGym env:

* token level (``Discrete(V)``): the action distribution is the LM's next-token
  distribution at the last position of the observed context;
* utterance level (``MultiDiscrete([V] * L)``): the action is a whole reply that the LM
  generates autoregressively (KV-cached); its log-probability is the sum of the reply's
  token log-probabilities up to and including the end token.

The critic is a linear value head on the LM's last hidden state. Observations are read as
integer ids (no one-hot, no float cast), ``ortho_init`` is off (it would overwrite the
pretrained weights) and dropout is off (it would make sampling and training log-probs
disagree).

Two CPU-memory measures keep training fast without changing its arithmetic: Adam is
fused by default (one pass over each tensor instead of a dozen), and the gradients of the
vocabulary-sized matrices (input embedding and output head, tied or not) are added
straight into one persistent buffer per matrix. Autograd would otherwise make two or
three fresh (V, H) tensors per minibatch (the head's product, the embedding's dense
scatter, their sum), and on a small CPU machine touching that much fresh memory costs more
than the arithmetic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

from baselines.common.vocab_grad import EmbeddingGradInPlace, HeadGradInPlace, VocabGradBuffers
from textgym.lm import forward, new_cache, positions_from_mask, sample_from_logits
from textgym.models import eos_token_ids, load_causal_lm, load_tokenizer, resolve_model_path


@dataclass
class SegmentBatch:
    """Transitions grouped into segments for one forward per segment (see ``baselines.ppo``).

    A segment is a run of token-level steps of one env in which each observation is the
    previous one plus the previous action, with no token dropped from the window.

    Attributes:
        input_ids: (R, T) token rows: each holds one or more segments (a segment is its
            first observation followed by its actions but the last).
        attention_mask: (R, T) 1 on real tokens, or (R, 1, T, T) bool, True where a query
            (row, i) may attend to key j (several segments packed into one row).
        segment_index: (N,) the row of each transition.
        position: (N,) the column whose output gives the transition's action distribution.
        position_ids: (R, T) position of each token in its own segment; None to derive them
            from a 2-d ``attention_mask``.
        trunk_states: (R, T, H) the frozen trunk's output at every token (see
            :attr:`LMActorCriticPolicy.frozen_depth`), kept from collection; None to run the
            whole LM.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    segment_index: torch.Tensor
    position: torch.Tensor
    position_ids: torch.Tensor | None = None
    trunk_states: torch.Tensor | None = None

    def positions(self) -> torch.Tensor:
        """Position ids of every token."""
        return positions_from_mask(self.attention_mask) if self.position_ids is None else self.position_ids


def top_layers(base: nn.Module, depth: int) -> nn.Module:
    """A view of a decoder ``base`` model that runs only its layers from ``depth`` on, then its final norm.

    Called with ``inputs_embeds`` = the hidden states entering layer ``depth`` (the
    ``hidden_states[depth]`` of a full forward), it returns the full forward's
    ``last_hidden_state``. It shares every parameter and submodule with ``base`` and is not
    registered as a submodule of anything, so no state dict or optimizer sees it twice.

    Raises:
        ValueError: ``base`` has no ``layers`` list, or ``depth`` is outside [1, len(layers)).
    """
    layers = getattr(base, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not 1 <= depth < len(layers):
        raise ValueError(f"cannot split {type(base).__name__} at layer {depth!r}")
    view = copy.copy(base)
    view._modules = dict(base._modules)
    view.layers = nn.ModuleList(list(layers)[depth:])
    view.config = copy.copy(base.config)
    view.config.num_hidden_layers = len(view.layers)
    if isinstance(getattr(base.config, "layer_types", None), list):
        view.config.layer_types = base.config.layer_types[depth:]
    return view


def train_top_layers(lm: nn.Module, count: int) -> None:
    """Freeze the causal LM ``lm`` except its top ``count`` transformer layers and its final norm."""
    layers = lm.base_model.layers
    lm.requires_grad_(False)
    for layer in layers[len(layers) - count :]:
        layer.requires_grad_(True)
    lm.base_model.norm.requires_grad_(True)


def _disable_dropout(model: nn.Module) -> None:
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(model.config, name):
            setattr(model.config, name, 0.0)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


class LMActorCriticPolicy(ActorCriticPolicy):
    """Actor = a causal LM's next-token head, critic = a value head on its last hidden state.

    Policy kwargs (``policy_kwargs=dict(...)`` in SB3):
        model: A model name: ``"default"``, ``"tiny"``, a local directory or a hub id. It must
            share the env's tokenizer (vocabulary size is checked).
        torch_threads: Threads for torch on CPU (None leaves torch's setting); set it
            explicitly on shared machines, where oversubscription is very slow.
        blocked_token_ids: Token ids the actor may never choose (an action mask over the
            vocabulary), e.g. chat-template markers.
        lora: A ``peft.LoraConfig`` keyword dict; only the adapters and the value head train.
        temperature: Softmax temperature of the actor (1.0 is the LM itself).
        trainable_layers: Train only the top N transformer layers, the final norm and the
            value head (None trains everything). Frozen layers need no backward pass and no
            optimizer state: a cheaper update on small hardware.
        value_scale: The value is ``value_scale * head(hidden)``; with Adam this multiplies the
            value head's effective learning rate, which starts from zero and must fit returns
            much faster than the LM should move.

    Raises:
        ValueError: The action space is not ``Discrete(V)`` or ``MultiDiscrete([V] * L)``,
            the observation lacks ``input_ids`` / ``attention_mask``, or V differs from
            the model's vocabulary.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        lr_schedule: Any,
        model: str = "default",
        torch_threads: int | None = None,
        blocked_token_ids: list[int] | None = None,
        lora: dict[str, Any] | None = None,
        temperature: float = 1.0,
        trainable_layers: int | None = None,
        value_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Dict) or not {"input_ids", "attention_mask"} <= set(
            observation_space.spaces
        ):
            raise ValueError(
                f"LMActorCriticPolicy needs a Dict observation with 'input_ids' and 'attention_mask', "
                f"got {observation_space}"
            )
        if "candidate_ids" in observation_space.spaces:
            raise ValueError(
                "LMActorCriticPolicy drives token- or utterance-level envs; for candidate-level envs "
                "use baselines.dqn.LMQPolicy"
            )
        if isinstance(action_space, gym.spaces.Discrete):
            self.granularity, vocab = "token", int(action_space.n)
        elif isinstance(action_space, gym.spaces.MultiDiscrete) and len(set(action_space.nvec.tolist())) == 1:
            self.granularity, vocab = "utterance", int(action_space.nvec[0])
        else:
            raise ValueError(
                f"LMActorCriticPolicy drives token-level (Discrete(V)) or utterance-level "
                f"(MultiDiscrete([V] * L)) envs, got action space {action_space}; for candidate-level "
                "envs use baselines.dqn.LMQPolicy"
            )
        if not 0 < temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        self.model_name, self.vocab_size, self.temperature = model, vocab, float(temperature)
        self.blocked_token_ids = list(blocked_token_ids or [])
        self.lora = lora
        self.trainable_layers, self.value_scale = trainable_layers, float(value_scale)
        kwargs["ortho_init"] = False
        kwargs.setdefault("net_arch", [])
        adam = kwargs.get("optimizer_class", torch.optim.Adam) is torch.optim.Adam
        if kwargs.get("optimizer_kwargs") is None and adam:
            kwargs["optimizer_kwargs"] = {"eps": 1e-5, "fused": True}  # SB3's Adam eps, in one fused pass
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    # -- construction -----------------------------------------------------------------

    def _build(self, lr_schedule: Any) -> None:
        self._vocab_grads = VocabGradBuffers()
        self.lm = load_causal_lm(self.model_name)
        _disable_dropout(self.lm)
        lm_vocab = self.lm.get_output_embeddings().weight.shape[0]
        if lm_vocab < self.vocab_size:
            raise ValueError(
                f"model {self.model_name!r} has {lm_vocab} output tokens but the env's action space has "
                f"{self.vocab_size}; use the env's own model (its tokenizer defines the actions)"
            )
        if self.lora:
            from peft import LoraConfig, get_peft_model

            self.lm = get_peft_model(self.lm, LoraConfig(**self.lora))
        if self.trainable_layers is not None:
            layers = self.lm.base_model.layers
            if not 0 <= self.trainable_layers <= len(layers):
                raise ValueError(f"trainable_layers must be in [0, {len(layers)}], got {self.trainable_layers!r}")
            train_top_layers(self.lm, self.trainable_layers)
        tokenizer = load_tokenizer(self.model_name)
        self._top_view: nn.Module | None = None
        self.differentiable_entropy = True
        if len(tokenizer) != self.vocab_size:
            raise ValueError(
                f"the env's action space has {self.vocab_size} tokens but model {self.model_name!r}'s tokenizer "
                f"has {len(tokenizer)}; the policy's model must share the env's tokenizer"
            )
        self.end_ids = eos_token_ids(tokenizer, resolve_model_path(self.model_name))
        self.pad_id = int(tokenizer.pad_token_id)
        hidden = self.lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        block = torch.zeros(lm_vocab, dtype=torch.bool)
        block[self.vocab_size :] = True  # padding rows some models add beyond the tokenizer
        if self.blocked_token_ids:
            block[torch.as_tensor(self.blocked_token_ids)] = True
        self.register_buffer("logit_block", block, persistent=False)
        self.action_dist = CategoricalDistribution(self.vocab_size)
        self.optimizer = self.optimizer_class(
            [p for p in self.parameters() if p.requires_grad], lr=lr_schedule(1), **self.optimizer_kwargs
        )

    @property
    def frozen_depth(self) -> int:
        """How many bottom transformer layers never train (0: none), with the embeddings frozen too.

        Their output at every token is then a fixed function of the tokens, so the fast
        trainer keeps it from collection and runs only the layers above in training and in
        the reference's KL forward. Nonzero when ``trainable_layers`` is at least 1 and
        below the layer count, without LoRA (whose adapters sit in every layer).
        """
        if self.trainable_layers is None or self.lora or self.trainable_layers < 1:
            return 0
        layers = len(self.lm.base_model.layers)
        return layers - self.trainable_layers if self.trainable_layers < layers else 0

    def top_forward(
        self,
        trunk_states: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor:
        """Last hidden states from the frozen trunk's output (B, T, H): only the layers above it run.

        With ``cache`` (a full-depth KV cache), the layers that run store their keys and
        values in their own slots of it.
        """
        if self._top_view is None:
            self.__dict__["_top_view"] = top_layers(self._base(), self.frozen_depth)  # not a submodule
        positions = positions_from_mask(attention_mask) if positions is None else positions
        return forward(
            self._top_view, None, attention_mask, positions, cache=cache, inputs_embeds=trunk_states
        ).last_hidden_state

    def _base(self) -> nn.Module:
        return (self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm).base_model

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            model=self.model_name,
            blocked_token_ids=self.blocked_token_ids,
            lora=self.lora,
            temperature=self.temperature,
            trainable_layers=self.trainable_layers,
            value_scale=self.value_scale,
        )
        return data

    # -- LM passes --------------------------------------------------------------------

    @staticmethod
    def _vocab_grad_in_place(module: nn.Module) -> bool:
        """Whether this backward should add ``module``'s weight gradient in place (see the module docstring)."""
        if not (torch.is_grad_enabled() and module.weight.requires_grad):
            return False
        if torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu"):
            return False  # the custom backward does not re-enter autocast
        if type(module) is nn.Embedding:
            return module.max_norm is None and not module.scale_grad_by_freq and not module.sparse
        return type(module) is nn.Linear and module.bias is None

    def _trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Any = None, positions=None):
        base = self._base()
        positions = positions_from_mask(attention_mask) if positions is None else positions
        embedding = base.get_input_embeddings()
        if self._vocab_grad_in_place(embedding):
            embeds = EmbeddingGradInPlace.apply(input_ids, embedding.weight, self._vocab_grads, embedding.padding_idx)
            return forward(base, None, attention_mask, positions, cache=cache, inputs_embeds=embeds).last_hidden_state
        return forward(base, input_ids, attention_mask, positions, cache=cache).last_hidden_state

    def _heads(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked, tempered logits (float32) and values for hidden states (..., H)."""
        head = self.lm.get_output_embeddings()
        if self._vocab_grad_in_place(head):
            logits = HeadGradInPlace.apply(hidden, head.weight, self._vocab_grads)
        else:
            logits = head(hidden)
        # Each of these is a pass over (..., V) floats: skip the ones that change nothing.
        logits = logits.float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.blocked_token_ids:
            logits = logits.masked_fill(self.logit_block, float("-inf"))
        return logits[..., : self.vocab_size], self.value_scale * self.value_head(hidden).float().squeeze(-1)

    def _log_prob_and_entropy(self, logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log softmax(logits)[actions]`` and the entropy, as SB3's categorical gives them, in fewer passes.

        The entropy is differentiable unless :attr:`differentiable_entropy` is off (the fast
        trainer turns it off when ``ent_coef`` is 0: it is then only logged).
        """
        log_normalizer = torch.logsumexp(logits, dim=-1)
        log_prob = logits.gather(-1, actions.long().reshape(-1, 1)).squeeze(-1) - log_normalizer
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.differentiable_entropy):
            probs = torch.exp(logits - log_normalizer[:, None])
            finite = logits.nan_to_num(neginf=0.0) if self.blocked_token_ids else logits  # 0 * -inf is nan
            entropy = log_normalizer - (probs * finite).sum(-1)
        return log_prob, entropy

    def _observed(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids and mask, without the leading columns that are padding in every row (exact for left padding)."""
        ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
        first = int(torch.argmax(mask.any(dim=0).long()))
        return ids[:, first:], mask[:, first:]

    def _last_step(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self._observed(obs)
        hidden = self._trunk(ids, mask)[:, -1]  # left padding: the newest token is last
        return self._heads(hidden)

    # -- utterance level --------------------------------------------------------------

    def _reply_log_probs(self, obs: dict[str, torch.Tensor], replies: torch.Tensor):
        """Summed log-prob and entropy of whole replies, one forward over context + reply."""
        ids, mask = self._observed(obs)
        replies = replies.long()
        is_end = torch.isin(replies, torch.as_tensor(self.end_ids, device=replies.device))
        # A token counts if no end token came before it (the end token itself counts).
        counted = (torch.cumsum(is_end.long(), dim=1) - is_end.long()) == 0
        sequence = torch.cat([ids, replies[:, :-1]], dim=1)
        sequence_mask = torch.cat([mask, counted[:, :-1].long()], dim=1)
        hidden = self._trunk(sequence, sequence_mask)
        logits, values = self._heads(hidden[:, ids.shape[1] - 1 :])
        log_probs = torch.log_softmax(logits, dim=-1)
        token_log_probs = log_probs.gather(-1, replies[..., None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1)
        return (token_log_probs * counted).sum(1), (entropy * counted).sum(1), values[:, 0]

    @torch.no_grad()
    def generate(self, obs: dict[str, torch.Tensor], max_new_tokens: int, deterministic: bool) -> torch.Tensor:
        """Replies to observed contexts, KV-cached: (B, max_new_tokens) ids, ``pad_id`` after each end token."""
        ids, mask = self._observed(obs)
        length = int(max_new_tokens)
        replies = torch.full((ids.shape[0], length), self.pad_id, dtype=torch.long, device=ids.device)
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        cache, positions = new_cache(self.lm), positions_from_mask(mask)
        hidden = self._trunk(ids, mask, cache=cache, positions=positions)[:, -1]
        position = positions[:, -1:]
        end = torch.as_tensor(self.end_ids, device=ids.device)
        for step in range(length):
            logits, _ = self._heads(hidden)
            token = logits.argmax(-1) if deterministic else sample_from_logits(logits)
            replies[:, step] = torch.where(done, torch.full_like(token, self.pad_id), token)
            done |= torch.isin(token, end)
            if bool(done.all()) or step == length - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position + 1
            hidden = self._trunk(replies[:, step : step + 1], mask, cache=cache, positions=position)[:, -1]
        return replies

    # -- SB3 policy API ---------------------------------------------------------------

    def forward(self, obs: dict[str, torch.Tensor], deterministic: bool = False):
        """Sample actions with their values and log-probabilities."""
        if self.granularity == "utterance":
            replies = self.generate(obs, self.action_space.nvec.shape[0], deterministic)
            log_prob, _, values = self._reply_log_probs(obs, replies)
            return replies, values[:, None], log_prob
        logits, values = self._last_step(obs)
        distribution = self.action_dist.proba_distribution(action_logits=logits)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values[:, None], distribution.log_prob(actions)

    def evaluate_actions(self, obs: Any, actions: torch.Tensor):
        """Values, log-probabilities and entropies of ``actions`` (one forward per segment for a SegmentBatch)."""
        if isinstance(obs, SegmentBatch):
            if obs.trunk_states is not None:
                hidden = self.top_forward(obs.trunk_states, obs.attention_mask, obs.positions())
            else:
                hidden = self._trunk(obs.input_ids, obs.attention_mask, positions=obs.positions())
            logits, values = self._heads(hidden[obs.segment_index, obs.position])
        elif self.granularity == "utterance":
            log_prob, entropy, values = self._reply_log_probs(obs, actions)
            return values[:, None], log_prob, entropy
        else:
            logits, values = self._last_step(obs)
        log_prob, entropy = self._log_prob_and_entropy(logits, actions)
        return values[:, None], log_prob, entropy

    def get_distribution(self, obs: dict[str, torch.Tensor]) -> Distribution:
        """The next-token distribution (token level only)."""
        if self.granularity == "utterance":
            raise NotImplementedError("utterance-level actions are whole replies; use forward() or predict()")
        logits, _ = self._last_step(obs)
        return self.action_dist.proba_distribution(action_logits=logits)

    def predict_values(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Values of the observed contexts."""
        ids, mask = self._observed(obs)
        hidden = self._trunk(ids, mask)[:, -1]
        return self.value_scale * self.value_head(hidden).float()

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = False) -> torch.Tensor:
        if self.granularity == "utterance":
            return self.generate(observation, self.action_space.nvec.shape[0], deterministic)
        return self.get_distribution(observation).get_actions(deterministic=deterministic)

    def extract_features(self, obs: Any, features_extractor: Any = None) -> Any:
        """Not used: the LM reads the integer ids itself (SB3's preprocessing would cast them to float)."""
        raise NotImplementedError("LMActorCriticPolicy reads observations directly")

    @torch.no_grad()
    def step_outputs(
        self, ids: torch.Tensor, mask: torch.Tensor, cache: Any, positions: torch.Tensor, trunk_depth: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Feed ``ids`` at ``positions`` into ``cache`` (fast collector).

        Returns:
            The last position's logits and values, and the hidden states entering layer
            ``trunk_depth`` at every fed token (None when ``trunk_depth`` is 0).
        """
        out = forward(self._base(), ids, mask, positions, cache=cache, output_hidden_states=trunk_depth > 0)
        logits, values = self._heads(out.last_hidden_state[:, -1])
        return logits, values, out.hidden_states[trunk_depth] if trunk_depth else None
