"""Task implementations: one module per task, each a :class:`textgym.core.TextTask` and its env class."""
