"""The command-line pieces ``baselines.train``, ``baselines.evaluate`` and ``baselines.dqn`` share.

Exit codes (in each script's ``--help``): :data:`EXIT_OK` when the job is done,
:data:`EXIT_FAILURE` when it could not be done (``baselines.evaluate``: an unreadable
checkpoint), :data:`EXIT_USAGE` for a bad command line or run directory (as argparse does),
:data:`EXIT_INTERRUPTED` after Ctrl-C (``baselines.train`` saved a checkpoint). Every error
is one line on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym

import textgym
from baselines.algorithms import ALGOS, algorithm
from baselines.common.config import DATA_FIELDS, LR_SCHEDULES, Q_FEATURES, Args, defaults_for, range_errors
from baselines.common.run_logging import require_wandb
from textgym.registration import effective_env_kwargs
from textgym.stats import EVAL_SEED_BASE

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TRAIN_EXIT_CODES = (
    f"exit codes: {EXIT_OK} done; {EXIT_USAGE} bad arguments or run directory (nothing trained); "
    f"{EXIT_INTERRUPTED} interrupted (a checkpoint was saved)"
)
EVALUATE_EXIT_CODES = (
    f"exit codes: {EXIT_OK} done; {EXIT_FAILURE} the checkpoint cannot be loaded; {EXIT_USAGE} bad arguments"
)
#: The splits an env's prompts come from.
SPLITS = ("train", "validation", "test")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def error(message: str) -> None:
    """Print ``error: message`` on stderr (one line: the message names the bad value and the fix)."""
    print(f"error: {message}", file=sys.stderr)


def device(value: str) -> str:
    """An argparse ``type``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        argparse.ArgumentTypeError: Anything else (argparse prints it and exits with code 2).
    """
    if not _DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}; choose auto, cpu, cuda or cuda:N")
    return value


def one_of(flag: str, options: tuple[str, ...]) -> Any:
    """An argparse ``type`` that accepts one of ``options`` and names the bad value and the choices otherwise."""

    def check(value: str) -> str:
        if value not in options:
            raise argparse.ArgumentTypeError(f"unknown {flag} {value!r}; choose one of: {', '.join(options)}")
        return value

    return check


def integer_at_least(minimum: int) -> Any:
    """An argparse ``type``: an integer of at least ``minimum`` (argparse names the flag of a bad value)."""

    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value!r}")
        return number

    return check


def add_device(parser: argparse.ArgumentParser | Any, default: str = "auto") -> None:
    """``--device``: where the policy runs."""
    parser.add_argument(
        "--device",
        type=device,
        default=default,
        metavar="{auto,cpu,cuda,cuda:N}",
        help="where the policy runs; auto takes CUDA when present",
    )


def add_episodes(parser: argparse.ArgumentParser | Any, episodes: int = 32) -> None:
    """``--split``, ``--episodes`` and ``--seed`` of an evaluation on fixed prompts."""
    parser.add_argument("--split", default="validation", choices=SPLITS, help="prompt split")
    parser.add_argument("--episodes", type=integer_at_least(1), default=episodes, help="episodes played")
    parser.add_argument(
        "--seed", type=integer_at_least(0), default=EVAL_SEED_BASE, help="episode i resets with seed + i"
    )


def _default_text(item: dataclasses.Field) -> str:
    """``default: X`` of an :class:`Args` field, and the algorithms whose default differs."""
    name = item.name
    text = f"default: {item.default!r}" if isinstance(item.default, str) else f"default: {item.default}"
    differ = [
        f"{algo}: {spec.defaults[name]}"
        for algo, spec in ALGOS.items()
        if name in spec.defaults and spec.defaults[name] != item.default
    ]
    return f"{text}; {', '.join(differ)}" if differ else text


def missing_model_directory(name: str) -> str | None:
    """Why the local model directory ``name`` cannot be loaded, or None (for hub ids and the built-in names too)."""
    from textgym.data import looks_like_local_path
    from textgym.models import DEFAULT_MODEL, TINY_MODEL, ModelNotFoundError, resolve_model_path

    if not name or name in (DEFAULT_MODEL, TINY_MODEL) or not (looks_like_local_path(name) or Path(name).exists()):
        return None
    try:
        resolve_model_path(name)
    except ModelNotFoundError as problem:
        return str(problem)
    return None


def option_owners() -> dict[str, list[str]]:
    """Each :class:`Args` field that some algorithms list in their ``options``: those algorithms."""
    owners: dict[str, list[str]] = {}
    for algo, spec in ALGOS.items():
        for name in spec.options:
            owners.setdefault(name, []).append(algo)
    return owners


def train_parser() -> argparse.ArgumentParser:
    """The parser of ``baselines.train``: one flag per :class:`Args` field, grouped by the algorithm that reads it.

    A field that exactly one algorithm of :data:`~baselines.algorithms.ALGOS` lists in its
    ``options`` goes in that algorithm's group; the others are shared.
    """
    parser = argparse.ArgumentParser(
        prog="python -m baselines.train",
        description="Train an LM policy on a TextGym env; writes config.json, tb/, checkpoint/, "
        "eval_generations.jsonl and summary.json to --out.",
        epilog=TRAIN_EXIT_CODES,
    )
    owners = option_owners()
    shared = parser.add_argument_group("run and training options (every algorithm)")
    groups = {
        algo: parser.add_argument_group(f"{algo.upper()} options (--algo {algo}: {spec.summary})")
        for algo, spec in ALGOS.items()
    }
    named: dict[str, Any] = {}
    # Shown as {a,b}; one_of names a bad value.
    choices = {"algo": tuple(ALGOS), "lr_schedule": LR_SCHEDULES, "q_features": Q_FEATURES}
    for item in dataclasses.fields(Args):
        owner = owners.get(item.name, [])
        if item.metadata.get("group"):
            name = item.metadata["group"]
            group = named.get(name) or named.setdefault(name, parser.add_argument_group(f"{name} options"))
        else:
            group = groups[owner[0]] if len(owner) == 1 else shared
        flag = "--" + item.name.replace("_", "-")
        text = f"{item.metadata['help']} ({_default_text(item)})".replace("%", "%%")
        if item.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=item.default, help=text)
        elif item.name == "device":
            group.add_argument(flag, type=device, default=item.default, metavar="{auto,cpu,cuda,cuda:N}", help=text)
        elif item.name in choices:
            options = choices[item.name]
            metavar = "{" + ",".join(options) + "}"
            group.add_argument(flag, type=one_of(flag, options), default=item.default, metavar=metavar, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[item.type]
            group.add_argument(flag, type=kind, default=item.default, help=text)
    return parser


def parse_train_args(argv: list[str] | None = None) -> Args:
    """Parse ``baselines.train``'s command line (``sys.argv[1:]`` when None) into :class:`Args`.

    The chosen algorithm's :attr:`~baselines.algorithms.AlgorithmSpec.defaults` replace the
    shared ones; flags given override both. A bad value exits with code 2 and a message on
    stderr naming it.
    """
    parser = train_parser()
    chosen = argparse.ArgumentParser(add_help=False)
    chosen.add_argument("--algo", default=Args.algo)
    algo = chosen.parse_known_args(argv)[0].algo
    if algo in ALGOS:
        parser.set_defaults(**algorithm(algo).defaults)
    args = Args(**vars(parser.parse_args(argv)))
    defaults = defaults_for(args.algo)
    for name, users in option_owners().items():  # a flag the run would silently ignore is a mistake
        if args.algo not in users and getattr(args, name) != defaults[name]:
            flag = "--" + name.replace("_", "-")
            parser.error(
                f"{flag} {getattr(args, name)} is an option of --algo {' / '.join(users)}; --algo {args.algo} "
                "does not read it"
            )
    for problem in range_errors(args):
        parser.error(problem)
    for flag, name in (("--model", args.model), ("--init-model", args.init_model)):
        problem = missing_model_directory(name)
        if problem:
            parser.error(f"{flag}: {problem}")
    if args.env not in gym.registry or not args.env.startswith("TextGym/"):
        parser.error(f"unknown --env {args.env!r}; TextGym ids: {', '.join(textgym.env_ids())}")
    granularity = gym.spec(args.env).kwargs.get("granularity")
    spec = algorithm(args.algo)
    if granularity is not None and granularity not in spec.granularities:
        fitting = [i for i in textgym.env_ids() if gym.spec(i).kwargs.get("granularity") in spec.granularities]
        parser.error(
            f"--algo {args.algo} trains at {' or '.join(spec.granularities)} level but --env {args.env} is a "
            f"{granularity}-level id; for example: {', '.join(fitting[:4])}"
        )
    given = [f"--{name.replace('_', '-')}" for name in DATA_FIELDS if getattr(args, name)]
    if given and "dataset" not in effective_env_kwargs(args.env, {}):
        takers = [i for i in textgym.env_ids() if "dataset" in effective_env_kwargs(i, {})]
        parser.error(
            f"{args.env} takes no dataset, so {', '.join(given)} cannot apply; ids that do: {', '.join(takers)}"
        )
    if args.wandb_project:  # fail before training, not after building the model
        try:
            require_wandb()
        except ImportError as problem:
            parser.error(str(problem))
    return args
