"""The contract every registered task keeps: one prompt-set base, the same draws, checks and guards."""

import copy

import gymnasium as gym
import numpy as np
import pytest

import textgym
from textgym.core import play_episode
from textgym.registration import env_class, make_task
from textgym.tasks import PromptSetTask, TaskResetNeeded

# One id per task class, found through the registry so a new task is covered by adding it there.
TASK_IDS = {env_class(env_id).task_class: env_id for env_id in reversed(textgym.env_ids())}
IDS = sorted(TASK_IDS.values())


def rng(seed):
    return np.random.default_rng(seed)


def play_out(task):
    """Step ``task`` with a fixed reply until its episode ends; return the results."""
    results = [task.step("I think the answer is 42.")]
    while not results[-1].terminated:
        assert len(results) < 20
        results.append(task.step("And then?"))
    return results


def test_every_registered_task_is_covered():
    assert len(TASK_IDS) == 4 and all(issubclass(cls, PromptSetTask) for cls in TASK_IDS)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_prompt_and_prompt_id_selects_it(env_id):
    first, second = make_task(env_id), make_task(env_id)
    prompts = [first.reset(rng(seed)) for seed in range(5)]
    assert [second.reset(rng(seed)) for seed in range(5)] == prompts
    assert len({p.prompt_id for p in prompts}) > 1  # the seed matters
    for prompt in prompts:
        assert first.reset(rng(99), {"prompt_id": prompt.prompt_id}) == prompt
    if first.prompt_ids() is not None:
        assert {p.prompt_id for p in prompts} <= set(first.prompt_ids())


@pytest.mark.parametrize("env_id", IDS)
def test_bad_reset_options_are_named(env_id):
    task = make_task(env_id)
    other_split = make_task(env_id, split="test").reset(rng(0)).prompt_id
    for options, message in [
        ({"prompt_id": "no/such/prompt"}, "'no/such/prompt'"),
        ({"prompt_id": other_split}, repr(other_split)),
        ({"prompt_id": 7}, "unknown prompt_id 7: a prompt_id is a str, got int"),
        ({"prompt_id": b"bytes"}, "got bytes"),
        ({"colour": "red"}, "unknown reset options ['colour']"),
    ]:
        with pytest.raises(ValueError) as raised:
            task.reset(rng(0), options)
        assert message in str(raised.value)
    with pytest.raises(TypeError, match="reset options must be a dict, got list"):
        task.reset(rng(0), ["prompt_id"])
    # None means "no particular prompt": the rng draws, as without options.
    assert task.reset(rng(3), {"prompt_id": None}) == task.reset(rng(3))


@pytest.mark.parametrize("env_id", IDS)
def test_step_guards_and_state_dropped_at_the_end(env_id):
    task = make_task(env_id)
    with pytest.raises(TaskResetNeeded, match="before reset"):
        task.step("hello")
    task.reset(rng(1))
    assert task.in_episode
    results = play_out(task)
    assert results[-1].terminated and all(not r.terminated for r in results[:-1])
    assert not task.in_episode and task._episode is None
    with pytest.raises(gym.error.ResetNeeded, match="after the episode ended"):
        task.step("hello")
    with pytest.raises(RuntimeError):  # what the tasks raised before the shared base
        task.step("hello")
    task.reset(rng(1))
    assert play_out(task) == results


@pytest.mark.parametrize("env_id", IDS)
def test_shallow_copies_play_episodes_side_by_side(env_id):
    base = make_task(env_id)
    ids = [base.reset(rng(seed)).prompt_id for seed in range(2)]
    alone = []
    for prompt_id in ids:
        base.reset(rng(0), {"prompt_id": prompt_id})
        alone.append(play_out(base))
    copies = [copy.copy(base) for _ in ids]
    for task, prompt_id in zip(copies, ids, strict=True):
        task.reset(rng(0), {"prompt_id": prompt_id})
    interleaved = [[], []]
    while any(task.in_episode for task in copies):
        for index, task in enumerate(copies):
            if task.in_episode:
                interleaved[index].append(
                    task.step("I think the answer is 42." if not interleaved[index] else "And then?")
                )
    assert interleaved == alone


@pytest.mark.parametrize("env_id", IDS)
def test_numpy_integer_seeds_are_accepted_and_bools_rejected(env_id):
    task = make_task(env_id)
    assert play_episode(task, [], seed=np.int64(11)).prompt == play_episode(task, [], seed=11).prompt
    for bad, error in [(True, TypeError), (np.bool_(False), TypeError), (1.0, TypeError), (-1, ValueError)]:
        with pytest.raises(error, match="seed"):
            play_episode(task, [], seed=bad)


@pytest.mark.parametrize("env_id", IDS)
def test_env_reset_takes_numpy_seeds_and_rejects_bools(env_id, tiny_model):
    env = gym.make(env_id, model=tiny_model)
    _, info = env.reset(seed=np.int32(4))
    assert env.reset(seed=4)[1]["prompt_id"] == info["prompt_id"]
    with pytest.raises(TypeError, match="seed must be an integer, got bool"):
        env.reset(seed=True)
