"""minser's fused ops: attention and attention pooling.

Each op has a Triton kernel (``minser.kernels.attention_triton``,
``minser.kernels.attention_pool_triton``) and a PyTorch reference
(:mod:`minser.kernels.reference`). The path is chosen per call with ``impl``:

- ``"auto"``: Triton when the tensors live on a CUDA device, Triton is installed and the
  kernels cover the shape, dtypes and size (:func:`~minser.kernels.configs.attention_covers`,
  :func:`~minser.kernels.configs.pool_covers`), else PyTorch.
- ``"triton"``: always Triton (on CPU this needs ``TRITON_INTERPRET=1``, which the tests use).
- ``"torch"``: always the PyTorch reference.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from minser.errors import ConfigError
from minser.kernels import configs, reference

IMPLS = ("auto", "triton", "torch")

__all__ = ["IMPLS", "attention", "attention_pool", "check_impl", "triton_available"]


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def check_impl(impl: str, device: torch.device | str) -> None:
    """Raise ConfigError when kernel path ``impl`` cannot run on ``device``: an unknown name, or ``"triton"``
    without the triton package or, off CUDA, without ``TRITON_INTERPRET=1`` (a training run checks this
    before it reads any data)."""
    device = torch.device(device)
    if impl not in IMPLS:
        raise ConfigError(f"impl={impl!r} is not one of {IMPLS}")
    if impl != "triton":
        return
    if not triton_available():
        raise ConfigError("impl='triton' needs the triton package: pip install 'minser[gpu]'")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ConfigError(
            f"impl='triton' got tensors on {device.type}: the Triton kernels need a CUDA device, "
            "or TRITON_INTERPRET=1 set before import to run them in Triton's CPU interpreter"
        )


def _use_triton(impl: str, device: torch.device, supported: bool) -> bool:
    check_impl(impl, device)
    if impl == "auto":
        return device.type == "cuda" and supported and triton_available()
    return impl == "triton"


def _check_lengths(lengths: torch.Tensor | None, batch: int, name: str) -> torch.Tensor | None:
    """``lengths`` as int64, after a ConfigError unless it is None or an integer tensor ``(batch,)``: int64
    because the reference path cannot compare uint16/32/64 with its int64 positions ("Promotion for uint16,
    uint32, uint64 types is not supported"), where the Triton path took them."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor):
        raise ConfigError(f"{name} must be an integer tensor of shape ({batch},), got {type(lengths).__name__}")
    if (lengths.shape != (batch,) or lengths.dtype.is_floating_point or lengths.dtype.is_complex
            or lengths.dtype == torch.bool):
        raise ConfigError(
            f"{name} must be an integer tensor of shape ({batch},), got {tuple(lengths.shape)} {lengths.dtype}"
        )
    return lengths.to(torch.int64)


def _check_floating(op: str, **tensors: torch.Tensor) -> None:
    # An integer input ran on the reference path and came back cast to its dtype (all-zero weights).
    bad = [f"{name} {t.dtype}" for name, t in tensors.items() if not t.dtype.is_floating_point]
    if bad:
        raise ConfigError(f"{op} wants floating-point {', '.join(tensors)}; got {', '.join(bad)}: "
                          "convert with .float()")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_lengths: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Fused scaled dot-product attention with key padding; self- or cross-attention.

    Args:
        q: queries ``(B, H, Lq, D)``, floating point (as k and v), ``D >= 1``.
        k, v: keys and values ``(B, H, Lk, D)``; ``Lk`` may differ from ``Lq``.
        key_lengths: valid keys per batch element, integer ``(B,)``; keys at
            ``j >= key_lengths[b]`` are masked. A query with no valid key returns zeros.
        impl: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring).

    Returns:
        ``(B, H, Lq, D)`` in the dtype of ``q``; softmax(q k^T / sqrt(D)) v, accumulated in float32.
    """
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape or q.shape[3] == 0:
        raise ConfigError(
            f"attention wants q (B, H, Lq, D) and k, v (B, H, Lk, D) with D >= 1; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ConfigError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch, heads or head size")
    _check_floating("attention", q=q, k=k, v=v)
    key_lengths = _check_lengths(key_lengths, q.shape[0], "key_lengths")
    if _use_triton(impl, q.device, configs.attention_covers(q, k, v)):
        from minser.kernels.attention_triton import triton_attention

        return triton_attention(q, k, v, key_lengths)
    return reference.attention(q, k, v, key_lengths)


def attention_pool(
    h: torch.Tensor,
    w: torch.Tensor,
    *,
    lengths: torch.Tensor | None = None,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention pooling (the paper's equations 9-10).

    Args:
        h: sequence ``(B, T, D)``, floating point (as w), ``D >= 1``.
        w: scoring vector ``(D,)``.
        lengths: valid steps per batch element, integer ``(B,)``.
        impl: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        ``(pooled (B, D), weights (B, T))``; weights sum to 1 over the valid steps and are 0
        on padding (a sequence of length 0 pools to zeros).
    """
    if h.dim() != 3 or w.shape != (h.shape[2],) or h.shape[2] == 0:
        raise ConfigError(f"attention_pool wants h (B, T, D) and w (D,) with D >= 1; got h {tuple(h.shape)}, "
                          f"w {tuple(w.shape)}")
    _check_floating("attention_pool", h=h, w=w)
    lengths = _check_lengths(lengths, h.shape[0], "lengths")
    if _use_triton(impl, h.device, configs.pool_covers(h)):
        from minser.kernels.attention_pool_triton import triton_attention_pool

        return triton_attention_pool(h, w, lengths)
    return reference.attention_pool(h, w, lengths)
