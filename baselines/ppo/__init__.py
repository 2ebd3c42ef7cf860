"""A fast PPO for token-level LM envs: KV-cached batched collection, one forward per packed row in training.

:class:`FastLMPPO` is stock SB3 ``PPO`` with :class:`~baselines.policies.LMActorCriticPolicy`
and the same objective (SB3's own ``train`` loop computes every loss), changed in three places:

* **Collection.** Instead of one full forward over every env's whole context per step,
  a :class:`ContinuousDecoder` keeps one KV cache for all envs and feeds each step's
  tokens in one batched forward; the cache appends in place (no copy of itself per
  step). An env that starts a new reply (or whose observation window slides) restarts
  from its new observation, re-encoding only what it does not share with the row's
  tokens so far (a new prompt shares the chat template and system prompt; a dialogue's
  next turn shares the whole conversation). Every sampled token comes with exactly the
  log-probability and value that the stock policy computes from that step's observation.
* **Training.** Minibatches are whole *segments* (runs of steps in which each observation
  is the previous one plus the previous action), packed into rows that hold the prompt
  prefix all segments share once; one forward per row gives every step's log-probability
  and value. When only the top layers train (``trainable_layers``), the frozen layers'
  output at every token is kept from collection: training, the reference's forward and the
  cache refresh after an update run only the layers above it.
* **KL to a frozen reference.** After each rollout, one reference forward per batch of
  segments gives ``log p_ref`` of every sampled token; ``reward_t -= beta * (log pi_old -
  log p_ref)``, with ``beta`` adapted towards a target KL per reply. The reference lives
  in the algorithm, outside the policy, and is never saved.


The package: :mod:`~baselines.ppo.cache` (KV-cache accessors), :mod:`~baselines.ppo.decoder`
(the continuous decoder), :mod:`~baselines.ppo.buffer` (the segment rollout buffer and row
packing), :mod:`~baselines.ppo.monitor` (KL controller and training monitor),
:mod:`~baselines.ppo.algorithm` (:class:`FastLMPPO`) and :mod:`~baselines.ppo.builder` (the
``baselines.train`` builder). The policy is :class:`baselines.policies.LMActorCriticPolicy`.
"""

from baselines.policies import LMActorCriticPolicy
from baselines.ppo.algorithm import FastLMPPO
from baselines.ppo.buffer import SegmentRolloutBuffer
from baselines.ppo.builder import build_ppo
from baselines.ppo.decoder import ContinuousDecoder
from baselines.ppo.monitor import KLController, TrainingMonitor

__all__ = [
    "ContinuousDecoder",
    "FastLMPPO",
    "KLController",
    "LMActorCriticPolicy",
    "SegmentRolloutBuffer",
    "TrainingMonitor",
    "build_ppo",
]
