"""The PPO throughput benchmark runs end to end on the tiny model (figures are not checked, only printed)."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ppo_throughput.py"
SMALLEST = [
    "--device=cpu",
    "--threads=1",
    "--in-process",
    "--prompt-tokens=24",
    "--reply-tokens=4",
    "--collect-envs=2",
    "--e2e-prompt-tokens=16",
    "--e2e-reply-tokens=2",
    "--n-envs=2",
    "--n-steps=4",
    "--batch-size=4",
    "--n-epochs=1",
]


def rate(text, label):
    """The per-second figure of the table row that starts with ``label``."""
    row = next(line for line in text.splitlines() if line.startswith(label))
    return float(row.split()[-2])


def test_ppo_throughput_prints_both_arms_of_both_comparisons(tiny_model):
    command = [sys.executable, str(SCRIPT), f"--model={tiny_model}", *SMALLEST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    out = done.stdout
    print(out)
    for header in ("command: python ", "machine: ", "model: tiny", "peak memory: "):
        assert header in out
    for label in ("naive (stock SB3 PPO", "fast (FastLMPPO, 4 steps", "stock (PPO + LMActorCriticPolicy)"):
        assert rate(out, label) > 0
    assert rate(out, "fast (FastLMPPO, kl_coef") > 0
    for name in ("collection ratio fast/naive", "end-to-end ratio fast/stock"):
        match = re.search(rf"^{name}: (\S+)x$", out, re.MULTILINE)
        assert match, name
        assert math.isfinite(float(match.group(1))) and float(match.group(1)) > 0
