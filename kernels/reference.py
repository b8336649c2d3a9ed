"""PyTorch reference path of minser's fused ops.

These are the ground truth the Triton kernels are tested against and the path used on
CPU. They accumulate in float32 (float64 inputs stay float64, so gradcheck can use them) and
return the input dtype.
"""

from __future__ import annotations

import torch


def key_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """Boolean mask ``(batch, size)``: True where position ``< lengths[b]``."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _accumulated(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


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
    if key_lengths is None:
        scores = torch.matmul(_accumulated(q), _accumulated(k).transpose(-1, -2)) * scale
        return torch.matmul(torch.softmax(scores, dim=-1), _accumulated(v)).to(q.dtype)
    valid = key_mask(key_lengths.to(k.device), k.shape[2])
    rows = valid[:, None, :, None]  # the valid key rows of k and v
    # Padded keys are left out of the scores too: masked_fill hides them from the forward pass, but dq is
    # dscores @ k, where a zero gradient times a padded NaN is NaN.
    scores = torch.matmul(_accumulated(q), _valid_only(_accumulated(k), rows).transpose(-1, -2)) * scale
    probs = _masked_softmax(scores, valid[:, None, None, :])
    return torch.matmul(probs, _valid_only(_accumulated(v), rows)).to(q.dtype)


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
    hf = _accumulated(h) if mask is None else _valid_only(_accumulated(h), mask[:, :, None])
    weights = _masked_softmax(torch.matmul(hf, w.to(hf.dtype)), mask)
    pooled = torch.einsum("bt,btd->bd", weights, hf)
    return pooled.to(h.dtype), weights.to(h.dtype)
