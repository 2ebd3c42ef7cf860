"""Every registered TextGym id, through Gymnasium's and SB3's checkers and the usual round trips."""

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import textgym

ALL_IDS = textgym.env_ids()
TRAINABLE_IDS = [i for i in ALL_IDS if gym.spec(i).kwargs["granularity"] in ("token", "candidate")]


def make(env_id, **kwargs):
    return gym.make(env_id, model="tiny", **kwargs)


def test_ids_are_namespaced_and_versioned():
    assert len(ALL_IDS) >= 3
    for env_id in ALL_IDS:
        spec = gym.spec(env_id)
        assert spec.namespace == "TextGym" and spec.version is not None
    granularities = {gym.spec(i).kwargs["granularity"] for i in ALL_IDS if "Dialogue" in i}
    assert granularities == {"token", "candidate", "utterance"}


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_check_env(env_id, tiny_model):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_sb3_check_env_without_warnings(env_id, tiny_model):
    env = make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped, warn=True)


def rollout(env, seed, steps=40):
    """Seeded rollout with seeded random actions; returns everything observable."""
    trace = []
    observation, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace.append((observation, info))
    for _ in range(steps):
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((observation, reward, terminated, truncated, info))
        if terminated or truncated:
            observation, info = env.reset()
            trace.append((observation, info))
    return trace


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_same_seed_same_episode_across_instances(env_id, tiny_model):
    # Candidate-level steps run the env's LM; fewer of them still cover several episodes.
    steps = 12 if gym.spec(env_id).kwargs["granularity"] == "candidate" else 40
    first, second = rollout(make(env_id), seed=3, steps=steps), rollout(make(env_id), seed=3, steps=steps)
    assert_same(first, second)
    other = rollout(make(env_id), seed=4, steps=steps)
    with pytest.raises(AssertionError):
        assert_same(first, other)


@pytest.mark.parametrize("env_id", ALL_IDS)
@pytest.mark.parametrize("clone", [pickle.dumps, copy.deepcopy], ids=["pickle", "deepcopy"])
def test_clone_round_trip_continues_identically(env_id, clone, tiny_model):
    env = make(env_id).unwrapped
    env.reset(seed=5)
    env.action_space.seed(5)
    actions = [env.action_space.sample() for _ in range(6)]
    if env.step(actions[0])[2:4] != (False, False):
        env.reset()  # a single-turn task ends on its first reply: clone a running episode
    twin = pickle.loads(clone(env)) if clone is pickle.dumps else clone(env)
    for action in actions[1:]:
        a, b = env.step(action), twin.step(action)
        assert_same(a, b)
        if a[2] or a[3]:
            break


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_spec_json_round_trip(env_id, tiny_model):
    env = make(env_id, max_reply_tokens=8)
    rebuilt = gym.make(EnvSpec.from_json(env.spec.to_json()))
    assert rebuilt.unwrapped.max_reply_tokens == 8 and rebuilt.unwrapped.model_name == "tiny"
    assert_same(env.reset(seed=1), rebuilt.reset(seed=1))


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_make_vec_sync(env_id, tiny_model):
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", model="tiny")
    observations, _ = envs.reset(seed=0)
    assert observations["input_ids"].shape == (2, envs.single_observation_space["input_ids"].shape[0])
    assert observations["input_ids"].dtype == np.int32
    envs.action_space.seed(0)
    for _ in range(5):
        observations, rewards, terminated, truncated, _ = envs.step(envs.action_space.sample())
        assert np.isfinite(rewards).all()
    envs.close()


@pytest.mark.parametrize("env_id", TRAINABLE_IDS)
def test_stock_sb3_ppo_runs_64_steps(env_id, tiny_model):
    env = make(env_id, max_context_tokens=32, max_reply_tokens=8)
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(int(action))
