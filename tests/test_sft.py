"""baselines.sft: demonstrations from the env's own contexts, a fine-tune that fits them, a warm start PPO loads."""

import json
from itertools import pairwise

import gymnasium as gym
import pytest
import torch
from tiny_runs import tiny_algorithm

import textgym  # noqa: F401
from baselines.sft import SFTError, demonstrations, fine_tune, main
from textgym.models import load_causal_lm, load_tokenizer

SUMMARIZATION = "TextGym/Summarization-v0"


def test_a_demonstration_is_the_envs_observation_then_the_reference_summary_and_the_end_token(tiny_model):
    examples = demonstrations(SUMMARIZATION, "train", "tiny", max_examples=3)
    env = gym.make(SUMMARIZATION, split="train", model="tiny").unwrapped
    assert len(examples) == 3
    for (context, reply), prompt_id in zip(examples, env.task.prompt_ids()[:3], strict=True):
        observation, _ = env.reset(options={"prompt_id": prompt_id})
        full_context = observation["input_ids"][observation["attention_mask"] == 1].tolist()
        assert full_context[len(full_context) - len(context) :] == context  # the observation's tail
        assert reply[-1] in env.end_ids and len(reply) <= env.max_reply_tokens
        reference = env.task.reference_reply()
        assert reference == env.task.examples[env.task._by_id[prompt_id]].summary
        assert reply[:-1] == env.chat.encode_text(reference)[: env.max_reply_tokens - 1]
        # Each reply token is predicted from at most the env's window of tokens.
        assert len(context) + len(reply) - 1 <= env.max_context_tokens
    env.close()


@pytest.mark.parametrize(
    ("env_id", "message"),
    [("TextGym/Sentiment-v0", "no reference reply"), ("TextGym/SummarizationCandidate-v0", "candidate level")],
)
def test_an_env_without_reference_replies_or_not_at_token_level_is_refused_by_name(tiny_model, env_id, message):
    with pytest.raises(SFTError, match=message) as error:
        demonstrations(env_id, "train", "tiny", max_examples=2)
    assert env_id in str(error.value)


def test_fine_tuning_fits_the_replies_and_leaves_the_frozen_layers_as_they_were(tiny_model):
    examples = demonstrations(SUMMARIZATION, "train", "tiny", max_examples=8)
    model = load_causal_lm("tiny")
    trained = (".layers.1.", "model.norm.")
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not any(t in name for t in trained)}
    pad = int(load_tokenizer("tiny").pad_token_id)
    losses = fine_tune(model, examples, pad, trainable_layers=1, learning_rate=3e-2, epochs=8, batch_size=4)
    # The tiny model's output head is its frozen input embedding, 32 wide: the loss falls slowly, but every epoch.
    assert all(later < earlier for earlier, later in pairwise(losses)) and losses[-1] < losses[0] - 0.15, losses
    assert frozen  # the embeddings and the bottom layer
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert not torch.equal(
        model.model.layers[1].mlp.down_proj.weight, load_causal_lm("tiny").model.layers[1].mlp.down_proj.weight
    )


def test_the_written_model_is_the_ppo_policys_start_and_kl_reference_while_the_envs_keep_model(tiny_model, tmp_path):
    out = tmp_path / "sft"
    flags = ["--env", SUMMARIZATION, "--model", "tiny", "--max-examples", "4", "--trainable-layers", "1"]
    assert main([*flags, "--out", str(out), "--learning-rate", "3e-3", "--torch-threads", "1"]) == 0
    record = json.loads((out / "sft.json").read_text())
    assert record["examples"] == 4 and len(record["epoch_losses"]) == 1 and "--max-examples 4" in record["command"]
    assert (out / "model.safetensors").is_file()
    sft_weights = load_causal_lm(str(out)).model.layers[1].mlp.down_proj.weight
    assert not torch.equal(sft_weights, load_causal_lm("tiny").model.layers[1].mlp.down_proj.weight)

    args, ppo = tiny_algorithm(env=SUMMARIZATION, init_model=str(out), max_reply_tokens=6, n_steps=8, batch_size=8)
    assert torch.equal(ppo.policy.lm.model.layers[1].mlp.down_proj.weight, sft_weights)
    assert torch.equal(ppo._reference_model().model.layers[1].mlp.down_proj.weight, sft_weights)
    assert ppo.env.get_attr("model_name")[0] == "tiny"  # the env (and the guard perplexity) keep --model

    # --out is never overwritten.
    before = (out / "sft.json").read_text()
    assert main([*flags, "--out", str(out)]) == 2
    assert (out / "sft.json").read_text() == before
