"""Batched proposals: one LM call for several seeded requests, and envs stepped through one batcher."""

import threading
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

import textgym  # noqa: F401
from baselines.proposal_vec_env import ReusedProposals, StoredProposals
from baselines.vec_env import BatchedProposalVecEnv
from textgym.lm import Completion, LocalLanguageModel, ProposalBatcher

ENV_ID = "TextGym/DialogueCandidate-v0"
ENV_KWARGS = {
    "model": "tiny",
    "num_candidates": 3,
    "max_reply_tokens": 4,
    "max_context_tokens": 64,
    "render_mode": None,
}


@pytest.fixture(scope="module")
def lm(tiny_model):
    return LocalLanguageModel("tiny")


def _requests(count, k=3, n=5):
    # Same prompt length in every request: no padding, so a batch must equal the lone calls exactly.
    return [([{"role": "user", "content": f"word{i % 10}"}], k, n, 100 + i) for i in range(count)]


def test_propose_many_draws_what_each_request_draws_alone(lm):
    requests = _requests(4)
    assert len({len(lm.prompt_ids(r[0])) for r in requests}) == 1
    alone = [lm.propose(*r) for r in requests]
    batched = lm.propose_many(requests)
    assert [[c.token_ids for c in group] for group in batched] == [[c.token_ids for c in group] for group in alone]
    # Different seeds give different samples (the groups do not share one generator).
    assert len({tuple(c.token_ids for c in group[1:]) for group in batched}) > 1


def test_propose_many_rejects_mixed_shapes(lm):
    with pytest.raises(ValueError, match=r"must share num_candidates and max_new_tokens, got \[\(3, 4\), \(3, 5\)\]"):
        lm.propose_many([*_requests(1, n=4), *_requests(1, n=5)])


def test_batcher_answers_concurrent_jobs_in_one_batch(lm):
    batcher = ProposalBatcher(lm)
    requests = _requests(6)
    answers = batcher.map(lambda r: batcher.propose(*r), requests)
    assert batcher.batches == 1 and batcher.requests == 6
    assert [[c.text for c in a] for a in answers] == [[c.text for c in g] for g in lm.propose_many(requests)]
    # A job that proposes twice while another proposes once: two rounds, nothing lost.
    batcher.batches = batcher.requests = 0
    twice = batcher.map(lambda n: [batcher.propose(*_requests(1)[0]) for _ in range(n)], [2, 1])
    assert [len(t) for t in twice] == [2, 1] and batcher.batches == 2 and batcher.requests == 3
    # Outside map it proposes at once.
    assert batcher.propose(*requests[0])[0].text == answers[0][0].text


def test_batcher_hands_a_round_to_the_lm_in_job_order_whatever_order_the_threads_ask_in():
    class SeedEcho:
        """Answers each request with one completion naming its seed; records each call's seeds."""

        def __init__(self):
            self.calls = []

        def propose_many(self, requests):
            self.calls.append([seed for _, _, _, seed in requests])
            return [[Completion(f"seed {seed}", True, None)] for _, _, _, seed in requests]

    echo = SeedEcho()
    # Two envs meet one context in the same step: the kept set is generated with the first request's seed.
    batcher = ProposalBatcher(ReusedProposals(echo, variants=1))
    prompt = [{"role": "user", "content": "same context"}]

    def job(index):
        if index == 0:
            time.sleep(0.3)  # job 0's thread asks last
        return batcher.propose(prompt, 1, 4, 100 + index)[0].text

    assert batcher.map(job, [0, 1, 2]) == ["seed 100"] * 3
    assert echo.calls == [[100]]  # job 0's seed, though its thread asked last
    plain = SeedEcho()
    batcher = ProposalBatcher(plain)
    batcher.map(lambda index: (time.sleep(0.1 * (3 - index)), batcher.propose(prompt, 1, 4, index)), range(4))
    assert plain.calls == [[0, 1, 2, 3]]


def test_batcher_reraises_a_job_error_without_hanging(lm):
    batcher = ProposalBatcher(lm)

    def job(i):
        if i == 1:
            raise KeyError("bad job")
        return batcher.propose(*_requests(1)[0])

    with pytest.raises(KeyError, match="bad job"):
        batcher.map(job, range(3))
    assert threading.active_count() < 50
    with pytest.raises(ValueError, match="must be >= 1"):
        batcher.map(lambda r: batcher.propose(*r), [([{"role": "user", "content": "x"}], 0, 4, 0)])


def test_batched_vec_env_matches_dummy_vec_env(tiny_model):
    plain = make_vec_env(ENV_ID, n_envs=3, seed=7, env_kwargs=ENV_KWARGS, vec_env_cls=DummyVecEnv)
    batched = make_vec_env(ENV_ID, n_envs=3, seed=7, env_kwargs=ENV_KWARGS, vec_env_cls=BatchedProposalVecEnv)
    assert isinstance(batched.batcher, ProposalBatcher)
    assert all(env.unwrapped.proposer is batched.batcher for env in batched.envs)
    first, second = plain.reset(), batched.reset()
    dones_seen = 0
    for step in range(12):
        for key in first:
            np.testing.assert_array_equal(first[key], second[key], err_msg=f"{key} at step {step}")
        actions = np.array([step % 3, (step + 1) % 3, 0])
        first, rewards, dones, infos = plain.step(actions)
        second, rewards2, dones2, infos2 = batched.step(actions)
        np.testing.assert_allclose(rewards, rewards2)
        np.testing.assert_array_equal(dones, dones2)
        assert [i.get("reply") for i in infos] == [i.get("reply") for i in infos2]
        dones_seen += int(dones.sum())
    assert dones_seen > 0  # auto-reset was exercised
    assert batched.batcher.batches < batched.batcher.requests  # proposals really were batched


def test_batched_vec_env_leaves_token_level_envs_sequential(tiny_model):
    env = make_vec_env(
        "TextGym/Sentiment-v0",
        n_envs=2,
        env_kwargs={"model": "tiny", "render_mode": None},
        vec_env_cls=BatchedProposalVecEnv,
    )
    assert env.batcher is None
    env.reset()
    _, rewards, _, _ = env.step(np.array([1, 2]))
    assert rewards.shape == (2,)
    assert gym.spaces.Discrete(2).contains(1)


def test_shared_prefill_draws_what_repeated_prompts_draw(lm):
    from textgym.lm import sample

    ids = torch.tensor([lm.prompt_ids([{"role": "user", "content": "tell me about word7 and word8"}])])
    settings = {"max_new_tokens": 6, "end_ids": [-5], "pad_id": 0, "greedy": torch.tensor([True, False, False])}
    generator = torch.Generator().manual_seed(5)
    shared = sample(lm.model, ids, torch.ones_like(ids), generator=generator, repeats=3, **settings)
    repeated = sample(
        lm.model, ids.repeat(3, 1), torch.ones(3, ids.shape[1]), generator=torch.Generator().manual_seed(5), **settings
    )
    assert torch.equal(shared.tokens, repeated.tokens)
    torch.testing.assert_close(shared.logprobs, repeated.logprobs)
    assert shared.tokens.shape == (3, 6) and len({tuple(row.tolist()) for row in shared.tokens}) > 1
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        sample(lm.model, ids, torch.ones_like(ids), repeats=0, **settings)


class CountingLM:
    """A fake proposer that names each reply by its prompt, seed and rank, and counts what it generated."""

    def __init__(self):
        self.generated = []

    def propose_many(self, requests):
        self.generated.append(len(requests))
        return [
            [Completion(text=f"{tuple(prompt)}/{seed}/{rank}", finished=True) for rank in range(k)]
            for prompt, k, _, seed in requests
        ]


def test_reused_proposals_keep_variants_per_context():
    lm = CountingLM()
    reuse = ReusedProposals(lm, variants=2)
    # Seeds 10 and 12 pick variant 0 of context (1, 2), seed 11 variant 1; context (3,) is another key.
    first = reuse.propose_many([([1, 2], 3, 8, 10), ([1, 2], 3, 8, 12), ([1, 2], 3, 8, 11), ([3], 3, 8, 5)])
    assert [group[0].text for group in first] == ["(1, 2)/10/0", "(1, 2)/10/0", "(1, 2)/11/0", "(3,)/5/0"]
    assert lm.generated == [3] and (reuse.hits, reuse.misses) == (1, 3)
    # Later requests are answered from the kept sets, without generating.
    again = reuse.propose_many([([1, 2], 3, 8, 99), ([3], 3, 8, 7)])
    assert [group[0].text for group in again] == ["(1, 2)/11/0", "(3,)/5/0"]
    assert lm.generated == [3] and reuse.hits == 3
    # Another K or budget is another set.
    assert reuse.propose([1, 2], 2, 8, 10)[0].text == "(1, 2)/10/0" and lm.generated == [3, 1]
    # Handed-out lists are copies: a caller that edits its list does not edit the kept set.
    again[0].clear()
    assert len(reuse.propose([1, 2], 3, 8, 1)) == 3


def test_reused_proposals_drop_the_least_recently_used_sets():
    reuse = ReusedProposals(CountingLM(), variants=1, max_entries=2)
    for context in ([1], [2], [1], [3]):
        reuse.propose(context, 2, 4, 0)
    assert list(reuse.sets) == [((1,), 2, 4, 0), ((3,), 2, 4, 0)]


def test_stored_proposals_answer_only_the_same_request_and_are_shared_through_the_directory(tmp_path):
    lm = CountingLM()
    store = StoredProposals(lm, tmp_path, namespace="model a")
    first = store.propose_many([([1, 2], 3, 8, 10), ([1, 2], 3, 8, 11), ([1, 2], 3, 8, 10)])
    # Nothing is shared between seeds; the repeated request in one call is generated twice, stored once.
    assert [group[0].text for group in first] == ["(1, 2)/10/0", "(1, 2)/11/0", "(1, 2)/10/0"]
    assert lm.generated == [3] and len(list(tmp_path.glob("*.json"))) == 2
    # Another store on the directory (another run) reads them back, completions intact, without generating.
    other_lm = CountingLM()
    other = StoredProposals(other_lm, tmp_path, namespace="model a")
    assert other.propose([1, 2], 3, 8, 11) == first[1] and other_lm.generated == []
    assert (other.hits, other.misses) == (1, 0)
    # Another namespace, K, budget or seed is another set; a damaged file is generated again.
    assert StoredProposals(other_lm, tmp_path, namespace="model b").propose([1, 2], 3, 8, 11)
    other.propose([1, 2], 2, 8, 11)
    other.propose([1, 2], 3, 9, 11)
    assert other_lm.generated == [1, 1, 1]
    for path in tmp_path.glob("*.json"):
        path.write_text("[{", encoding="utf-8")
    assert other.propose([1, 2], 3, 8, 11)[0].text == "(1, 2)/11/0" and other_lm.generated == [1, 1, 1, 1]


@pytest.mark.parametrize("variants", [0, -1])
def test_reused_proposals_reject_a_bad_variant_count(variants):
    with pytest.raises(ValueError, match=rf"proposal variants must be an integer >= 1, got {variants}"):
        ReusedProposals(CountingLM(), variants)


def test_vec_env_with_proposal_variants_reuses_candidate_sets(tiny_model):
    env = make_vec_env(
        "TextGym/SentimentCandidate-v0",
        n_envs=4,
        seed=3,
        env_kwargs=ENV_KWARGS,
        vec_env_cls=BatchedProposalVecEnv,
        vec_env_kwargs={"proposal_variants": 1},
    )
    reuse = env.batcher.lm
    assert isinstance(reuse, ReusedProposals) and all(e.unwrapped.proposer is env.batcher for e in env.envs)
    seen = {}
    obs = env.reset()
    for _ in range(30):
        for row in range(4):
            key = obs["input_ids"][row].tobytes()
            candidates = obs["candidate_ids"][row].tobytes()
            # One variant: a context always comes with the same candidates.
            assert seen.setdefault(key, candidates) == candidates
        obs, _, _, _ = env.step(np.zeros(4, dtype=np.int64))
    assert reuse.hits > 0 and reuse.misses == len(reuse.sets)
    assert len(seen) < 4 * 31  # contexts really came back


def test_proposal_variants_need_candidate_level_envs(tiny_model):
    kwargs = {"model": "tiny", "render_mode": None}
    with pytest.raises(ValueError, match="proposal_variants=2 needs candidate-level envs"):
        make_vec_env(
            "TextGym/Sentiment-v0",
            2,
            env_kwargs=kwargs,
            vec_env_cls=BatchedProposalVecEnv,
            vec_env_kwargs={"proposal_variants": 2},
        )
    with pytest.raises(ValueError, match="proposal_variants must be an integer >= 0, got -1"):
        make_vec_env(
            ENV_ID,
            1,
            env_kwargs=ENV_KWARGS,
            vec_env_cls=BatchedProposalVecEnv,
            vec_env_kwargs={"proposal_variants": -1},
        )
