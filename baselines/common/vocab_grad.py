"""Gradients of the vocabulary-sized matrices added in place into one persistent buffer each.

:class:`~baselines.policies.LMActorCriticPolicy` routes its input embedding and output head
through these autograd functions: autograd would otherwise make two or three fresh (V, H)
tensors per minibatch, and on a small CPU machine touching that much fresh memory costs
more than the arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class VocabGradBuffers:
    """One persistent gradient buffer per vocabulary-sized weight, attached as ``.grad`` when it is None."""

    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}

    def grad_of(self, weight: nn.Parameter) -> torch.Tensor:
        """``weight.grad``, created from the kept buffer (zeroed in place) if an optimizer set it to None."""
        if weight.grad is None:
            buffer = self.buffers.get(id(weight))
            if buffer is None or buffer.shape != weight.shape or buffer.device != weight.device:
                buffer = self.buffers[id(weight)] = torch.zeros_like(weight, memory_format=torch.contiguous_format)
            else:
                buffer.zero_()
            weight.grad = buffer
        return weight.grad


class EmbeddingGradInPlace(torch.autograd.Function):
    """``weight[ids]`` whose backward adds the rows' gradients into ``weight.grad`` in place."""

    @staticmethod
    def forward(
        ctx: Any, ids: torch.Tensor, weight: nn.Parameter, buffers: VocabGradBuffers, padding_idx: int | None
    ) -> torch.Tensor:
        """The embeddings of ``ids``, as ``nn.functional.embedding``."""
        ctx.save_for_backward(ids)
        ctx.weight, ctx.buffers, ctx.padding_idx = weight, buffers, padding_idx
        return torch.nn.functional.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[None, None, None, None]:
        """Add the embedding's gradient into its kept buffer; nothing flows to the ids."""
        (ids,) = ctx.saved_tensors
        grad = ctx.buffers.grad_of(ctx.weight)
        ids, rows = ids.reshape(-1), grad_output.reshape(-1, grad.shape[1]).to(grad.dtype)
        if ctx.padding_idx is not None:  # nn.Embedding never updates its padding row
            keep = ids != ctx.padding_idx
            ids, rows = ids[keep], rows[keep]
        grad.index_add_(0, ids, rows)
        return None, None, None, None


class HeadGradInPlace(torch.autograd.Function):
    """``hidden @ weight.T`` whose backward adds ``grad.T @ hidden`` into ``weight.grad`` in place."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: nn.Parameter, buffers: VocabGradBuffers) -> torch.Tensor:
        """The logits ``hidden @ weight.T``."""
        ctx.save_for_backward(hidden)
        ctx.weight, ctx.buffers = weight, buffers
        return hidden @ weight.t()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        """Add the head's gradient into its kept buffer; return the gradient of ``hidden``."""
        (hidden,) = ctx.saved_tensors
        flat_grad = grad_output.reshape(-1, grad_output.shape[-1])
        grad = ctx.buffers.grad_of(ctx.weight)
        grad.addmm_(flat_grad.t().to(grad.dtype), hidden.reshape(-1, hidden.shape[-1]).to(grad.dtype))
        return (grad_output @ ctx.weight.to(grad_output.dtype)), None, None
