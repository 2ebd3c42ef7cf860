"""The DQN baseline: a Q head over frozen-LM candidate features, on stock SB3 DQN."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.env_util import make_vec_env

import textgym  # noqa: F401
from baselines.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from baselines.common.cli import parse_train_args
from baselines.dqn import (
    LMQPolicy,
    build_dqn,
    candidate_references,
    evaluate_q_policy,
    replay_bytes_per_transition,
)
from baselines.dqn.encoder import NUM_SCALARS
from textgym.core import TaskPrompt, TextTask, TurnResult
from textgym.lm import Completion
from textgym.stats import bootstrap_ci, cluster_means
from textgym.text_env import TextEnv

#: The value of each reply; the env proposes 4 of these words in a seeded random order.
WORD_VALUES = {"yes": 1.0, "sure": 0.7, "maybe": 0.4, "no": 0.0, "never": 0.0, "later": 0.2}
PICK_WORD_ID = "TestPickWord-v0"


class PickWordTask(TextTask):
    """Reward a reply by which word it is: the candidate's slot carries no information."""

    def __init__(self, split: str = "train"):
        self.split = split  # one prompt for every split

    def reset(self, rng, options=None):
        return TaskPrompt([{"role": "user", "content": "Pick a word."}], "pick")

    def step(self, reply):
        return TurnResult(WORD_VALUES.get(reply, 0.0), True)


class ShuffledWords:
    """A stand-in proposer: K distinct words in a seeded random order (fast and index-independent)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def propose(self, messages, num_candidates, max_new_tokens, seed):
        words = np.random.default_rng(seed).choice(list(WORD_VALUES), size=num_candidates, replace=False)
        return [
            Completion(str(w), True, tuple(self.tokenizer(str(w), add_special_tokens=False)["input_ids"]))
            for w in words
        ]


class PickWordEnv(TextEnv):
    """A one-turn candidate-level env whose best candidate sits in a random slot."""

    task_class = PickWordTask

    def __init__(self, **kwargs):
        super().__init__(**{"granularity": "candidate", "model": "tiny", "max_context_tokens": 24, **kwargs})

    def _load_lm(self):
        super()._load_lm()
        self.proposer = ShuffledWords(self.tokenizer)


if PICK_WORD_ID not in gym.registry:
    gym.register(PICK_WORD_ID, entry_point=PickWordEnv)

ENV_KWARGS = {"num_candidates": 4, "max_reply_tokens": 4}


def make_dqn(env, **kwargs):
    settings = dict(
        policy_kwargs={"model": "tiny", "net_arch": [32]},
        learning_rate=3e-3,
        learning_starts=24,
        batch_size=32,
        buffer_size=1000,
        train_freq=1,
        gradient_steps=4,
        target_update_interval=16,
        exploration_fraction=0.5,
        gamma=0.5,
        seed=0,
        device="cpu",
    )
    settings.update(kwargs)
    return DQN(LMQPolicy, env, **settings)


def test_dqn_learns_to_pick_the_rewarded_candidate(tiny_model):
    env = gym.make(PICK_WORD_ID, **ENV_KWARGS)
    model = make_dqn(env)
    before = evaluate_q_policy(model, PICK_WORD_ID, ENV_KWARGS, episodes=40, seed=500)
    model.learn(160)
    after = evaluate_q_policy(model, PICK_WORD_ID, ENV_KWARGS, episodes=40, seed=500)
    references = candidate_references(PICK_WORD_ID, ENV_KWARGS, episodes=40, seed=500)
    random, top, best = (references[name]["reward_mean"] for name in ("random", "top", "best_of_k"))
    print(f"greedy {before['reward_mean']:.3f} -> {after['reward_mean']:.3f}; random {random:.3f} best {best:.3f}")
    # The untrained head ties every candidate: greedy is candidate 0, the "LM's top" reference.
    assert before["reward_mean"] == pytest.approx(top)
    assert before["top_candidate_rate"] == 1.0
    assert after["reward_mean"] > random + 0.25
    assert after["reward_mean"] > best - 0.1
    assert len(after["rewards"]) == 40 and after["reward_ci95"][0] <= after["reward_mean"] <= after["reward_ci95"][1]


def test_evaluation_with_a_proposal_cache_replays_its_episodes_without_proposing(tiny_model, tmp_path, monkeypatch):
    model = make_dqn(gym.make(PICK_WORD_ID, **ENV_KWARGS))
    model.learn(40)  # a head that does not always pick candidate 0
    cache = tmp_path / "proposals"
    fresh = evaluate_q_policy(model, PICK_WORD_ID, ENV_KWARGS, episodes=6, seed=700, proposal_cache=str(cache))
    assert len(list(cache.glob("*.json"))) == 6  # one-turn episodes: one set each
    with monkeypatch.context() as patched:
        patched.setattr(ShuffledWords, "propose", lambda *a: pytest.fail("proposed again"))
        again = evaluate_q_policy(model, PICK_WORD_ID, ENV_KWARGS, episodes=6, seed=700, proposal_cache=str(cache))
    assert again["rewards"] == fresh["rewards"] and len(set(fresh["rewards"])) > 1
    plain = evaluate_q_policy(model, PICK_WORD_ID, ENV_KWARGS, episodes=6, seed=700)
    assert plain["rewards"] == fresh["rewards"]  # the stored sets are the ones the env proposes itself


def test_target_network_shares_the_frozen_trunk(tiny_model):
    model = make_dqn(gym.make(PICK_WORD_ID, **ENV_KWARGS))
    policy = model.policy
    online, target = policy.q_net, policy.q_net_target
    assert online.encoder is target.encoder is policy.encoder
    trunk = list(policy.encoder.lm.parameters())
    assert not any(p.requires_grad for p in trunk)
    head = sum(p.numel() for p in online.parameters())
    # Each network holds only its head; the trunk is in neither, nor in the policy's state or optimizer.
    assert sum(p.numel() for p in target.parameters()) == head
    assert sum(p.numel() for p in policy.parameters()) == 2 * head
    assert head < sum(p.numel() for p in trunk) / 100
    trunk_ids = {id(p) for p in trunk}
    assert not trunk_ids & {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert not any(name.startswith(("lm.", "encoder.")) for name in policy.state_dict())
    # The target head is a copy, not an alias, of the online head.
    for a, b in zip(online.parameters(), target.parameters(), strict=True):
        assert a.data_ptr() != b.data_ptr() and torch.equal(a, b)


def test_replay_buffer_keeps_integer_ids_and_features_are_cached(tiny_model):
    env = gym.make(PICK_WORD_ID, **ENV_KWARGS)
    model = make_dqn(env, learning_starts=4)
    model.learn(12)
    observations = model.replay_buffer.observations
    assert observations["input_ids"].dtype == np.int32 and observations["candidate_mask"].dtype == np.int8
    context, candidates = 24, 4 * 4
    expected = 2 * (context * (4 + 1) + candidates * (4 + 1)) + 8 + 3 * 4
    assert replay_bytes_per_transition(model) == expected
    encoder = model.policy.encoder
    assert encoder.hits > encoder.misses > 0  # each distinct observation went through the LM once


def test_a_scalar_q_head_reads_only_the_candidate_scalars_and_learns(tiny_model, capsys):
    env = gym.make(PICK_WORD_ID, **ENV_KWARGS)
    model = make_dqn(env, policy_kwargs={"model": "tiny", "net_arch": [32], "q_features": "scalars"})
    assert model.policy.q_net.head[0].in_features == NUM_SCALARS
    model.learn(160)
    after = evaluate_q_policy(model, PICK_WORD_ID, ENV_KWARGS, episodes=40, seed=500)
    random = candidate_references(PICK_WORD_ID, ENV_KWARGS, episodes=40, seed=500)["random"]["reward_mean"]
    # The words are one token each: only their log-probabilities under the LM tell them apart, and suffice.
    assert after["reward_mean"] > random + 0.25

    class ShiftedStates:
        """The encoder's features with every LM-state feature moved: a scalar head must not notice."""

        def __init__(self, encoder):
            self.encoder, self.statistics, self.scalar_dim = encoder, encoder.statistics, encoder.scalar_dim

        def __call__(self, obs):
            features = self.encoder(obs).clone()
            features[..., :-NUM_SCALARS] += 5.0 * torch.randn(features[..., :-NUM_SCALARS].shape)
            return features

    observation, _ = env.reset(seed=3)
    batch = {k: torch.as_tensor(v[None]) for k, v in observation.items()}
    q_net = model.policy.q_net
    model.policy.set_training_mode(False)
    with torch.no_grad():
        expected = q_net(batch)
        q_net.encoder = ShiftedStates(q_net.encoder)
        torch.testing.assert_close(q_net(batch), expected)
    # With a guide model its agreement is one more scalar the head reads.
    guided = make_dqn(env, policy_kwargs={"model": "tiny", "q_features": "scalars", "guide_model": "tiny"})
    assert guided.policy.q_net.head[0].in_features == NUM_SCALARS + 1

    with pytest.raises(ValueError, match="q_features must be one of all, scalars, got 'hidden'"):
        make_dqn(env, policy_kwargs={"model": "tiny", "q_features": "hidden"})
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--q-features", "hidden"])
    assert exit_info.value.code == 2 and "'hidden'" in capsys.readouterr().err


def test_checkpoint_round_trip_and_corruption(tmp_path, tiny_model):
    env = gym.make(PICK_WORD_ID, **ENV_KWARGS)
    model = make_dqn(env, learning_starts=4)
    model.learn(16)
    observation, _ = env.reset(seed=3)
    batch = {k: torch.as_tensor(v[None]) for k, v in observation.items()}
    model.policy.set_training_mode(False)
    with torch.no_grad():
        expected = model.policy.q_net(batch)
    assert expected.abs().sum() > 0
    save_checkpoint(tmp_path / "ckpt", model.policy, {"algo": "dqn", "model": "tiny"})
    fresh = make_dqn(gym.make(PICK_WORD_ID, **ENV_KWARGS), seed=1)
    load_checkpoint(tmp_path / "ckpt", fresh.policy)
    with torch.no_grad():
        torch.testing.assert_close(fresh.policy.q_net(batch), expected)
        torch.testing.assert_close(fresh.policy.q_net_target(batch), model.policy.q_net_target(batch))
    assert fresh.policy.encoder.statistics.count == model.policy.encoder.statistics.count
    # A Q head for another K does not fit.
    other = make_dqn(gym.make(PICK_WORD_ID, num_candidates=3, max_reply_tokens=4), seed=1)
    load_checkpoint(tmp_path / "ckpt", other.policy)  # the head is K-independent: it fits ...
    with pytest.raises(ValueError, match="built for K=3 candidates"):
        other.policy.q_net(batch)  # ... but observations of another K are refused
    (tmp_path / "ckpt" / "policy.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_checkpoint(tmp_path / "ckpt", fresh.policy)


@pytest.mark.parametrize("env_id", ["TextGym/Dialogue-v0", "TextGym/DialogueUtterance-v0"])
def test_token_and_utterance_envs_are_refused(env_id, tiny_model):
    env = gym.make(env_id, model="tiny", max_context_tokens=32, max_reply_tokens=4)
    if isinstance(env.action_space, gym.spaces.Discrete):
        with pytest.raises(ValueError, match="needs a candidate-level env"):
            DQN(LMQPolicy, env, policy_kwargs={"model": "tiny"}, device="cpu")
    with pytest.raises(ValueError, match="needs a candidate-level env.*Token- and utterance-level envs"):
        build_dqn(_cli_args(env_id), make_vec_env(lambda: env))
    with pytest.raises(ValueError, match="level env: it proposes no candidates"):
        candidate_references(env_id, {"model": "tiny"}, episodes=1, seed=0)


def test_q_weight_decay_reaches_the_heads_optimizer_and_shrinks_the_head(tiny_model):
    norms = {}
    for decay in (0.0, 5.0):
        args = _cli_args(PICK_WORD_ID, q_weight_decay=decay, q_hidden=0, learning_starts=4, n_envs=2, seed=0)
        model = build_dqn(args, make_vec_env(lambda: gym.make(PICK_WORD_ID, **ENV_KWARGS), n_envs=2, seed=0))
        assert [group["weight_decay"] for group in model.policy.optimizer.param_groups] == [decay]
        model.learn(24)
        norms[decay] = float(model.policy.q_net.head[-1].weight.norm())
    assert norms[5.0] < 0.5 * norms[0.0]


def test_changed_k_or_reply_budget_is_refused(tiny_model):
    model = make_dqn(gym.make(PICK_WORD_ID, **ENV_KWARGS))
    with pytest.raises(ValueError, match="trained with K=4 candidates of 4 tokens .* gives K=3 of 4"):
        evaluate_q_policy(model, PICK_WORD_ID, {"num_candidates": 3, "max_reply_tokens": 4}, episodes=1)
    with pytest.raises(ValueError, match="gives K=4 of 6"):
        evaluate_q_policy(model, PICK_WORD_ID, {"num_candidates": 4, "max_reply_tokens": 6}, episodes=1)


def _cli_args(env_id, **overrides):
    """DQN run arguments with the table's defaults (not parsed: the CLI refuses a token-level id before building)."""
    from baselines.common.config import Args, defaults_for

    return Args(**{**defaults_for("dqn"), "env": env_id, "model": "tiny", **overrides})


def test_cli_trains_resumes_and_evaluates_a_dqn_checkpoint(tmp_path, tiny_model, capsys):
    from baselines import evaluate, train

    out = tmp_path / "run"
    common = ["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--model", "tiny", "--out", str(out)]
    budget = ["--max-context-tokens", "48", "--max-reply-tokens", "2", "--num-candidates", "3", "--eval-episodes", "2"]
    flags = [*common, *budget, "--learning-starts", "3", "--no-progress-bar", "--torch-threads", "1", "--n-envs", "2"]
    assert train.main([*flags, "--total-timesteps", "6"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "dqn" and summary["env_steps"] == 6
    assert summary["config"]["learning_rate"] == 1e-3 and summary["config"]["gamma"] == 0.5  # dqn defaults
    parsed = train.parse_args(["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--model", "tiny"])
    assert (parsed.batch_size, parsed.learning_rate, parsed.gamma) == (64, 1e-3, 0.5)  # the table's dqn defaults
    assert summary["dqn"]["replay_bytes_per_transition"] > 0
    assert (out / "checkpoint" / "policy.safetensors").is_file() and list((out / "tb").iterdir())
    assert train.main([*flags, "--total-timesteps", "8", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["env_steps"] == 8
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(out / "checkpoint"), "--episodes", "2"]) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{") :])
    assert result["episodes"] == 2 and result["deterministic"] and "top_candidate_rate" in result
    (out / "checkpoint" / "policy.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="unreadable weights"):
        train.load_trained(str(out / "checkpoint"))


def test_train_env_with_a_prompt_pool_reuses_proposals(tiny_model):
    from baselines.common.loading import make_train_env
    from baselines.proposal_vec_env import ReusedProposals

    args = _cli_args(
        "TextGym/SentimentCandidate-v0",
        n_envs=3,
        train_prompts=4,
        proposal_variants=1,
        max_context_tokens=48,
        max_reply_tokens=2,
        num_candidates=3,
    )
    env = make_train_env(args)
    reuse = env.batcher.lm
    assert isinstance(reuse, ReusedProposals) and reuse.variants == 1
    pool = env.envs[0].get_wrapper_attr("pool")
    assert len(pool) == 4 and all(e.get_wrapper_attr("pool") == pool for e in env.envs)
    env.reset()
    prompts = {info["prompt_id"] for info in env.reset_infos}
    for _ in range(6):
        env.step(np.zeros(3, dtype=np.int64))  # one-turn episodes: every env resets every step
        prompts |= {info["prompt_id"] for info in env.reset_infos}
    assert prompts <= set(pool)
    # 21 contexts met, at most 4 generated: the rest were answered from the kept sets.
    assert reuse.misses <= 4 and reuse.hits >= 17
    env.close()


def test_runs_sharing_a_pool_seed_and_a_train_proposal_cache_meet_the_stored_first_turns(tiny_model, tmp_path):
    """Seeds 1 and 2 of a recipe train on the pool of --pool-seed 0, and every first turn of it
    that store_first_turns generated beforehand is read from the store, not generated again."""
    import gymnasium as gym

    from baselines.common.config import env_kwargs_of
    from baselines.common.loading import make_train_env, pool_seed_of
    from baselines.proposal_vec_env import ReusedProposals, StoredProposals, store_first_turns
    from textgym.wrappers import PromptPool

    store = str(tmp_path / "train_sets")
    shape = {"max_context_tokens": 48, "max_reply_tokens": 2, "num_candidates": 3, "n_envs": 3}
    recipe = {"train_prompts": 5, "pool_seed": 0, "proposal_variants": 2, "train_proposal_cache": store, **shape}
    args = [_cli_args("TextGym/SentimentCandidate-v0", seed=seed, **recipe) for seed in (1, 2)]
    assert [pool_seed_of(a) for a in args] == [0, 0]
    lone = gym.make(args[0].env, **env_kwargs_of(args[0]))
    pool = PromptPool(lone, 5, 0).pool
    assert store_first_turns(lone, pool, 2, store) == (10, 0)  # 5 prompts x 2 variants
    assert store_first_turns(lone, pool, 2, store) == (0, 10)  # a second call finds them all
    lone.close()
    met: dict[tuple[bytes, bytes], set[bytes]] = {}
    for run in args:
        env = make_train_env(run)
        reuse = env.batcher.lm
        assert isinstance(reuse, ReusedProposals) and isinstance(reuse.lm, StoredProposals)
        assert env.envs[0].get_wrapper_attr("pool") == pool  # --pool-seed 0, not the run's seed
        obs = env.reset()
        for _ in range(8):  # one-turn episodes: every step resets every env to a pool prompt
            for row in range(3):
                met.setdefault((obs["input_ids"][row].tobytes(), obs["attention_mask"][row].tobytes()), set()).add(
                    obs["candidate_ids"][row].tobytes()
                )
            obs, _, _, _ = env.step(np.zeros(3, dtype=np.int64))
        assert reuse.lm.misses == 0 and reuse.lm.hits == reuse.misses > 0  # every set came from the store
        env.close()
    # Both runs met at most the 2 stored variants of each of the 5 contexts, and some context twice.
    assert len(met) <= 5 and all(len(sets) <= 2 for sets in met.values()) and sum(map(len, met.values())) > len(met)


def test_train_env_pool_holds_only_prompts_that_fit(tiny_model):
    from baselines.common.config import Args, defaults_for
    from baselines.common.loading import make_train_env

    overrides = {"env": "TextGym/Summarization-v0", "model": "tiny", "n_envs": 2, "train_prompts": 5}
    args = Args(**{**defaults_for("ppo"), **overrides, "max_prompt_tokens": 120})
    env = make_train_env(args)
    task, chat = env.envs[0].unwrapped.task, env.envs[0].unwrapped.chat
    pool = env.envs[0].get_wrapper_attr("pool")
    lengths = [len(chat.encode(task.reset(np.random.default_rng(0), {"prompt_id": p}).messages)) for p in pool]
    assert len(pool) == 5 and max(lengths) <= 120
    assert env.envs[1].get_wrapper_attr("pool") == pool
    unlimited = make_train_env(Args(**{**defaults_for("ppo"), **overrides})).envs[0].get_wrapper_attr("pool")
    assert unlimited != pool  # the same seed without the limit draws (some) longer prompts
    env.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algo": "ppo", "env": "TextGym/Sentiment-v0", "proposal_variants": 2}, "--proposal-variants 2: only"),
        ({"algo": "ppo", "env": "TextGym/Sentiment-v0", "proposal_cache": "p"}, "--proposal-cache p: only"),
        ({"train_prompts": -1}, "--train-prompts must be an integer >= 0, got -1"),
        ({"prompt_repeats": 0}, "--prompt-repeats must be an integer >= 1, got 0"),
        ({"prompt_repeats": 4}, "--prompt-repeats 4 applies to a pool of prompts: give --train-prompts N too"),
        ({"max_prompt_tokens": 64}, "--max-prompt-tokens 64 applies to a pool of prompts: give --train-prompts N too"),
        ({"max_prompt_tokens": -1, "train_prompts": 4}, "--max-prompt-tokens must be an integer >= 0, got -1"),
        ({"algo": "ppo", "env": "TextGym/Sentiment-v0", "group_baseline": True}, "--group-baseline True applies to a"),
        ({"proposal_variants": -3}, "proposal_variants must be an integer >= 0, got -3"),
        ({"train_proposal_cache": "t"}, "--train-proposal-cache t keeps the reused candidate sets: give --proposal-va"),
        ({"train_proposal_cache": "t", "proposal_variants": 1, "env_workers": 2}, "--train-proposal-cache t is a dir"),
        (
            {"algo": "ppo", "env": "TextGym/Sentiment-v0", "train_proposal_cache": "t"},
            "--train-proposal-cache t: only",
        ),
        ({"pool_seed": 3}, "--pool-seed 3 applies to a pool of prompts: give --train-prompts N too"),
        ({"pool_seed": -2, "train_prompts": 4}, "--pool-seed must be an integer >= -1, got -2"),
    ],
)
def test_bad_reuse_flags_are_named(tiny_model, overrides, message):
    from baselines.common.loading import make_train_env

    with pytest.raises(ValueError, match=message):
        make_train_env(_cli_args("TextGym/SentimentCandidate-v0", n_envs=1, **overrides))


def test_rescore_candidates_pairs_runs_with_the_top_candidate_on_shared_sets(tmp_path, tiny_model, monkeypatch):
    from pathlib import Path

    from baselines.common.config import env_kwargs_of
    from baselines.common.loading import build, checkpoint_metadata, load_trained

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import rescore_candidates

    runs = []
    for seed, steps in ((0, 160), (1, 48)):
        overrides = {"seed": seed, "num_candidates": 4, "max_reply_tokens": 4, "n_envs": 1, "learning_starts": 24}
        args = _cli_args(PICK_WORD_ID, device="cpu", torch_threads=1, **overrides)
        model = build(args, make_vec_env(PICK_WORD_ID, n_envs=1, seed=seed, env_kwargs=env_kwargs_of(args)))
        model.learn(steps)
        save_checkpoint(tmp_path / f"run{seed}" / "checkpoint", model.policy, checkpoint_metadata(args, model))
        runs.append(str(tmp_path / f"run{seed}"))
    out = tmp_path / "rescored.json"
    cache = tmp_path / "proposals"
    argv = [*runs, "--episodes", "12", "--proposal-cache", str(cache), "--torch-threads", "1", "--out", str(out)]
    assert rescore_candidates.main(argv) == 0
    assert len(list(cache.glob("*.json"))) == 12  # one set per prompt, shared by the top candidate and both runs
    result = json.loads(out.read_text(encoding="utf-8"))
    top, rewards = result["top"], result["rewards"]
    kwargs = {**env_kwargs_of(args), "split": "validation"}
    assert top == candidate_references(PICK_WORD_ID, kwargs, episodes=12)["top"]["rewards"] and len(set(top)) > 1
    for run in runs:
        alone = evaluate_q_policy(load_trained(run + "/checkpoint", device="cpu")[0], PICK_WORD_ID, kwargs, episodes=12)
        assert rewards[run] == alone["rewards"]  # the cached sets are those the env proposes itself
        expected_gain = float(np.mean(rewards[run]) - np.mean(top))
        assert result["runs"][run]["gain"] == pytest.approx(expected_gain) and rewards[run] != top
    pooled = np.concatenate([np.subtract(rewards[run], top) for run in runs])
    assert result["gain_mean"] == pytest.approx(pooled.mean())
    low, high = result["gain_ci95_prompt_runs"]
    assert low <= result["gain_mean"] <= high and low < high
    # The second CI resamples the validation prompts by id: 12 episodes of a small split revisit prompts.
    prompt_ids = result["prompt_ids"]
    assert len(prompt_ids) == 12 and result["distinct_prompts"] == len(set(prompt_ids)) < 12
    per_episode = np.mean([np.subtract(rewards[run], top) for run in runs], axis=0)
    assert result["gain_ci95_prompts"] == pytest.approx(bootstrap_ci(cluster_means(prompt_ids, list(per_episode))))


def test_references_play_only_the_pickers_asked_for_and_refuse_unknown_ones(tiny_model):
    every = candidate_references(PICK_WORD_ID, ENV_KWARGS, episodes=6, seed=900)
    top = candidate_references(PICK_WORD_ID, ENV_KWARGS, episodes=6, seed=900, pickers=("top",))
    assert {"random", "best_of_k"}.isdisjoint(top) and top["top"] == every["top"]
    with pytest.raises(ValueError, match=r"pickers must be some of .*got \('oracle',\)"):
        candidate_references(PICK_WORD_ID, ENV_KWARGS, episodes=1, pickers=("oracle",))


def test_references_cli_shares_its_proposal_cache_with_the_runs_evaluations(tiny_model, tmp_path, monkeypatch, capsys):
    from baselines.dqn.references import main

    cache = tmp_path / "proposals"
    flags = ["--env", PICK_WORD_ID, "--model", "tiny", "--num-candidates", "4", "--max-reply-tokens", "4"]
    assert main([*flags, "--episodes", "5", "--proposal-cache", str(cache)]) == 0
    top = json.loads(capsys.readouterr().out)["top"][0]
    assert len(list(cache.glob("*.json"))) == 5
    model = make_dqn(gym.make(PICK_WORD_ID, **ENV_KWARGS))  # untrained: greedy is the top candidate
    # The kwargs a run of baselines.train evaluates with: the sets stored above answer every episode.
    run_kwargs = {"model": "tiny", "render_mode": None, **ENV_KWARGS, "split": "validation"}
    with monkeypatch.context() as patched:
        patched.setattr(ShuffledWords, "propose", lambda *a: pytest.fail("proposed again"))
        result = evaluate_q_policy(model, PICK_WORD_ID, run_kwargs, episodes=5, proposal_cache=str(cache))
    assert result["reward_mean"] == pytest.approx(top, abs=1e-4)


def test_a_guide_model_adds_each_candidates_rouge_l_against_the_guides_greedy_reply(tiny_model, tmp_path, monkeypatch):
    from baselines.common.candidates import CANDIDATE_KEYS, candidate_shape
    from baselines.dqn.encoder import NUM_SCALARS, CandidateEncoder
    from textgym.metrics.functional import rouge

    env = gym.make(PICK_WORD_ID, **ENV_KWARGS)
    rows, texts = [], []
    for seed in range(4):
        rows.append(env.reset(seed=seed)[0])
        texts.append([candidate.text for candidate in env.unwrapped._candidates])
    obs = {key: torch.as_tensor(np.stack([row[key] for row in rows])) for key in CANDIDATE_KEYS}
    k, length = candidate_shape(env.observation_space, env.action_space)
    tokenizer = env.unwrapped.tokenizer
    env.close()
    store = tmp_path / "features"
    plain = CandidateEncoder("tiny", k, length, feature_store=store)
    guided = CandidateEncoder("tiny", k, length, feature_store=store, guide_model="tiny")
    assert guided.feature_dim == plain.feature_dim + 1
    # The tiny guide's own greedy reply: deterministic, and each agreement a ROUGE-L F in [0, 1].
    own = guided.encode({key: value.numpy() for key, value in obs.items()})[..., -NUM_SCALARS - 1]
    assert torch.equal(own, guided.encode({key: value.numpy() for key, value in obs.items()})[..., -NUM_SCALARS - 1])
    assert bool(((own >= 0) & (own <= 1)).all())
    # A guide that replies "yes sure" to every context: each candidate scores its ROUGE-L against that reply.
    reply = tokenizer("yes sure", add_special_tokens=False)["input_ids"]
    calls = []

    def says_yes_sure(input_ids, attention_mask, **settings):
        calls.append(settings)
        return torch.cat([input_ids, torch.tensor([reply] * len(input_ids))], 1)

    monkeypatch.setattr(guided.guide, "generate", says_yes_sure)
    features, reference = guided(obs), plain(obs)
    assert calls[0]["do_sample"] is False and calls[0]["max_new_tokens"] == length
    expected = torch.tensor([rouge(row, ["yes sure"] * k)["rougeL"] for row in texts])
    assert (expected > 0.6).any() and (expected == 0).any()  # "yes" and "sure" score 2/3, the other words 0
    assert torch.allclose(features[..., -NUM_SCALARS - 1], expected, atol=1e-3)
    # Every other feature is the plain encoder's, and the two keep their features apart in the store.
    others = torch.cat([features[..., : -NUM_SCALARS - 1], features[..., -NUM_SCALARS:]], -1)
    assert torch.equal(others, reference)
    assert len(list(store.iterdir())) == 2


def test_a_guide_model_with_another_vocabulary_is_refused_by_name(tiny_model, monkeypatch):
    import baselines.dqn.encoder as encoder_module

    class OtherVocabulary:
        def get_input_embeddings(self):
            return torch.nn.Embedding(10, 4)

    real = encoder_module.load_shared_causal_lm
    monkeypatch.setattr(
        encoder_module, "load_shared_causal_lm", lambda name: OtherVocabulary() if name == "other" else real(name)
    )
    with pytest.raises(ValueError, match="guide_model 'other' has 10 input tokens but model 'tiny' has"):
        encoder_module.CandidateEncoder("tiny", 4, 4, guide_model="other")


def test_a_feature_store_gives_another_encoder_the_same_features_without_running_the_trunk(tiny_model, tmp_path):
    from baselines.common.candidates import CANDIDATE_KEYS, candidate_shape
    from baselines.dqn.encoder import CandidateEncoder

    env = gym.make(PICK_WORD_ID, **ENV_KWARGS)
    rows = [env.reset(seed=seed)[0] for seed in range(5)]
    obs = {key: torch.as_tensor(np.stack([row[key] for row in rows])) for key in CANDIDATE_KEYS}
    k, length = candidate_shape(env.observation_space, env.action_space)
    env.close()
    store = tmp_path / "features"
    first = CandidateEncoder("tiny", k, length, feature_store=store)
    computed = first(obs)
    assert first.encoded == 5 and first.stored_hits == 0
    (directory,) = list(store.iterdir())
    assert len(list(directory.glob("*.npy"))) == 5
    second = CandidateEncoder("tiny", k, length, feature_store=store)
    second.update_statistics = True  # features read from the store define the standardisation as encoded ones do
    assert torch.equal(second(obs), computed)
    assert second.encoded == 0 and second.stored_hits == 5 and second.statistics.count == 5 * k
    # A file that does not read back as (K, feature_dim) numbers is computed again; another layer never meets these.
    victim = sorted(directory.glob("*.npy"))[0]
    np.save(victim, np.zeros((k + 1, first.feature_dim), dtype=np.float16))
    third = CandidateEncoder("tiny", k, length, feature_store=store)
    assert torch.equal(third(obs), computed) and (third.encoded, third.stored_hits) == (1, 4)
    other_layer = CandidateEncoder("tiny", k, length, feature_layer=0, feature_store=store)
    other_layer(obs)
    assert other_layer.stored_hits == 0 and len(list(store.iterdir())) == 2
