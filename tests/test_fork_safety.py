"""Forked vector-env workers of every granularity run after an env ran in the parent.

Each case runs in its own process (this file as a script) so that its parent uses torch
with several threads, as a user's process does (the test session pins one thread), and
so that a hang is killed, forked workers included, instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
IDS = {
    "token": "TextGym/Sentiment-v0",
    "candidate": "TextGym/SentimentCandidate-v0",
    "utterance": "TextGym/SentimentUtterance-v0",
}
ENV_KWARGS = {"model": "tiny", "render_mode": None}
NUM_ENVS = 2
STEPS = 4
SEED = 0
REPLIES = ("great", "awful")  # one per env; VADER scores them +0.6249 and -0.4588
TIMEOUT_S = 180


def _actions(env_id: str) -> list[list]:
    """``STEPS`` vector actions: seeded candidate picks, or each env writing its reply of :data:`REPLIES`.

    At token level each env cycles through its reply's tokens and end token; at utterance
    level every action is the whole reply.
    """
    import gymnasium as gym

    from textgym.models import eos_token_ids, load_tokenizer

    granularity = gym.spec(env_id).kwargs["granularity"]
    if granularity == "candidate":
        picks = np.random.default_rng(SEED).integers(gym.spec(env_id).kwargs.get("num_candidates", 4), size=(STEPS, 2))
        return picks.tolist()
    tokenizer = load_tokenizer(ENV_KWARGS["model"])
    eos = eos_token_ids(tokenizer)[0]
    replies = [tokenizer(text, add_special_tokens=False)["input_ids"] + [eos] for text in REPLIES]
    if granularity == "token":
        return [[reply[step % len(reply)] for reply in replies] for step in range(STEPS)]
    length = gym.make(env_id, **ENV_KWARGS).unwrapped.max_reply_tokens
    whole = [reply + [eos] * (length - len(reply)) for reply in replies]
    return [whole for _ in range(STEPS)]


def _lists(observation: dict[str, Any]) -> dict[str, list]:
    return {key: np.asarray(value).tolist() for key, value in sorted(observation.items())}


def _gym_rollout(venv: Any, actions: list[list]) -> list:
    observation, _ = venv.reset(seed=SEED)
    trace = [_lists(observation)]
    for action in actions:
        observation, reward, terminated, truncated, _ = venv.step(np.asarray(action))
        trace.append([_lists(observation), reward.tolist(), terminated.tolist(), truncated.tolist()])
    venv.close()
    return trace


def _sb3_rollout(venv: Any, actions: list[list]) -> list:
    venv.seed(SEED)
    trace = [_lists(venv.reset())]
    for action in actions:
        observation, reward, done, _ = venv.step(np.asarray(action))
        # DummyVecEnv keeps rewards as float32, SubprocVecEnv as float64.
        trace.append([_lists(observation), reward.astype(np.float32).tolist(), done.tolist()])
    venv.close()
    return trace


def run_case(env_id: str) -> dict[str, list]:
    """Step an env in this process, then roll out the same seeds and actions in each vector env."""
    import gymnasium as gym
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    import textgym  # noqa: F401

    def gym_vec(mode: str) -> Any:
        return gym.make_vec(env_id, num_envs=NUM_ENVS, vectorization_mode=mode, **ENV_KWARGS)

    def sb3_vec(vec_env_cls: type, **vec_env_kwargs: Any) -> Any:
        # "textgym:<id>" has each worker import textgym, which registers the ids, also where a
        # worker starts afresh (forkserver, spawn) and nothing imported textgym in __main__.
        return make_vec_env(
            f"textgym:{env_id}", NUM_ENVS, env_kwargs=ENV_KWARGS, vec_env_cls=vec_env_cls, vec_env_kwargs=vec_env_kwargs
        )

    actions = _actions(env_id)
    # A user's process runs torch on several threads: the env's LM starts OpenMP's pool here,
    # and a child forked while the parent is set to several threads inherits that setting.
    torch.set_num_threads(2)
    env = gym.make(env_id, **ENV_KWARGS)
    env.reset(seed=SEED)
    env.step(np.asarray(actions[0][0]))
    env.close()
    traces = {}
    forked = {
        "gym_async": lambda: _gym_rollout(gym_vec("async"), actions),
        "sb3_subproc_fork": lambda: _sb3_rollout(sb3_vec(SubprocVecEnv, start_method="fork"), actions),
    }
    for name, rollout in forked.items():
        print(name, file=sys.stderr, flush=True)  # the stage a timeout reports
        traces[name] = rollout()
    torch.set_num_threads(1)  # as in the forked workers, so that the references compare bit for bit
    traces["gym_sync"] = _gym_rollout(gym_vec("sync"), actions)
    traces["sb3_dummy"] = _sb3_rollout(sb3_vec(DummyVecEnv), actions)
    print("sb3_subproc", file=sys.stderr, flush=True)
    traces["sb3_subproc"] = _sb3_rollout(sb3_vec(SubprocVecEnv), actions)  # SB3's default start method
    return traces


def _run_in_own_session(env_id: str) -> dict[str, list]:
    command = [sys.executable, str(Path(__file__).resolve()), env_id]
    # One thread everywhere but where the case sets two: forked workers run one, and SB3's fresh
    # workers then do too. Torch's CPU attention can round differently on other thread counts,
    # so only equal counts compare bit for bit.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the hung workers too, not only their parent
        stdout, stderr = process.communicate()
        pytest.fail(f"{env_id}: vector envs hung for {TIMEOUT_S} s after an env ran in the parent:\n{stderr[-2000:]}")
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.splitlines()[-1])


def _assert_same(trace: list, reference: list, what: str) -> None:
    assert len(trace) == len(reference), what
    for step, (got, want) in enumerate(zip(trace, reference, strict=True)):
        got_observation, want_observation = (got, want) if step == 0 else (got[0], want[0])
        for key in want_observation:
            np.testing.assert_array_equal(got_observation[key], want_observation[key], err_msg=f"{what} {key} {step}")
        if step:
            assert got[1:] == want[1:], f"{what}: rewards or ends differ at step {step}"


@pytest.mark.parametrize("granularity", sorted(IDS))
def test_forked_vector_envs_match_sync_after_an_env_ran_in_the_parent(granularity, tiny_model):
    traces = _run_in_own_session(IDS[granularity])
    _assert_same(traces["gym_async"], traces["gym_sync"], "gym async vs sync")
    _assert_same(traces["sb3_subproc"], traces["sb3_dummy"], "SB3 SubprocVecEnv (default start) vs DummyVecEnv")
    _assert_same(traces["sb3_subproc_fork"], traces["sb3_dummy"], "SB3 SubprocVecEnv('fork') vs DummyVecEnv")
    for key, value in traces["gym_sync"][0].items():  # both libraries reset env i with seed SEED + i
        np.testing.assert_array_equal(traces["sb3_dummy"][0][key], value, err_msg=key)
    rewards = np.array([record[1] for record in traces["gym_sync"][1:]])
    assert np.any(rewards != 0), "no reply was scored: the rollout does not check rewards"
    if granularity != "candidate":  # each env wrote its own reply: +0.6249 for "great", -0.4588 for "awful"
        assert rewards[:, 0].max() == pytest.approx(0.6249) and rewards[:, 1].min() == pytest.approx(-0.4588)


if __name__ == "__main__":
    print(json.dumps(run_case(sys.argv[1])))
