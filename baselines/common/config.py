"""A training run's configuration: :class:`Args`, one field per ``baselines.train`` flag, and what follows from it.

Each field's help text is in its metadata (not in a comment), so ``--help`` reads it at run
time whether the sources ship or only their ``.pyc`` files. This module imports neither
torch nor stable-baselines3: the leaderboard reads configurations without training.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from baselines.algorithms import algorithm


def option(default: Any, help: str, group: str = "") -> Any:  # noqa: A002 - argparse's name for it
    """A dataclass field with ``default``, its ``--help`` text and, optionally, the ``--help`` group it is listed in."""
    return field(default=default, metadata={"help": help, "group": group})


#: The ``--help`` group of the logging flags (the others are grouped by the algorithms that read them).
LOGGING = "logging"
#: The ``--help`` group of the data flags (tasks that take a ``dataset``: Dialogue, Summarization).
DATA = "data"
#: The ``--help`` group of the Ray flags (:mod:`baselines.cluster`).
CLUSTER = "Ray cluster"


@dataclass
class Args:
    """A ``baselines.train`` run: every flag, with its default (see :func:`defaults_for` for per-algorithm ones)."""

    algo: str = option("ppo", "the algorithm, a key of baselines.algorithms.ALGOS")
    env: str = option("TextGym/Sentiment-v0", "a TextGym env id of a granularity the algorithm trains at")
    model: str = option("default", "'default', 'tiny', a local model directory or a hub id")
    seed: int = option(0, "seeds torch, numpy, the envs and the evaluation prompts")
    total_timesteps: int = option(4096, "env steps (tokens at token level)")
    out: str = option("", "run directory (empty: runs/<env>__<algo>__s<seed>__<time>)")
    n_envs: int = option(8, "envs collected in one batch (candidate level: their proposals batched)")
    n_steps: int = option(32, "steps per env per rollout")
    batch_size: int = option(128, "transitions per minibatch (PPO: whole segments)")
    n_epochs: int = option(2, "PPO epochs per rollout")
    learning_rate: float = option(2e-5, "Adam learning rate")
    lr_schedule: str = option("constant", "constant, or linear (decays to 0)")
    gamma: float = option(1.0, "discount")
    gae_lambda: float = option(0.95, "GAE lambda")
    clip_range: float = option(0.2, "PPO clip range")
    ent_coef: float = option(0.0, "entropy bonus")
    vf_coef: float = option(0.5, "value loss weight")
    max_grad_norm: float = option(1.0, "gradient clipping")
    kl_coef: float = option(0.05, "initial KL-to-reference coefficient (0: no KL, no reference model)")
    target_kl_per_reply: float = option(6.0, "adaptive KL target in nats per reply (<= 0: fixed coefficient)")
    whiten_rewards: bool = option(False, "scale rewards by a running std of returns (SB3 VecNormalize)")
    bootstrap_truncated: bool = option(True, "a reply cut by the token budget bootstraps from V (no: its end is final)")
    group_baseline: bool = option(
        False, "advantages of whole episodes against the mean reward of the rollout's others on the same prompt"
    )
    max_context_tokens: int = option(0, "env observation length (0: the id's default)")
    max_reply_tokens: int = option(0, "env reply budget (0: the id's default)")
    eval_episodes: int = option(32, "fixed validation prompts for the initial / final / periodic evaluation")
    eval_every: int = option(0, "evaluate (and checkpoint) every N env steps (0: only at start and end)")
    max_train_seconds: float = option(0.0, "stop training after this many seconds, at the next step (0: no limit)")
    initial_eval: bool = option(True, "evaluate before training (an untrained DQN head picks candidate 0: the LM)")
    initial_eval_from: str = option("", "reuse the initial evaluation of this finished run of the same starting policy")
    sample_every: int = option(8, "print sample generations every N rollouts (0: never)")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    bf16: bool = option(False, "bfloat16 autocast (CUDA only)")
    lora_r: int = option(0, "LoRA rank through peft (0: full fine-tuning)")
    init_model: str = option(
        "",
        "start the LM policy and its KL reference from this model directory (e.g. one written by python -m "
        "baselines.sft) instead of --model, which the envs and the guard perplexity keep; it must share --model's "
        "tokenizer (empty: --model)",
    )
    trainable_layers: int = option(-1, "train only the top N transformer layers (-1: all)")
    value_scale: float = option(1.0, "value = value_scale * head(hidden): a faster-learning value head")
    temperature: float = option(
        1.0, "softmax temperature of the LM policy: it samples, is evaluated and KL-penalised at it (1: the LM itself)"
    )
    torch_threads: int = option(2, "torch CPU threads")
    progress_bar: bool = option(True, "show a progress bar")
    resume: bool = option(False, "continue the run in --out from its checkpoint")
    num_candidates: int = option(0, "candidate-level K, replies proposed per turn (0: the id's default)")
    buffer_size: int = option(10_000, "replay buffer capacity in transitions")
    learning_starts: int = option(32, "random-candidate steps before the first update")
    train_freq: int = option(1, "env steps (per env) between updates")
    gradient_steps: int = option(8, "gradient steps per update (cheap: the LM features are cached)")
    target_update_interval: int = option(64, "env steps between copies of the Q head into the target network")
    exploration_fraction: float = option(0.5, "fraction of training over which epsilon decays from 1")
    exploration_final_eps: float = option(0.05, "final epsilon of epsilon-greedy exploration")
    q_hidden: int = option(64, "hidden width of the Q head's MLP (0: a linear head)")
    q_weight_decay: float = option(0.0, "L2 weight decay of the Q head's Adam optimizer (0: none)")
    q_features: str = option(
        "all",
        "what the Q head reads per candidate: all (LM states and scalars) or scalars (log-probs, length, flags and "
        "the --guide-model agreement)",
    )
    proposal_variants: int = option(
        0, "candidate sets kept per context and handed out again in training (0: every turn proposed afresh)"
    )
    proposal_cache: str = option(
        "", "keep the evaluations' candidate sets in this directory; runs given it share them (empty: none)"
    )
    train_proposal_cache: str = option(
        "",
        "keep the training envs' reused candidate sets (--proposal-variants) in this directory, each variant "
        "generated with its own fixed seed, so that runs given it share them (empty: none)",
    )
    feature_cache: str = option(
        "",
        "keep the Q head's frozen-LM features in this directory; runs of the same model and feature layer given it "
        "share them (empty: in memory only)",
    )
    feature_layer: int = option(-1, "LM hidden layer of the Q features (0: embeddings; -1: the middle layer)")
    guide_model: str = option(
        "",
        "a model sharing the env's tokenizer (e.g. a baselines.sft output directory): each candidate's ROUGE-L "
        "against its greedy reply becomes one more Q feature (empty: none)",
    )
    dataset: str = option("", "the task's data: a local file or directory, or a hub id (empty: the task's own)", DATA)
    dataset_config: str = option("", "the dataset's config, e.g. 3.0.0 for CNN/DailyMail (empty: its default)", DATA)
    dataset_split: str = option("", "the dataset's own split to read (empty: the one named like the env's split)", DATA)
    train_prompts: int = option(
        0, "train on a fixed pool of N prompts of the split, drawn with the run's seed (0: the whole split)", DATA
    )
    pool_seed: int = option(
        -1, "seed of the --train-prompts pool's draw: runs given the same one share their prompts (-1: --seed)", DATA
    )
    prompt_repeats: int = option(
        1, "play each prompt drawn from the --train-prompts pool N episodes in a row (its context is read once)", DATA
    )
    max_prompt_tokens: int = option(
        0, "the --train-prompts pool holds only prompts whose first context has at most N tokens (0: any)", DATA
    )
    wandb_project: str = option("", "also log to this Weights & Biases project (needs textgym[wandb])", LOGGING)
    wandb_entity: str = option("", "the W&B user or team of --wandb-project (empty: wandb's default)", LOGGING)
    ray_address: str = option("", "run the envs in Ray actors on this cluster: auto or HOST:PORT", CLUSTER)
    env_workers: int = option(0, "Ray actors hosting the envs (0: one per CPU; > 0 alone: a local Ray)", CLUSTER)


#: Each numeric field's valid values: (lowest, highest, whether the lowest itself is excluded); None is unbounded.
#: A float must also be finite. Fields not listed take any integer (``feature_layer``) or any finite float.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "seed": (0, 2**32 - 1, False),  # what numpy and the envs accept
    "total_timesteps": (0, None, False),
    "n_envs": (1, None, False),
    "n_steps": (1, None, False),
    "batch_size": (2, None, False),
    "n_epochs": (1, None, False),
    "learning_rate": (0, None, True),
    "gamma": (0, 1, False),
    "gae_lambda": (0, 1, False),
    "clip_range": (0, None, True),
    "vf_coef": (0, None, False),
    "max_grad_norm": (0, None, True),
    "kl_coef": (0, None, False),
    "max_context_tokens": (0, None, False),
    "max_reply_tokens": (0, None, False),
    "eval_episodes": (1, None, False),
    "eval_every": (0, None, False),
    "max_train_seconds": (0, None, False),
    "sample_every": (0, None, False),
    "lora_r": (0, None, False),
    "trainable_layers": (-1, None, False),
    "value_scale": (0, None, True),
    "temperature": (0, None, True),
    "torch_threads": (1, None, False),
    "num_candidates": (0, None, False),
    "buffer_size": (1, None, False),
    "learning_starts": (0, None, False),
    "train_freq": (1, None, False),
    "gradient_steps": (-1, None, False),
    "target_update_interval": (1, None, False),
    "exploration_fraction": (0, 1, False),
    "exploration_final_eps": (0, 1, False),
    "q_hidden": (0, None, False),
    "q_weight_decay": (0, None, False),
    "proposal_variants": (0, None, False),
    "train_prompts": (0, None, False),
    "pool_seed": (-1, None, False),
    "prompt_repeats": (1, None, False),
    "max_prompt_tokens": (0, None, False),
    "env_workers": (0, None, False),
}


def _bounds_text(low: float, high: float | None, low_excluded: bool) -> str:
    if high is None:
        return f"> {low}" if low_excluded else f">= {low}"
    return f"in ({low}, {high}]" if low_excluded else f"in [{low}, {high}]"


def range_errors(args: Args) -> list[str]:
    """One message per flag of ``args`` outside :data:`RANGES`, or, for a float, not a finite number."""
    errors = []
    for item in dataclasses.fields(Args):
        value = getattr(args, item.name)
        if item.type not in ("int", "float") or isinstance(value, bool):
            continue
        low, high, low_excluded = RANGES.get(item.name, (None, None, False))
        finite = math.isfinite(value)
        fits = (
            finite
            and (low is None or (value > low if low_excluded else value >= low))
            and (high is None or value <= high)
        )
        if not fits:
            kind = "an integer" if item.type == "int" else "a finite number"
            bounds = "" if low is None else " " + _bounds_text(low, high, low_excluded)
            errors.append(f"--{item.name.replace('_', '-')} must be {kind}{bounds}, got {value!r}")
    return errors


#: The values ``--lr-schedule`` takes.
LR_SCHEDULES = ("constant", "linear")
#: The values ``--q-features`` takes (see :class:`baselines.dqn.policy.LMQPolicy`).
Q_FEATURES = ("all", "scalars")


def defaults_for(algo: str) -> dict[str, Any]:
    """Every :class:`Args` field's default for ``algo``: the field's own, or the algorithm's (``ALGOS[algo].defaults``).

    Raises:
        baselines.algorithms.UnknownAlgorithmError: ``algo`` is not in the table.
    """
    return {**{f.name: f.default for f in dataclasses.fields(Args)}, **algorithm(algo).defaults, "algo": algo}


#: The :class:`Args` fields passed to the env as they are, when given.
DATA_FIELDS = ("dataset", "dataset_config", "dataset_split")


def uses_ray(args: Args) -> bool:
    """Whether the run's envs live in Ray actors (``--ray-address`` or ``--env-workers`` given)."""
    return bool(args.ray_address or args.env_workers)


def env_kwargs_of(args: Args) -> dict[str, Any]:
    """``gym.make`` keyword arguments for the training envs."""
    kwargs: dict[str, Any] = {"model": args.model, "render_mode": None}
    if args.max_context_tokens:
        kwargs["max_context_tokens"] = args.max_context_tokens
    if args.max_reply_tokens:
        kwargs["max_reply_tokens"] = args.max_reply_tokens
    if args.num_candidates:
        kwargs["num_candidates"] = args.num_candidates
    for name in DATA_FIELDS:
        if getattr(args, name):
            kwargs[name] = getattr(args, name)
    return kwargs


def learning_rate_of(args: Args) -> Any:
    """SB3's ``learning_rate``: the constant, or a schedule of the remaining progress (1 -> 0)."""
    if args.lr_schedule == "linear":
        return lambda progress: args.learning_rate * progress
    return args.learning_rate


def same_named(args: Args, *names: str) -> dict[str, Any]:
    """``{name: args.<name>}``: the fields that an SB3 algorithm takes under the same names."""
    return {name: getattr(args, name) for name in names}


def lm_policy_kwargs(args: Args) -> dict[str, Any]:
    """``policy_kwargs`` of :class:`baselines.policies.LMActorCriticPolicy` for ``args``."""
    kwargs: dict[str, Any] = {
        "model": args.init_model or args.model,
        "torch_threads": args.torch_threads,
        "trainable_layers": None if args.trainable_layers < 0 else args.trainable_layers,
        "value_scale": args.value_scale,
        "temperature": args.temperature,
    }
    if args.lora_r:
        kwargs["lora"] = {"r": args.lora_r, "lora_alpha": 2 * args.lora_r, "target_modules": "all-linear"}
    return kwargs


#: Fields a command line leaves out: where the run is written and how it is resumed, not what it trains.
_NOT_IN_COMMAND = (
    "out",
    "resume",
    "progress_bar",
    "sample_every",
    "initial_eval_from",
    "wandb_project",
    "wandb_entity",
    "ray_address",
    "env_workers",
)
#: Fields a command line always names, default or not: what a reader looks for first.
_ALWAYS_IN_COMMAND = ("algo", "env", "model", "seed", "total_timesteps")


def command_line(config: dict[str, Any]) -> str:
    """The ``python -m baselines.train`` command that trains a run with ``config`` (a config.json).

    Names the algorithm, env, model and seed, and every other field that differs from its default.
    """
    args = Args(**config)
    defaults = defaults_for(args.algo)
    words = ["python", "-m", "baselines.train"]
    for item in dataclasses.fields(Args):
        value = getattr(args, item.name)
        if item.name in _NOT_IN_COMMAND or (value == defaults[item.name] and item.name not in _ALWAYS_IN_COMMAND):
            continue
        flag = item.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            words += [f"--{flag}", str(value)]
    return shlex.join(words)
