"""FastLMPPO: stock SB3 PPO with KV-cached batched collection, segment-packed training and a KL penalty."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

from baselines.policies import LMActorCriticPolicy, top_layers
from baselines.ppo.buffer import SegmentRolloutBuffer
from baselines.ppo.cache import real_tokens
from baselines.ppo.decoder import ContinuousDecoder
from baselines.ppo.monitor import BF16_RATIO_TOLERANCE, FP32_RATIO_TOLERANCE, KLController, TrainingMonitor
from textgym.lm import forward, sample_from_logits
from textgym.models import load_causal_lm


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
        group_baseline: The advantages of an episode that starts and ends within a rollout
            are its return to go less the mean reward of the rollout's other episodes on the
            same prompt (see :meth:`SegmentRolloutBuffer.apply_group_baseline`), not the
            critic's GAE; meant for one-reply tasks whose envs play each prompt several times
            (:class:`~textgym.wrappers.PromptPool` with ``repeats``). Turns off SB3's
            per-minibatch advantage standardisation unless ``normalize_advantage`` is given.
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
        group_baseline: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("rollout_buffer_class", SegmentRolloutBuffer)
        # A minibatch whose groups all tied holds only KL terms; standardising it would blow them up to unit
        # scale, so group advantages are kept as they are (rewards are whitened, or not, by the caller).
        kwargs.setdefault("normalize_advantage", not group_baseline)
        self.kl = KLController(kl_coef, target_kl_per_reply, kl_horizon)
        # bf16 rounds the cached-decoding and segment forwards differently: on an H200 the first
        # minibatch's mean |ratio - 1| was about 1.1e-3 under bf16 autocast, so 1e-3 would warn on
        # every update; an actual mismatch (dropout, another model) is orders of magnitude larger.
        self.monitor = TrainingMonitor(ratio_tolerance=BF16_RATIO_TOLERANCE if bf16 else FP32_RATIO_TOLERANCE)
        self.check_ratios, self.bf16, self.nan_guard = check_ratios, bf16, nan_guard
        self.bootstrap_truncated, self.group_baseline = bootstrap_truncated, group_baseline
        # With a group baseline: the prompt id of each env's current episode, kept across rollouts.
        self._episode_prompts: list[Any] = []
        self.reference = None
        self._shares_trunk: bool | None = None
        self._decoder: ContinuousDecoder | None = None
        self._split_works: bool | None = None  # checked on the first rollout that keeps trunk states
        self._reference_top: Any = None
        # KL summed over rollouts in which no reply ended (rollouts shorter than a reply), with their env steps.
        self._kl_carried, self._steps_carried = 0.0, 0
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
            "_episode_prompts",
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
        if self.group_baseline and not self._episode_prompts:
            self._episode_prompts = [self._prompt_of(env, index) for index in range(self.n_envs)]
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
            if self.group_baseline:
                rollout_buffer.mark_episodes(self._episode_prompts, dones)
                for index in np.flatnonzero(dones):
                    self._episode_prompts[index] = self._prompt_of(env, index)
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

        if self.group_baseline:
            rollout_buffer.task_rewards[:] = rollout_buffer.rewards
        self._penalise_kl(rollout_buffer, replies)
        self.monitor.check_rollout(reply_rewards, guards, components)
        self.last_rollout.update(
            reply_reward_mean=float(np.mean(reply_rewards)) if reply_rewards else float("nan"),
            replies=replies,
        )
        if reply_rewards:
            self.logger.record("rollout/reply_reward_mean", self.last_rollout["reply_reward_mean"])
        last_values = decoder.values.detach().float()[:, None]  # the values of new_obs, computed with them
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        if self.group_baseline:
            self.logger.record("rollout/group_baseline_fraction", rollout_buffer.apply_group_baseline())
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    @staticmethod
    def _prompt_of(env: Any, index: int) -> Any:
        """The prompt id of the episode env ``index`` started at its last reset (a group's key)."""
        # A VecEnvWrapper (VecNormalize for whitened rewards) has reset_infos of its own that stay empty.
        reset_info = env.unwrapped.reset_infos[index]
        prompt = reset_info.get("prompt_id")
        if prompt is None:
            raise ValueError(
                f"group_baseline groups episodes by prompt, but env {index}'s reset info has no 'prompt_id' "
                f"(keys: {sorted(reset_info)})"
            )
        return prompt

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
        observed = real_tokens([t["input_ids"] for t in terminals], [t["attention_mask"] for t in terminals])
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
        """Subtract ``beta * (log pi_old - log p_ref)`` from every step's reward; adapt ``beta``.

        ``replies``: replies that ended in the rollout; the KL per reply steering ``beta`` is
        the KL summed since the last rollout that ended any, divided by them.
        """
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
            # The reference is the starting policy, so it samples at the policy's temperature too: a tempered
            # policy would otherwise start a KL away from it, and the controller would pull it back to T = 1.
            logits = reference.get_output_embeddings()(hidden).float() / self.policy.temperature
            actions = torch.as_tensor(buffer.actions[rows, cols, 0], device=self.device).long()
            reference_log_probs = logits.gather(-1, actions[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
            reference_log_probs = reference_log_probs.cpu().numpy()
            kl[rows, cols] = buffer.log_probs[rows, cols] - reference_log_probs
        buffer.rewards -= self.kl.coef * kl
        kl_per_token = float(kl.mean())
        self.monitor.check_kl(kl_per_token)
        self.logger.record("rollout/kl_per_token", kl_per_token)
        self.logger.record("rollout/kl_coef", self.kl.coef)
        self.last_rollout.update(kl_per_token=kl_per_token, kl_coef=self.kl.coef)
        # A rollout shorter than a reply may end none: its KL counts towards the next rollout that ends
        # some, rather than being divided by one reply (which overstated it up to the rollout's length).
        self._kl_carried += float(kl.sum())
        self._steps_carried += buffer.buffer_size * buffer.n_envs
        if replies == 0:
            return
        kl_per_reply = self._kl_carried / replies
        self.logger.record("rollout/kl_per_reply", kl_per_reply)
        self.last_rollout.update(kl_per_reply=kl_per_reply)
        self.kl.update(kl_per_reply, self._steps_carried)
        self._kl_carried, self._steps_carried = 0.0, 0

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
