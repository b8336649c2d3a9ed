"""The Triton kernels (in Triton's CPU interpreter without a GPU) against the PyTorch reference.

Forward outputs and every gradient, over shapes that cross tile boundaries, odd lengths, Lq != Lk,
key padding with empty sequences, strided inputs, every head size and every dtype.
"""

from __future__ import annotations

import pytest
import torch

from minser.errors import ConfigError
from minser.kernels import attention, attention_pool, configs
from minser.models import build

pytest.importorskip("triton")

# (atol, rtol) per input dtype: fp32 accumulates in the same precision as the reference (only the
# summation order differs); fp16 / bf16 also round the dot operands (P, dS) and the outputs.
# atol is relative to the tensor's largest magnitude, as sums over long rows (dw sums B * T
# terms) carry rounding proportional to their scale, not to each element.
TOLERANCE = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (4e-2, 4e-2),
}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    atol, rtol = TOLERANCE[dtype]
    atol *= max(1.0, expected.float().abs().max().item())
    assert actual.dtype == expected.dtype, what
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


def _run(op, inputs, grads, **kwargs):
    """Outputs and input gradients of ``op`` on both paths; ``grads`` are the output gradients."""
    results = {}
    for impl in ("triton", "torch"):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        outputs = op(*leaves, impl=impl, **kwargs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        torch.autograd.backward(outputs, grads)
        results[impl] = (*outputs, *(leaf.grad for leaf in leaves))
    return results["triton"], results["torch"]


def _randn(*shape, dtype):
    return torch.randn(*shape, device=DEVICE).to(dtype)


@pytest.mark.parametrize("dtype", configs.DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", configs.ATTENTION_HEAD_DIMS)
def test_attention_matches_reference(head_dim, dtype):
    # Lq = 67 and Lk = 70 cross every query / key tile (16..64); lengths cut inside a tile.
    B, H, Lq, Lk = 2, 2, 67, 70
    q, k, v = _randn(B, H, Lq, head_dim, dtype=dtype), _randn(B, H, Lk, head_dim, dtype=dtype), _randn(
        B, H, Lk, head_dim, dtype=dtype)
    grad = _randn(B, H, Lq, head_dim, dtype=dtype)
    lengths = torch.tensor([70, 37], device=DEVICE)
    triton_out, torch_out = _run(attention, (q, k, v), (grad,), key_lengths=lengths)
    for name, a, b in zip(("out", "dq", "dk", "dv"), triton_out, torch_out):
        _close(a, b, dtype, name)


@pytest.mark.parametrize("dtype,head_dim", [(torch.float32, 16), (torch.float16, 32), (torch.bfloat16, 64)], ids=str)
def test_attention_empty_and_overlong_lengths_give_reference_and_zeros(dtype, head_dim):
    B, H, Lq, Lk = 3, 1, 20, 9
    q, k, v = _randn(B, H, Lq, head_dim, dtype=dtype), _randn(B, H, Lk, head_dim, dtype=dtype), _randn(
        B, H, Lk, head_dim, dtype=dtype)
    lengths = torch.tensor([0, 100, -1], device=DEVICE)
    triton_out, torch_out = _run(attention, (q, k, v), (_randn(B, H, Lq, head_dim, dtype=dtype),), key_lengths=lengths)
    for name, a, b in zip(("out", "dq", "dk", "dv"), triton_out, torch_out):
        _close(a, b, dtype, name)
        assert torch.isfinite(a.float()).all(), name
        assert not a[0].any() and not a[2].any(), f"{name} of a sequence without keys must be zero"


def test_lengths_beyond_int32_mean_every_key_and_step():
    """The kernels take int32 lengths; 2**31 and 2**32 + 4 must not wrap to negative or to 4, nor
    -2**31 - 1 to 2**31 - 1 (every key instead of none)."""
    q, k, v = _randn(3, 1, 5, 16, dtype=torch.float32), _randn(3, 1, 9, 16, dtype=torch.float32), _randn(
        3, 1, 9, 16, dtype=torch.float32)
    huge = torch.tensor([2**31, 2**32 + 4, -(2**31) - 1], device=DEVICE)
    sane = torch.tensor([9, 9, 0], device=DEVICE)
    torch.testing.assert_close(attention(q, k, v, key_lengths=huge, impl="triton"),
                               attention(q, k, v, key_lengths=sane, impl="torch"))
    h, w = _randn(3, 9, 16, dtype=torch.float32), torch.randn(16, device=DEVICE)
    torch.testing.assert_close(attention_pool(h, w, lengths=huge, impl="triton"),
                               attention_pool(h, w, lengths=sane, impl="torch"))


def test_non_finite_padding_gives_what_the_reference_gives():
    q, k, v = _randn(2, 2, 6, 16, dtype=torch.float16), _randn(2, 2, 9, 16, dtype=torch.float16), _randn(
        2, 2, 9, 16, dtype=torch.float16)
    h, w, lengths = _randn(2, 9, 16, dtype=torch.float16), torch.randn(16, device=DEVICE), torch.tensor([9, 4])
    k[1, :, 4:], v[1, :, 4:], h[1, 4:] = float("nan"), float("inf"), float("nan")
    out = attention(q, k, v, key_lengths=lengths, impl="triton")
    pooled, weights = attention_pool(h, w, lengths=lengths, impl="triton")
    assert torch.isfinite(out).all() and torch.isfinite(pooled).all() and torch.isfinite(weights).all()
    _close(out, attention(q, k, v, key_lengths=lengths, impl="torch"), torch.float16, "out")
    _close(pooled, attention_pool(h, w, lengths=lengths, impl="torch")[0], torch.float16, "pooled")


def test_queries_and_keys_of_different_row_strides():
    """q and k read through their own strides: in the other tests they share one, so mixing them up passed."""
    B, H, Lq, Lk, D = 2, 2, 7, 11, 16
    # Views of projections of different widths (as a cross-attention's q and fused k/v): row strides 5HD and 3HD.
    q_base, k_base = _randn(B, Lq, 5 * H * D, dtype=torch.float32), _randn(B, Lk, 3 * H * D, dtype=torch.float32)
    v, grad = _randn(B, H, Lk, D, dtype=torch.float32), _randn(B, H, Lq, D, dtype=torch.float32)
    results = {}
    for impl in ("triton", "torch"):
        leaves = [t.clone().requires_grad_(True) for t in (q_base, k_base)]
        q, k = (x[..., :H * D].unflatten(-1, (H, D)).transpose(1, 2) for x in leaves)
        assert q.stride(2) == 5 * H * D and k.stride(2) == 3 * H * D
        out = attention(q, k, v, key_lengths=torch.tensor([11, 6], device=DEVICE), impl=impl)
        out.backward(grad)
        results[impl] = (out, *(leaf.grad for leaf in leaves))
    for name, a, b in zip(("out", "dq", "dk"), results["triton"], results["torch"]):
        _close(a, b, torch.float32, name)


@pytest.mark.parametrize("linear", [False, True], ids=["layer-after", "sum"])
def test_second_derivatives_through_the_kernels_are_refused(linear: bool):
    """The backward kernels are not differentiable: a gradient penalty must fail, not see them as constants
    (its gradient through the weights after them came out as zeros; with a loss linear in the kernel's
    output, once_differentiable let the penalty through with the kernel's share missing)."""
    q = _randn(1, 1, 4, 16, dtype=torch.float32).requires_grad_(True)
    h = _randn(1, 4, 16, dtype=torch.float32).requires_grad_(True)
    w = torch.randn(16, device=DEVICE)
    for output, leaf in ((attention(q, q, q, impl="triton"), q), (attention_pool(h, w, impl="triton")[0], h)):
        after = torch.randn(output.shape[-1], device=DEVICE, requires_grad=True)  # a layer after the kernel
        loss = output.sum() if linear else (output * after).sum()
        with pytest.raises(ConfigError, match=r"create_graph=True .* needs impl='torch'"):
            torch.autograd.grad(loss, leaf, create_graph=True)
        (grad,) = torch.autograd.grad(loss, leaf)  # first order, as ever
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_attention_self_attention_without_lengths():
    q, k, v = (_randn(2, 3, 33, 32, dtype=torch.float32) for _ in range(3))
    triton_out, torch_out = _run(attention, (q, k, v), (_randn(2, 3, 33, 32, dtype=torch.float32),))
    for name, a, b in zip(("out", "dq", "dk", "dv"), triton_out, torch_out):
        _close(a, b, torch.float32, name)


def test_attention_reads_strided_inputs_and_gradients():
    B, L, H, D = 2, 40, 2, 16
    x = _randn(B, L, 3 * H * D, dtype=torch.float16).requires_grad_(True)
    # q, k: views of one fused projection (heads strided); v: head size strided (copied).
    q, k, _ = x.view(B, L, 3, H, D).unbind(2)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    v = _randn(B, H, D, L, dtype=torch.float16).transpose(2, 3)
    assert not q.is_contiguous() and v.stride(-1) != 1
    lengths = torch.tensor([40, 11], device=DEVICE)
    grad = _randn(B, L, H, D, dtype=torch.float16)
    grads = {}
    for impl in ("triton", "torch"):
        x.grad = None
        out = attention(q, k, v, key_lengths=lengths, impl=impl)
        out.transpose(1, 2).backward(grad)  # a strided output gradient
        grads[impl] = (out, x.grad.clone())
    for name, a, b in zip(("out", "dx"), grads["triton"], grads["torch"]):
        _close(a, b, torch.float16, name)


def test_output_gradients_and_inputs_strided_along_their_last_axis_are_read_right():
    """The wrappers copy a `do` or an `h` whose last axis is strided; nothing tested it (dropping the copy
    gave errors of 2 to 3 while every test passed): transposed views make that axis strided."""
    B, H, L, D = 2, 2, 24, 16
    q, k, v = (_randn(B, H, L, D, dtype=torch.float32) for _ in range(3))
    grad = _randn(B, H, D, L, dtype=torch.float32).transpose(2, 3)
    assert grad.stride(-1) != 1
    triton_out, torch_out = _run(attention, (q, k, v), (grad,), key_lengths=torch.tensor([24, 9], device=DEVICE))
    for name, a, b in zip(("out", "dq", "dk", "dv"), triton_out, torch_out):
        _close(a, b, torch.float32, name)
    x, w = _randn(B, D, L, dtype=torch.float32), torch.randn(D, device=DEVICE)  # h = x.transpose(1, 2)
    results = {}
    for impl in ("triton", "torch"):
        leaf = x.clone().requires_grad_(True)
        h = leaf.transpose(1, 2)
        assert h.stride(-1) != 1
        pooled, weights = attention_pool(h, w, lengths=torch.tensor([24, 7], device=DEVICE), impl=impl)
        (pooled.pow(2).sum() + weights.sum()).backward()
        results[impl] = (pooled, weights, leaf.grad)
    for name, a, b in zip(("pooled", "weights", "dx"), results["triton"], results["torch"]):
        _close(a, b, torch.float32, name)


def test_misaligned_inputs_give_the_same_result():
    # One element past an aligned start: the wrappers copy such inputs, as only aligned pointers
    # (and, for attention, strides) are compiled ahead of time (configs.HINTS).
    base = _randn(2, 2, 9, 33, dtype=torch.float16)
    results = {}
    for impl in ("triton", "torch"):
        leaf = base.clone().requires_grad_(True)
        x = leaf[..., 1:]
        assert x.data_ptr() % 16
        out = attention(x, x, x, key_lengths=torch.tensor([9, 4], device=DEVICE), impl=impl)
        pooled, _ = attention_pool(x[:, 0], torch.linspace(-1, 1, 32, device=DEVICE), impl=impl)
        (out.float().sum() + pooled.float().pow(2).sum()).backward()
        results[impl] = (out, pooled, leaf.grad)
    for name, a, b in zip(("out", "pooled", "dx"), results["triton"], results["torch"]):
        _close(a, b, torch.float16, name)


def test_attention_pool_reads_row_strided_output_gradients():
    # The pooling backward reads dpooled (B, D) and dweights (B, T) as dense rows: views of wider
    # tensors (last axis contiguous, rows strided) must be copied, not passed as they are.
    B, T, D = 2, 11, 24
    h, w = _randn(B, T, D, dtype=torch.float32), torch.randn(D, device=DEVICE)
    grads = (_randn(B, 2 * D, dtype=torch.float32)[:, :D], _randn(B, 2 * T, dtype=torch.float32)[:, :T])
    assert grads[0].stride() == (2 * D, 1) and grads[1].stride() == (2 * T, 1)
    triton_out, torch_out = _run(attention_pool, (h, w), grads)
    for name, a, b in zip(("pooled", "weights", "dh", "dw"), triton_out, torch_out):
        _close(a, b, torch.float32, name)


POOL_CASES = [(d, t) for t in configs.DTYPES for d in (20, 130)] + [
    (d, torch.float32) for d in (16, 64, 100, 256, 512, 1000)
]


@pytest.mark.parametrize("dim,dtype", POOL_CASES, ids=str)
def test_attention_pool_matches_reference(dim, dtype):
    # T = 75 crosses every time tile (8..64); one sequence is empty, one cut inside a tile.
    B, T = 3, 75
    h, w = _randn(B, T, dim, dtype=dtype), torch.randn(dim, device=DEVICE)
    lengths = torch.tensor([0, 33, 75], device=DEVICE)
    grads = (_randn(B, dim, dtype=dtype), _randn(B, T, dtype=dtype))
    triton_out, torch_out = _run(attention_pool, (h, w), grads, lengths=lengths)
    for name, a, b in zip(("pooled", "weights", "dh", "dw"), triton_out, torch_out):
        _close(a, b, dtype, name)
    assert not triton_out[0][0].any() and not triton_out[2][0].any()


@pytest.mark.parametrize("scale", [3.0, 10.0])
def test_attention_pool_of_large_scores_is_as_accurate_as_the_reference(scale):
    """The weights were exp(s - lse) with lse = m + log(l): the rounding of lse (eps * |lse|) entered every
    exponent, so they did not sum to 1 and dh, through beta_t (g_t - c), drifted: here, with w scaled by 10,
    the weights summed to 1 - 3.8e-6 and dh was off float64 by 2.8e-4 of max |dh| (the reference: 6.4e-6)."""
    B, T, D = 4, 75, 64
    h = torch.randn(B, T, D, dtype=torch.float64, device=DEVICE)
    w = torch.randn(D, dtype=torch.float64, device=DEVICE) * scale
    lengths = torch.tensor([75, 46, 33, 1], device=DEVICE)
    grads = (torch.randn(B, D, dtype=torch.float64, device=DEVICE), torch.randn(B, T, dtype=torch.float64,
                                                                                device=DEVICE))
    results = {}
    for impl, dtype in (("triton", torch.float32), ("torch", torch.float32), ("torch", torch.float64)):
        leaf = h.to(dtype).requires_grad_(True)
        pooled, weights = attention_pool(leaf, w.to(dtype), lengths=lengths, impl=impl)
        torch.autograd.backward((pooled, weights), [g.to(dtype) for g in grads])
        results[impl, dtype] = (weights.double(), leaf.grad.double())
    exact_dh = results["torch", torch.float64][1]

    def dh_error(impl: str) -> float:
        return ((results[impl, torch.float32][1] - exact_dh).abs().max() / exact_dh.abs().max()).item()

    assert (results["triton", torch.float32][0].sum(1) - 1).abs().max() <= 4 * torch.finfo(torch.float32).eps
    assert dh_error("triton") <= 2 * dh_error("torch") + 1e-6


def test_attention_pool_strided_input_and_pooled_gradient_only():
    B, T, D = 2, 50, 24
    base = _randn(B, T, 2 * D, dtype=torch.bfloat16)
    w = torch.randn(D, device=DEVICE, dtype=torch.bfloat16)
    results = {}
    for impl in ("triton", "torch"):
        leaf_base, leaf_w = base.clone().requires_grad_(True), w.clone().requires_grad_(True)
        h = leaf_base[:, :, :D]  # rows strided by 2 D
        assert h.stride(1) == 2 * D
        pooled, _ = attention_pool(h, leaf_w, impl=impl)
        (pooled.float() ** 2).sum().backward()
        results[impl] = (pooled, leaf_base.grad, leaf_w.grad)
    for name, a, b in zip(("pooled", "dh", "dw"), results["triton"], results["torch"]):
        _close(a, b, torch.bfloat16, name)


@pytest.mark.parametrize("name", ["cat", "ilt"])
def test_training_loss_curve_is_the_same_on_both_paths(name):
    # Tiny widths: head size 32 / 2 = 16; CAT cross-attends between streams of different
    # lengths with key padding, ILT pools its BiLSTM with attention pooling.
    options = dict(d_model=32, heads=2, layers=1, ff_dim=32, channels=(4, 8, 8), dropout=0.0, pool="attention")
    features = torch.randn(3, 40, 80, device=DEVICE)
    lengths = torch.tensor([80, 61, 40], device=DEVICE)
    targets = torch.tensor([0, 2, 1], device=DEVICE)
    torch.manual_seed(0)
    initial = build(name, 4, **options).to(DEVICE).state_dict()
    curves = {}
    for impl in ("torch", "triton"):
        model = build(name, 4, **{**options, "impl": impl}).to(DEVICE)
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        curve = []
        for _ in range(3):
            loss = torch.nn.functional.cross_entropy(model(features, lengths), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
        curves[impl] = torch.tensor(curve)
    assert curves["torch"][-1] < curves["torch"][0]  # it trains
    torch.testing.assert_close(curves["triton"], curves["torch"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64], ids=str)
def test_unsigned_lengths_give_the_same_result_on_both_paths(dtype):
    """uint16/32/64 lengths passed the check, ran on the Triton path and failed on the reference one
    ("Promotion for uint16, uint32, uint64 types is not supported")."""
    q, k, v = _randn(2, 1, 5, 16, dtype=torch.float32), _randn(2, 1, 9, 16, dtype=torch.float32), _randn(
        2, 1, 9, 16, dtype=torch.float32)
    h, w = _randn(2, 9, 16, dtype=torch.float32), torch.randn(16, device=DEVICE)
    lengths = torch.tensor([9, 4], dtype=dtype, device=DEVICE)
    expected = torch.tensor([9, 4], device=DEVICE)
    for impl in ("triton", "torch"):
        torch.testing.assert_close(attention(q, k, v, key_lengths=lengths, impl=impl),
                                   attention(q, k, v, key_lengths=expected, impl="torch"))
        torch.testing.assert_close(attention_pool(h, w, lengths=lengths, impl=impl),
                                   attention_pool(h, w, lengths=expected, impl="torch"))


def test_batch_times_heads_beyond_cudas_grid_y_limit_takes_the_reference_or_says_what_to_do():
    """B * H goes on grid axis y, which CUDA caps at 65535: 16384 x 4 failed at launch ("invalid argument")."""
    q = torch.zeros(1, 1, 1, 16, device=DEVICE).expand(16384, 4, 1, 16)  # no memory: every element is one
    assert not configs.attention_covers(q, q, q)
    with pytest.raises(ConfigError, match=r"grid axis y, at most 65535: got B \* H = 16384 \* 4 = 65536; "
                                          r"use a smaller batch or impl='torch'"):
        attention(q, q, q, impl="triton")
    assert attention(q, q, q, impl="auto").shape == q.shape


def test_uncovered_shapes_raise_with_the_way_out():
    q = torch.randn(1, 1, 4, 48, device=DEVICE)
    with pytest.raises(ConfigError, match="impl='torch'"):
        attention(q, q, q, impl="triton")
    with pytest.raises(ConfigError, match="one dtype"):
        attention(q[..., :32], q[..., :32].half(), q[..., :32], impl="triton")
    with pytest.raises(ConfigError, match="impl='torch'"):
        attention_pool(torch.randn(1, 3, 2048, device=DEVICE), torch.randn(2048, device=DEVICE), impl="triton")
