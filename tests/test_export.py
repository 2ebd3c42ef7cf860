"""baselines.export: a PPO checkpoint as a Hugging Face directory whose greedy replies are the policy's."""

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.utils import obs_as_tensor
from tiny_runs import TINY_RUN, tiny_algorithm

from baselines import export
from baselines.checkpoint import save_checkpoint
from baselines.train import checkpoint_metadata, load_trained
from baselines.train import main as train_main
from textgym.models import ensure_tiny_model, weights_sha256

RUN = [*TINY_RUN, "--learning-rate", "1e-2", "--sample-every", "0", "--total-timesteps", "32"]


def observations(policy, env_id="TextGym/Sentiment-v0", seeds=range(4), **kwargs):
    """A batch of left-padded env observations (different prompts) for ``policy``."""
    env = gym.make(env_id, model="tiny", **kwargs)
    batch = [env.reset(seed=seed)[0] for seed in seeds]
    return obs_as_tensor({key: np.stack([o[key] for o in batch]) for key in batch[0]}, policy.device)


def replies(ids, end_ids):
    """Each row's tokens up to and including its first end token."""
    rows = []
    for row in ids.tolist():
        ends = [i for i, token in enumerate(row) if token in end_ids]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows


def exported_greedy(directory, obs, max_new_tokens):
    """Greedy replies of the exported directory, loaded offline with AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).eval()
    config = GenerationConfig.from_pretrained(directory)
    ids, mask = obs["input_ids"].long(), obs["attention_mask"].long()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, do_sample=False, max_new_tokens=max_new_tokens
        )
    return replies(out[:, ids.shape[1] :], set(config.eos_token_id))


def policy_greedy(policy, obs, max_new_tokens):
    return replies(policy.generate(obs, max_new_tokens, deterministic=True), set(policy.end_ids))


def test_exported_model_replies_as_the_policy_and_its_card_names_env_reward_command_and_figures(tmp_path, tiny_model):
    run = tmp_path / "run"
    assert train_main([*RUN, "--out", str(run)]) == 0
    out = tmp_path / "exported"
    assert export.main(["--checkpoint", str(run / "checkpoint"), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in names and "generation_config.json" in names and "tokenizer.json" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".pth"))]

    model, _ = load_trained(str(run / "checkpoint"), device="cpu")
    obs = observations(model.policy, max_reply_tokens=6)
    expected = policy_greedy(model.policy, obs, 6)
    assert all(len(reply) > 1 for reply in expected) and len({tuple(r) for r in expected}) > 1
    assert exported_greedy(ensure_tiny_model(), obs, 6) != expected  # training changed the replies
    assert exported_greedy(out, obs, 6) == expected
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == list(model.policy.end_ids) and generation["max_new_tokens"] == 6
    assert generation["do_sample"] and generation["top_k"] == 0 and generation["temperature"] == 1.0

    card = (out / "README.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert "# PPO policy for `TextGym/Sentiment-v0`" in card and "VADER compound score" in card
    assert "python -m baselines.train --algo ppo --env TextGym/Sentiment-v0 --model tiny --seed 0" in card
    assert "--learning-rate 0.01" in card and "--out" not in card
    assert f"| final | 32 | 2 | {summary['final']['reward_mean']:.4f} |" in card
    assert f"`{weights_sha256('tiny')}`" in card


def lora_checkpoint(tmp_path):
    """A LoRA policy whose adapters moved (as training would move them), saved as baselines.train saves it."""
    args, model = tiny_algorithm(lora_r=4, n_steps=8, batch_size=8, max_reply_tokens=6)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.policy.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    return save_checkpoint(tmp_path / "run" / "checkpoint", model.policy, checkpoint_metadata(args, model))


def test_lora_exports_merged_and_as_an_adapter_reply_as_the_policy(tmp_path, tiny_model):
    checkpoint = lora_checkpoint(tmp_path)
    model, _ = load_trained(str(checkpoint), device="cpu")
    obs = observations(model.policy, max_reply_tokens=6)
    expected = policy_greedy(model.policy, obs, 6)
    assert exported_greedy(ensure_tiny_model(), obs, 6) != expected  # the base model's differ: the adapters matter
    assert all(len(reply) > 1 for reply in expected)  # replies of several tokens, not only an end token

    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(merged)]) == 0
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(adapter), "--adapter"]) == 0
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    assert (adapter / "adapter_model.safetensors").is_file() and not (adapter / "model.safetensors").exists()
    assert exported_greedy(merged, obs, 6) == expected
    assert exported_greedy(adapter, obs, 6) == expected
    assert "library_name: peft" in (adapter / "README.md").read_text()
    assert policy_greedy(model.policy, obs, 6) == expected  # exporting did not merge the policy's own adapters


def test_bad_input_is_refused_with_a_clear_error(tmp_path, tiny_model, capsys):
    def refused(*argv):
        code = export.main([str(a) for a in argv])
        assert code == 2
        return capsys.readouterr().err

    assert "'/nowhere/checkpoint' is not a checkpoint: checkpoint.json is missing" in refused(
        "--checkpoint", "/nowhere/checkpoint", "--out", tmp_path / "a"
    )
    assert not (tmp_path / "a").exists()

    checkpoint = lora_checkpoint(tmp_path)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert "already exists" in refused("--checkpoint", checkpoint, "--out", taken)
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"]

    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    meta["config"]["lora_r"] = 0
    full = tmp_path / "full"
    full.mkdir()
    (full / "checkpoint.json").write_text(json.dumps(meta))
    assert "--adapter needs a LoRA checkpoint" in refused("--checkpoint", full, "--out", tmp_path / "b", "--adapter")

    args, dqn = tiny_algorithm(
        algo="dqn", env="TextGym/SentimentCandidate-v0", max_context_tokens=48, max_reply_tokens=2, num_candidates=3
    )
    path = save_checkpoint(tmp_path / "dqn" / "checkpoint", dqn.policy, checkpoint_metadata(args, dqn))
    message = refused("--checkpoint", path, "--out", tmp_path / "c")
    assert "is a DQN checkpoint" in message and "holds no language model to export" in message
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c-*"))


@pytest.mark.parametrize("flag", ["--checkpoint", "--out"])
def test_both_paths_are_required(flag, capsys):
    argv = {"--checkpoint": "x", "--out": "y"}
    argv.pop(flag)
    with pytest.raises(SystemExit) as exit_info:
        export.main([word for item in argv.items() for word in item])
    assert exit_info.value.code == 2 and flag in capsys.readouterr().err


def test_exported_directory_holds_no_value_head(tmp_path, tiny_model):
    from safetensors.torch import load_file

    checkpoint = lora_checkpoint(tmp_path)
    out = export.export_policy(checkpoint, tmp_path / "exported")
    assert isinstance(out, Path) and not [k for k in load_file(out / "model.safetensors") if "value_head" in k]
