"""The verifier and TextEnv agree by construction: both play episodes through textgym.core.TextEpisode.

Episodes recorded from the real env (RecordGenerations) replay cleanly through
leaderboard.replay.rescore_episode at every granularity, including token-level replies cut
by their budget; a record edited in any field the driver decides is rejected with the
verifier's message.
"""

import copy

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401
from leaderboard.replay import rescore_episode
from leaderboard.report import Report
from textgym.registration import make_task
from textgym.wrappers import RecordGenerations
from textgym.wrappers.recorder import read_records

DIALOGUE_KWARGS = {"split": "validation", "num_turns": 2, "max_reply_tokens": 3}


def _record(tmp_path, env_id, actions, seeds):
    """Play ``seeds`` through the real env and recorder; ``actions(env, rng)`` gives each step's action."""
    path = tmp_path / "records.jsonl"
    env = RecordGenerations(gym.make(env_id, model="tiny", **DIALOGUE_KWARGS), path)
    rng = np.random.default_rng(0)
    for seed in seeds:
        env.reset(seed=seed)
        terminated = truncated = False
        while not (terminated or truncated):
            _, _, terminated, truncated, _ = env.step(actions(env.unwrapped, rng))
    env.close()
    records = read_records(path)
    for line, record in enumerate(records, 1):
        record.update(training_seed=0, _line=line)
    return records


def _token_action(env, rng):
    # Mostly ordinary tokens, so replies end by the end token or run into the 3-token budget.
    return min(env.end_ids) if rng.random() < 0.3 else int(rng.integers(100, 1000))


def _replay(env_id, record):
    report = Report()
    task = make_task(env_id, model="tiny", **DIALOGUE_KWARGS)
    rescored = rescore_episode(task, record, gym.spec(env_id).kwargs["granularity"], report)
    return rescored, [str(problem) for problem in report.problems]


@pytest.fixture(scope="module")
def token_records(tmp_path_factory, tiny_model):
    return _record(tmp_path_factory.mktemp("token"), "TextGym/Dialogue-v0", _token_action, range(10_000, 10_012))


def test_token_level_records_replay_exactly_with_both_end_reasons(token_records):
    reasons = set()
    for record in token_records:
        rescored, problems = _replay("TextGym/Dialogue-v0", record)
        assert problems == []
        assert rescored.reward == pytest.approx(record["reward"], abs=1e-9)
        assert rescored.replies == record["generations"]
        reasons.add(record["end_reason"])
    # Both ways an episode ends at token level were exercised (the seeds are fixed).
    assert reasons == {"task_over", "reply_token_budget"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("end_reason", "max_turns", "only a token-level reply budget truncates an episode"),
        ("truncated", False, "the task is not over after the last generation and the record is not truncated"),
        ("terminated", True, "the record says terminated=True, the task says False"),
    ],
)
def test_a_budget_cut_record_with_edited_end_is_rejected(token_records, field, value, message):
    cut = next(r for r in token_records if r["end_reason"] == "reply_token_budget" and not r["terminated"])
    record = {**copy.deepcopy(cut), field: value}
    _, problems = _replay("TextGym/Dialogue-v0", record)
    assert any(message in problem for problem in problems), problems


def test_a_finished_record_with_edited_rewards_or_end_is_rejected(token_records):
    done = next(r for r in token_records if r["end_reason"] == "task_over")
    _, problems = _replay("TextGym/Dialogue-v0", {**copy.deepcopy(done), "end_reason": "reply_token_budget"})
    assert any("end_reason 'reply_token_budget' of an episode the task ended" in p for p in problems)
    edited = copy.deepcopy(done)
    edited["turn_rewards"][-1] += 0.5
    _, problems = _replay("TextGym/Dialogue-v0", edited)
    assert any(f"generation {len(edited['generations']) - 1} scores" in p for p in problems), problems
    shortened = copy.deepcopy(done)
    shortened["generations"], shortened["turn_rewards"] = done["generations"][:1], done["turn_rewards"][:1]
    _, problems = _replay("TextGym/Dialogue-v0", shortened)
    assert any("the task is not over after the last generation" in p for p in problems), problems


def test_utterance_level_records_replay_and_cannot_claim_a_budget_cut(tmp_path, tiny_model):
    def utterance(env, rng):
        return rng.integers(100, 1000, size=env.max_reply_tokens)  # no end token: unfinished replies

    records = _record(tmp_path, "TextGym/DialogueUtterance-v0", utterance, [10_000, 10_001])
    for record in records:
        # At utterance level an unfinished reply is one action: the episode goes on to the task's end.
        assert record["end_reason"] == "task_over" and not record["truncated"]
        assert _replay("TextGym/DialogueUtterance-v0", record)[1] == []
    forged = {**copy.deepcopy(records[0]), "truncated": True, "end_reason": "reply_token_budget"}
    _, problems = _replay("TextGym/DialogueUtterance-v0", forged)
    assert any("only a token-level reply budget truncates an episode" in p for p in problems), problems
