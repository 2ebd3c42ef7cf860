"""The appendable KV cache and the fast collector's prefix reuse."""

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from baselines.policies import LMActorCriticPolicy, top_layers
from baselines.ppo import ContinuousDecoder
from textgym.lm import append_columns, forward, new_cache, positions_from_mask
from textgym.models import load_causal_lm


def test_append_columns_equals_cat_and_writes_in_place():
    cached = torch.randn(2, 3, 5, 4)
    grown = append_columns(cached, torch.randn(2, 3, 1, 4))
    torch.testing.assert_close(grown[:, :, :5], cached)
    pointer = grown.data_ptr()
    new = torch.randn(2, 3, 2, 4)
    again = append_columns(grown, new)
    torch.testing.assert_close(again, torch.cat([grown, new], dim=2))
    assert again.data_ptr() == pointer  # the same buffer: only the new columns were written
    # A view that drops leading columns (the collector's compaction) still appends in place.
    tail = again[:, :, 3:]
    longer = append_columns(tail, new)
    torch.testing.assert_close(longer, torch.cat([tail, new], dim=2))
    assert longer.data_ptr() == tail.data_ptr()
    # A batch of rows taken out of it is a copy with no room: a fresh buffer, same values.
    rows = again[[1]]
    torch.testing.assert_close(append_columns(rows, new[:1]), torch.cat([rows, new[:1]], dim=2))


def test_appendable_cache_decodes_like_the_dynamic_cache(tiny_model):
    lm = load_causal_lm(tiny_model).eval()
    ids = torch.randint(5, 200, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    outputs = []
    for cache in (new_cache(lm), DynamicCache(config=lm.config)):
        step_mask, positions = mask, positions_from_mask(mask)
        logits = [forward(lm, ids, step_mask, positions, cache=cache).logits[:, -1]]
        position = positions[:, -1:]
        for token in range(10, 90, 8):  # past the reserved columns' first allocation
            step_mask = torch.cat([step_mask, torch.ones(3, 1, dtype=mask.dtype)], dim=1)
            position = position + 1
            fed = torch.full((3, 1), token)
            logits.append(forward(lm, fed, step_mask, position, cache=cache).logits[:, -1])
        outputs.append(torch.stack(logits))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)


def test_top_layers_view_continues_a_full_forward_and_owns_no_parameters(tiny_model):
    lm = load_causal_lm(tiny_model).eval()
    base = lm.base_model
    ids = torch.randint(5, 200, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    positions = positions_from_mask(mask)
    with torch.no_grad():
        full = forward(base, ids, mask, positions, output_hidden_states=True)
        top = top_layers(base, 1)
        continued = forward(top, None, mask, positions, inputs_embeds=full.hidden_states[1]).last_hidden_state
    torch.testing.assert_close(continued[mask == 1], full.last_hidden_state[mask == 1])
    assert all(any(p is q for q in base.parameters()) for p in top.parameters())
    assert len(base.layers) == 2 and len(top.layers) == 1  # the base is untouched
    with pytest.raises(ValueError, match="cannot split"):
        top_layers(base, 2)


def observation(tokens, width=24, pad=0):
    ids = np.full(width, pad, dtype=np.int32)
    mask = np.zeros(width, dtype=np.int8)
    ids[width - len(tokens) :], mask[width - len(tokens) :] = tokens, 1
    return ids, mask


@pytest.mark.parametrize("trainable_layers", [None, 1])
def test_restart_reuses_the_shared_prefix_and_matches_a_fresh_encoding(tiny_model, trainable_layers):
    import gymnasium as gym

    env = gym.make("TextGym/Dialogue-v0", model="tiny", max_context_tokens=24, max_reply_tokens=4)
    policy = LMActorCriticPolicy(
        env.observation_space, env.action_space, lambda _: 1e-4, model="tiny", trainable_layers=trainable_layers
    )
    torch.nn.init.normal_(policy.value_head.weight, std=0.5)
    system = [11, 12, 13, 14, 15]
    first = [system + [20, 21], system + [30], system + [40, 41, 42]]
    observations = [observation(t) for t in first]
    stack = {
        "input_ids": np.stack([o[0] for o in observations]),
        "attention_mask": np.stack([o[1] for o in observations]),
    }
    decoder = ContinuousDecoder(policy, 3, keep_trunk_states=True)
    decoder.restart(np.arange(3), stack)
    decoder.feed(torch.tensor([50, 51, 52]))
    # Row 1 starts a new prompt with the same system prefix; row 2's next turn extends its tokens.
    later = [first[0] + [50], system + [60, 61], first[2] + [52, 70, 71]]
    observations = [observation(t) for t in later]
    stack = {
        "input_ids": np.stack([o[0] for o in observations]),
        "attention_mask": np.stack([o[1] for o in observations]),
    }
    decoder.restart(np.array([1, 2]), stack)
    assert decoder.reused_tokens == len(system) + len(first[2]) + 1
    assert decoder.tokens == later
    fresh = ContinuousDecoder(policy, 3, keep_trunk_states=True)
    fresh.restart(np.arange(3), stack)
    torch.testing.assert_close(decoder.logits, fresh.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decoder.values, fresh.values, atol=1e-5, rtol=1e-5)
    if trainable_layers:
        for row in range(3):
            torch.testing.assert_close(decoder.trunk_states(row), fresh.trunk_states(row), atol=1e-5, rtol=1e-5)
    decoder.feed(torch.tensor([80, 81, 82]))
    fresh.feed(torch.tensor([80, 81, 82]))
    torch.testing.assert_close(decoder.logits, fresh.logits, atol=1e-5, rtol=1e-5)
