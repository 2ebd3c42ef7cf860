"""textgym: Gymnasium environments for reinforcement learning with language models.

``import textgym`` registers the ``TextGym/*`` ids; then ``gym.make("TextGym/Dialogue-v0")``.
It also makes processes forked from this one safe for torch (see :mod:`textgym.fork_safety`),
so vector envs' forked workers can run their LM after an env ran in the parent.
"""

from textgym.fork_safety import register_fork_handler
from textgym.registration import env_ids, register_envs

__version__ = "0.1.0"
__all__ = ["__version__", "env_ids", "register_envs"]

register_envs()
register_fork_handler()
