"""The training and evaluation CLIs, in subprocesses with tiny budgets (CleanRL style)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_runs import TINY_RUN

from baselines.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from baselines.policies import LMActorCriticPolicy


def run(module, *args, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_train_writes_summary_checkpoint_and_resumes(tmp_path, tiny_model):
    out = tmp_path / "run"
    run("baselines.train", *TINY_RUN, "--total-timesteps", "16", "--seed", "3", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env_steps"] == 16 and summary["seed"] == 3 and summary["config"]["model"] == "tiny"
    for key in ("reward_mean", "reward_ci95", "perplexity_mean"):
        assert key in summary["initial"] and key in summary["final"]
    assert summary["env_steps_per_s"] > 0 and summary["wall_time_s"] > 0
    assert {"kl_per_token", "kl_per_reply", "kl_coef"} <= set(summary["kl"])
    checkpoint = out / "checkpoint"
    assert (checkpoint / "policy.safetensors").is_file() and (checkpoint / "checkpoint.json").is_file()
    assert not list(checkpoint.glob("*.pt")) and not list(checkpoint.glob("*.pkl")) and not list(out.glob("*.zip"))
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    assert meta["num_timesteps"] == 16 and "reference" not in json.dumps(meta)
    records = [json.loads(line) for line in (out / "eval_generations.jsonl").read_text().splitlines()]
    assert len(records) == 4  # initial and final evaluation, two episodes each

    # A second run into the same directory refuses to overwrite it.
    again = run("baselines.train", *TINY_RUN, "--total-timesteps", "16", "--out", str(out), check=False)
    assert again.returncode == 2 and "--resume" in again.stderr

    # Another seed reuses this run's initial evaluation (same starting policy) instead of repeating it.
    other = tmp_path / "other_seed"
    run(
        "baselines.train",
        *TINY_RUN,
        "--total-timesteps",
        "16",
        "--seed",
        "4",
        "--initial-eval-from",
        str(out),
        "--out",
        str(other),
    )
    reused = json.loads((other / "summary.json").read_text())
    assert reused["initial"] == {**summary["initial"], "reused_from": str(out)}
    assert reused["curve"][0]["reward_mean"] == summary["initial"]["reward_mean"]
    lines = (other / "eval_generations.jsonl").read_text().splitlines()
    assert len(lines) == 4 and lines[:2] == (out / "eval_generations.jsonl").read_text().splitlines()[:2]
    mismatch = [*TINY_RUN, "--eval-episodes", "3", "--initial-eval-from", str(out), "--out", str(tmp_path / "bad")]
    refused = run("baselines.train", *mismatch, check=False)
    assert refused.returncode == 2 and "eval_episodes=2 (this run: 3)" in refused.stderr
    assert not (tmp_path / "bad").exists()

    run("baselines.train", "--resume", "--total-timesteps", "32", "--out", str(out))
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["env_steps"] == 32 and resumed["initial"] == summary["initial"]

    evaluated = run(
        "baselines.evaluate",
        "--checkpoint",
        str(checkpoint),
        "--episodes",
        "2",
        "--greedy",
        "--out",
        str(tmp_path / "gens.jsonl"),
    )
    result = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert result["episodes"] == 2 and result["split"] == "validation"
    assert len((tmp_path / "gens.jsonl").read_text().splitlines()) == 2


def test_a_run_stopped_by_its_time_limit_records_the_steps_it_trained_on_and_they_replay_it(tmp_path, tiny_model):
    timed, replay = tmp_path / "timed", tmp_path / "replay"
    once = ("--no-initial-eval", "--seed", "5")
    run(
        "baselines.train",
        *TINY_RUN,
        *once,
        "--total-timesteps",
        "100000",
        "--max-train-seconds",
        "3",
        "--out",
        str(timed),
    )
    summary = json.loads((timed / "summary.json").read_text())
    trained = summary["timesteps_trained"]
    # The time limit stops a rollout part way (2 envs of 8 steps a rollout): its steps count, nothing trained on them.
    assert summary["stopped_by_time_limit"] and 0 < trained < summary["env_steps"] and trained % 16 == 0
    # benchmarks/reproduce_run.py trains the run's config again on the steps it trained on, with no time limit.
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_run.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(script), str(timed), "--out", str(replay)]
    reproduced = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert reproduced.returncode == 0, reproduced.stdout[-2000:] + reproduced.stderr[-2000:]
    again = json.loads((replay / "summary.json").read_text())
    assert not again["stopped_by_time_limit"] and again["timesteps_trained"] == again["env_steps"] == trained
    assert json.loads((replay / "config.json").read_text())["total_timesteps"] == trained

    def replies(run_dir):
        return [
            json.loads(line)["generations"] for line in (run_dir / "eval_generations.jsonl").read_text().splitlines()
        ]

    # The same updates, so the same final policy: every evaluation reply and the reward to the last digit.
    assert replies(replay) == replies(timed) and again["final"]["reward_mean"] == summary["final"]["reward_mean"]
    report = json.loads((replay / "reproduction.json").read_text())
    assert report["identical"] and report["episodes_differing"] == [] and report["first_differing_log_row"] is None
    assert report["log_rows"] == [trained // 16] * 2 and "IDENTICAL" in reproduced.stdout  # a row a rollout
    # Both runs name the code they ran (this checkout) and the machine.
    assert report["recorded_commit"] == report["rerun_commit"] == summary["commit"] == again["commit"] != "unknown"
    assert summary["machine"].endswith(f"{os.cpu_count()} CPUs")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algo", "a2c"], "unknown --algo 'a2c'"),
        (["--env", "TextGym/Nope-v0"], "unknown --env 'TextGym/Nope-v0'"),
        (["--lr-schedule", "cosine"], "unknown --lr-schedule 'cosine'"),
    ],
)
def test_train_rejects_bad_arguments(args, message):
    result = run("baselines.train", *args, check=False)
    assert result.returncode == 2 and message in result.stderr


def test_train_refuses_pool_options_without_a_pool_before_making_the_run(tmp_path):
    out = tmp_path / "run"
    result = run("baselines.train", "--group-baseline", "--model", "tiny", "--out", str(out), check=False)
    assert result.returncode == 2 and "--group-baseline True applies to a pool of prompts" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_train_rejects_a_missing_model(tmp_path):
    result = run(
        "baselines.train",
        *TINY_RUN[:2],
        "--model",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "r"),
        check=False,
    )
    assert result.returncode == 2 and "--model: model path" in result.stderr and "nowhere" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_train_refuses_a_missing_or_unloadable_init_model_before_building_anything(tmp_path, capsys):
    from baselines.common.cli import parse_train_args

    empty = tmp_path / "empty"
    empty.mkdir()
    for path, message in ((tmp_path / "nowhere", "does not exist"), (empty, "has no config.json")):
        with pytest.raises(SystemExit) as exit_info:
            parse_train_args(["--model", "tiny", "--init-model", str(path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "--init-model: model" in err and str(path) in err and message in err


def test_checkpoint_rejects_corruption_and_other_models(tmp_path, tiny_model):
    import gymnasium as gym

    env = gym.make("TextGym/Sentiment-v0", model="tiny")
    policy = LMActorCriticPolicy(env.observation_space, env.action_space, lambda _: 1e-4, model="tiny")
    path = save_checkpoint(tmp_path / "ckpt", policy, {"model": "tiny"})
    with torch.no_grad():
        policy.value_head.bias.fill_(3.0)
    load_checkpoint(path, policy)
    assert policy.value_head.bias.item() == 0.0  # restored from the file

    (path / "policy.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_checkpoint(path, policy)
    (path / "checkpoint.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path, policy)

    other = save_checkpoint(tmp_path / "other", torch.nn.Linear(2, 2), {"model": "something-else"})
    with pytest.raises(CheckpointError, match="does not fit this policy"):
        load_checkpoint(other, policy)


def test_evaluation_reports_the_median_perplexity_beside_the_mean(tmp_path, tiny_model):
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env

    from baselines.evaluate import evaluate_policy
    from baselines.train import Args, build, env_kwargs_of

    args = Args(model="tiny", max_reply_tokens=6, kl_coef=0.0, batch_size=16, device="cpu", torch_threads=1)
    env = make_vec_env(args.env, n_envs=1, seed=0, env_kwargs=env_kwargs_of(args))
    policy = build(args, env).policy
    record = tmp_path / "generations.jsonl"
    kwargs = {**env_kwargs_of(args), "split": "validation"}
    result = evaluate_policy(policy, args.env, kwargs, episodes=5, record_path=str(record), reference_model="tiny")
    env.close()
    per_episode = [json.loads(line)["guard"]["perplexity"] for line in record.read_text().splitlines()]
    assert len(per_episode) == 5 and len(set(per_episode)) > 1
    assert result["perplexity_median"] == pytest.approx(float(np.median(per_episode)))
    assert result["perplexity_mean"] == pytest.approx(float(np.mean(per_episode)))


def test_evaluation_draws_other_replies_to_the_same_prompts_with_another_sampling_seed(tmp_path, tiny_model):
    from stable_baselines3.common.env_util import make_vec_env

    from baselines.evaluate import evaluate_policy
    from baselines.train import Args, build, env_kwargs_of

    args = Args(model="tiny", max_reply_tokens=6, kl_coef=0.0, batch_size=16, device="cpu", torch_threads=1)
    env = make_vec_env(args.env, n_envs=1, seed=0, env_kwargs=env_kwargs_of(args))
    policy = build(args, env).policy
    env.close()
    kwargs = {**env_kwargs_of(args), "split": "validation"}

    def draw(name, **seeds):
        record = tmp_path / f"{name}.jsonl"
        evaluate_policy(policy, args.env, kwargs, episodes=4, record_path=str(record), **seeds)
        lines = [json.loads(line) for line in record.read_text().splitlines()]
        return [line["prompt_id"] for line in lines], [line["generations"] for line in lines]

    prompts, replies = draw("default")
    # The default sampling seed is the prompts' base seed: naming it gives the very same replies.
    assert draw("same", sampling_seed=10_000) == (prompts, replies)
    other_prompts, other_replies = draw("other", sampling_seed=10_001)
    assert other_prompts == prompts and other_replies != replies

    # prompt_ids names each episode's prompt instead of the seed's draw: one prompt twice, another once.
    chosen = [prompts[1], prompts[1], prompts[0], prompts[3]]
    assert chosen != prompts
    assert draw("chosen", prompt_ids=chosen)[0] == chosen
    with pytest.raises(ValueError, match="prompt_ids holds 2 ids for 4 episodes"):
        evaluate_policy(policy, args.env, kwargs, episodes=4, prompt_ids=chosen[:2])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
        (["--temperature", "nan"], "--temperature must be a finite number > 0, got nan"),
        (["--temperature", "inf"], "--temperature must be a finite number > 0, got inf"),
        (["--n-envs", "0"], "--n-envs must be an integer >= 1, got 0"),
        (["--gamma", "2"], "--gamma must be a finite number in [0, 1], got 2.0"),
        (["--learning-rate", "-1"], "--learning-rate must be a finite number > 0, got -1.0"),
        (["--eval-episodes", "0"], "--eval-episodes must be an integer >= 1, got 0"),
        (["--n-epochs", "0"], "--n-epochs must be an integer >= 1, got 0"),
        (["--ent-coef", "nan"], "--ent-coef must be a finite number, got nan"),
        (["--seed", "-3"], "--seed must be an integer in [0, 4294967295], got -3"),
        (["--proposal-variants", "2"], "--proposal-variants 2 is an option of --algo dqn; --algo ppo does not read it"),
        (["--guide-model", "tiny"], "--guide-model tiny is an option of --algo dqn; --algo ppo does not read it"),
        (
            ["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--value-scale", "3"],
            "--value-scale 3.0 is an option of --algo ppo; --algo dqn does not read it",
        ),
        (
            ["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--temperature", "0.5"],
            "--temperature 0.5 is an option of --algo ppo; --algo dqn does not read it",
        ),
    ],
)
def test_train_refuses_values_out_of_range_and_options_the_algorithm_would_ignore(args, message, capsys):
    from baselines.common.cli import parse_train_args

    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_train_accepts_another_algorithms_option_at_its_default():
    from baselines.common.cli import parse_train_args

    args = parse_train_args(["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--value-scale", "1.0"])
    assert args.value_scale == 1.0 and args.algo == "dqn"
    assert parse_train_args(["--temperature", "0.5"]).temperature == 0.5


def test_every_default_is_within_its_range_and_every_range_names_a_field():
    from baselines.algorithms import ALGOS
    from baselines.common.config import RANGES, Args, defaults_for, range_errors

    fields = {item.name for item in dataclasses.fields(Args)}
    assert set(RANGES) <= fields
    for algo in ALGOS:
        assert range_errors(Args(**defaults_for(algo))) == []


@pytest.mark.parametrize(
    ("main", "args", "message"),
    [
        ("evaluate", ["--checkpoint", "unused", "--episodes", "0"], "argument --episodes: must be an integer >= 1"),
        ("evaluate", ["--checkpoint", "unused", "--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
        ("references", ["--env", "TextGym/SentimentCandidate-v0", "--episodes", "x"], "got 'x'"),
        ("references", ["--env", "TextGym/SentimentCandidate-v0", "--torch-threads", "0"], "--torch-threads: must be"),
    ],
)
def test_evaluation_clis_refuse_counts_out_of_range_before_loading_anything(main, args, message, capsys):
    from baselines import evaluate
    from baselines.dqn import references

    with pytest.raises(SystemExit) as exit_info:
        {"evaluate": evaluate.main, "references": references.main}[main](args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
