"""Machinery the algorithms share: configuration, command line, evaluation, candidate episodes, loading, resume."""
