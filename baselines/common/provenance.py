"""Where a run or a figure comes from: the source tree's commit and the machine (every run records both)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

#: The source tree ``baselines`` is imported from (a git checkout, or an installed copy with no history).
SOURCE_TREE = Path(__file__).resolve().parents[2]


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


def commit(tree: Path = SOURCE_TREE) -> str:
    """The commit of the git checkout ``tree`` ('+dirty' when its files differ from it), or 'unknown'."""
    git = ["git", "-C", str(tree)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0 or not head.stdout.strip():
        return "unknown"
    return f"{head.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''}"
