"""The quick benchmark track's own pieces: the random arm, bundling every arm, the table."""

import json
import sys

import numpy as np
import pytest

from leaderboard.verify import verify_bundle
from textgym.stats import bootstrap_ci


def test_random_arms_make_verified_bundles_and_missing_runs_are_reported(quick_track, tmp_path, tiny_model):
    for env_id in ("TextGym/Sentiment-v0", "TextGym/SentimentCandidate-v0"):
        quick_track.random_arm(env_id, tmp_path / "random" / quick_track.slug(env_id), "tiny", [0, 1, 2])
    rows = quick_track.make_bundles(tmp_path, ["Sentiment"], [0, 1, 2], "tiny")
    by_arm = {(row["arm"], row["env"]): row for row in rows}
    assert set(by_arm) == {
        ("ppo", "TextGym/Sentiment-v0"),
        ("zero-shot", "TextGym/Sentiment-v0"),
        ("dqn", "TextGym/SentimentCandidate-v0"),
        ("lm-top", "TextGym/SentimentCandidate-v0"),
        ("random", "TextGym/Sentiment-v0"),
        ("random", "TextGym/SentimentCandidate-v0"),
    }
    for env_id in ("TextGym/Sentiment-v0", "TextGym/SentimentCandidate-v0"):
        row = by_arm[("random", env_id)]
        assert row["verified"], row["verify_summary"]
        assert len(row["per_seed"]) == 3 and row["claimed"]["episodes"] == 96
        assert verify_bundle(tmp_path / "bundles" / row["bundle"]).ok
    manifest = json.loads((tmp_path / "bundles" / "random__sentimentcandidate_v0" / "bundle.json").read_text())
    assert manifest["model"]["algo"] == "random" and manifest["env"]["id"] == "TextGym/SentimentCandidate-v0"
    # Seeds differ: the random candidates picked are not all the same across training seeds.
    lines = (tmp_path / "bundles" / "random__sentimentcandidate_v0" / "generations.jsonl").read_text().splitlines()
    by_seed = {}
    for record in map(json.loads, lines):
        by_seed.setdefault(record["training_seed"], []).append(record["generations"][0])
    assert by_seed[0] != by_seed[1]
    # Arms without runs are reported as failed, not dropped.
    assert "error" in by_arm[("ppo", "TextGym/Sentiment-v0")]
    table = quick_track.markdown_table(rows)
    assert "| Sentiment-v0 | ppo | failed:" in table
    assert "| SentimentCandidate-v0 | random | " in table and "yes (re-scored)" in table
    # Submitting adds the verified bundles; submitting the same bundles again adds nothing and does not fail.
    entries, site = tmp_path / "entries.json", tmp_path / "site"
    assert quick_track.submit_rows(rows, entries, site) == 2
    assert quick_track.submit_rows(rows, entries, site) == 0
    assert len(json.loads(entries.read_text())["entries"]) == 2 and (site / "index.html").is_file()


def test_track_commands_use_the_registered_envs_and_budgets(quick_track, tmp_path):
    args = quick_track.parse_args(["--out", str(tmp_path), "--ppo-seconds", "7", "--dqn-seconds", "9"])
    ppo = quick_track.train_command(args, "ppo", "TextGym/Sentiment-v0", 1, tmp_path / "r")
    dqn = quick_track.train_command(args, "dqn", "TextGym/SentimentCandidate-v0", 2, tmp_path / "d")
    assert ppo[ppo.index("--max-train-seconds") + 1] == "7.0" and dqn[dqn.index("--max-train-seconds") + 1] == "9.0"
    for command in (ppo, dqn):  # the track pins every env argument: no reply or context budget flags
        assert "--max-reply-tokens" not in command and "--num-candidates" not in command
        assert "--initial-eval" in command and command[command.index("--eval-episodes") + 1] == "32"
    assert ppo[ppo.index("--trainable-layers") + 1] == "8" and "--trainable-layers" not in dqn
    # Candidate-level arms share the track's candidate sets; PPO proposes nothing.
    cache = str(tmp_path / "proposals")
    assert dqn[dqn.index("--proposal-cache") + 1] == cache and "--proposal-cache" not in ppo
    random = quick_track.random_command(args, "TextGym/SentimentCandidate-v0", tmp_path / "x", 0)
    assert random[random.index("--proposal-cache") + 1] == cache


def test_track_budgets_go_to_the_arms_that_learn(quick_track, tmp_path):
    args = quick_track.parse_args(["--out", str(tmp_path)])

    def seconds_and_flags(algo, env_id):
        command = quick_track.train_command(args, algo, env_id, 0, tmp_path / "r")
        return float(command[command.index("--max-train-seconds") + 1]), command

    def last_value(command, flag):  # argparse keeps a repeated flag's last value
        return command[len(command) - 1 - command[::-1].index(flag) + 1]

    sentiment, sentiment_command = seconds_and_flags("ppo", "TextGym/Sentiment-v0")
    dialogue, dialogue_command = seconds_and_flags("ppo", "TextGym/Dialogue-v0")
    summarization, command = seconds_and_flags("ppo", "TextGym/Summarization-v0")
    assert dialogue == 600.0 and sentiment == 180.0 and summarization == 60.0
    assert "--whiten-rewards" in command and command[command.index("--gae-lambda") + 1] == "1.0"
    assert last_value(command, "--learning-rate") == "1e-4" and last_value(command, "--max-prompt-tokens") == "464"
    assert last_value(dialogue_command, "--n-envs") == "32" and last_value(sentiment_command, "--n-envs") == "16"
    assert "--whiten-rewards" not in sentiment_command
    dqn_seconds, dqn = seconds_and_flags("dqn", "TextGym/SentimentCandidate-v0")
    assert dqn_seconds == 180.0 and dqn[dqn.index("--proposal-variants") + 1] == "1"
    assert last_value(dqn, "--train-prompts") == "96"
    assert last_value(seconds_and_flags("dqn", "TextGym/SummarizationCandidate-v0")[1], "--train-prompts") == "16"
    # Every trained arm has a budget of its own: no run is left to a default that makes no update.
    assert {key for key in quick_track.TRAIN_SECONDS} == {(a, t) for a in ("ppo", "dqn") for t in quick_track.TASKS}
    assert quick_track.task_of("TextGym/SparseCompletionCandidate-v0") == "SparseCompletion"


PROMPT_OF_EPISODE = ["p0", "p1", "p2", "p0"]  # the fourth episode draws the first one's prompt again


def _bundle(bundles, name, rewards):
    (bundles / name).mkdir(parents=True)
    lines = [
        json.dumps(
            {"training_seed": seed, "seed": 10000 + index, "prompt_id": PROMPT_OF_EPISODE[index], "reward": reward}
        )
        for seed, per_prompt in enumerate(rewards)
        for index, reward in enumerate(per_prompt)
    ]
    (bundles / name / "generations.jsonl").write_text("\n".join(lines) + "\n")


def test_gains_over_start_pair_each_episode_with_the_starting_policys(quick_track, tmp_path):
    bundles = tmp_path / "bundles"
    start = [[0.0, 0.5, 0.5, 0.0]] * 3
    _bundle(bundles, "zero-shot__sentiment_v0", start)
    _bundle(bundles, "ppo__sentiment_v0", [[0.5, 1.0, 1.0, 0.5], [0.25, 0.75, 1.0, 0.5], [0.5, 0.5, 1.0, 0.5]])
    _bundle(bundles, "lm-top__sentimentcandidate_v0", start)
    _bundle(bundles, "dqn__sentimentcandidate_v0", start)  # a head that never left the LM's top candidate
    ppo, dqn = quick_track.gains_over_start(bundles, ["Sentiment"])
    gains = [0.5, 0.5, 0.5, 0.5] + [0.25, 0.25, 0.5, 0.5] + [0.5, 0, 0.5, 0.5]
    assert ppo["pairs"] == 12 and ppo["prompts"] == 3 and ppo["gain"] == pytest.approx(np.mean(gains))
    # The starting policy's one evaluation of an episode is shared by the seeds, and episodes 0 and 3 played the
    # same prompt: the CI resamples the 3 prompts, each with its gain averaged over its 6 or 3 (seed, episode) pairs.
    per_episode = np.reshape(gains, (3, 4))
    per_prompt = [per_episode[:, [0, 3]].mean(), per_episode[:, 1].mean(), per_episode[:, 2].mean()]
    assert ppo["gain_ci95"] == pytest.approx(bootstrap_ci(per_prompt))
    assert ppo["gain_ci95"] != pytest.approx(bootstrap_ci(list(per_episode.mean(0))))
    assert ppo["start_mean"] == pytest.approx(0.25) and ppo["gain_ci95"][0] > 0 and ppo["beats_start"] == "yes"
    assert dqn["gain"] == 0.0 and dqn["beats_start"] == "no (CI includes 0)"
    table = quick_track.gains_table([ppo, dqn])
    assert "| Sentiment | ppo | zero-shot | 0.250 -> " in table and "| yes |" in table
    # A missing arm is reported, not dropped.
    (rows,) = [r for r in quick_track.gains_over_start(bundles, ["Dialogue"]) if r["arm"] == "ppo"]
    assert rows["error"] == "missing or unpaired bundles"
    assert "| Dialogue | ppo | zero-shot | missing or unpaired bundles | | no |" in quick_track.gains_table([rows])


def test_later_seeds_reuse_the_first_seeds_initial_evaluation(quick_track, tmp_path):
    args = quick_track.parse_args(["--out", str(tmp_path), "--tasks", "Sentiment"])
    jobs = quick_track.track_jobs(args, tmp_path)
    firsts = {job.name: job for job in jobs if not job.name.startswith("random")}
    assert set(firsts) == {"dqn__sentimentcandidate_v0__s0", "ppo__sentiment_v0__s0"}
    randoms = [job.name for job in jobs if job.name.startswith("random")]  # one job a seed, the long ones first
    assert randoms == [
        f"random__{name}__s{seed}" for name in ("sentimentcandidate_v0", "sentiment_v0") for seed in (0, 1, 2)
    ]
    for job in firsts.values():
        assert "--initial-eval" in job.command and "--initial-eval-from" not in job.command
        assert [f.name for f in job.followers] == [job.name[:-1] + "1", job.name[:-1] + "2"]
        for follower in job.followers:
            source = follower.command[follower.command.index("--initial-eval-from") + 1]
            assert source == str(tmp_path / "runs" / job.name) and "--initial-eval" not in follower.command


def test_job_runner_starts_followers_after_their_job_and_skips_them_when_it_fails(quick_track, tmp_path):
    def job(name, code, followers=()):
        order = f"open({str(tmp_path / 'order')!r}, 'a').write({name!r} + ' ')"
        return quick_track.Job(name, [sys.executable, "-c", f"{order}; raise SystemExit({code})"], list(followers))

    jobs = [job("a", 0, [job("a1", 0), job("a2", 0)]), job("b", 3, [job("b1", 0)]), job("c", 0)]
    results = {r["job"]: r["exit_code"] for r in quick_track.run_jobs(jobs, 1, tmp_path)}
    assert results == {"a": 0, "a1": 0, "a2": 0, "b": 3, "b1": -1, "c": 0}
    assert (tmp_path / "order").read_text().split() == ["a", "a1", "a2", "b", "c"]  # followers run next
