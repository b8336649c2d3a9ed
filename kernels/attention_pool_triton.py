"""Fused attention pooling (the paper's equations 9-10): Triton kernels and their autograd Function.

``beta_t = softmax_t(h_t . w)`` over the valid steps, ``pooled = sum_t beta_t h_t``.

- ``_pool_fwd``: one program per sequence. One pass over the valid steps scores them, keeps an
  online softmax and accumulates the pooled vector; a second pass over the (tiny) float32 score
  buffer turns the scores into weights. The float32 weights are kept for the backward pass.
- ``_pool_bwd``: one program per sequence, two passes over ``h``: the first reduces
  ``c = sum_t beta_t g_t`` with ``g_t = dpooled . h_t + dweights_t``, the second writes
  ``dh_t = beta_t dpooled + beta_t (g_t - c) w`` and this sequence's share of ``dw``
  (summed over the batch afterwards, so the result is deterministic, no atomics).

Both outputs receive gradients: the weights' gradient enters through ``g_t``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import triton
import triton.language as tl

from minser.errors import ConfigError
from minser.kernels import configs


@triton.jit
def _load_steps(x_base, offs_t, sxt, offs_d, valid, in_d):
    # The (steps, dim) tile of one sequence in float32, zero outside the valid steps and dims.
    return tl.load(x_base + offs_t[:, None] * sxt + offs_d[None, :],
                   mask=valid[:, None] & in_d[None, :], other=0.0).to(tl.float32)


@triton.jit
def _step_gradients(x_base, BETA, DWEIGHTS, b, T, n, start, sxt, offs_d, in_d, gp, BLOCK_T: tl.constexpr):
    # One tile of steps: x, beta and g_t = dpooled . h_t + dweights_t (zero past the valid steps).
    offs_t = start + tl.arange(0, BLOCK_T)
    valid = offs_t < n
    x = _load_steps(x_base, offs_t, sxt, offs_d, valid, in_d)
    beta = tl.load(BETA + b * T + offs_t, mask=valid, other=0.0)
    g = tl.sum(x * gp[None, :], 1) + tl.load(DWEIGHTS + b * T + offs_t, mask=valid, other=0.0)
    return offs_t, x, beta, g


@triton.jit
def _pool_fwd(
    X, W, LEN, POOLED, WEIGHTS, BETA,
    sxb, sxt, T, D,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.minimum(tl.maximum(tl.load(LEN + b), 0), T)
    offs_d = tl.arange(0, BLOCK_D)
    in_d = offs_d < D
    w = tl.load(W + offs_d, mask=in_d, other=0.0)
    x_base = X + b * sxb

    m = tl.full([], float("-inf"), tl.float32)
    l = tl.zeros([], tl.float32)
    acc = tl.zeros([BLOCK_D], tl.float32)
    # Every tile of this loop holds at least one valid step, so m is finite after the first one.
    for start in range(0, n, BLOCK_T):
        offs_t = start + tl.arange(0, BLOCK_T)
        valid = offs_t < n
        x = _load_steps(x_base, offs_t, sxt, offs_d, valid, in_d)
        s = tl.where(valid, tl.sum(x * w[None, :], 1), float("-inf"))
        tl.store(BETA + b * T + offs_t, s, mask=valid)
        m_new = tl.maximum(m, tl.max(s, 0))
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        l = l * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * x, 0)
        m = m_new

    has_steps = l > 0.0
    l_safe = tl.where(has_steps, l, 1.0)
    m_safe = tl.where(has_steps, m, 0.0)
    tl.store(POOLED + b * D + offs_d, (acc / l_safe).to(POOLED.dtype.element_ty), mask=in_d)
    # The scores just stored may belong to other threads of this program.
    tl.debug_barrier()
    for start in range(0, T, BLOCK_T):
        offs_t = start + tl.arange(0, BLOCK_T)
        valid = offs_t < n
        s = tl.load(BETA + b * T + offs_t, mask=valid, other=0.0)
        # exp(s - m) / l, not exp(s - (m + log l)): the rounding of a log-sum-exp would put eps * |lse| into
        # every exponent, the weights would not sum to 1, and dh (through beta_t (g_t - c)) would drift.
        beta = tl.where(valid, tl.exp(s - m_safe) / l_safe, 0.0)
        inside = offs_t < T
        tl.store(BETA + b * T + offs_t, beta, mask=inside)
        tl.store(WEIGHTS + b * T + offs_t, beta.to(WEIGHTS.dtype.element_ty), mask=inside)


@triton.jit
def _pool_bwd(
    X, W, LEN, BETA, DPOOLED, DWEIGHTS, DX, DW_PART,
    sxb, sxt, T, D,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = tl.program_id(0)
    n = tl.minimum(tl.maximum(tl.load(LEN + b), 0), T)
    offs_d = tl.arange(0, BLOCK_D)
    in_d = offs_d < D
    w = tl.load(W + offs_d, mask=in_d, other=0.0)
    gp = tl.load(DPOOLED + b * D + offs_d, mask=in_d, other=0.0)
    x_base = X + b * sxb

    c_part = tl.zeros([BLOCK_T], tl.float32)
    for start in range(0, n, BLOCK_T):
        _, _, beta, g = _step_gradients(x_base, BETA, DWEIGHTS, b, T, n, start, sxt, offs_d, in_d, gp, BLOCK_T)
        c_part += beta * g
    c = tl.sum(c_part, 0)

    dw = tl.zeros([BLOCK_D], tl.float32)
    # Padding steps (beta = 0) get zero gradient rows, so this pass covers all T steps.
    for start in range(0, T, BLOCK_T):
        offs_t, x, beta, g = _step_gradients(x_base, BETA, DWEIGHTS, b, T, n, start, sxt, offs_d, in_d, gp, BLOCK_T)
        gs = beta * (g - c)
        dx = beta[:, None] * gp[None, :] + gs[:, None] * w[None, :]
        tl.store(DX + b * T * D + offs_t[:, None] * D + offs_d[None, :], dx.to(DX.dtype.element_ty),
                 mask=(offs_t < T)[:, None] & in_d[None, :])
        dw += tl.sum(gs[:, None] * x, 0)
    tl.store(DW_PART + b * D + offs_d, dw, mask=in_d)


KERNELS = {"pool_fwd": _pool_fwd, "pool_bwd": _pool_bwd}


def _launch(kernel: str, dim: int) -> tuple[dict[str, int], dict[str, int]]:
    """``(constexprs, launch options)`` of a pooling kernel for feature size ``dim``."""
    launch = configs.pool_launch(kernel, configs.pool_block_dim(dim))
    return {"BLOCK_T": launch.block_m, "BLOCK_D": launch.block_n}, launch.options()


class TritonAttentionPool(torch.autograd.Function):
    """Attention pooling; saves ``h``, the float32 ``w`` and the float32 weights."""

    @staticmethod
    def forward(ctx, h, w, lens):
        B, T, D = h.shape
        w32 = configs.triton_operand(w.float(), reads="dense")
        pooled = torch.empty((B, D), dtype=h.dtype, device=h.device)
        weights = torch.empty((B, T), dtype=h.dtype, device=h.device)
        beta = torch.empty((B, T), dtype=torch.float32, device=h.device)
        const, options = _launch("pool_fwd", D)
        _pool_fwd[(B,)](h, w32, lens, pooled, weights, beta, h.stride(0), h.stride(1), T, D, **const, **options)
        ctx.save_for_backward(h, w32, lens, beta)
        ctx.w_dtype = w.dtype
        return pooled, weights

    @staticmethod
    @configs.first_order_only
    def backward(ctx, dpooled, dweights):
        h, w32, lens, beta = ctx.saved_tensors
        B, T, D = h.shape
        # The kernel reads both as dense rows (b * D, b * T).
        dpooled = torch.zeros((B, D), device=h.device) if dpooled is None else dpooled.float()
        dweights = torch.zeros((B, T), device=h.device) if dweights is None else dweights.float()
        dpooled, dweights = (configs.triton_operand(g, reads="dense") for g in (dpooled, dweights))
        dh = torch.empty((B, T, D), dtype=h.dtype, device=h.device)
        dw_part = torch.empty((B, D), dtype=torch.float32, device=h.device)
        const, options = _launch("pool_bwd", D)
        _pool_bwd[(B,)](h, w32, lens, beta, dpooled, dweights, dh, dw_part, h.stride(0), h.stride(1), T, D,
                        **const, **options)
        return dh, dw_part.sum(0).to(ctx.w_dtype), None


def triton_attention_pool(
    h: torch.Tensor, w: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention pooling of ``h`` ``(B, T, D)`` with scoring vector ``w`` ``(D,)``.

    Returns ``(pooled (B, D), weights (B, T))`` in ``h``'s dtype; ``lengths`` (integer ``(B,)``,
    default: all ``T`` steps) masks steps ``t >= lengths[b]``; a sequence of length 0 pools to zeros.
    """
    B, T, D = h.shape
    if not configs.pool_supported(D, h.dtype):
        raise ConfigError(
            f"triton attention_pool supports feature sizes 1..{configs.POOL_MAX_DIM} and dtypes "
            f"{configs.DTYPES}; got {D}, {h.dtype}: use impl='torch'"
        )
    if not configs.int32_indexable(h):
        raise ConfigError(f"triton attention_pool indexes with int32: h {tuple(h.shape)} reaches too far; "
                          "use impl='torch'")
    if lengths is None:
        lens = torch.full((B,), T, dtype=torch.int32, device=h.device)
    else:
        lens = configs.triton_operand(configs.int32_lengths(lengths, T, h.device), reads="dense")
    return TritonAttentionPool.apply(configs.triton_operand(h), w, lens)


def compile_specs() -> Iterator[configs.CompileSpec]:
    """Every pooling kernel configuration the library can launch, for ahead-of-time compiling."""
    for dtype in configs.DTYPES:
        t = "*" + configs.TYPE_NAMES[dtype]
        for block_d in configs.POOL_BLOCK_DIMS:
            for name in configs.POOL_KERNELS:
                const, _ = _launch(name, block_d)
                if name == "pool_fwd":
                    ptrs = {"X": t, "W": "*fp32", "LEN": "*i32", "POOLED": t, "WEIGHTS": t, "BETA": "*fp32"}
                else:
                    ptrs = {"X": t, "W": "*fp32", "LEN": "*i32", "BETA": "*fp32", "DPOOLED": "*fp32",
                            "DWEIGHTS": "*fp32", "DX": t, "DW_PART": "*fp32"}
                launch = configs.pool_launch(name, block_d)
                label = f"{name}[D<={block_d},{configs.TYPE_NAMES[dtype]}]"
                # D is the row stride of the dense outputs (POOLED, DX), so it goes with the strides.
                yield configs.compile_spec(label, KERNELS[name], ptrs, (), ("sxb", "sxt", "D"), const, launch)
