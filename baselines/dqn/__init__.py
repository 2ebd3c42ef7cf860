r"""A Q-network over LM-proposed candidates, for stock stable-baselines3 DQN.

``DQN(LMQPolicy, env, policy_kwargs=dict(model="default"))`` learns to pick one of the K
replies that a candidate-level TextGym env proposes each turn (``Discrete(K)`` actions):

* **DRRN-style scoring.** ``Q(s, k) = head(phi(context, candidate k))``: one head with
  shared weights scores every candidate, so a candidate's value depends on its text, not
  its slot. ``phi`` comes from a frozen causal LM that reads the context once (KV cache)
  and then the K candidates as one batch continuing that cache.
* **Frozen, shared trunk.** The LM is not a submodule of either Q-network: the online and
  target networks hold the same :class:`CandidateEncoder`, so the target network copies
  only the small head, and checkpoints hold only the head and the feature statistics (the
  trunk is reloaded by model name). On CPU the encoder reuses the frozen LM the env
  itself proposes with (:func:`textgym.models.load_shared_causal_lm`): one copy per process.
* **Feature cache.** The frozen LM gives the same features for the same ids, so features
  are computed once per distinct observation (when the policy acts, or at the first
  replay of an observation that was acted on at random) and looked up afterwards:
  a gradient step costs the head alone, and many gradient steps per env step are cheap.
* **Features that a small head can use.** Per candidate: the mean over its tokens of the
  hidden states of a middle layer of the LM (what the reply says), the context's last
  hidden state (what was asked), the LM's log-probabilities of the candidate (mean,
  minimum, sum per token budget: how plausible it is), its length, whether it is empty and
  whether it is candidate 0 (the LM's greedy reply). Pooling the candidate's tokens
  matters most: on Sentiment, a head fitted on the candidate's *last* hidden state picks
  far worse replies than one fitted on the mean (offline probe in the PR notes). Each
  dimension is standardised with statistics of the first encoded candidates (unlabelled,
  then frozen), since a few hidden dimensions carry offsets ~100x the median one.
* **Greedy start.** The head's last layer starts at zero, so all candidates tie and the
  untrained greedy policy is the LM's own top candidate (ties go to index 0).
* **Masking.** Duplicate candidates (the env's ``action_masks()``) are recognised from the
  observed ids and never chosen greedily (a duplicate is the same reply, so its value
  stays in the bootstrap ``max`` and its transitions still train the head).

Observations stay integer ids in SB3's replay buffer: the policy reads them directly and
never calls SB3's preprocessing (which would cast them to float). For bookkeeping,
:func:`~baselines.dqn.builder.replay_bytes_per_transition` gives the buffer's size per transition.

The package: :mod:`~baselines.dqn.encoder` (the frozen-LM features and their cache),
:mod:`~baselines.dqn.policy` (Q-networks and policy), :mod:`~baselines.dqn.builder` (the
``baselines.train`` builder and run statistics), :mod:`~baselines.dqn.references` (reference
pickers and ``python -m baselines.dqn``). Its evaluation is
:func:`baselines.common.evaluation.evaluate_q_policy`; its episodes run through
:func:`baselines.common.candidates.run_candidate_episodes`.
"""

from baselines.common.candidates import CANDIDATE_KEYS, candidate_shape, run_candidate_episodes
from baselines.common.evaluation import evaluate_q_policy
from baselines.dqn.builder import build_dqn, replay_bytes_per_transition, run_stats
from baselines.dqn.encoder import CandidateEncoder, FeatureStatistics
from baselines.dqn.policy import LMQNetwork, LMQPolicy, duplicate_mask
from baselines.dqn.references import candidate_references

__all__ = [
    "CANDIDATE_KEYS",
    "CandidateEncoder",
    "FeatureStatistics",
    "LMQNetwork",
    "LMQPolicy",
    "build_dqn",
    "candidate_references",
    "candidate_shape",
    "duplicate_mask",
    "evaluate_q_policy",
    "replay_bytes_per_transition",
    "run_candidate_episodes",
    "run_stats",
]
