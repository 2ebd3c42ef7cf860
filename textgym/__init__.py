"""textgym: Gymnasium environments for reinforcement learning with language models.

``import textgym`` registers the ``TextGym/*`` ids; then ``gym.make("TextGym/Dialogue-v0")``.
"""

from textgym.registration import env_ids, register_envs

__version__ = "0.1.0"
__all__ = ["__version__", "env_ids", "register_envs"]

register_envs()
