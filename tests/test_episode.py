"""The episode driver's end rules: textgym.core.TextEpisode says when and why an episode ends."""

import gymnasium as gym
import pytest

from textgym.core import REPLY_TOKEN_BUDGET, TASK_OVER, TaskPrompt, TextEpisode, TextTask, TurnResult, start_episode


class TwoTurns(TextTask):
    """Two user turns; each reply scores its word count."""

    def reset(self, rng, options=None):
        self.turn = 0
        return TaskPrompt([{"role": "user", "content": "first?"}], f"p{int(rng.integers(10))}")

    def step(self, reply):
        self.turn += 1
        over = self.turn == 2
        following = [] if over else [{"role": "user", "content": "second?"}]
        return TurnResult(float(len(reply.split())), over, following, {"reward_components": {"words": 1.0}})


def test_task_over_ends_with_task_over():
    episode = start_episode(TwoTurns(), seed=3)
    episode.step("a b")
    assert episode.state == "running" and episode.end_reason is None
    episode.step("c", finished=False)  # without cut_reply_ends an unfinished reply does not end it
    assert (episode.terminated, episode.truncated, episode.end_reason) == (True, False, TASK_OVER)
    assert episode.outcome() == {
        "end_reason": TASK_OVER,
        "episode_reward": 3.0,
        "guard": episode.guard(),
    }
    assert episode.guard()["unfinished_replies"] == 1 and episode.guard()["reward_components"] == {"words": 2.0}


def test_a_cut_reply_ends_the_episode_when_cut_reply_ends():
    episode = start_episode(TwoTurns(), seed=3, cut_reply_ends=True)
    result = episode.step("a b c", finished=False)
    assert result.reward == 3.0 and not result.terminated
    assert (episode.state, episode.terminated, episode.truncated) == ("over", False, True)
    assert episode.end_reason == REPLY_TOKEN_BUDGET
    with pytest.raises(gym.error.ResetNeeded, match="after the episode ended"):
        episode.step("more")


def test_a_cut_last_reply_is_terminated_and_truncated():
    episode = start_episode(TwoTurns(), seed=3, cut_reply_ends=True)
    episode.step("a")
    episode.step("b", finished=False)
    assert (episode.terminated, episode.truncated, episode.end_reason) == (True, True, REPLY_TOKEN_BUDGET)


def test_end_gives_the_callers_reason_and_only_ends_a_running_episode():
    episode = TextEpisode(TwoTurns())
    with pytest.raises(gym.error.ResetNeeded, match="is not_started"):
        episode.end("max_turns")
    start = start_episode(TwoTurns(), seed=0)
    start.step("a")
    start.end("max_turns")
    assert (start.terminated, start.truncated, start.end_reason) == (False, True, "max_turns")
    with pytest.raises(gym.error.ResetNeeded, match="is over"):
        start.end("max_turns")
