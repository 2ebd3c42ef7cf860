r"""Supervised warm start: fine-tune the LM on a task's reference replies, as the policy PPO then starts from.

    python -m baselines.sft --env TextGym/Summarization-v0 --out sft/summarization
    python -m baselines.train --algo ppo --env TextGym/Summarization-v0 --init-model sft/summarization ...

The InstructGPT order, SFT then RL: ``--init-model`` starts the PPO policy *and its KL
reference* from the directory written here, while the envs and the guard perplexity keep
``--model`` (the track's pinned env arguments do not change). The task must give a reference
reply for its prompts (:meth:`textgym.core.TextTask.reference_reply`; Summarization does).

Each example is one prompt of the env's ``--split``: its context is the env's own
observation after ``reset(options={"prompt_id": ...})`` (the exact tokens the policy will
read) and its target the reference reply as the env's reply tokens, cut to the reply budget
and closed by the end token. The context keeps its last ``max_context_tokens - len(reply) + 1``
tokens, so every reply token is predicted from at most ``max_context_tokens`` tokens, the
window the env slides over the reply at token level. The loss is the mean cross-entropy
of the reply tokens. Only the top ``--trainable-layers`` transformer layers and the final
norm train (PPO's ``--trainable-layers`` of the same depth then trains the same weights,
and the frozen trunk stays the base model's), with AdamW and gradient clipping at 1;
batches hold examples of similar length, in an order drawn with ``--seed``.

``--out`` receives (it must not exist; it appears complete or not at all) the weights as
safetensors, the tokenizer and ``sft.json``: the command, the examples, the mean loss of
each epoch, the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: One example: (context token ids, reply token ids ending with the end token).
Example = tuple[list[int], list[int]]


class SFTError(ValueError):
    """The env cannot give demonstrations, or the layers to train are out of range: nothing was written."""


def demonstrations(env_id: str, split: str = "train", model: str = "default", max_examples: int = 0) -> list[Example]:
    """The (context, reply) token ids of each prompt of ``split`` with its task's reference reply.

    Args:
        env_id: A token-level TextGym id whose task has a finite prompt set.
        split: The split the prompts come from.
        model: The env's model (its tokenizer and chat template encode the examples).
        max_examples: Keep the first N prompts of the split (0: all).

    Raises:
        SFTError: The env is not token level, its prompts have no end, or its task gives no
            reference reply.
    """
    import gymnasium as gym

    import textgym  # noqa: F401 - registers the ids

    env = gym.make(env_id, split=split, model=model).unwrapped
    try:
        if env.granularity != "token":
            raise SFTError(f"--env {env_id!r} is {env.granularity} level; give its token-level id")
        prompt_ids = env.task.prompt_ids()
        if prompt_ids is None:
            raise SFTError(f"--env {env_id!r} generates prompts without end: there is no set to learn replies for")
        end = min(env.end_ids)
        examples = []
        for prompt_id in prompt_ids[: max_examples or None]:
            observation, _ = env.reset(options={"prompt_id": prompt_id})
            reference = env.task.reference_reply()
            if reference is None:
                raise SFTError(
                    f"--env {env_id!r}: its task {type(env.task).__name__} gives no reference reply "
                    f"(prompt {prompt_id!r}); supervised warm starts need one"
                )
            reply = env.chat.encode_text(reference)[: env.max_reply_tokens - 1] + [end]
            context = observation["input_ids"][observation["attention_mask"] == 1].tolist()
            examples.append((context[-(env.max_context_tokens - len(reply) + 1) :], reply))
        return examples
    finally:
        env.close()


def fine_tune(
    model: Any,
    examples: list[Example],
    pad_id: int,
    trainable_layers: int = 8,
    learning_rate: float = 1e-4,
    epochs: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    log: Any = print,
) -> list[float]:
    """Train ``model``'s top ``trainable_layers`` layers and final norm on ``examples`` in place.

    Returns:
        The mean loss of each epoch.
    """
    import torch

    from baselines.policies import train_top_layers

    rng = random.Random(seed)
    torch.manual_seed(seed)
    depth = len(model.base_model.layers)
    if not 1 <= trainable_layers <= depth:
        raise SFTError(f"--trainable-layers must be in [1, {depth}], got {trainable_layers}")
    train_top_layers(model, trainable_layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0)
    model.train()
    epoch_losses, start = [], time.perf_counter()
    for epoch in range(epochs):
        # Similar lengths share a batch (less padding); the jitter and the shuffle vary batches between epochs.
        order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]) + rng.random() * 40)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(batches)
        total = 0.0
        for step, batch in enumerate(batches, 1):
            sequences = [examples[i][0] + examples[i][1] for i in batch]
            width = max(map(len, sequences))
            input_ids = torch.full((len(batch), width), pad_id)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100)
            for row, i in enumerate(batch):
                context, reply = examples[i]
                input_ids[row, : len(sequences[row])] = torch.tensor(sequences[row])
                attention_mask[row, : len(sequences[row])] = 1
                labels[row, len(context) : len(sequences[row])] = torch.tensor(reply)
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the SFT loss is {loss.item()} at epoch {epoch} step {step}; nothing written")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item()
            if step % 20 == 0:
                seconds = time.perf_counter() - start
                log(f"epoch {epoch} step {step}/{len(batches)} loss {loss.item():.3f} {seconds:.0f} s")
        epoch_losses.append(total / len(batches))
        log(f"epoch {epoch} mean loss {epoch_losses[-1]:.3f}")
    model.eval()
    return epoch_losses


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m baselines.sft``."""
    from baselines.common.cli import integer_at_least

    def positive_float(value: str) -> float:
        number = float(value)
        if not 0 < number < float("inf"):
            raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value!r}")
        return number

    p = argparse.ArgumentParser(prog="python -m baselines.sft", description=__doc__.splitlines()[0])
    p.add_argument("--env", required=True, help="a token-level TextGym id whose task gives reference replies")
    p.add_argument("--out", required=True, help="the model directory to create (must not exist)")
    p.add_argument("--model", default="default", help="the base LM: 'default', 'tiny' or a local directory")
    p.add_argument("--split", default="train", help="the split the examples come from")
    p.add_argument("--max-examples", type=integer_at_least(0), default=0, help="the split's first N prompts (0: all)")
    p.add_argument("--trainable-layers", type=integer_at_least(1), default=8)
    p.add_argument("--learning-rate", type=positive_float, default=1e-4)
    p.add_argument("--epochs", type=integer_at_least(1), default=1)
    p.add_argument("--batch-size", type=integer_at_least(1), default=8)
    p.add_argument("--seed", type=integer_at_least(0), default=0)
    p.add_argument("--torch-threads", type=integer_at_least(1), default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    """Fine-tune and write ``--out``; exit code 0 on success, 2 on bad input."""
    args = parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() or out.is_symlink():
        print(
            f"error: --out {str(out)!r} already exists; choose another directory (nothing is overwritten)",
            file=sys.stderr,
        )
        return 2
    import torch

    from textgym.files import build_directory
    from textgym.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(args.torch_threads)
    start = time.perf_counter()
    try:
        examples = demonstrations(args.env, args.split, args.model, args.max_examples)
        print(f"{len(examples)} examples from {args.env} split {args.split!r}", flush=True)
        model = load_causal_lm(args.model)
        tokenizer = load_tokenizer(args.model)
        losses = fine_tune(
            model,
            examples,
            int(tokenizer.pad_token_id),
            args.trainable_layers,
            args.learning_rate,
            args.epochs,
            args.batch_size,
            args.seed,
            log=lambda line: print(line, flush=True),
        )
    except SFTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        record = {
            "command": shlex.join(["python", "-m", "baselines.sft", *(sys.argv[1:] if argv is None else argv)]),
            "env": args.env,
            "base_model": args.model,
            "examples": len(examples),
            "epoch_losses": losses,
            "seconds": round(time.perf_counter() - start, 1),
        }
        (staging / "sft.json").write_text(json.dumps(record, indent=1), encoding="utf-8")

    build_directory(out, write)
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
