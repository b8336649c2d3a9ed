"""PyTorch reference path of minser's fused ops.

These are the ground truth the Triton kernels are tested against and the path used on
CPU. They accumulate in float32 (float64 inputs stay float64, so gradcheck can use them; inputs of
mixed dtypes are promoted to the widest), also under ``torch.autocast``, which would otherwise run
their products in half precision, and return the input dtype.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

_F = TypeVar("_F", bound=Callable)


def _outside_autocast(op: _F) -> _F:
    """Run ``op`` with autocast off on its first argument's device: autocast recasts the float32 operands of
    matmul and einsum to bfloat16 or float16, so the float32 accumulation would be lost where it matters
    most (mixed-precision training), and the Triton kernels, which keep float32 scores, would disagree."""

    @functools.wraps(op)
    def run(first: torch.Tensor, *args, **kwargs):
        device = first.device.type
        # Entered only when autocast is on: "meta" (shape tracing) has none, and the plain path pays nothing.
        if not (torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)):
            return op(first, *args, **kwargs)
        with torch.autocast(device, enabled=False):
            return op(first, *args, **kwargs)

    return run  # type: ignore[return-value]


def key_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """Boolean mask ``(batch, size)``: True where position ``< lengths[b]``."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _accumulation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or a wider dtype among ``tensors`` (float64): one dtype for all operands of a product."""
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # The finite fill (not -inf) keeps fully masked rows NaN-free in forward and backward;
    # multiplying by the mask then turns their uniform softmax into exact zeros.
    if mask is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask


def _valid_only(t: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # A weight of 0 does not remove a padded NaN or Inf from a weighted sum (0 * NaN is NaN); the kernels
    # never read padding, so neither may this path.
    return t.masked_fill(~valid, 0)


@_outside_autocast
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product attention with key padding.

    Args:
        q: queries ``(B, H, Lq, D)``.
        k, v: keys and values ``(B, H, Lk, D)``.
        key_lengths: valid keys per batch element ``(B,)``; keys at ``j >= key_lengths[b]``
            are ignored. A query with no valid key returns zeros.

    Returns:
        ``(B, H, Lq, D)`` in the dtype of ``q``; softmax(q k^T / sqrt(D)) v.
    """
    scale = q.shape[-1] ** -0.5
    dtype = _accumulation_dtype(q, k, v)
    qa, ka, va = q.to(dtype), k.to(dtype), v.to(dtype)
    if key_lengths is None:
        scores = torch.matmul(qa, ka.transpose(-1, -2)) * scale
        return torch.matmul(torch.softmax(scores, dim=-1), va).to(q.dtype)
    valid = key_mask(key_lengths.to(k.device), k.shape[2])
    rows = valid[:, None, :, None]  # the valid key rows of k and v
    # Padded keys are left out of the scores too: masked_fill hides them from the forward pass, but dq is
    # dscores @ k, where a zero gradient times a padded NaN is NaN.
    scores = torch.matmul(qa, _valid_only(ka, rows).transpose(-1, -2)) * scale
    probs = _masked_softmax(scores, valid[:, None, None, :])
    return torch.matmul(probs, _valid_only(va, rows)).to(q.dtype)


@_outside_autocast
def attention_pool(
    h: torch.Tensor, w: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention pooling over time (the paper's equations 9-10).

    ``beta_t = softmax_t(h_t . w)`` over the valid steps, ``O = sum_t beta_t h_t``.

    Args:
        h: sequence ``(B, T, D)``.
        w: scoring vector ``(D,)``.
        lengths: valid steps per batch element ``(B,)``; a sequence of length 0 pools to zeros.

    Returns:
        ``(pooled (B, D), weights (B, T))`` in the dtype of ``h``.
    """
    mask = None if lengths is None else key_mask(lengths.to(h.device), h.shape[1])
    # The valid steps only, in the scores as in the sum: dw sums dscores * h, NaN on a padded NaN step.
    dtype = _accumulation_dtype(h, w)
    hf = h.to(dtype) if mask is None else _valid_only(h.to(dtype), mask[:, :, None])
    weights = _masked_softmax(torch.matmul(hf, w.to(dtype)), mask)
    pooled = torch.einsum("bt,btd->bd", weights, hf)
    return pooled.to(h.dtype), weights.to(h.dtype)
