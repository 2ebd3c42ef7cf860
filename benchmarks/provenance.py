"""Where a benchmark figure comes from: the repository's commit and the machine (every checked-in figure names both).

The scripts beside this file import it by name (``python benchmarks/<script>.py`` puts this
folder first on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

from baselines.common.provenance import commit as _tree_commit
from baselines.common.provenance import cpu_model, machine

__all__ = ["REPO", "commit", "cpu_model", "machine", "measured_at"]

REPO = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The repository's commit (with '+dirty' when the work tree differs)."""
    return _tree_commit(REPO)


def measured_at(commit_id: str | None = None, machine_name: str | None = None) -> str:
    """``Measured at commit ... on ...``: ``commit_id`` (the runs' commit) or this checkout's, on
    ``machine_name`` (runs measured elsewhere) or this machine."""
    return f"Measured at commit {commit_id or commit()} on {machine_name or machine()}."
