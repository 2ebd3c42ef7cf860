"""The benchmark scripts run end to end (tiny model, a couple of episodes; not timed)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textgym.stats import bootstrap_ci, cluster_means

ROOT = Path(__file__).resolve().parents[1]
IDS = ["TextGym/SentimentUtterance-v0", "TextGym/SparseCompletionCandidate-v0"]


def test_reference_rewards_writes_finite_results(tmp_path, tiny_model):
    out = tmp_path / "reference_rewards.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "reference_rewards.py"),
        *IDS,
        "--model",
        tiny_model,
        "--episodes",
        "2",
        "--out",
        str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"command", "date", "textgym_version", "machine", "model", "split", "seed", "results"} <= result.keys()
    assert result["split"] == "validation" and result["model"] == tiny_model and result["seed"] == 10_000
    assert "reference_rewards.py" in result["command"]
    assert [row["id"] for row in result["results"]] == IDS
    for row in result["results"]:
        assert row["granularity"] in ("utterance", "candidate") and row["episodes"] == 2
        assert math.isfinite(row["seconds"])
        for agent in ("random", "greedy_lm"):
            stats = row[agent]
            assert len(stats["rewards"]) == 2 and len(stats["episodes_detail"]) == 2
            low, high = stats["reward_ci95"]
            assert all(math.isfinite(v) for v in (stats["reward_mean"], low, high, *stats["rewards"]))
            assert low <= stats["reward_mean"] <= high
            assert all(detail["prompt_id"] for detail in stats["episodes_detail"])
        # Both agents see the same fixed prompts.
        assert [d["prompt_id"] for d in row["random"]["episodes_detail"]] == [
            d["prompt_id"] for d in row["greedy_lm"]["episodes_detail"]
        ]

    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert any(line.startswith("| id | granularity |") for line in table.splitlines())
    assert all(env_id in completed.stdout and env_id in table for env_id in IDS)


def _run_dir(root, name, seed, initial, final, turns_per_episode=1, prompt_ids=None):
    """A run directory as baselines.train leaves it: summary.json and the initial and final evaluation records."""
    run = root / name
    run.mkdir()
    records = []
    for rewards in (initial, final):
        for index, reward in enumerate(rewards):
            turn_rewards = [reward / turns_per_episode] * turns_per_episode
            records.append(
                {
                    "seed": 10_000 + index,
                    "prompt_id": prompt_ids[index] if prompt_ids else f"p{index}",
                    "reward": reward,
                    "turn_rewards": turn_rewards,
                    "guard": {},
                }
            )
    (run / "eval_generations.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    evaluation = {"episodes": len(final), "perplexity_median": 1.0}
    summary = {
        "seed": seed,
        "initial": {**evaluation, "reward_mean": sum(initial) / len(initial)},
        "final": {**evaluation, "reward_mean": sum(final) / len(final)},
        "reward_gain": (sum(final) - sum(initial)) / len(final),
        "kl": {"kl_per_reply": 2.0},
        "train_time_s": 10.0,
        "env_steps_per_s": 5.0,
        "curve": [],
    }
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run


def test_summarize_runs_gives_paired_gains_and_per_reply_rewards(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import summarize_runs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    runs = [
        _run_dir(tmp_path, "ppo_a_s0", 0, [0.0, 0.5], [0.5, 0.5], turns_per_episode=2),
        _run_dir(tmp_path, "ppo_a_s1", 1, [0.0, 0.5], [0.0, 1.0], turns_per_episode=2),
    ]
    summaries = [summarize_runs.load(run) for run in runs]
    prompts, gains = summarize_runs.paired_gains(summaries)
    assert prompts == ["p0", "p1", "p0", "p1"] and gains == [0.5, 0.0, 0.0, 0.5]
    text = summarize_runs.table(summaries)
    # Two turns per episode: a reply's reward is half an episode's (0.25 mean initially; 0.25 and 0.25 at the end).
    assert "| 0.125 -> 0.250 |" in text
    assert "Paired per-prompt gain, pooled over the seeds: +0.250" in text and "4 prompt-runs" in text
    # Resampling prompts: each prompt's gain over the two seeds is 0.25, so the interval has no width.
    assert "95% bootstrap CI +0.250 .. +0.250, 2 distinct prompts" in text
    # A run without both evaluations recorded has no paired gains (never a gain against the wrong prompts).
    (runs[1] / "eval_generations.jsonl").write_text("", encoding="utf-8")
    summaries = [summarize_runs.load(run) for run in runs]
    assert summarize_runs.paired_gains(summaries) == ([], [])


def test_summarize_runs_resamples_prompts_by_id_when_episodes_revisit_a_prompt(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import summarize_runs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # Episodes 0 and 2 drew the same prompt: its gains (+1 and -1) average to 0, the other prompt's are +1.
    run = _run_dir(tmp_path, "ppo_a_s0", 0, [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], prompt_ids=["a", "b", "a"])
    text = summarize_runs.table([summarize_runs.load(run)])
    assert "2 distinct prompts" in text
    low, high = bootstrap_ci([0.0, 1.0])
    assert f"95% bootstrap CI {low:+.3f} .. {high:+.3f}, 2 distinct prompts" in text


def test_summarize_dqn_resamples_prompts_for_the_gain_over_the_references():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import summarize_dqn
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    ref = {"reward_mean": 0.0, "reward_ci95": [0.0, 0.0], "rewards": [0.0, 0.0]}
    seed = {"env_steps": 1, "proposal_sets_generated": 1, "train_time_s": 1.0, "wall_time_s": 1.0}
    seeds = [{**seed, "seed": 0, "rewards": [1.0, 0.0], "top_candidate_rate": 0.5}]
    seeds.append({**seed, "seed": 1, "rewards": [0.0, 1.0], "top_candidate_rate": 0.5})
    result = {
        "env": "TextGym/SentimentCandidate-v0",
        "refs": {"random": ref, "top": ref, "best_of_k": ref},
        "seeds": seeds,
        "pooled": [1.0, 0.0, 0.0, 1.0],
        "paired": [1.0, 0.0, 0.0, 1.0],
        "paired_over_random": [1.0, 0.0, 0.0, 1.0],
        "prompt_ids": ["a", "b"],
    }
    text = summarize_dqn.markdown([result])
    # Each prompt gained 0.5 on average over the two seeds: resampling prompts gives an interval of no width,
    # where resampling the four prompt-runs (0 or 1 each) does not.
    assert "paired gain over LM top +0.500 [+0.000, +1.000], prompts resampled [+0.500, +0.500]" in text
    # Two episodes of one prompt (more episodes than the split has prompts) are one unit, not two.
    result = {**result, "seeds": seeds[:1], "pooled": [1.0, 0.0], "paired": [1.0, 0.0], "prompt_ids": ["a", "a"]}
    result["paired_over_random"] = [1.0, 0.0]
    text = summarize_dqn.markdown([result])
    assert "paired gain over LM top +0.500 [+0.000, +1.000], prompts resampled [+0.500, +0.500] (1 distinct" in text


def test_rescore_candidates_refuses_runs_of_different_envs(tmp_path, tiny_model, capsys, monkeypatch):
    from baselines import train

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rescore_candidates

    runs = []
    for env_id in ("TextGym/SentimentCandidate-v0", "TextGym/SparseCompletionCandidate-v0"):
        out = tmp_path / env_id.split("/")[1]
        flags = ["--algo", "dqn", "--env", env_id, "--model", "tiny", "--max-reply-tokens", "2", "--num-candidates"]
        flags += ["2", "--learning-starts", "2", "--no-progress-bar", "--torch-threads", "1", "--n-envs", "2"]
        flags += ["--total-timesteps", "4", "--no-initial-eval", "--eval-episodes", "1", "--out", str(out)]
        assert train.main(flags) == 0
        runs.append(str(out))
    with pytest.raises(SystemExit) as exit_info:
        rescore_candidates.main([*runs, "--episodes", "2"])
    assert exit_info.value.code == 2
    assert "rescore runs of one env and env arguments together" in capsys.readouterr().err


def test_start_variance_draws_the_untrained_policy_with_other_sampling_seeds(tmp_path, tiny_model, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import start_variance

    def draws(temperature):
        out = tmp_path / f"draws_{temperature}.json"
        argv = ["TextGym/Sentiment-v0", "--model", "tiny", "--draws", "2", "--episodes", "2", "--torch-threads", "1"]
        assert start_variance.main([*argv, "--temperature", str(temperature), "--out", str(out)]) == 0
        result = json.loads(out.read_text(encoding="utf-8"))
        assert result["temperature"] == temperature and len(result["draw_means"]) == 2
        return result["draw_means"]

    warm = draws(1.0)
    assert warm[0] != warm[1]  # another sampling seed, other replies
    assert draws(0.5) != warm  # the temperature reaches the policy that samples

    # --init-model reaches the policy too: other weights (same tokenizer), other replies.
    import torch

    from textgym.models import load_causal_lm, load_tokenizer

    other = tmp_path / "other_weights"
    model = load_causal_lm("tiny")
    with torch.no_grad():
        model.model.layers[-1].mlp.down_proj.weight.mul_(40.0)
    model.save_pretrained(other, safe_serialization=True)
    load_tokenizer("tiny").save_pretrained(other)
    out = tmp_path / "draws_other.json"
    argv = ["TextGym/Sentiment-v0", "--model", "tiny", "--draws", "2", "--episodes", "2", "--torch-threads", "1"]
    assert start_variance.main([*argv, "--init-model", str(other), "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["init_model"] == str(other) and result["draw_means"] != warm


def test_rescore_candidates_refuses_a_missing_checkpoint_and_a_run_without_candidates(
    tmp_path, tiny_model, capsys, monkeypatch
):
    from tiny_runs import TINY_RUN

    from baselines import train

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rescore_candidates

    with pytest.raises(SystemExit) as exit_info:
        rescore_candidates.main([str(tmp_path / "nowhere"), "--episodes", "2"])
    assert exit_info.value.code == 2 and "cannot load the checkpoint of" in capsys.readouterr().err
    ppo_run = tmp_path / "ppo"
    assert train.main([*TINY_RUN, "--total-timesteps", "16", "--no-initial-eval", "--out", str(ppo_run)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        rescore_candidates.main([str(ppo_run), "--episodes", "2"])
    assert exit_info.value.code == 2 and "writes its own replies: it picks no candidates" in capsys.readouterr().err


def test_rescore_lm_runs_replays_each_runs_own_evaluations_and_pairs_the_gain(
    tmp_path, tiny_model, capsys, monkeypatch
):
    from tiny_runs import TINY_RUN

    from baselines import train

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rescore_lm_runs

    runs = [tmp_path / f"ppo_s{seed}" for seed in (0, 1)]
    for seed, run in enumerate(runs):
        assert train.main([*TINY_RUN, "--total-timesteps", "32", "--seed", str(seed), "--out", str(run)]) == 0
    out = tmp_path / "rescored.json"
    assert (
        rescore_lm_runs.main(
            [*map(str, runs), "--episodes", "2", "--draws", "1", "--torch-threads", "1", "--out", str(out)]
        )
        == 0
    )
    result = json.loads(out.read_text(encoding="utf-8"))
    for run in runs:
        lines = [json.loads(line) for line in (run / "eval_generations.jsonl").read_text().splitlines()]
        initial, final = [line["reward"] for line in lines[:2]], [line["reward"] for line in lines[-2:]]
        summary = json.loads((run / "summary.json").read_text())
        # Draw 0 on the runs' own prompts is their own evaluation: the start is rebuilt as it was, the weights loaded.
        assert result["start"]["rewards"] == pytest.approx(initial)
        assert result["start"]["draw_perplexity_medians"] == [pytest.approx(summary["initial"]["perplexity_median"])]
        played = result["played"][str(run)]
        assert played["rewards"] == pytest.approx(final)
        assert played["draw_perplexity_medians"] == [pytest.approx(summary["final"]["perplexity_median"])]
        assert result["runs"][str(run)]["gain"] == pytest.approx(sum(final) / 2 - sum(initial) / 2)
    medians = {result["played"][str(run)]["draw_perplexity_medians"][0] for run in runs}
    assert len(medians | {result["start"]["draw_perplexity_medians"][0]}) == 3  # three different policies
    assert result["gain_mean"] == pytest.approx(sum(result["runs"][str(r)]["gain"] for r in runs) / 2)

    # A file written before the prompt ids were kept: reanalyse_rescored.py recovers them from the env's seeds and
    # recomputes the CI over prompts, keeping the old one.
    import reanalyse_rescored

    old_file = tmp_path / "old.json"
    stripped = {key: value for key, value in result.items() if key != "prompt_ids"}
    old_file.write_text(json.dumps({**stripped, "gain_ci95_prompts": [-9.0, 9.0]}), encoding="utf-8")
    assert reanalyse_rescored.main([str(old_file), "--write"]) == 0
    reanalysed = json.loads(old_file.read_text(encoding="utf-8"))
    assert len(result["prompt_ids"]) == 2 and reanalysed["prompt_ids"] == result["prompt_ids"]
    assert reanalysed["gain_ci95_prompts"] == pytest.approx(result["gain_ci95_prompts"])
    assert reanalysed["gain_ci95_episodes"] == [-9.0, 9.0]
    assert "distinct prompts" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        reanalyse_rescored.main([str(tmp_path / "missing.json")])
    assert exit_info.value.code == 2 and "is not a rescored result file" in capsys.readouterr().err

    # Two sampled replies a prompt: a prompt's reward is their mean, and the second draw is another reply.
    # --torch-threads holds though the runs trained with one thread (loading a run used to set its own).
    import torch

    threads = torch.get_num_threads()
    try:
        argv = [str(runs[0]), "--episodes", "2", "--draws", "2", "--torch-threads", "2", "--out", str(out)]
        assert rescore_lm_runs.main(argv) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    two = json.loads(out.read_text(encoding="utf-8"))
    assert len(two["start"]["draw_means"]) == 2
    first, second = two["start"]["draw_perplexity_medians"]
    assert first == pytest.approx(result["start"]["draw_perplexity_medians"][0]) and second != first

    # --breakdown: the paired gain of the prompts with each value of a reset-info field, and of the rest.
    argv = [*map(str, runs), "--episodes", "4", "--draws", "1", "--torch-threads", "1", "--out", str(out)]
    assert rescore_lm_runs.main([*argv, "--breakdown", "prompt_id"]) == 0
    four = json.loads(out.read_text(encoding="utf-8"))
    start = four["start"]["rewards"]
    gains = [sum(four["played"][str(run)]["rewards"][i] - start[i] for run in runs) / 2 for i in range(4)]
    labels = four["breakdown"]["labels"]
    assert four["breakdown"]["field"] == "prompt_id" and len(set(labels)) == 4  # one prompt each: no CI "with"
    for index, label in enumerate(labels):
        group = four["breakdown"]["groups"][label]
        assert set(group) == {"without"} and group["without"]["prompts"] == 3
        assert group["without"]["gain_mean"] == pytest.approx((sum(gains) - gains[index]) / 3)
        assert group["without"]["start_mean"] == pytest.approx((sum(start) - start[index]) / 3)
    assert rescore_lm_runs.main([*argv, "--breakdown", "turn"]) == 0  # every prompt's first turn: one group
    (only,) = json.loads(out.read_text(encoding="utf-8"))["breakdown"]["groups"].values()
    assert set(only) == {"with"} and only["with"]["gain_mean"] == pytest.approx(sum(gains) / 4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        rescore_lm_runs.main([*argv, "--breakdown", "family"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--breakdown family" in err and "'prompt_id'" in err

    # --whole-split: every prompt of the validation split once, in the split's order, and nothing else.
    import rescoring

    split = rescoring.split_prompt_ids(result["env"], result["env_kwargs"])
    assert len(split) == len(set(split)) > 4
    whole = [str(runs[0]), "--whole-split", "--draws", "1", "--torch-threads", "1", "--out", str(out)]
    assert rescore_lm_runs.main([*whole, "--breakdown", "prompt_id"]) == 0
    swept = json.loads(out.read_text(encoding="utf-8"))
    assert swept["whole_split"] is True and swept["episodes"] == len(split)
    assert swept["prompt_ids"] == split and swept["breakdown"]["labels"] == split
    assert swept["distinct_prompts"] == len(split) == len(swept["start"]["rewards"])
    assert "(the whole split, each prompt once)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        rescore_lm_runs.main([*whole, "--episodes", "4"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="generates its prompts without end"):
        rescoring.split_prompt_ids("TextGym/SparseCompletion-v0", {"model": "tiny", "split": "validation"})

    # A run of another start, and a candidate picker, are refused before anything is played.
    other = tmp_path / "ppo_tempered"
    assert (
        train.main(
            [*TINY_RUN, "--total-timesteps", "16", "--temperature", "0.5", "--no-initial-eval", "--out", str(other)]
        )
        == 0
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        rescore_lm_runs.main([str(runs[0]), str(other), "--episodes", "2"])
    assert exit_info.value.code == 2 and "rescore one start at a time" in capsys.readouterr().err


def _probe_split(rewards_per_prompt, informative, rng):
    """Probe inputs: one row per candidate, column 0 the reward itself when ``informative`` (else noise)."""
    rows, rewards, prompts = [], [], []
    for candidate_rewards in rewards_per_prompt:
        prompts.append(np.arange(len(rewards), len(rewards) + len(candidate_rewards)))
        for reward in candidate_rewards:
            signal = reward if informative else rng.normal()
            rows.append([signal, *rng.normal(size=3)])
            rewards.append(reward)
    return {"features": np.asarray(rows), "rewards": np.asarray(rewards), "prompts": prompts}


def test_probe_picks_the_best_candidate_of_every_prompt_when_a_feature_is_the_reward(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import probe_candidates

    rng = np.random.default_rng(0)
    train = _probe_split(rng.random((40, 4)), True, rng)
    validation_rewards = rng.random((20, 4))
    validation = _probe_split(validation_rewards, True, rng)
    result = probe_candidates.fit_probe(train, validation, slice(0, 4), probe_candidates.ALPHAS, 4)
    oracle = validation_rewards.max(1) - validation_rewards[:, 0]
    assert np.allclose(result["gains"], oracle)
    assert result["wins"] == int((oracle > 0).sum()) and result["losses"] == 0
    # Without the informative column the probe cannot find the best candidates.
    blind = probe_candidates.fit_probe(
        _probe_split(rng.random((40, 4)), False, rng),
        _probe_split(validation_rewards, False, rng),
        slice(0, 4),
        probe_candidates.ALPHAS,
        4,
    )
    assert np.mean(blind["gains"]) < 0.5 * oracle.mean()


def test_probe_candidates_writes_gains_bounded_by_best_of_k(tmp_path, tiny_model, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import probe_candidates

    out = tmp_path / "probe.json"
    argv = ["TextGym/SentimentCandidate-v0", "--model", "tiny", "--train-prompts", "8", "--episodes", "4"]
    assert probe_candidates.main([*argv, "--torch-threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["train_prompts"] == 8 and len(result["best_of_k_gains"]) == 4
    assert min(result["best_of_k_gains"]) >= 0
    assert set(result["probes"]) == {"head", "scalars"}
    for probe in result["probes"].values():
        assert probe["alpha"] in probe_candidates.ALPHAS and len(probe["gains"]) == 4
        assert all(g <= best + 1e-9 for g, best in zip(probe["gains"], result["best_of_k_gains"], strict=True))
        assert probe["wins"] == sum(g > 0 for g in probe["gains"])
        # The CI resamples the validation prompts by id (episodes may draw a prompt twice).
        assert probe["gain_ci95"] == pytest.approx(bootstrap_ci(cluster_means(result["prompt_ids"], probe["gains"])))
    assert len(result["prompt_ids"]) == 4


def test_probe_scores_a_dialogues_first_turn_without_proposing_its_next(tmp_path, tiny_model, monkeypatch):
    import gymnasium as gym

    from baselines.common.candidates import branch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import probe_candidates

    from textgym.envs.dialogue import chatterbot_conversations
    from textgym.lm import Completion

    first_replies = {c.conversation_id: c.turns[0].references[0] for c in chatterbot_conversations()}

    class Replies:
        """The corpus reply of the conversation's first turn and two others (the tiny LM's score 0), counted."""

        calls = 0
        conversation = ""

        def propose(self, prompt, num_candidates, max_new_tokens, seed):
            Replies.calls += 1
            texts = [first_replies.get(Replies.conversation, "Hello."), "Nothing at all.", "What is your name?"]
            return [Completion(text=text, finished=True) for text in texts[:num_candidates]]

    env = gym.make("TextGym/DialogueCandidate-v0", model=tiny_model, num_candidates=3, max_reply_tokens=48)
    game = env.unwrapped
    game.proposer = Replies()
    Replies.conversation = env.reset(seed=5)[1]["prompt_id"]
    Replies.calls = 0
    env.reset(seed=5)
    rewards = probe_candidates.first_turn_rewards(game)
    assert Replies.calls == 1  # the turn's own set; scoring proposed nothing
    # The same rewards as a copy that goes on to propose the next turn.
    played = {a: float(branch(game, game.proposer).step(a)[1]) for a in np.flatnonzero(game.action_masks())}
    assert Replies.calls == 1 + 3
    assert rewards == pytest.approx(played) and len(set(rewards.values())) >= 2
    env.close()

    # End to end, the LM proposes one candidate set per probed prompt and no more.
    cache = tmp_path / "sets"
    argv = ["TextGym/DialogueCandidate-v0", "--model", "tiny", "--train-prompts", "6", "--episodes", "4"]
    assert probe_candidates.main([*argv, "--torch-threads", "1", "--proposal-cache", str(cache)]) == 0
    assert len(list(cache.rglob("*.json"))) == 6 + 4


def test_probe_candidates_refuses_an_env_without_candidates(tiny_model, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import probe_candidates

    with pytest.raises(SystemExit) as exit_info:
        probe_candidates.main(["TextGym/Sentiment-v0", "--model", "tiny", "--train-prompts", "4"])
    assert exit_info.value.code == 2
    assert "proposes no candidates" in capsys.readouterr().err


def test_store_pool_proposals_stores_the_pool_a_run_of_the_same_flags_reads(tmp_path, tiny_model, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import store_pool_proposals
    import torch

    from baselines.common.cli import parse_train_args
    from baselines.common.config import env_kwargs_of
    from baselines.common.evaluation import evaluate_on_split
    from baselines.common.loading import build, make_train_env

    store = tmp_path / "sets"
    flags = ["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0", "--model", "tiny", "--num-candidates", "3"]
    flags += ["--max-context-tokens", "48", "--max-reply-tokens", "2", "--n-envs", "2", "--train-prompts", "6"]
    flags += ["--pool-seed", "4", "--proposal-variants", "2", "--train-proposal-cache", str(store)]
    flags += ["--feature-cache", str(tmp_path / "features"), "--proposal-cache", str(tmp_path / "evaluation_sets")]
    flags += ["--eval-episodes", "3"]
    assert store_pool_proposals.main([*flags, "--seed", "9"]) == 0
    printed = capsys.readouterr().out
    # 6 pool prompts x 2 variants, and the evaluation's 3 validation prompts
    assert "12 sets generated, 0 already stored" in printed and "15 observations encoded, 0 already stored" in printed
    assert len(list(store.glob("*.json"))) == 12
    args = parse_train_args([*flags, "--seed", "1"])
    env = make_train_env(args)
    model = build(args, env)
    encoder = model.policy.encoder
    obs = env.reset()
    for _ in range(5):
        encoder({key: torch.as_tensor(value) for key, value in obs.items()})
        obs, _, _, _ = env.step(np.zeros(2, dtype=np.int64))
    stored = env.batcher.lm.lm
    assert stored.misses == 0 and stored.hits > 0  # another seed of the recipe generates nothing
    assert encoder.encoded == 0 and encoder.stored_hits > 0  # nor runs the trunk on its first turns
    evaluate_on_split(
        model, "dqn", args.env, env_kwargs_of(args), "validation", episodes=3, proposal_cache=args.proposal_cache
    )
    assert encoder.encoded == 0  # nor on its evaluation's
    env.close()
    # Without a directory there is nothing to store into: refused, naming the flag.
    without = [flag for flag in flags if flag not in ("--train-proposal-cache", str(store))]
    assert store_pool_proposals.main(without) == 2
    assert "give --train-proposal-cache" in capsys.readouterr().err


def test_paired_summary_resamples_prompts_by_id_and_refuses_a_missing_id():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import rescoring
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # Three episodes, two of them of prompt "a": per prompt the gains are (+1 - 1) / 2 = 0 and +1.
    summary = rescoring.paired_summary([0.0, 0.0, 1.0], {"run": [1.0, 1.0, 0.0]}, ["a", "b", "a"])
    assert summary["distinct_prompts"] == 2 and summary["gain_mean"] == pytest.approx(1 / 3)
    assert summary["gain_ci95_prompts"] == pytest.approx(bootstrap_ci([0.0, 1.0]))
    assert "(2 distinct prompts)" in rescoring.gain_text(summary)
    with pytest.raises(ValueError, match="one prompt id per episode, got 2 for 3"):
        rescoring.paired_summary([0.0, 0.0, 1.0], {"run": [1.0, 1.0, 0.0]}, ["a", "b"])


def test_reanalyse_rescored_pools_two_sittings_of_one_evaluation_and_refuses_files_that_differ(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import reanalyse_rescored

    def write(name: str, played: dict[str, list[float]], start=(0.1, 0.2, 0.3), ids=("p0", "p1", "p0")) -> str:
        result = {
            "env": "TextGym/Sentiment-v0",
            "episodes": len(start),
            "prompt_ids": list(ids),
            "start": {"rewards": list(start)},
            "played": {run: {"rewards": rewards} for run, rewards in played.items()},
        }
        path = tmp_path / name
        path.write_text(json.dumps(result), encoding="utf-8")
        return str(path)

    first = write("first.json", {"s0": [0.2, 0.2, 0.5]})
    second = write("second.json", {"s1": [0.1, 0.4, 0.3]})
    assert reanalyse_rescored.main([first, second, "--pool"]) == 0
    pooled_line = capsys.readouterr().out.splitlines()[-1]
    # Gains 0.1, 0, 0.2 and 0, 0.2, 0: their mean over the two runs' six prompt-runs; prompts p0 and p1.
    assert pooled_line.startswith("pooled, 2 runs of 2 files: TextGym/Sentiment-v0, 3 episodes: 0.2000 -> 0.2833")
    assert "paired gain +0.0833" in pooled_line and "(2 distinct prompts)" in pooled_line

    refusals = {
        write("other_start.json", {"s1": [0.1, 0.4, 0.3]}, start=(0.1, 0.2, 0.4)): "scored other rewards",
        write("other_prompts.json", {"s1": [0.1, 0.4, 0.3]}, ids=("p0", "p1", "p2")): "played other prompts",
        write("same_run.json", {"s0": [0.1, 0.4, 0.3]}): "run s0 is in",
    }
    for other, message in refusals.items():
        with pytest.raises(SystemExit) as exit_info:
            reanalyse_rescored.main([first, other, "--pool"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        reanalyse_rescored.main([first, "--pool"])
    assert exit_info.value.code == 2 and "--pool needs two or more files, got 1" in capsys.readouterr().err


def test_reproduce_run_names_what_differs_and_refuses_runs_it_cannot_replay(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import reproduce_run

    from baselines.common.config import defaults_for

    def write_run(name, replies, config=None, summary=None, losses=("0.5", "0.4"), fps=0):
        run = tmp_path / name
        (run / "tb").mkdir(parents=True)
        fields = {"algo": "ppo", "env": "TextGym/Sentiment-v0", "seed": 0, "total_timesteps": 100, **(config or {})}
        (run / "config.json").write_text(json.dumps(fields))
        rewards = {"initial": {"reward_mean": 0.1}, "final": {"reward_mean": 0.2}, **(summary or {})}
        (run / "summary.json").write_text(json.dumps({"stopped_by_time_limit": True, **rewards}))
        rows = [
            "time/total_timesteps,time/fps,train/loss",
            *(f"{16 * (i + 1)},{fps + i},{loss}" for i, loss in enumerate(losses)),
        ]
        (run / "tb" / "progress.csv").write_text("\n".join(rows) + "\n")
        records = [{"prompt_id": f"p{i}", "generations": [reply], "reward": 0.5} for i, reply in enumerate(replies)]
        (run / "eval_generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return run

    recorded = write_run("recorded", ["good", "fine"])
    # A run written before summary.json recorded timesteps_trained trained on its last logged rollout.
    assert reproduce_run.replay_config(recorded)["total_timesteps"] == 32
    assert reproduce_run.replay_config(recorded)["max_train_seconds"] == 0.0
    same = write_run("same", ["good", "fine"], losses=("0.5", "0.4"), fps=7)  # another day's speed
    assert reproduce_run.main([str(recorded), "--out", str(same), "--compare-only"]) == 0
    assert "IDENTICAL" in capsys.readouterr().out
    shorter = write_run("shorter", ["good", "fine"], losses=("0.5",))  # one update fewer, the rest the same
    assert reproduce_run.main([str(recorded), "--out", str(shorter), "--compare-only"]) == 1
    assert json.loads((shorter / "reproduction.json").read_text())["log_rows"] == [2, 1]

    # Wall-clock columns may differ; a reply, a logged loss or a flag may not, and the report says which.
    other = write_run("other", ["good", "worse"], config={"learning_rate": 1e-3}, losses=("0.5", "0.41"))
    assert reproduce_run.main([str(recorded), "--out", str(other), "--compare-only", "--rerun-commit", "abc"]) == 1
    report = json.loads((other / "reproduction.json").read_text())
    assert not report["identical"] and report["episodes_differing"] == [1] and report["rerun_commit"] == "abc"
    assert report["first_differing_log_row"] == {
        "row": 1,
        "env_steps": "32",
        "column": "train/loss",
        "recorded": "0.4",
        "rerun": "0.41",
    }
    default_rate = defaults_for("ppo")["learning_rate"]  # what the recorded config, which names none, trained at
    assert report["flags_differing"] == {"learning_rate": [default_rate, 1e-3]}
    assert "DIFFERENT" in capsys.readouterr().out

    # A file the run read, found elsewhere: reported, not a differing flag.
    elsewhere = write_run("elsewhere", ["good", "fine"], config={"proposal_cache": "/new/proposals"})
    assert reproduce_run.main([str(recorded), "--out", str(elsewhere), "--compare-only"]) == 1
    moved = ["--moved", "proposal_cache=/new/proposals"]
    assert reproduce_run.main([str(recorded), "--out", str(elsewhere), "--compare-only", *moved]) == 0
    report = json.loads((elsewhere / "reproduction.json").read_text())
    assert report["moved"] == {"proposal_cache": [None, "/new/proposals"]} and report["flags_differing"] == {}
    assert (
        reproduce_run.replay_config(recorded, {"proposal_cache": "/new/proposals"})["proposal_cache"]
        == "/new/proposals"
    )
    capsys.readouterr()

    refusals = {
        write_run("moved_seed", []): "--moved 'seed=1': give FIELD=PATH with FIELD one of",
        write_run("linear", [], config={"lr_schedule": "linear"}): "--lr-schedule linear is scheduled over",
        write_run("dqn", [], config={"algo": "dqn", "exploration_fraction": 0.5}): "--exploration-fraction 0.5",
        write_run(
            "old", [], config={"retired_flag": 1}
        ): "fields this checkout's baselines.train lacks: ['retired_flag']",
    }
    for run, message in refusals.items():
        extra = ["--moved", "seed=1"] if run.name == "moved_seed" else []
        assert reproduce_run.main([str(run), "--out", str(tmp_path / f"{run.name}_rerun"), *extra]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / f"{run.name}_rerun").exists()
    assert reproduce_run.main([str(recorded), "--out", str(same)]) == 2
    assert "already holds a run; pass --compare-only" in capsys.readouterr().err
