r"""Can the DQN's features tell a candidate-level env's better candidates apart? A supervised probe, every reward known.

    python benchmarks/probe_candidates.py TextGym/DialogueCandidate-v0 --train-prompts 128 --episodes 128 \
        --proposal-cache runs/proposals_dialogue --out probe_dialogue.json

A DQN over K candidates learns from one candidate's reward per transition. This probe asks the
easier question first: given the reward of *every* candidate of a first turn, does a linear
scorer on the Q head's own inputs (:class:`baselines.dqn.encoder.CandidateEncoder`: the
candidate's mean hidden state, the context's last hidden state and six scalars) pick better
than the LM's top candidate on validation prompts it was not fit on? Where it cannot, a head
trained from sampled transitions cannot be expected to either, and the features, not the
training budget, are what holds the DQN back.

* Train prompts: the pool a DQN run with ``--train-prompts N --pool-seed S`` trains on
  (:class:`textgym.wrappers.PromptPool`), each reset with seed ``i``; validation prompts:
  the evaluation's, episode ``i`` with seed ``10000 + i``. Only the first turn is probed (a
  later turn's context holds the reply picked before).
* Every valid candidate is scored on a deep copy of the env (as the best-of-K reference),
  which proposes placeholders, not the LM's next turn (:func:`first_turn_rewards`).
* The scorer is a ridge regression on features standardised with the train prompts'
  statistics and centred within each prompt (only the order of one prompt's candidates
  matters to a greedy pick), its strength chosen by grouped cross-validation over the train
  prompts (the gain over the top candidate of the held-out folds).
* Two feature sets: everything the head reads (``head``), and its six scalars alone
  (``scalars``).

It prints, per feature set, the validation gain over the LM's top candidate with its 95%
bootstrap CI over prompts, next to the best-of-K oracle's gain (the most any picker can gain).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Ridge strengths the cross-validation chooses from (features are standardised).
ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Weights ``w`` minimising ``|features w - targets|^2 + alpha |w|^2``."""
    gram = features.T @ features + alpha * np.eye(features.shape[1])
    return np.linalg.solve(gram, features.T @ targets)


def centred(values: np.ndarray, prompts: list[np.ndarray]) -> np.ndarray:
    """``values`` less each prompt's mean (rows of one prompt are its valid candidates)."""
    out = np.array(values, dtype=float, copy=True)
    for rows in prompts:
        out[rows] -= out[rows].mean(0)
    return out


def first_turn_rewards(game: Any) -> dict[int, float]:
    """The reward of each valid candidate of ``game``'s current turn, each played on a copy of the env.

    Playing a candidate on a copy (:func:`baselines.common.candidates.branch`) ends the turn, and
    on a multi-turn task the copy then proposes the next turn's K candidates, which the probe
    never looks at (on Dialogue four LM candidate sets for every prompt's one that is probed):
    the copies propose placeholders instead.
    """
    from baselines.common.candidates import branch
    from baselines.proposal_vec_env import PlaceholderProposals

    actions = np.flatnonzero(game.action_masks()).tolist()
    return {action: float(branch(game, PlaceholderProposals()).step(action)[1]) for action in actions}


def gains_over_top(scores: np.ndarray, rewards: np.ndarray, prompts: list[np.ndarray]) -> np.ndarray:
    """Per prompt: the reward of its highest-scoring candidate (ties: the first) less its top candidate's.

    A prompt's rows are its valid candidates in index order, so its first row is the LM's top candidate.
    """
    return np.array([rewards[rows[int(np.argmax(scores[rows]))]] - rewards[rows[0]] for rows in prompts])


def fit_probe(
    train: dict[str, Any], validation: dict[str, Any], columns: slice, alphas: tuple[float, ...], folds: int
) -> dict[str, Any]:
    """Choose the ridge strength by grouped cross-validation on ``train``, fit, and pick on ``validation``.

    ``train`` and ``validation`` hold ``features`` (rows: candidates), ``rewards`` and
    ``prompts`` (each prompt's row indices, its top candidate first).
    """
    features = train["features"][:, columns]
    mean, std = features.mean(0), features.std(0) + 1e-6
    standard = centred((features - mean) / std, train["prompts"])
    targets = centred(train["rewards"], train["prompts"])
    fold_of = np.arange(len(train["prompts"])) % folds
    cross_validated = {}
    for alpha in alphas:
        held_out = []
        for fold in range(folds):
            fit_rows = np.concatenate([rows for rows, f in zip(train["prompts"], fold_of, strict=True) if f != fold])
            test = [rows for rows, f in zip(train["prompts"], fold_of, strict=True) if f == fold]
            weights = ridge(standard[fit_rows], targets[fit_rows], alpha)
            held_out += list(gains_over_top(standard @ weights, train["rewards"], test))
        cross_validated[alpha] = float(np.mean(held_out))
    alpha = max(alphas, key=lambda a: (cross_validated[a], a))  # ties: the stronger shrinkage
    weights = ridge(standard, targets, alpha)
    scores = ((validation["features"][:, columns] - mean) / std) @ weights
    gains = gains_over_top(scores, validation["rewards"], validation["prompts"])
    return {
        "alpha": alpha,
        "cross_validated_gain": cross_validated,
        "gains": gains.tolist(),
        "wins": int((gains > 0).sum()),
        "losses": int((gains < 0).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    """Score every first-turn candidate of train-pool and validation prompts, fit the probes, print and save."""
    from baselines.common.cli import integer_at_least

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", help="a candidate-level id, e.g. TextGym/DialogueCandidate-v0")
    parser.add_argument("--model", default="default", help="the env's LM, which the features also use")
    parser.add_argument("--train-prompts", type=integer_at_least(4), default=128, help="the train pool's size")
    parser.add_argument(
        "--pool-seed", type=integer_at_least(0), default=0, help="the pool's seed (a run's --pool-seed, or its --seed)"
    )
    parser.add_argument("--episodes", type=integer_at_least(2), default=128, help="validation prompts")
    parser.add_argument("--feature-layer", type=int, default=None, help="the LM layer of the features (the DQN's)")
    parser.add_argument("--folds", type=integer_at_least(2), default=4, help="cross-validation folds over prompts")
    parser.add_argument("--proposal-cache", default="", help="the candidate sets' directory (empty: a temporary one)")
    parser.add_argument("--torch-threads", type=integer_at_least(1), default=2)
    parser.add_argument("--out", default=None, help="JSON file for every prompt's gains and the summary")
    args = parser.parse_args(argv)

    import gymnasium as gym
    import provenance
    import torch

    import textgym  # noqa: F401 - registers the ids
    from baselines.common.candidates import (
        CANDIDATE_KEYS,
        candidate_env,
        candidate_shape,
        run_candidate_episodes,
    )
    from baselines.dqn.encoder import NUM_SCALARS, CandidateEncoder
    from textgym.stats import EVAL_SEED_BASE, bootstrap_ci, cluster_means
    from textgym.wrappers import PromptPool

    torch.set_num_threads(args.torch_threads)
    env_kwargs = {"model": args.model, "render_mode": None}
    try:
        probe_env = candidate_env(args.env, env_kwargs)
    except (gym.error.Error, ValueError) as problem:
        parser.error(f"{args.env}: {problem}")
    pool = PromptPool(probe_env, args.train_prompts, args.pool_seed).pool
    num_candidates, reply_tokens = candidate_shape(probe_env.observation_space, probe_env.action_space)
    probe_env.close()

    def first_turn(prompt_ids: list[str] | None) -> Any:
        def play(env: gym.Env, index: int, batcher: Any) -> dict[str, Any]:
            if prompt_ids is None:
                observation, info = env.reset(seed=EVAL_SEED_BASE + index)
            else:
                observation, info = env.reset(seed=index, options={"prompt_id": prompt_ids[index]})
            rewards = first_turn_rewards(env.unwrapped)
            observation = {key: np.asarray(observation[key]) for key in CANDIDATE_KEYS}
            return {"observation": observation, "rewards": rewards, "prompt_id": info["prompt_id"]}

        return play

    with tempfile.TemporaryDirectory(prefix="textgym-proposals-") as scratch:
        cache = args.proposal_cache or scratch
        splits = {
            name: run_candidate_episodes(args.env, kwargs, episodes, first_turn(ids), 16, proposal_cache=cache)
            for name, kwargs, episodes, ids in (
                ("train", env_kwargs, len(pool), pool),
                ("validation", {**env_kwargs, "split": "validation"}, args.episodes, None),
            )
        }
    encoder = CandidateEncoder(args.model, num_candidates, reply_tokens, args.feature_layer)
    data = {}
    for name, played in splits.items():
        features, rewards, prompts = [], [], []
        for start in range(0, len(played), encoder.encode_batch):
            chunk = played[start : start + encoder.encode_batch]
            batch = {key: np.stack([p["observation"][key] for p in chunk]) for key in CANDIDATE_KEYS}
            encoded = encoder.encode(batch).numpy()
            for episode, candidates in zip(chunk, encoded, strict=True):
                actions = sorted(episode["rewards"])
                prompts.append(np.arange(len(rewards), len(rewards) + len(actions)))
                features += [candidates[action] for action in actions]
                rewards += [episode["rewards"][action] for action in actions]
        data[name] = {
            "features": np.asarray(features, dtype=float),
            "rewards": np.asarray(rewards),
            "prompts": prompts,
        }
    validation = data["validation"]
    episode_prompts = [episode["prompt_id"] for episode in splits["validation"]]
    oracle = np.array(
        [validation["rewards"][rows].max() - validation["rewards"][rows[0]] for rows in validation["prompts"]]
    )
    top_mean = float(np.mean([validation["rewards"][rows[0]] for rows in validation["prompts"]]))
    dim = data["train"]["features"].shape[1]
    sets = {"head": slice(0, dim), "scalars": slice(dim - NUM_SCALARS, dim)}
    results = {
        name: fit_probe(data["train"], validation, columns, ALPHAS, args.folds) for name, columns in sets.items()
    }
    print(
        f"{provenance.measured_at()} {args.env}, first turn, fit on {len(pool)} train prompts (pool seed "
        f"{args.pool_seed}), picked on {args.episodes} validation prompts; LM top {top_mean:.4f}, best-of-K gain "
        f"{oracle.mean():+.4f} ({int((oracle > 0).sum())} prompts where another candidate is better)"
    )
    for name, result in results.items():
        # Validation episodes may draw a prompt twice: the CI resamples prompts by id, not episodes.
        low, high = bootstrap_ci(cluster_means(episode_prompts, result["gains"]))
        result["gain_mean"], result["gain_ci95"] = float(np.mean(result["gains"])), [low, high]
        print(
            f"  {name:8s} ({sets[name].stop - sets[name].start} features, ridge alpha {result['alpha']:g}): gain over "
            f"the top {result['gain_mean']:+.4f}, 95% CI {low:+.4f}..{high:+.4f}, {result['wins']} wins, "
            f"{result['losses']} losses"
        )
    if args.out:
        record = {
            "env": args.env,
            "model": args.model,
            "train_prompts": len(pool),
            "pool_seed": args.pool_seed,
            "episodes": args.episodes,
            "prompt_ids": episode_prompts,
            "top_mean": top_mean,
            "best_of_k_gains": oracle.tolist(),
            "probes": results,
        }
        Path(args.out).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
