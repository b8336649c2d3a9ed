"""Fused flash-style attention with key padding: Triton kernels and their autograd Function.

Forward: one pass over the valid keys with an online softmax (FlashAttention-2); the scores are
never stored, only the base-2 log-sum-exp per query, kept for the backward pass.
Backward (FlashAttention-2 split, no atomics):

- ``_attn_bwd_delta``: ``delta = rowsum(dO * O)`` per query;
- ``_attn_bwd_dkdv``: one program per key tile, looping over query tiles, accumulates dK and dV;
- ``_attn_bwd_dq``: one program per query tile, looping over key tiles, accumulates dQ.

Key padding: keys ``j >= key_lengths[b]`` are skipped (loops stop at the last valid key) and masked
inside the last tile. A batch element with no valid key never enters the key loop, so its
outputs and gradients stay exact zeros. Tensors are read through their strides (only the last
axis must be contiguous); the scale and ``exp2`` fold ``log2(e)`` into one multiply.
"""

from __future__ import annotations

from collections.abc import Iterator

import os

import torch
import triton
import triton.language as tl

from minser.errors import ConfigError
from minser.kernels import configs

LOG2E = 1.4426950408889634

UNSPECIALIZED = ("H",)
"""Arguments Triton is told not to specialize on. The head count only splits the program id, so a
count of 1 (which Triton would compile as a constant: a kernel apart, compiled at its first launch,
which spills registers in the fp32 forward at head size 128 on sm_80) or one divisible by 16 gains
nothing; every head count then launches the kernels compiled ahead of time."""


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    # Triton's CPU interpreter multiplies the raw bits of bfloat16 dot operands (triton-lang/triton
    # issue 11584); widening them to float32 there is exact, so the interpreter still checks the
    # bfloat16 rounding of the operands. GPU launches keep UPCAST_DOT False (tensor-core dots).
    if UPCAST_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _load_rows(base, rows, stride, offs_d, valid):
    # The (rows, head_dim) tile of a (steps, head_dim) matrix at base, zero where valid is False.
    return tl.load(base + rows[:, None] * stride + offs_d[None, :], mask=valid[:, None], other=0.0)


@triton.jit
def _store_rows(base, rows, stride, offs_d, value, valid):
    # Writes a (rows, head_dim) tile, cast to the matrix's dtype, where valid is True.
    tl.store(base + rows[:, None] * stride + offs_d[None, :], value.to(base.dtype.element_ty), mask=valid[:, None])


@triton.jit(do_not_specialize=UNSPECIALIZED)
def _attn_fwd(
    Q, K, V, O, LSE, KLEN,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
    H, Lq, Lk, qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    n_keys = tl.minimum(tl.maximum(tl.load(KLEN + b), 0), Lk)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = _load_rows(Q + b * sqb + h * sqh, offs_m, sqm, offs_d, offs_m < Lq)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Every tile of this loop holds at least one valid key, so m_i is finite after the first one.
    for start_n in range(0, n_keys, BLOCK_N):
        offs = start_n + offs_n
        valid = offs < n_keys
        k = _load_rows(k_base, offs, skn, offs_d, valid)
        v = _load_rows(v_base, offs, svn, offs_d, valid)
        s = _dot(q, tl.trans(k), PRECISION, UPCAST_DOT) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PRECISION, UPCAST_DOT)
        m_i = m_new

    has_keys = l_i > 0.0
    acc = acc / tl.where(has_keys, l_i, 1.0)[:, None]
    lse = tl.where(has_keys, m_i + tl.log2(tl.where(has_keys, l_i, 1.0)), 0.0)
    row = offs_m < Lq
    tl.store(LSE + pid_bh * Lq + offs_m, lse, mask=row)
    _store_rows(O + b * sob + h * soh, offs_m, som, offs_d, acc, row)


@triton.jit(do_not_specialize=UNSPECIALIZED)
def _attn_bwd_delta(
    O, DO, DELTA,
    sob, soh, som, sdb, sdh, sdm,
    H, Lq,
    BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row = offs_m < Lq
    o = _load_rows(O + b * sob + h * soh, offs_m, som, offs_d, row)
    do = _load_rows(DO + b * sdb + h * sdh, offs_m, sdm, offs_d, row)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh * Lq + offs_m, delta, mask=row)


@triton.jit(do_not_specialize=UNSPECIALIZED)
def _attn_bwd_dkdv(
    Q, K, V, DO, LSE, DELTA, KLEN, DK, DV,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, sgb, sgh, sgn,
    H, Lq, Lk, qk_scale, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    n_keys = tl.minimum(tl.maximum(tl.load(KLEN + b), 0), Lk)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    valid = offs_n < n_keys
    k = _load_rows(K + b * skb + h * skh, offs_n, skn, offs_d, valid)
    v = _load_rows(V + b * svb + h * svh, offs_n, svn, offs_d, valid)
    q_base = Q + b * sqb + h * sqh
    do_base = DO + b * sdb + h * sdh

    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    # A tile past the last valid key gets zero gradients without touching the queries.
    q_end = tl.where(pid_n * BLOCK_N < n_keys, Lq, 0)
    for start_m in range(0, q_end, BLOCK_M):
        offs = start_m + offs_m
        row = offs < Lq
        q = _load_rows(q_base, offs, sqm, offs_d, row)
        do = _load_rows(do_base, offs, sdm, offs_d, row)
        lse = tl.load(LSE + pid_bh * Lq + offs, mask=row, other=0.0)
        delta = tl.load(DELTA + pid_bh * Lq + offs, mask=row, other=0.0)
        s_t = _dot(k, tl.trans(q), PRECISION, UPCAST_DOT) * qk_scale
        p_t = tl.where(valid[:, None], tl.exp2(s_t - lse[None, :]), 0.0)
        dv += _dot(p_t.to(do.dtype), do, PRECISION, UPCAST_DOT)
        dp_t = _dot(v, tl.trans(do), PRECISION, UPCAST_DOT)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _dot(ds_t.to(q.dtype), q, PRECISION, UPCAST_DOT)

    out = offs_n < Lk
    _store_rows(DK + b * sgb + h * sgh, offs_n, sgn, offs_d, dk * sm_scale, out)
    _store_rows(DV + b * sgb + h * sgh, offs_n, sgn, offs_d, dv, out)


@triton.jit(do_not_specialize=UNSPECIALIZED)
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, KLEN, DQ,
    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdb, sdh, sdm, sgb, sgh, sgm,
    H, Lq, Lk, qk_scale, sm_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    n_keys = tl.minimum(tl.maximum(tl.load(KLEN + b), 0), Lk)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row = offs_m < Lq
    q = _load_rows(Q + b * sqb + h * sqh, offs_m, sqm, offs_d, row)
    do = _load_rows(DO + b * sdb + h * sdh, offs_m, sdm, offs_d, row)
    lse = tl.load(LSE + pid_bh * Lq + offs_m, mask=row, other=0.0)
    delta = tl.load(DELTA + pid_bh * Lq + offs_m, mask=row, other=0.0)
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start_n in range(0, n_keys, BLOCK_N):
        offs = start_n + offs_n
        valid = offs < n_keys
        k = _load_rows(k_base, offs, skn, offs_d, valid)
        v = _load_rows(v_base, offs, svn, offs_d, valid)
        s = _dot(q, tl.trans(k), PRECISION, UPCAST_DOT) * qk_scale
        p = tl.where(valid[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), PRECISION, UPCAST_DOT)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PRECISION, UPCAST_DOT)

    _store_rows(DQ + b * sgb + h * sgh, offs_m, sgm, offs_d, dq * sm_scale, row)


KERNELS = {
    "attn_fwd": _attn_fwd,
    "attn_bwd_delta": _attn_bwd_delta,
    "attn_bwd_dkdv": _attn_bwd_dkdv,
    "attn_bwd_dq": _attn_bwd_dq,
}


def _dot_options(dtype: torch.dtype, interpret: bool) -> dict[str, object]:
    """Compile-time dot options: fp32 inputs get true fp32 products (like torch.matmul's default),
    not TF32; ``interpret`` is True under Triton's CPU interpreter (see ``_dot``)."""
    return {"PRECISION": "ieee" if dtype == torch.float32 else "tf32",
            "UPCAST_DOT": interpret and dtype == torch.bfloat16}


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _grid(length: int, block: int, batch_heads: int) -> tuple[int, int]:
    return triton.cdiv(length, block), batch_heads


def _forward(q, k, v, klen):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, Lq), dtype=torch.float32, device=q.device)
    launch = configs.attention_launch("attn_fwd", D, q.dtype)
    _attn_fwd[_grid(Lq, launch.block_m, B * H)](
        q, k, v, o, lse, klen,
        *_strides(q), *_strides(k), *_strides(v), *_strides(o),
        H, Lq, Lk, D**-0.5 * LOG2E,
        BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, HEAD_DIM=D, **_dot_options(q.dtype, _interpreting()),
        **launch.options(),
    )
    return o, lse


def _backward(q, k, v, o, lse, klen, do):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    dots = _dot_options(q.dtype, _interpreting())
    delta = torch.empty_like(lse)
    launch = configs.attention_launch("attn_bwd_delta", D, q.dtype)
    _attn_bwd_delta[_grid(Lq, launch.block_m, B * H)](
        o, do, delta, *_strides(o), *_strides(do), H, Lq,
        BLOCK_M=launch.block_m, HEAD_DIM=D, **launch.options(),
    )
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))
    scales = (D**-0.5 * LOG2E, D**-0.5)
    launch = configs.attention_launch("attn_bwd_dkdv", D, q.dtype)
    _attn_bwd_dkdv[_grid(Lk, launch.block_n, B * H)](
        q, k, v, do, lse, delta, klen, dk, dv, *common, *_strides(dk), H, Lq, Lk, *scales,
        BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, HEAD_DIM=D, **dots,
        **launch.options(),
    )
    launch = configs.attention_launch("attn_bwd_dq", D, q.dtype)
    _attn_bwd_dq[_grid(Lq, launch.block_m, B * H)](
        q, k, v, do, lse, delta, klen, dq, *common, *_strides(dq), H, Lq, Lk, *scales,
        BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, HEAD_DIM=D, **dots,
        **launch.options(),
    )
    return dq, dk, dv


class TritonAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(D)) v with key padding; saves q, k, v, the output and the log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v, klen):
        o, lse = _forward(q, k, v, klen)
        ctx.save_for_backward(q, k, v, o, lse, klen)
        return o

    @staticmethod
    @configs.first_order_only
    def backward(ctx, do):
        q, k, v, o, lse, klen = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, klen, configs.triton_operand(do, reads="strided16"))
        return dq, dk, dv, None


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if not (q.dtype == k.dtype == v.dtype):
        raise ConfigError(f"triton attention wants q, k, v of one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not configs.attention_supported(q.shape[-1], q.dtype):
        raise ConfigError(
            f"triton attention supports head sizes {configs.ATTENTION_HEAD_DIMS} and dtypes "
            f"{configs.DTYPES}; got head size {q.shape[-1]}, {q.dtype}: use impl='torch'"
        )
    if not configs.int32_indexable(q, k, v):
        raise ConfigError(f"triton attention indexes with int32: q {tuple(q.shape)} / k {tuple(k.shape)} reach too "
                          "far; use impl='torch'")
    B, H = q.shape[:2]
    if B * H > configs.ATTENTION_MAX_BATCH_HEADS:
        raise ConfigError(f"triton attention launches one program per batch element and head on CUDA's grid axis y, "
                          f"at most {configs.ATTENTION_MAX_BATCH_HEADS}: got B * H = {B} * {H} = {B * H}; use a "
                          "smaller batch or impl='torch'")


def triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Fused attention ``(B, H, Lq, D)`` of queries ``(B, H, Lq, D)`` over keys/values ``(B, H, Lk, D)``.

    ``key_lengths`` (integer ``(B,)``, default: all ``Lk`` keys) masks keys ``j >= key_lengths[b]``;
    a query without any valid key returns zeros and receives zero gradients.
    """
    _check(q, k, v)
    if key_lengths is None:
        klen = torch.full((q.shape[0],), k.shape[2], dtype=torch.int32, device=q.device)
    else:
        klen = configs.triton_operand(configs.int32_lengths(key_lengths, k.shape[2], q.device), reads="dense")
    # A contiguous copy of a head size in ATTENTION_HEAD_DIMS has every stride divisible by 16.
    q, k, v = (configs.triton_operand(t, reads="strided16") for t in (q, k, v))
    return TritonAttention.apply(q, k, v, klen)


def compile_specs() -> Iterator[configs.CompileSpec]:
    """Every attention kernel configuration the library can launch, for ahead-of-time compiling."""
    for dtype in configs.DTYPES:
        t = "*" + configs.TYPE_NAMES[dtype]
        for d in configs.ATTENTION_HEAD_DIMS:
            for name in configs.ATTENTION_KERNELS:
                launch = configs.attention_launch(name, d, dtype)
                fn = KERNELS[name]
                const = {"BLOCK_M": launch.block_m, "BLOCK_N": launch.block_n, "HEAD_DIM": d,
                         **_dot_options(dtype, interpret=False)}
                floats = ("qk_scale", "sm_scale")
                if name == "attn_fwd":
                    ptrs = {"Q": t, "K": t, "V": t, "O": t, "LSE": "*fp32", "KLEN": "*i32"}
                elif name == "attn_bwd_delta":
                    ptrs = {"O": t, "DO": t, "DELTA": "*fp32"}
                    const = {"BLOCK_M": launch.block_m, "HEAD_DIM": d}
                else:
                    outs = {"DK": t, "DV": t} if name == "attn_bwd_dkdv" else {"DQ": t}
                    ptrs = {"Q": t, "K": t, "V": t, "DO": t, "LSE": "*fp32", "DELTA": "*fp32", "KLEN": "*i32", **outs}
                strides = tuple(a for a in fn.arg_names if a not in ptrs and a not in floats and a not in const
                                and a not in ("H", "Lq", "Lk"))
                label = f"{name}[D={d},{configs.TYPE_NAMES[dtype]}]"
                yield configs.compile_spec(label, fn, ptrs, floats, strides, const, launch, hints=("all", "strides"),
                                           unspecialized=UNSPECIALIZED)
