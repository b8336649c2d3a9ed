"""Every launch configuration of minser's Triton kernels, in one place.

The wrappers (:mod:`minser.kernels.attention_triton`, :mod:`minser.kernels.attention_pool_triton`)
pick their block sizes, warps and pipeline stages here, and the ahead-of-time compile tests and
``tools/kernel_report.py`` enumerate exactly the same table, so every block size, warp count, stage
count and dtype the library can launch is compiled for sm_80 and sm_90 in CI, in the divisibility
specializations of :data:`HINTS` (Triton also specializes on which arguments are multiples of 16, and
some launches mix them, e.g. pooling 40 features over 46 steps: a batch stride of 1840 but a row stride
of 40; those are compiled at run time only).

This module imports neither triton nor CUDA: the dispatcher asks it whether a shape is supported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from minser.errors import ConfigError

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Input dtypes the kernels accept; accumulation is always float32."""

ATTENTION_HEAD_DIMS = (16, 32, 64, 128)
"""Head sizes of the fused attention (powers of two: a tile spans the whole head)."""

POOL_MAX_DIM = 1024
"""Largest feature size of the fused attention pooling (one tile spans the whole feature axis)."""

POOL_BLOCK_DIMS = (16, 32, 64, 128, 256, 512, 1024)
"""Feature tiles of the pooling kernels: the feature size rounded up to a power of two, at least 16."""

ATTENTION_MAX_BATCH_HEADS = 65535
"""Largest ``B * H`` of the fused attention: every attention kernel puts one program per batch element and
head on grid axis 1 (y), which CUDA caps at 65535 blocks (axis 0 takes 2**31 - 1); a larger grid fails at
launch with "invalid argument"."""


@dataclass(frozen=True)
class Launch:
    """Compile-time parameters of one kernel launch.

    ``block_m`` / ``block_n`` are the query / key tile lengths for attention; for pooling
    ``block_m`` is the time tile and ``block_n`` the feature tile.
    """

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int

    def options(self) -> dict[str, int]:
        """The launch keywords Triton takes besides the constexprs."""
        return {"num_warps": self.num_warps, "num_stages": self.num_stages}


ATTENTION_KERNELS = ("attn_fwd", "attn_bwd_delta", "attn_bwd_dkdv", "attn_bwd_dq")
POOL_KERNELS = ("pool_fwd", "pool_bwd")


# (kernel, head size, operands are fp32) -> launch. Chosen from tools/kernel_report.py so that no
# configuration spills registers on sm_80 or sm_90. fp32 operands take exact (IEEE, non tensor-core)
# dots whose accumulators live in registers, hence smaller tiles and more warps than fp16/bf16.
_ATTENTION_LAUNCHES: dict[tuple[str, int, bool], Launch] = {}
for _d in ATTENTION_HEAD_DIMS:
    _ATTENTION_LAUNCHES[("attn_fwd", _d, False)] = Launch(64, 64 if _d <= 64 else 32, 4, 2)
    _ATTENTION_LAUNCHES[("attn_fwd", _d, True)] = Launch(64, 32, 4 if _d <= 32 else 8, 2)
    for _fp32 in (False, True):
        _ATTENTION_LAUNCHES[("attn_bwd_delta", _d, _fp32)] = Launch(64, _d, 4, 1)
    _ATTENTION_LAUNCHES[("attn_bwd_dkdv", _d, False)] = Launch(64, 64, 4, 1) if _d <= 64 else Launch(32, 32, 4, 1)
    _ATTENTION_LAUNCHES[("attn_bwd_dkdv", _d, True)] = Launch(32, 32 if _d <= 64 else 16, 8, 1)
    _ATTENTION_LAUNCHES[("attn_bwd_dq", _d, False)] = Launch(64, 64, 4, 1) if _d <= 64 else Launch(32, 32, 4, 1)
    _ATTENTION_LAUNCHES[("attn_bwd_dq", _d, True)] = Launch(32, 32, 8, 1)


def attention_launch(kernel: str, head_dim: int, dtype: torch.dtype) -> Launch:
    """Launch parameters of one attention kernel for a head size and input dtype."""
    return _ATTENTION_LAUNCHES[(kernel, head_dim, dtype == torch.float32)]


def pool_block_dim(dim: int) -> int:
    """Feature tile of the pooling kernels for a feature size ``dim``."""
    return max(16, 1 << (dim - 1).bit_length())


def pool_launch(kernel: str, block_dim: int) -> Launch:
    """Launch parameters of one pooling kernel for a feature tile ``block_dim``."""
    if kernel not in POOL_KERNELS:
        raise KeyError(kernel)
    block_t = min(64, max(8, 4096 // block_dim))
    return Launch(block_t, block_dim, 8 if block_dim >= 512 else 4, 1)


HINTS = ("all", "strides", "pointers")
"""Specializations compiled ahead of time, by which integer and pointer arguments Triton is told are
divisible by 16 (it specializes every launch on that): ``all`` (pointers, strides and sizes, e.g.
attention at 64 x 64 steps), ``strides`` (pointers and strides; sizes such as 46 or 187 steps are
not) and ``pointers`` (pooling a feature size of 40: row strides of 40)."""


@dataclass(frozen=True)
class CompileSpec:
    """One launchable kernel configuration, as ``triton.compiler.ASTSource`` wants it.

    ``pointers``, ``strides`` and ``sizes`` name the kernel's arguments of each kind; ``hints`` the
    specializations (:data:`HINTS`) the wrappers can launch. The wrappers pass only 16-byte aligned
    pointers, and the attention wrapper only strides divisible by 16 (:func:`triton_operand`).
    """

    label: str
    fn: object
    signature: dict
    constexprs: dict
    pointers: tuple
    strides: tuple
    sizes: tuple
    hints: tuple
    launch: Launch

    def divisible(self, hint: str) -> tuple:
        """The arguments specialized as divisible by 16 under ``hint``."""
        groups = {"all": (self.pointers, self.strides, self.sizes), "strides": (self.pointers, self.strides),
                  "pointers": (self.pointers,)}[hint]
        return tuple(arg for group in groups for arg in group)


def compile_spec(label: str, fn, pointers: dict, floats: tuple, strides: tuple, constexprs: dict,
                 launch: Launch, hints: tuple = HINTS, unspecialized: tuple = ()) -> CompileSpec:
    """Builds the signature of ``fn`` in argument order: ``pointers`` maps names to ``"*fp16"``-style
    types, ``floats`` are fp32 scalars, ``constexprs`` compile-time values, every other argument i32
    (``strides``, and the rest are sizes). ``unspecialized`` names the i32 arguments of ``fn``'s
    ``do_not_specialize``: no hint marks them divisible by 16, as no launch does."""

    def kind(arg: str) -> str:
        if arg in pointers:
            return pointers[arg]
        if arg in constexprs:
            return "constexpr"
        return "fp32" if arg in floats else "i32"

    signature = {arg: kind(arg) for arg in fn.arg_names}
    sizes = tuple(a for a, k in signature.items() if k == "i32" and a not in strides and a not in unspecialized)
    return CompileSpec(label, fn, signature, constexprs, tuple(pointers), tuple(strides), sizes, hints, launch)


TYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def triton_operand(t: torch.Tensor, reads: str = "strided") -> torch.Tensor:
    """``t`` itself when a kernel can read it as it is, else a contiguous copy.

    ``reads`` says how the kernel reads it: ``"strided"``, every axis but the last through its
    stride (so the last axis must be contiguous); ``"strided16"``, the same with every such stride a
    multiple of 16; ``"dense"``, as one contiguous block. The pointer must be 16-byte aligned in
    every case, because only those specializations are compiled ahead of time (:data:`HINTS`; an
    unaligned attention kernel spills registers on sm_80 and sm_90)."""
    if reads == "dense":
        layout = t.is_contiguous()
    else:
        layout = t.stride(-1) == 1 and (reads == "strided" or all(s % 16 == 0 for s in t.stride()[:-1]))
    return t if layout and t.data_ptr() % 16 == 0 else t.clone(memory_format=torch.contiguous_format)


def attention_supported(head_dim: int, dtype: torch.dtype) -> bool:
    """True when the fused attention kernels exist for this head size and dtype."""
    return head_dim in ATTENTION_HEAD_DIMS and dtype in DTYPES


def pool_supported(dim: int, dtype: torch.dtype) -> bool:
    """True when the fused pooling kernels exist for this feature size and dtype."""
    return 1 <= dim <= POOL_MAX_DIM and dtype in DTYPES


def int32_indexable(*tensors: torch.Tensor) -> bool:
    """True when the kernels' int32 element offsets reach every element of each tensor, as it is and as the
    contiguous copy :func:`triton_operand` may make (a strided view can reach far past its element count,
    an expanded one copies to more elements than it holds)."""
    def reach(t: torch.Tensor) -> int:
        return max(t.numel(), 1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()) if n))

    return all(reach(t) < 2**31 for t in tensors)


def int32_lengths(lengths: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """``lengths`` as the kernels read them, int32 on ``device``; clipped to ``[0, size]`` first, as a length
    past the sequence means all of it, one below 0 none of it, and a cast alone would wrap 2**31 to a
    negative length and -2**31 - 1 to a positive one."""
    return lengths.to(device=device, dtype=torch.int64).clamp(min=0, max=size).to(torch.int32)


def attention_covers(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """True when the fused attention takes these tensors: a head size and dtype it has kernels for
    (:func:`attention_supported`), one dtype for all three, int32 offsets (:func:`int32_indexable`) and
    at most :data:`ATTENTION_MAX_BATCH_HEADS` batch elements times heads."""
    return (attention_supported(q.shape[-1], q.dtype) and q.dtype == k.dtype == v.dtype
            and int32_indexable(q, k, v) and q.shape[0] * q.shape[1] <= ATTENTION_MAX_BATCH_HEADS)


def pool_covers(h: torch.Tensor) -> bool:
    """True when the fused pooling takes ``h (B, T, D)``: :func:`pool_supported` and int32 offsets."""
    return pool_supported(h.shape[-1], h.dtype) and int32_indexable(h)


def first_order_only(backward: Callable) -> Callable:
    """Decorate an autograd Function's ``backward`` whose kernels have no backward of their own.

    Refuses, with ConfigError, a backward asked for a differentiable result (``create_graph=True``: a
    gradient penalty, a double backward), the one case in which autograd runs it with grad mode on.
    ``torch.autograd.function.once_differentiable`` raises only when the incoming gradient itself needs a
    gradient, so for a loss linear in the kernel's output (``out.sum()``) the penalty saw the kernel as a
    constant and got wrong gradients without a word.
    """

    @functools.wraps(backward)
    def checked(ctx, *grads):
        if torch.is_grad_enabled():
            raise ConfigError("the Triton kernels are differentiable once: create_graph=True (a gradient penalty, "
                              "a second derivative) needs impl='torch'")
        return backward(ctx, *grads)

    return checked
