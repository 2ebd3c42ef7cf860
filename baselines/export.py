r"""Export a trained PPO policy as a Hugging Face model directory that any engine can load.

    python -m baselines.export --checkpoint runs/NAME/checkpoint --out exported/NAME
    python -m baselines.export --checkpoint runs/NAME/checkpoint --out exported/NAME-adapter --adapter

``--out`` receives (it must not exist; it appears complete or not at all):

* the LM's weights as safetensors (``save_pretrained``): the base model with the trained
  tensors applied, LoRA adapters merged into the weights; with ``--adapter`` (LoRA
  checkpoints only) the PEFT adapter instead (``adapter_model.safetensors`` and
  ``adapter_config.json``, whose ``base_model_name_or_path`` is the base model's local
  directory on this machine);
* the tokenizer, and ``generation_config.json``: the policy's end tokens and padding token,
  its sampling (temperature, no top-k or top-p cut), the tokens it never chooses
  (``suppress_tokens``) and the env's reply budget as ``max_new_tokens``;
* ``README.md``, a model card: env id, reward, base model (name, revision, weights
  SHA-256), what was trained, the training command and the run's evaluation figures
  (from ``summary.json`` beside the checkpoint, when there is one).

``AutoModelForCausalLM.from_pretrained(DIR)`` loads it offline, and its greedy replies to an
env's observations are the policy's deterministic replies. The critic's value head is not
exported: it only serves training. DQN checkpoints cannot be exported: their Q head scores
the candidates of a frozen LM and has no language model of its own.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gymnasium as gym  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

import textgym  # noqa: E402, F401 - registers the ids
from baselines.algorithms import ALGOS, UnknownAlgorithmError, algorithm  # noqa: E402
from baselines.checkpoint import CheckpointError, read_metadata  # noqa: E402
from baselines.common.config import command_line  # noqa: E402
from baselines.common.loading import load_trained  # noqa: E402
from textgym.files import build_directory  # noqa: E402
from textgym.models import load_tokenizer  # noqa: E402


class ExportError(ValueError):
    """A checkpoint that cannot be exported, or an output directory that cannot be written."""


def docstring_section(env_id: str, section: str) -> str:
    """The text of a ``## <section>`` of an env class's docstring (empty if it has none)."""
    module, name = gym.spec(env_id).entry_point.split(":")
    doc = inspect.cleandoc(getattr(importlib.import_module(module), name).__doc__ or "")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    text = " ".join(match.group(1).split()) if match else ""
    return re.sub(r":\w+:`", "`", text).replace("``", "`")  # reStructuredText roles and literals as Markdown


def _trained_part(config: dict[str, Any]) -> str:
    if config.get("lora_r"):
        return f"LoRA adapters of rank {config['lora_r']} on every linear layer, and a value head"
    if config.get("trainable_layers", -1) >= 0:
        return f"the top {config['trainable_layers']} transformer layers, the final norm and a value head"
    return "every weight of the LM, and a value head"


def _figures(summary: dict[str, Any] | None) -> list[str]:
    if not summary:
        return ["No `summary.json` was found beside the checkpoint: no evaluation figures."]
    lines = ["| evaluation | step | episodes | mean reward | 95% CI | median perplexity |", "|---|---|---|---|---|---|"]
    for point in summary.get("curve") or [summary.get("final", {})]:
        if not point:
            continue
        low, high = point.get("reward_ci95", [float("nan")] * 2)
        perplexity = point.get("perplexity_median")
        lines.append(
            f"| {point.get('tag', '')} | {point.get('step', '')} | {point.get('episodes', '')} | "
            f"{point.get('reward_mean', float('nan')):.4f} | {low:.4f}..{high:.4f} | "
            f"{'' if perplexity is None else f'{perplexity:.1f}'} |"
        )
    kl = summary.get("kl") or {}
    if "kl_per_reply" in kl:
        lines += ["", f"KL to the base model in the last rollout: {kl['kl_per_reply']:.3f} nats per reply."]
    return lines


def model_card(
    meta: dict[str, Any], summary: dict[str, Any] | None, adapter: bool, temperature: float, max_new_tokens: int
) -> str:
    """The exported directory's ``README.md``: env, reward, base model, training command, evaluation figures."""
    config, base = meta["config"], meta.get("base_model") or {"name": meta["model"]}
    env_id = meta["env"]
    front = ["---", "library_name: " + ("peft" if adapter else "transformers"), "tags:"]
    front += ["- textgym", "- reinforcement-learning", "- ppo", "---", ""]
    lines = [
        f"# PPO policy for `{env_id}`",
        "",
        f"Trained with textgym's PPO baseline (`baselines.train`, textgym {meta.get('textgym_version')}) on the "
        f"TextGym env `{env_id}` with env arguments `{json.dumps(meta['env_kwargs'])}`, "
        f"{meta['num_timesteps']} env steps (tokens).",
        "",
        "## Reward",
        "",
        docstring_section(env_id, "Rewards") or "See the env's documentation.",
        "",
        "## Base model",
        "",
        f"- name: `{base['name']}`",
        f"- revision: `{base.get('revision', 'unrecorded')}`",
        f"- weights SHA-256: `{base.get('sha256', 'unrecorded')}`",
        f"- trained: {_trained_part(config)}; "
        + ("exported as a PEFT adapter." if adapter else "exported as full weights (adapters merged)."),
        "",
        "## Training command",
        "",
        "```bash",
        command_line(config),
        "```",
        "",
        "## Evaluation",
        "",
        "Validation split, fixed prompts (episode i reset with seed 10000 + i), replies sampled from the policy:",
        "",
        *_figures(summary),
        "",
        "## Use",
        "",
        f"`generation_config.json` samples as the policy does (temperature {temperature:g}, no top-k or top-p cut, "
        f"at most {max_new_tokens} new tokens); `do_sample=False` gives the policy's greedy replies. The prompt is "
        "the env's chat-template context (`info['messages']` rendered with the tokenizer's chat template).",
        "",
    ]
    return "\n".join(front + lines)


def export_policy(checkpoint: str | os.PathLike, out: str | os.PathLike, adapter: bool = False) -> Path:
    """Write the Hugging Face directory of a PPO checkpoint (see the module docstring); return it.

    Raises:
        ExportError: ``out`` exists, the checkpoint is missing or unreadable, is a DQN
            checkpoint, or ``adapter`` is asked of a checkpoint without LoRA.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise ExportError(f"--out {str(out)!r} already exists; choose another directory (nothing is overwritten)")
    try:
        meta = read_metadata(checkpoint)
    except CheckpointError as error:
        raise ExportError(str(error)) from error
    try:
        exports_lm = algorithm(meta.get("algo")).exports_lm
    except UnknownAlgorithmError as error:
        raise ExportError(f"checkpoint {str(checkpoint)!r}: {error}") from error
    if not exports_lm:
        raise ExportError(
            f"checkpoint {str(checkpoint)!r} is a {str(meta.get('algo')).upper()} checkpoint: its policy holds no "
            "language model to export (a DQN's Q head scores the candidates of a frozen LM); export a checkpoint of "
            + ", ".join(name for name, spec in ALGOS.items() if spec.exports_lm)
        )
    if adapter and not meta["config"].get("lora_r"):
        raise ExportError(
            f"--adapter needs a LoRA checkpoint (trained with --lora-r), but {str(checkpoint)!r} trained the LM's "
            "weights themselves; export it without --adapter"
        )
    try:
        model, meta = load_trained(str(checkpoint), device="cpu")
    except CheckpointError as error:
        raise ExportError(str(error)) from error
    policy = model.policy
    run_dir = Path(checkpoint).parent
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else None

    def write(staging: Path) -> None:
        if adapter:
            policy.lm.save_pretrained(staging, safe_serialization=True)
        else:
            # merge_and_unload changes the model it merges: merge a copy, never the policy's own LM.
            lm = copy.deepcopy(policy.lm).merge_and_unload() if meta["config"].get("lora_r") else policy.lm
            lm.save_pretrained(staging, safe_serialization=True)
        load_tokenizer(policy.model_name).save_pretrained(staging)
        suppressed = policy.logit_block.nonzero().flatten().tolist()
        GenerationConfig(
            eos_token_id=list(policy.end_ids),
            pad_token_id=policy.pad_id,
            do_sample=True,
            temperature=policy.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=int(model.max_reply_tokens),
            suppress_tokens=suppressed or None,
        ).save_pretrained(staging)
        (staging / "README.md").write_text(
            model_card(meta, summary, adapter, policy.temperature, int(model.max_reply_tokens)), encoding="utf-8"
        )

    build_directory(out, write)
    return out


def main(argv: list[str] | None = None) -> int:
    """Export from the command line; exit code 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a PPO checkpoint directory written by baselines.train")
    parser.add_argument("--out", required=True, help="the model directory to create (must not exist)")
    parser.add_argument("--adapter", action="store_true", help="LoRA checkpoints: write the PEFT adapter, not merged")
    args = parser.parse_args(argv)
    try:
        out = export_policy(args.checkpoint, args.out, adapter=args.adapter)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
