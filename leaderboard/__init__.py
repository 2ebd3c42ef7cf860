"""The TextGym leaderboard: result bundles re-scored with the library's own reward code.

See ``leaderboard/README.md``; the command line is :mod:`leaderboard.cli`
(``textgym-leaderboard``).
"""
