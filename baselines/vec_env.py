"""SB3 vector envs for TextGym: candidate proposals batched in one process, or envs spread over a Ray cluster.

* :class:`BatchedProposalVecEnv` (:mod:`baselines.proposal_vec_env`): the envs of one
  process, their candidate-level LM proposals run as one batched generation.
* :class:`RayVecEnv` (:mod:`baselines.ray_vec_env`): the envs in Ray actors across a
  cluster's nodes, each actor a :class:`BatchedProposalVecEnv` of its envs; Ray is imported
  only when one is built (``pip install 'textgym[ray]'``).
"""

from baselines.proposal_vec_env import BatchedProposalVecEnv, share_batcher
from baselines.ray_vec_env import RayEnvError, RayVecEnv, make_ray_vec_env

__all__ = ["BatchedProposalVecEnv", "RayEnvError", "RayVecEnv", "make_ray_vec_env", "share_batcher"]
