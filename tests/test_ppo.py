"""The LM actor-critic policy on stock SB3 PPO, and the fast trainer's equality with it."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import DictRolloutBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecNormalize

import textgym  # noqa: F401
from baselines.policies import LMActorCriticPolicy
from baselines.ppo import FastLMPPO
from baselines.ppo import buffer as ppo_buffer
from textgym.core import TaskPrompt, TextTask, TurnResult
from textgym.models import load_tokenizer
from textgym.text_env import TextEnv


def token_vec_env(n_envs=2, **kwargs):
    # SB3's make_vec_env asks for render_mode="rgb_array" unless told otherwise.
    kwargs = {"model": "tiny", "max_context_tokens": 48, "max_reply_tokens": 6, "render_mode": None, **kwargs}
    return make_vec_env("TextGym/Dialogue-v0", n_envs=n_envs, seed=0, env_kwargs=kwargs)


def tiny_ppo(env=None, n_steps=16, batch_size=None, policy_kwargs=None, **kwargs):
    """FastLMPPO on the tiny model, on CPU, without KL unless told (``batch_size`` defaults to ``n_steps``)."""
    return FastLMPPO(
        token_vec_env() if env is None else env,
        policy_kwargs={"model": "tiny", **(policy_kwargs or {})},
        n_steps=n_steps,
        batch_size=batch_size or n_steps,
        **{"kl_coef": 0.0, "seed": 0, "device": "cpu", **kwargs},
    )


def collect(model):
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model.rollout_buffer


def stock_outputs(policy, buffer):
    """Values and log-probs the stock per-step path computes for every stored transition."""
    values = np.zeros_like(buffer.values)
    log_probs = np.zeros_like(buffer.log_probs)
    with torch.no_grad():
        for step in range(buffer.buffer_size):
            obs = obs_as_tensor({k: v[step] for k, v in buffer.observations.items()}, "cpu")
            actions = torch.as_tensor(buffer.actions[step, :, 0])
            value, log_prob, _ = policy.evaluate_actions(obs, actions)
            values[step], log_probs[step] = value.flatten().numpy(), log_prob.numpy()
    return values, log_probs


@pytest.mark.parametrize("trainable_layers", [None, 1], ids=["full-lm", "frozen-trunk-states"])
def test_fast_path_equals_stock_path(tiny_model, trainable_layers, monkeypatch):
    torch.manual_seed(0)
    model = tiny_ppo(n_steps=40, batch_size=16, policy_kwargs={"trainable_layers": trainable_layers})
    # Give the value head non-zero weights so that values are tested too.
    torch.nn.init.normal_(model.policy.value_head.weight, std=0.5)
    collect(model)
    decoder = model._decoder
    model.train()  # the second rollout starts from weights its cache has not seen
    buffer = collect(model)
    # With a frozen trunk the decoder outlives the update (refreshed from its trunk states).
    assert (model._decoder is decoder and decoder is not None) == bool(trainable_layers)
    segments = buffer.segments()
    assert len(segments) > model.n_envs and any(length > 1 for *_, length in segments)
    assert buffer.segment_starts.sum() >= 2  # the 48-token window fills and replies end
    # Restarts re-encoded only what the new observation does not share with the row's tokens.
    assert model.logger.name_to_value["rollout/prefix_tokens_reused"] > 0
    # The frozen trunk's states were kept for every segment (and only when there is a frozen trunk).
    assert model.policy.frozen_depth == (1 if trainable_layers else 0)
    assert (len(buffer.trunk_states) == len(segments)) == bool(trainable_layers)

    # 1. Collection: sampled log-probs and values equal the stock per-step forward.
    values, log_probs = stock_outputs(model.policy, buffer)
    np.testing.assert_allclose(buffer.log_probs, log_probs, atol=1e-5)
    np.testing.assert_allclose(buffer.values, values, atol=1e-5)

    # 2. Advantages: a stock buffer filled with the stock outputs gives the same advantages.
    stock = DictRolloutBuffer(
        model.n_steps,
        model.observation_space,
        model.action_space,
        "cpu",
        gamma=model.gamma,
        gae_lambda=model.gae_lambda,
        n_envs=model.n_envs,
    )
    for step in range(buffer.buffer_size):
        stock.add(
            {k: v[step] for k, v in buffer.observations.items()},
            buffer.actions[step],
            buffer.rewards[step],
            buffer.episode_starts[step],
            torch.as_tensor(values[step]),
            torch.as_tensor(log_probs[step]),
        )
    with torch.no_grad():
        last_values = model.policy.predict_values(obs_as_tensor(model._last_obs, "cpu"))
    stock.compute_returns_and_advantage(last_values, model._last_episode_starts)
    np.testing.assert_allclose(buffer.advantages, stock.advantages, atol=1e-5)
    np.testing.assert_allclose(buffer.returns, stock.returns, atol=1e-5)

    # 3. Training: one forward per packed row of segments gives the stock log-probs and values of every
    #    transition, whether the segments share one row or are split over several.
    for pack_tokens in (ppo_buffer.PACK_TOKENS, 24):
        monkeypatch.setattr(ppo_buffer, "PACK_TOKENS", pack_tokens)
        seen, rows = 0, 0
        for sample in buffer.get(16):
            with torch.no_grad():
                fast_values, fast_log_probs, fast_entropy = model.policy.evaluate_actions(
                    sample.observations, sample.actions
                )
            assert (sample.observations.trunk_states is not None) == bool(trainable_layers)
            np.testing.assert_allclose(fast_log_probs.numpy(), sample.old_log_prob.numpy(), atol=1e-5)
            np.testing.assert_allclose(fast_values.flatten().numpy(), sample.old_values.numpy(), atol=1e-5)
            assert torch.all(fast_entropy > 0)
            seen += len(sample.actions)
            rows += sample.observations.input_ids.shape[0]
        assert seen == model.n_steps * model.n_envs
        assert (rows > len(list(buffer.get(16)))) == (pack_tokens == 24)  # small rows: several per minibatch


def test_vocabulary_gradients_added_in_place_equal_autograd(tiny_model, monkeypatch):
    """The persistent-buffer gradients of the tied embedding / head equal plain autograd's, twice in a row."""
    torch.manual_seed(0)
    model = FastLMPPO(token_vec_env(), policy_kwargs={"model": "tiny"}, n_steps=24, batch_size=24, kl_coef=0.0, seed=0)
    policy = model.policy
    embedding, head = policy.lm.get_input_embeddings(), policy.lm.get_output_embeddings()
    assert embedding.weight is head.weight and embedding.padding_idx is not None  # tied, with a padding row
    torch.nn.init.normal_(policy.value_head.weight, std=0.5)
    sample = next(iter(collect(model).get(24)))
    # The padding id occurs in the batch: its embedding row gets gradient from the head only.
    assert bool((sample.observations.input_ids == embedding.padding_idx).any())

    def gradients(in_place: bool) -> dict[str, torch.Tensor]:
        if not in_place:
            monkeypatch.setattr(LMActorCriticPolicy, "_vocab_grad_in_place", staticmethod(lambda module: False))
        found = []
        for _ in range(2):  # the second pass reuses the zeroed buffer
            policy.optimizer.zero_grad()
            values, log_prob, entropy = policy.evaluate_actions(sample.observations, sample.actions)
            (log_prob.sum() + values.sum() + 0.1 * entropy.sum()).backward()
            found.append({name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None})
        monkeypatch.undo()
        assert found[0].keys() == found[1].keys()
        for name in found[0]:
            torch.testing.assert_close(found[0][name], found[1][name], atol=1e-6, rtol=1e-5)
        return found[1]

    in_place, reference = gradients(True), gradients(False)
    assert in_place.keys() == reference.keys() and "lm.model.embed_tokens.weight" in reference
    for name in reference:
        torch.testing.assert_close(in_place[name], reference[name], atol=1e-5, rtol=1e-4)
    assert float(in_place["lm.model.embed_tokens.weight"].abs().sum()) > 0
    assert policy.optimizer.defaults["fused"] and policy.optimizer.defaults["eps"] == 1e-5


def test_policy_runs_on_stock_sb3_ppo_and_round_trips(tmp_path, tiny_model):
    env = gym.make("TextGym/Dialogue-v0", model="tiny", max_context_tokens=32, max_reply_tokens=4)
    model = PPO(
        LMActorCriticPolicy,
        env,
        policy_kwargs={"model": "tiny"},
        n_steps=16,
        batch_size=8,
        n_epochs=1,
        seed=0,
        device="cpu",
    )
    model.learn(16)
    lm_params = dict(model.policy.lm.named_parameters())
    # ortho_init is off: the tied embedding / output layer still holds the pretrained weights.
    fresh = dict(
        LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model="tiny").lm.named_parameters()
    )
    name = "model.embed_tokens.weight"
    assert torch.allclose(lm_params[name], fresh[name], atol=1e-2)
    assert not model.policy.ortho_init
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", env=env, device="cpu")
    assert loaded.predict(observation, deterministic=True)[0] == action


def test_utterance_level_log_prob_is_the_sum_over_the_reply(tiny_model):
    env = gym.make("TextGym/DialogueUtterance-v0", model="tiny", max_context_tokens=32, max_reply_tokens=5)
    policy = LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model="tiny")
    observation, _ = env.reset(seed=0)
    obs = obs_as_tensor({k: v[None] for k, v in observation.items()}, "cpu")
    end = policy.end_ids[0]
    reply = torch.tensor([[17, 23, end, 99, 99]])
    _, log_prob, _ = policy.evaluate_actions(obs, reply)
    # Hand-rolled: three token steps (17, 23, end) via the token-level head, the rest ignored.
    ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
    expected = 0.0
    for token in (17, 23, end):
        logits, _ = policy._heads(policy._trunk(ids, mask)[:, -1])
        expected += torch.log_softmax(logits, -1)[0, token].item()
        ids = torch.cat([ids, torch.tensor([[token]])], 1)
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
    assert log_prob.item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("env_id", ["TextGym/DialogueCandidate-v0"])
def test_policy_rejects_spaces_it_cannot_drive(env_id, tiny_model):
    env = gym.make(env_id, model="tiny", max_reply_tokens=4)
    with pytest.raises(ValueError, match="for candidate-level envs use baselines.dqn.LMQPolicy"):
        PPO(LMActorCriticPolicy, env, policy_kwargs={"model": "tiny"}, device="cpu")


def test_fast_trainer_rejects_utterance_envs(tiny_model):
    env = gym.make("TextGym/DialogueUtterance-v0", model="tiny", max_reply_tokens=4)
    with pytest.raises(ValueError, match="FastLMPPO drives token-level envs"):
        FastLMPPO(env, policy_kwargs={"model": "tiny"}, device="cpu")


class SayYesTask(TextTask):
    """Reward 1 when the reply starts with "yes"."""

    def __init__(self, yes_token: str = "yes"):
        self.yes_token = yes_token

    def reset(self, rng, options=None):
        return TaskPrompt([{"role": "user", "content": "Do you agree?"}], "agree")

    def step(self, reply):
        return TurnResult(float(reply.strip().startswith(self.yes_token)), True)


class SayYesEnv(TextEnv):
    """A one-turn task for learning tests."""

    task_class = SayYesTask


def say_yes_vec_env(n_envs=2, **kwargs):
    kwargs = {"model": "tiny", "max_context_tokens": 32, "max_reply_tokens": 2, **kwargs}
    return make_vec_env(SayYesEnv, n_envs=n_envs, seed=0, env_kwargs=kwargs)


def yes_probability(model, env):
    observation, _ = env.reset(seed=0)
    obs = obs_as_tensor({k: v[None] for k, v in observation.items()}, "cpu")
    with torch.no_grad():
        return model.policy.get_distribution(obs).distribution.probs[0, env.yes_id].item()


def yes_no_tokens(allow_end: bool = True):
    """The tiny tokenizer's "yes" id and every id but "yes", "no" and (``allow_end``) the end token (2), to block."""
    tokenizer = load_tokenizer("tiny")
    yes_id, no_id = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("yes", "no"))
    allowed = {yes_id, no_id, 2} if allow_end else {yes_id, no_id}
    return yes_id, [i for i in range(len(tokenizer)) if i not in allowed]


def test_a_few_ppo_updates_raise_the_probability_of_the_rewarded_token(tiny_model):
    yes_id, blocked = yes_no_tokens()
    env = say_yes_vec_env()
    probe = SayYesEnv(model="tiny", max_context_tokens=32, max_reply_tokens=2)
    probe.yes_id = yes_id
    model = tiny_ppo(env, n_steps=32, policy_kwargs={"blocked_token_ids": blocked}, n_epochs=4, learning_rate=1e-3)
    before = yes_probability(model, probe)
    model.learn(4 * 64)
    after = yes_probability(model, probe)
    print(f"P(yes) before {before:.3f} after {after:.3f}")
    assert 0.2 < before < 0.5  # about 1/3 among three allowed tokens
    assert after > before + 0.3, (before, after)
    assert model.last_rollout["reply_reward_mean"] > 0.5


def test_ratio_check_reads_the_first_minibatch_and_warns_on_a_mismatch(tiny_model):
    model = tiny_ppo()
    collect(model)
    model.train()
    assert model.logger.name_to_value["train/initial_ratio_error"] < 1e-5
    assert not [w for w in model.monitor.issued if "ratios" in w]
    # Sampling log-probs that disagree with the policy's (e.g. a temperature applied only when sampling).
    buffer = collect(model)
    buffer.log_probs -= 0.5
    with pytest.warns(RuntimeWarning, match="PPO ratios before the first update"):
        model.train()
    assert model.logger.name_to_value["train/initial_ratio_error"] == pytest.approx(np.exp(0.5) - 1, rel=1e-3)
    assert "get" not in vars(model.rollout_buffer) and "evaluate_actions" not in vars(model.policy)  # unpatched


def test_nan_update_restores_the_weights_and_names_the_loss(tiny_model):
    model = tiny_ppo(policy_kwargs={"trainable_layers": 1})
    buffer = collect(model)
    before = {name: p.detach().clone() for name, p in model.policy.named_parameters()}
    buffer.advantages[:] = np.nan
    with pytest.raises(FloatingPointError, match="produced loss nan.*weights from before this update were restored"):
        model.train()
    for name, parameter in model.policy.named_parameters():
        torch.testing.assert_close(parameter, before[name], msg=name)


def test_truncated_replies_bootstrap_from_the_collectors_value(tiny_model, monkeypatch):
    """A reply cut by the token budget adds gamma * V(last observation), as stock SB3 does."""
    model = tiny_ppo(token_vec_env(max_reply_tokens=3), n_steps=24, policy_kwargs={"trainable_layers": 1}, gamma=0.9)
    torch.nn.init.normal_(model.policy.value_head.weight, std=0.5)
    original = FastLMPPO._terminal_values
    checked = {"cut": 0, "shared": 0}

    def compare(self, decoder, cut, infos):
        values = original(self, decoder, cut, infos)
        terminals = [infos[i]["terminal_observation"] for i in cut]
        batch = {key: np.stack([t[key] for t in terminals]) for key in terminals[0]}
        with torch.no_grad():
            expected = self.policy.predict_values(obs_as_tensor(batch, "cpu")).flatten().numpy()
        np.testing.assert_allclose(values, expected, atol=1e-5)
        checked["cut"] += len(cut)
        checked["shared"] += sum(
            t["input_ids"][t["attention_mask"] == 1].tolist()[: len(decoder.tokens[i])] == decoder.tokens[i]
            for i, t in zip(cut, terminals, strict=True)
        )
        return values

    monkeypatch.setattr(FastLMPPO, "_terminal_values", compare)
    collect(model)
    # At the next turn of a dialogue the terminal observation extends the row's tokens: only the rest is encoded.
    assert checked["shared"] > 0 and checked["cut"] > 0, checked


def test_replies_that_all_end_on_the_rollouts_last_step_keep_their_own_trunk_states(tiny_model):
    """Every reply runs exactly its budget, so all rows restart together, also on a rollout's last step."""
    _, blocked = yes_no_tokens(allow_end=False)
    env = make_vec_env(SayYesEnv, n_envs=3, seed=0, env_kwargs={"model": "tiny", "max_reply_tokens": 2})
    policy_kwargs = {"trainable_layers": 1, "blocked_token_ids": blocked}
    model = tiny_ppo(env, n_steps=4, policy_kwargs=policy_kwargs, learning_rate=1e-3)
    torch.nn.init.normal_(model.policy.value_head.weight, std=0.5)
    for _ in range(2):
        buffer = collect(model)
        assert buffer.segment_starts[[0, 2]].all() and not buffer.segment_starts[[1, 3]].any()
        for sample in buffer.get(4):
            with torch.no_grad():
                _, log_prob, _ = model.policy.evaluate_actions(sample.observations, sample.actions)
            np.testing.assert_allclose(log_prob.numpy(), sample.old_log_prob.numpy(), atol=1e-5)
        model.train()


def test_a_model_whose_top_layers_cannot_run_alone_trains_the_whole_lm(tiny_model, monkeypatch):
    model = tiny_ppo(n_steps=8, policy_kwargs={"trainable_layers": 1})
    original = LMActorCriticPolicy.top_forward
    monkeypatch.setattr(LMActorCriticPolicy, "top_forward", lambda self, *a, **k: original(self, *a, **k) + 1.0)
    with pytest.warns(RuntimeWarning, match="cannot be run from layer 1"):
        buffer = collect(model)
    assert not buffer.trunk_states and model._decoder is None
    sample = next(iter(buffer.get(8)))
    assert sample.observations.trunk_states is None  # the whole LM runs in training
    collect(model)
    assert sum("cannot be run" in w for w in model.monitor.issued) == 1  # checked once


def test_lora_trains_only_the_adapters_and_the_value_head_and_round_trips(tiny_model, tmp_path):
    from baselines.checkpoint import load_checkpoint, save_checkpoint

    lora = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
    # "yes" (reward 1), "no" or the end token, 16-32 replies per rollout: their rewards all tie with a
    # chance under 1e-4, so the updates have a signal (a tiny random LM's Dialogue replies can all score 0).
    _, blocked = yes_no_tokens()
    env = say_yes_vec_env(n_envs=4)
    policy_kwargs = {"lora": lora, "blocked_token_ids": blocked}
    model = tiny_ppo(env, n_steps=8, policy_kwargs=policy_kwargs, learning_rate=1e-2, kl_coef=0.05)
    trained = {name for name, p in model.policy.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name or name.startswith("value_head") for name in trained)
    assert model.policy.frozen_depth == 0  # adapters sit in every layer: no frozen trunk to keep
    before = {name: p.detach().clone() for name, p in model.policy.named_parameters()}
    model.learn(64)
    assert 0 < model.last_rollout["reply_reward_mean"] < 1  # the last update had a signal
    changed = {name for name, p in model.policy.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= trained and any("lora_B" in name for name in changed)
    save_checkpoint(tmp_path / "checkpoint", model.policy, {"model": "tiny"})
    fresh = FastLMPPO(env, policy_kwargs={"model": "tiny", **policy_kwargs}, n_steps=8, batch_size=8)
    load_checkpoint(tmp_path / "checkpoint", fresh.policy)
    obs = obs_as_tensor(model._last_obs, "cpu")
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.policy.get_distribution(obs).distribution.logits,
            model.policy.get_distribution(obs).distribution.logits,
        )


def test_logged_reply_rewards_are_the_tasks_not_the_whitened_ones(tiny_model):
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

    class RecordReplyRewards(VecEnvWrapper):
        def __init__(self, venv):
            super().__init__(venv)
            self.reply_rewards = []

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            self.reply_rewards += [float(r) for r, info in zip(rewards, infos, strict=True) if "reply" in info]
            return obs, rewards, dones, infos

    recorder = RecordReplyRewards(say_yes_vec_env())
    env = VecNormalize(recorder, norm_obs=False, norm_reward=True)
    model = tiny_ppo(env, policy_kwargs={"blocked_token_ids": yes_no_tokens()[1]})
    buffer = collect(model)
    assert set(recorder.reply_rewards) == {0.0, 1.0}  # both replies occur
    assert model.last_rollout["reply_reward_mean"] == pytest.approx(np.mean(recorder.reply_rewards))
    assert buffer.rewards.max() > 1.0  # the algorithm itself trains on the whitened rewards


def test_repeated_prompts_are_read_once_by_the_rollouts_kv_cache(tiny_model):
    from textgym.wrappers import PromptPool

    def encoded(repeats):
        env = make_vec_env(
            "TextGym/Summarization-v0",
            n_envs=2,
            seed=0,
            env_kwargs={"model": "tiny", "max_context_tokens": 256, "max_reply_tokens": 3, "render_mode": None},
            wrapper_class=PromptPool,
            wrapper_kwargs={"size": 6, "seed": 0, "repeats": repeats},
        )
        model = tiny_ppo(env, n_steps=24)
        collect(model)
        values = model.logger.name_to_value
        return values["rollout/prefix_tokens_encoded"], values["rollout/prefix_tokens_reused"]

    (alone_encoded, alone_reused), (repeated_encoded, repeated_reused) = encoded(1), encoded(4)
    # 3-token replies: about 16 episodes; with repeats 3 of 4 restarts keep the whole ~100-token article.
    assert repeated_encoded < alone_encoded / 2 and repeated_reused > alone_reused


def test_kl_of_rollouts_that_end_no_reply_counts_towards_the_next_reply(tiny_model):
    # End tokens blocked: every 6-token reply runs to its budget, so a 4-step rollout ends none.
    env = token_vec_env()
    end_ids = sorted(env.get_attr("end_ids")[0])
    blocked = {"blocked_token_ids": end_ids}
    model = tiny_ppo(env, n_steps=4, policy_kwargs=blocked, kl_coef=0.05, target_kl_per_reply=6.0)
    model.policy.lm.get_input_embeddings().weight.data.normal_(std=1.0)  # a policy far from the reference
    _, callback = model._setup_learn(64, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    values = model.logger.name_to_value
    assert model.last_rollout["replies"] == 0 and "kl_per_reply" not in model.last_rollout
    assert "rollout/kl_per_reply" not in values and model.kl.coef == 0.05  # nothing to steer by yet
    carried = values["rollout/kl_per_token"] * 4 * 2
    assert model._kl_carried == pytest.approx(carried, rel=1e-5) and model._kl_carried > 1.0
    # Steps 5-8 of the same episodes: both replies end at step 6.
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert model.last_rollout["replies"] == 2
    expected = (carried + model.logger.name_to_value["rollout/kl_per_token"] * 4 * 2) / 2
    assert model.last_rollout["kl_per_reply"] == pytest.approx(expected, rel=1e-5)
    assert model.kl.coef != 0.05 and model._kl_carried == 0.0


def test_group_baseline_replaces_whole_episodes_advantages_by_leave_one_out(tiny_model):
    from gymnasium import spaces

    observation_space = spaces.Dict({"input_ids": spaces.Box(0, 9, (4,), np.int32)})
    buffer = ppo_buffer.SegmentRolloutBuffer(6, observation_space, spaces.Discrete(10), "cpu", 1.0, 1.0, 2)
    buffer.reset()
    # env 0: A (prompt p, steps 0-1, reward 1), B (p, 2-3, reward 0), C (p, 4-5, still running);
    # env 1: the end of an episode begun in the last rollout (p, step 0), D (q, 1-3, reward 0.5, alone),
    # E (p, 4-5, reward 0.25).
    buffer.prompt_keys[:, 0], buffer.prompt_keys[:, 1] = ["p"] * 6, ["p", "q", "q", "q", "p", "p"]
    buffer.episode_starts[:, 0], buffer.episode_starts[:, 1] = [1, 0, 1, 0, 1, 0], [0, 1, 0, 0, 1, 0]
    buffer.episode_ends[:, 0], buffer.episode_ends[:, 1] = [0, 1, 0, 1, 0, 0], [1, 0, 0, 1, 0, 1]
    buffer.task_rewards[:, 0], buffer.task_rewards[:, 1] = [0, 1, 0, 0, 0, 0], [0.3, 0, 0, 0.5, 0, 0.25]
    buffer.rewards[:] = buffer.task_rewards - 0.1  # a KL penalty of 0.1 at every step
    buffer.advantages[:] = 99.0
    assert buffer.apply_group_baseline() == pytest.approx(6 / 12)
    # Group p: A, B, E. A: baseline (0 + 0.25) / 2, returns to go 0.8, 0.9; B: (1 + 0.25) / 2, -0.2, -0.1;
    # E: (1 + 0) / 2, 0.05, 0.15. C, D and the continued episode keep their GAE advantages.
    np.testing.assert_allclose(buffer.advantages[:, 0], [0.675, 0.775, -0.825, -0.725, 99, 99], atol=1e-6)
    np.testing.assert_allclose(buffer.advantages[:, 1], [99, 99, 99, 99, -0.45, -0.35], atol=1e-6)


def test_group_baseline_in_a_rollout_and_learning_without_the_critic(tiny_model):
    yes_id, blocked = yes_no_tokens()
    # One prompt: every whole episode of a rollout is in one group. Wrapped as train.py wraps it for
    # --whiten-rewards (values left as they are), so the prompt ids are read through a VecEnvWrapper.
    env = VecNormalize(say_yes_vec_env(n_envs=4), norm_obs=False, norm_reward=False)
    probe = SayYesEnv(model="tiny", max_context_tokens=32, max_reply_tokens=2)
    probe.yes_id = yes_id
    kwargs = {"policy_kwargs": {"blocked_token_ids": blocked}, "n_epochs": 4, "learning_rate": 1e-3}
    model = tiny_ppo(env, n_steps=16, group_baseline=True, vf_coef=0.0, gamma=1.0, **kwargs)  # no critic learning
    assert not model.normalize_advantage
    buffer = collect(model)
    assert set(buffer.prompt_keys.flatten()) == {"agree"}
    assert model.logger.name_to_value["rollout/group_baseline_fraction"] > 0.8
    # Each whole episode's first step: its return less the mean reward of the rollout's other whole episodes.
    starts = np.argwhere(buffer.episode_starts == 1)
    whole = [(t, e) for t, e in starts if buffer.episode_ends[t:, e].any()]
    totals = {}
    for t, e in whole:
        end = t + int(np.argmax(buffer.episode_ends[t:, e]))
        totals[(t, e)] = (buffer.task_rewards[t : end + 1, e].sum(), buffer.rewards[t : end + 1, e].sum())
    task_sum = sum(task for task, _ in totals.values())
    for (t, e), (task, reward) in totals.items():
        assert buffer.advantages[t, e] == pytest.approx(reward - (task_sum - task) / (len(totals) - 1), abs=1e-5)
    before = yes_probability(model, probe)
    model.learn(6 * 64)
    assert yes_probability(model, probe) > before + 0.2


@pytest.mark.parametrize("trainable_layers", [None, 1], ids=["full-lm", "frozen-trunk-states"])
def test_a_tempered_policy_starts_at_zero_kl_from_its_reference(tiny_model, trainable_layers):
    # The reference is the starting policy: sampled at the policy's temperature, an untrained policy is
    # no KL away from it, whatever the temperature (against the untempered LM it would start a KL away).
    kwargs = {"temperature": 0.5, "trainable_layers": trainable_layers}
    model = tiny_ppo(n_steps=8, policy_kwargs=kwargs, kl_coef=0.05, target_kl_per_reply=6.0)
    buffer = collect(model)
    assert abs(model.logger.name_to_value["rollout/kl_per_token"]) < 1e-4
    assert np.abs(buffer.rewards - buffer.task_rewards).max() < 1e-4  # no per-step penalty either


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf"), float("nan")])
def test_policy_rejects_a_temperature_that_is_not_a_finite_positive_number(tiny_model, temperature):
    with pytest.raises(ValueError, match=f"temperature must be a finite number > 0, got {temperature!r}"):
        tiny_ppo(policy_kwargs={"temperature": temperature})
