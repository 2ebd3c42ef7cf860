r"""Reference rewards: random actions and the LM acting greedily, for every TextGym id (or the ids given).

These are the floor (``RandomAgent``) and the starting point (``GreedyLMAgent``, the env's
own LM taking its arg-max) that every baseline is measured from. Prompts are fixed:
episode ``i`` resets with seed ``--seed + i`` on the ``--split`` split (validation by
default), for both agents; the random agent of episode ``i`` is seeded with ``--seed + i``
too. Each mean comes with a 95% percentile-bootstrap CI (``textgym.stats.bootstrap_ci``).

Token-level greedy runs one full forward per token and candidate-level envs run the env's
LM proposing K replies per turn, so ``--token-episodes`` and ``--candidate-episodes``
can lower the episode count of those granularities. One torch thread, one process.

    python benchmarks/reference_rewards.py [--model default] [--episodes 32] [--seed 10000] \
        [--out benchmarks/results/reference_rewards.json] [ids ...]

The Markdown table is printed; with ``--out`` the JSON (command, date, machine, textgym
version, per-episode rewards and replies) and the table (``.md``, same name) are rewritten
after every id, ``"complete": true`` once all are done. ``seconds`` is wall time and
``CPU s`` this process's CPU time, which is steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import textgym  # noqa: E402
from textgym.agents import GreedyLMAgent, RandomAgent, play_episode  # noqa: E402
from textgym.stats import EVAL_SEED_BASE, bootstrap_ci  # noqa: E402

AGENTS = ("random", "greedy_lm")


class TrimmedGreedyLMAgent:
    """:class:`GreedyLMAgent` fed the observation without its all-padding left columns.

    The context is left-padded and masked, so the greedy action is the same; dropping the
    padding only saves compute (a short prompt in a 256-token window is mostly padding).
    """

    def __init__(self, agent: GreedyLMAgent) -> None:
        self.agent = agent

    def act(self, observation: dict[str, np.ndarray], env: gym.Env) -> Any:
        """The wrapped agent's action for ``observation`` with its left padding removed."""
        mask = observation["attention_mask"]
        first = int(np.argmax(mask != 0)) if mask.any() else 0
        trimmed = dict(observation)
        trimmed["input_ids"], trimmed["attention_mask"] = observation["input_ids"][first:], mask[first:]
        return self.agent.act(trimmed, env)


def run_agent(env: gym.Env, agent_name: str, episodes: int, seed: int, greedy: Any) -> dict[str, Any]:
    """Play ``episodes`` fixed-prompt episodes of ``env`` with one reference agent.

    Episode ``i`` resets with ``seed + i``; the random agent of episode ``i`` is seeded with
    ``seed + i`` as well, so every episode is reproducible on its own.
    """
    rows = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(episodes):
        agent = RandomAgent(seed + i) if agent_name == "random" else greedy
        result = play_episode(env, agent, seed=seed + i)
        info = result["info"]
        replies = [m["content"] for m in info.get("messages", []) if m["role"] == "assistant"]
        rows.append(
            {
                "prompt_id": result["prompt_id"],
                "reward": result["reward"],
                "steps": result["steps"],
                "end_reason": result["end_reason"],
                "replies": replies,
            }
        )
    rewards = [row["reward"] for row in rows]
    return {
        "reward_mean": float(np.mean(rewards)),
        "reward_ci95": bootstrap_ci(rewards),
        "rewards": rewards,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "episodes_detail": rows,
    }


def measure(env_id: str, args: argparse.Namespace, greedy: Any) -> dict[str, Any]:
    """Both reference agents on one id."""
    start, cpu_start = time.perf_counter(), time.process_time()
    env = gym.make(env_id, model=args.model, split=args.split)
    granularity = env.unwrapped.granularity
    episodes = getattr(args, f"{granularity}_episodes") or args.episodes
    row: dict[str, Any] = {"id": env_id, "granularity": granularity, "episodes": episodes}
    for agent_name in AGENTS:
        row[agent_name] = run_agent(env, agent_name, episodes, args.seed, greedy)
    env.close()
    row["seconds"] = time.perf_counter() - start
    row["cpu_seconds"] = time.process_time() - cpu_start
    return row


def _cell(result: dict[str, Any]) -> str:
    low, high = result["reward_ci95"]
    return f"{result['reward_mean']:.3f} [{low:.3f}, {high:.3f}]"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table: id, granularity, both means with their CIs, episodes, wall and CPU seconds."""
    lines = [
        "| id | granularity | random mean [95% CI] | greedy LM mean [95% CI] | episodes | seconds | CPU s |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['id']} | {row['granularity']} | {_cell(row['random'])} | {_cell(row['greedy_lm'])} "
            f"| {row['episodes']} | {row['seconds']:.0f} | {row['cpu_seconds']:.0f} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the numbers were measured."""
    return {
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_outputs(out: Path, header: dict[str, Any], rows: list[dict[str, Any]], complete: bool) -> None:
    """Write the JSON results and the Markdown table next to it (``.md``); called after every id."""
    for row in rows:
        for agent_name in AGENTS:
            values = [row[agent_name]["reward_mean"], *row[agent_name]["reward_ci95"]]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{row['id']} {agent_name}: non-finite reward statistics {values}")
    result = {**header, "complete": complete, "results": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    notes = [
        f"<!-- {header['command']} -->",
        f"<!-- {header['date']}, textgym {header['textgym_version']}, model {header['model']}, "
        f"{header['split']} split, seeds {header['seed']}+i; {header['machine']['processor']}, "
        f"{header['machine']['cpu_count']} cores, torch threads {header['machine']['torch_threads']} -->",
    ]
    out.with_suffix(".md").write_text("\n".join([*notes, "", markdown_table(rows)]) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ids", nargs="*", help="TextGym ids (default: every registered id)")
    parser.add_argument("--model", default="default", help="the env's LM and the greedy agent's LM")
    parser.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    parser.add_argument("--episodes", type=int, default=32, help="episodes per id and agent")
    for granularity in ("token", "candidate", "utterance"):
        parser.add_argument(
            f"--{granularity}-episodes",
            type=int,
            default=None,
            help=f"episodes for {granularity}-level ids (default: --episodes)",
        )
    parser.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help="episode i resets with seed + i")
    parser.add_argument(
        "--keep-padding", action="store_true", help="feed the greedy LM the padded observation (slower, same actions)"
    )
    parser.add_argument("--out", default=None, help="JSON file for the results; the table goes next to it (.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    ids = args.ids or textgym.env_ids()
    unknown = [env_id for env_id in ids if env_id not in gym.registry]
    if unknown:
        parser.error(f"unknown ids {unknown}; registered: {textgym.env_ids()}")
    command = ["python", sys.argv[0], *sys.argv[1:]] if argv is None else ["python", __file__, *argv]
    started = time.perf_counter()
    header = {
        "command": shlex.join(command),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "textgym_version": textgym.__version__,
        "machine": machine(),
        "model": args.model,
        "split": args.split,
        "seed": args.seed,
        "episodes": {g: getattr(args, f"{g}_episodes") or args.episodes for g in ("token", "candidate", "utterance")},
        "greedy_padding_trimmed": not args.keep_padding,
    }
    greedy: Any = GreedyLMAgent(args.model)
    if not args.keep_padding:
        greedy = TrimmedGreedyLMAgent(greedy)
    rows = []
    for env_id in ids:
        row = measure(env_id, args, greedy)
        rows.append(row)
        print(
            f"{env_id}: random {_cell(row['random'])}, greedy LM {_cell(row['greedy_lm'])}, "
            f"{row['episodes']} episodes, {row['seconds']:.0f} s ({row['cpu_seconds']:.0f} s CPU)",
            file=sys.stderr,
            flush=True,
        )
        if args.out:
            header["wall_seconds"] = time.perf_counter() - started
            write_outputs(Path(args.out), header, rows, complete=env_id == ids[-1])
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
