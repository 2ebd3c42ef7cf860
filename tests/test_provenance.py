"""Runs and figures name the commit of the code they ran and the machine."""

import subprocess

from baselines.common.provenance import commit, machine


def test_commit_names_a_checkouts_head_marks_changed_files_and_is_unknown_elsewhere(tmp_path):
    assert commit(tmp_path) == "unknown"  # no git history: an installed copy
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert commit(tmp_path) == f"{head}+dirty"
    assert machine().endswith("CPUs") and machine().split(",")[0]
