"""The benchmark scripts run end to end (tiny model, a couple of episodes; not timed)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDS = ["TextGym/SentimentUtterance-v0", "TextGym/SparseCompletionCandidate-v0"]


def test_reference_rewards_writes_finite_results(tmp_path, tiny_model):
    out = tmp_path / "reference_rewards.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "reference_rewards.py"),
        *IDS,
        "--model",
        tiny_model,
        "--episodes",
        "2",
        "--out",
        str(out),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    result = json.loads(out.read_text(encoding="utf-8"))
    assert {"command", "date", "textgym_version", "machine", "model", "split", "seed", "results"} <= result.keys()
    assert result["split"] == "validation" and result["model"] == tiny_model and result["seed"] == 10_000
    assert "reference_rewards.py" in result["command"]
    assert [row["id"] for row in result["results"]] == IDS
    for row in result["results"]:
        assert row["granularity"] in ("utterance", "candidate") and row["episodes"] == 2
        assert math.isfinite(row["seconds"])
        for agent in ("random", "greedy_lm"):
            stats = row[agent]
            assert len(stats["rewards"]) == 2 and len(stats["episodes_detail"]) == 2
            low, high = stats["reward_ci95"]
            assert all(math.isfinite(v) for v in (stats["reward_mean"], low, high, *stats["rewards"]))
            assert low <= stats["reward_mean"] <= high
            assert all(detail["prompt_id"] for detail in stats["episodes_detail"])
        # Both agents see the same fixed prompts.
        assert [d["prompt_id"] for d in row["random"]["episodes_detail"]] == [
            d["prompt_id"] for d in row["greedy_lm"]["episodes_detail"]
        ]

    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert any(line.startswith("| id | granularity |") for line in table.splitlines())
    assert all(env_id in completed.stdout and env_id in table for env_id in IDS)
