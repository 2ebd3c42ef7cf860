"""The algorithm table and the shape of the code around it: no import circle, no name branches, small modules.

A third algorithm (SB3's A2C with the LM policy) is registered as one table entry and trained
through ``baselines.train.main``, as a new algorithm package would be.
"""

import ast
import dataclasses
import graphlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from stable_baselines3 import A2C

from baselines import evaluate, train
from baselines.algorithms import ALGOS, AlgorithmSpec, UnknownAlgorithmError, algorithm, resolve
from baselines.common.cli import parse_train_args, train_parser
from baselines.common.config import Args, command_line, learning_rate_of, lm_policy_kwargs, same_named
from baselines.common.loading import build, make_train_env
from baselines.policies import LMActorCriticPolicy

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("textgym", "baselines", "leaderboard")


def project_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (imports for type checkers never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from (child for branch in node.orelse for child in [branch, *runtime_nodes(branch)])
            continue
        yield node
        yield from runtime_nodes(node)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that running ``name`` imports, at any depth of its code (functions included).

    ``from package import name`` counts ``package.name`` when that is a module. Importing
    ``a.b.c`` also runs the packages ``a`` and ``a.b``; the packages ``name`` lies in are left
    out (Python imported them before it).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
    found = set()
    for target in targets:
        parts = target.split(".")
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            if prefix in modules and not (name == prefix or name.startswith(prefix + ".")):
                found.add(prefix)
    return found


def test_import_graph_helper_sees_nested_and_relative_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import leaderboard.verify\n"
        "def f():\n    from baselines.ppo import buffer\n    from . import cli\n"
    )
    modules = {"baselines.common.mod": source, **project_modules()}
    found = imported_modules("baselines.common.mod", source, modules)
    assert {"baselines.ppo.buffer", "baselines.ppo", "baselines.common.cli"} <= found
    assert not {"baselines", "baselines.common"} & found  # its own packages were imported before it
    assert "leaderboard.verify" not in found  # only type checkers read it


def test_no_import_circle_between_project_modules():
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert sum(len(edges) for edges in graph.values()) > 100  # the walk found the project's imports
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


def test_baselines_modules_stay_small():
    paths = [*(ROOT / "baselines").rglob("*.py"), ROOT / "leaderboard" / "rerun.py", ROOT / "leaderboard" / "bundle.py"]
    sizes = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines()) for path in paths}
    assert len(sizes) > 20 and {name: lines for name, lines in sizes.items() if lines > 500} == {}


def test_no_branch_on_an_algorithm_name_outside_the_table():
    names = set(ALGOS)
    found = []
    for folder in ("baselines", "leaderboard", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "algorithms.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                named = isinstance(node, ast.Compare) and "algo" in ast.unparse(node)
                if named and any(isinstance(n, ast.Constant) and n.value in names for n in ast.walk(node)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_an_unknown_algorithm_is_refused_with_the_table_keys():
    with pytest.raises(UnknownAlgorithmError, match="unknown algorithm 'a3c'; choose one of: ppo, dqn"):
        algorithm("a3c")
    with pytest.raises(ValueError, match="'package.module:attribute'"):
        resolve("no_colon")
    assert resolve("baselines.policies:LMActorCriticPolicy") is LMActorCriticPolicy
    with pytest.raises(ValueError, match="decoding must be 'sample' or 'greedy'"):
        AlgorithmSpec("x", ("token",), "m:f", "m:g", decoding="beam", starting_policy=("a", "b"))


def test_help_shows_defaults_choices_and_a_group_per_algorithm():
    # The help text is each field's metadata, so it is there when only .pyc files ship.
    assert all(item.metadata["help"] for item in dataclasses.fields(Args))
    text = " ".join(train_parser().format_help().split())
    assert "--algo {ppo,dqn}" in text and "--lr-schedule {constant,linear}" in text
    assert "--device {auto,cpu,cuda,cuda:N}" in text and "exit codes: 0 done; 2 bad arguments" in text
    assert "Adam learning rate (default: 2e-05; dqn: 0.001)" in text and "discount (default: 1.0; dqn: 0.5)" in text
    dqn_group = text[text.index("DQN options") :]
    ppo_group = text[text.index("PPO options") : text.index("DQN options")]
    assert "--buffer-size BUFFER_SIZE replay buffer capacity in transitions (default: 10000)" in dqn_group
    assert "--kl-coef" in ppo_group and "--kl-coef" not in dqn_group and "--buffer-size" not in ppo_group


def test_cli_refuses_an_env_of_another_granularity_on_stderr(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_train_args(["--algo", "dqn", "--env", "TextGym/Sentiment-v0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "trains at candidate level but --env TextGym/Sentiment-v0" in err
    assert parse_train_args(["--algo", "dqn", "--env", "TextGym/SentimentCandidate-v0"]).batch_size == 64


def test_evaluate_reports_an_unreadable_checkpoint_in_one_line(tmp_path, capsys):
    assert evaluate.main(["--checkpoint", str(tmp_path / "missing")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith(f"error: cannot load --checkpoint {tmp_path / 'missing'}: ")


def build_a2c(args: Args, env) -> A2C:
    """Stock SB3 A2C with the LM policy: what a third algorithm's package would hold."""
    return A2C(
        LMActorCriticPolicy,
        env,
        policy_kwargs=lm_policy_kwargs(args),
        learning_rate=learning_rate_of(args),
        verbose=0,
        **same_named(args, "n_steps", "gamma", "gae_lambda", "ent_coef", "vf_coef", "max_grad_norm", "seed", "device"),
    )


A2C_SPEC = AlgorithmSpec(
    summary="stock SB3 A2C with the LM policy (a test's toy)",
    granularities=("token",),
    build=build_a2c,
    evaluate="baselines.common.evaluation:evaluate_lm",
    decoding="sample",
    starting_policy=("zero-shot", "Zero-shot LM, sampled"),
    defaults={"learning_rate": 1e-3, "n_steps": 4},
    options=("n_steps", "gae_lambda", "ent_coef", "vf_coef"),
    run_stats=lambda model: {"updates": int(model._n_updates)},
)


def test_a_third_algorithm_is_one_table_entry(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(ALGOS, "a2c", A2C_SPEC)
    out = tmp_path / "a2c"
    flags = ["--algo", "a2c", "--env", "TextGym/Sentiment-v0", "--model", "tiny", "--n-envs", "2", "--seed", "1"]
    flags += ["--max-reply-tokens", "4", "--eval-episodes", "2", "--torch-threads", "1", "--no-progress-bar"]
    flags += ["--ent-coef", "0.01"]  # the tiny LM earns no reward: the entropy bonus alone must move its weights
    assert train.main([*flags, "--total-timesteps", "16", "--out", str(out)]) == 0

    summary = json.loads((out / "summary.json").read_text())
    config = summary["config"]
    assert (summary["algo"], summary["env_steps"], summary["a2c"]) == ("a2c", 16, {"updates": 2})  # 16 / (2 x 4)
    assert (config["learning_rate"], config["n_steps"]) == (1e-3, 4)  # the entry's defaults
    assert summary["final"]["episodes"] == 2 and len(summary["curve"]) == 2
    assert "--algo a2c" in command_line(config) and "--n-steps" not in command_line(config)

    trained = load_file(out / "checkpoint" / "policy.safetensors")
    args = Args(**{**config, "device": "cpu"})
    fresh = build(args, make_train_env(args)).policy.state_dict()
    lm_weights = [name for name in trained if name.startswith("lm.") and name in fresh]
    assert lm_weights and any(not torch.equal(trained[name], fresh[name]) for name in lm_weights)
    help_text = " ".join(train_parser().format_help().split())
    assert "--algo {ppo,dqn,a2c}" in help_text and "(default: 2e-05; dqn: 0.001, a2c: 0.001)" in help_text
