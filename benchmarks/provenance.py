"""Where a benchmark figure comes from: the repository's commit and the machine (every checked-in figure names both).

The scripts beside this file import it by name (``python benchmarks/<script>.py`` puts this
folder first on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The CPU model and core count, e.g. ``AMD EPYC, 2 CPUs``."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs"


def commit() -> str:
    """The repository's commit (with '+dirty' when the work tree differs)."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    return f"{head or 'unknown'}{'+dirty' if dirty else ''}"


def measured_at(commit_id: str | None = None, machine_name: str | None = None) -> str:
    """``Measured at commit ... on ...``: ``commit_id`` (the runs' commit) or this checkout's, on
    ``machine_name`` (runs measured elsewhere) or this machine."""
    return f"Measured at commit {commit_id or commit()} on {machine_name or machine()}."
