"""The PyTorch reference path of minser.kernels: gradients, masking invariants, dispatch and errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from minser.errors import ConfigError
from minser.kernels import IMPLS, attention, attention_pool, configs
from minser.kernels.reference import key_mask


def _attention_inputs(dtype=torch.float64, B=2, H=2, Lq=5, Lk=7, D=4):
    shapes = [(B, H, Lq, D), (B, H, Lk, D), (B, H, Lk, D)]
    return [torch.randn(s, dtype=dtype, requires_grad=True) for s in shapes]


def test_attention_gradcheck_with_padding_and_an_empty_sequence():
    q, k, v = _attention_inputs(H=1, Lq=3)
    lengths = torch.tensor([0, 4])
    assert torch.autograd.gradcheck(lambda q, k, v: attention(q, k, v, key_lengths=lengths, impl="torch"), (q, k, v))


def test_attention_pool_gradcheck_through_both_outputs():
    h = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 0, 3])
    assert torch.autograd.gradcheck(lambda h, w: attention_pool(h, w, lengths=lengths, impl="torch"), (h, w))


def test_attention_ignores_padded_keys_and_zeroes_empty_sequences():
    q, k, v = _attention_inputs(torch.float32)
    lengths = torch.tensor([0, 4])
    out = attention(q, k, v, key_lengths=lengths, impl="torch")
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, 4:] = 1e4
    v2[:, :, 4:] = -1e4
    torch.testing.assert_close(attention(q, k2, v2, key_lengths=lengths, impl="torch"), out)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[0], torch.zeros_like(q.grad[0]))
    assert torch.equal(k.grad[:, :, 4:], torch.zeros_like(k.grad[:, :, 4:]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_padding_does_not_reach_the_result(bad):
    """0 * NaN is NaN: padded values and steps must be left out of the weighted sums and of the scores, not
    weighted by 0, in the forward pass and in the gradients (dq = dscores @ k and dw = sum dscores * h were
    NaN with the padding in the scores, where the Triton kernels gave finite ones)."""
    q, k, v = (t.detach() for t in _attention_inputs(torch.float32))
    h, w, lengths = torch.randn(2, 7, 4), torch.randn(4), torch.tensor([0, 4])

    def run(k: torch.Tensor, v: torch.Tensor, h: torch.Tensor) -> list[torch.Tensor]:
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v, h, w)]
        out = attention(*leaves[:3], key_lengths=lengths, impl="torch")
        pooled, weights = attention_pool(leaves[3], leaves[4], lengths=lengths, impl="torch")
        (out.sum() + pooled.sum() + weights.square().sum()).backward()
        valid = key_mask(lengths, 7)
        return [out, pooled, weights, leaves[0].grad, leaves[4].grad, leaves[1].grad * valid[:, None, :, None],
                leaves[2].grad * valid[:, None, :, None], leaves[3].grad * valid[:, :, None]]

    clean = run(k, v, h)
    k, v, h = k.clone(), v.clone(), h.clone()
    k[:, :, 4:], v[:, :, 4:], h[:, 4:] = bad, bad, bad
    for name, got, expected in zip(("out", "pooled", "weights", "dq", "dw", "dk", "dv", "dh"), run(k, v, h), clean):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, msg=name)


def test_lengths_on_another_device_are_moved_to_the_inputs():
    q = torch.empty(2, 1, 3, 16, device="meta")
    h = torch.empty(2, 5, 16, device="meta")
    assert attention(q, q, q, key_lengths=torch.tensor([3, 1]), impl="torch").device.type == "meta"
    assert attention_pool(h, torch.empty(16, device="meta"), lengths=torch.tensor([5, 2]), impl="torch")[0].is_meta


def test_attention_without_lengths_is_softmax_attention():
    q, k, v = _attention_inputs(torch.float32)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    torch.testing.assert_close(attention(q, k, v, impl="torch"), expected)


def test_the_reference_keeps_float32_accumulation_under_autocast():
    """Autocast recast the float32 operands of matmul and einsum to bfloat16: float32 inputs came back as
    float32 with bfloat16's error (5e-3 instead of 3e-7), and the Triton kernels, float32 inside, disagreed."""
    torch.manual_seed(0)
    q, k, v = (t.detach() for t in _attention_inputs(torch.float32, Lq=37, Lk=45, D=16))
    h, w = torch.randn(3, 40, 16), torch.randn(16)
    lengths = torch.tensor([45, 20])
    with torch.no_grad():
        plain = attention(q, k, v, key_lengths=lengths, impl="torch"), attention_pool(h, w, impl="torch")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.matmul(q, k.transpose(-1, -2)).dtype == torch.bfloat16  # autocast is on
            cast = attention(q, k, v, key_lengths=lengths, impl="torch"), attention_pool(h, w, impl="torch")
    torch.testing.assert_close(cast[0], plain[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(cast[1], plain[1], rtol=0, atol=1e-6)


def test_the_reference_promotes_mixed_dtypes_to_the_widest():
    """float64 queries with float32 keys raised 'expected scalar type Float but found Double'."""
    q, k, v = _attention_inputs(torch.float64)
    lengths = torch.tensor([7, 3])
    out = attention(q, k.float(), v.float(), key_lengths=lengths, impl="torch")
    assert out.dtype == torch.float64
    expected = attention(q, k.float().double(), v.float().double(), key_lengths=lengths, impl="torch")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    h, w = torch.randn(2, 5, 4), torch.randn(4, dtype=torch.float64)
    pooled, _ = attention_pool(h, w, impl="torch")
    torch.testing.assert_close(pooled, attention_pool(h.double(), w, impl="torch")[0].float(), rtol=0, atol=0)


def test_attention_pool_weights_sum_to_one_on_valid_steps():
    h, w = torch.randn(3, 6, 4), torch.randn(4)
    pooled, weights = attention_pool(h, w, lengths=torch.tensor([6, 0, 3]), impl="auto")
    torch.testing.assert_close(weights.sum(1), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.equal(weights[2, 3:], torch.zeros(3)) and torch.equal(pooled[1], torch.zeros(4))
    torch.testing.assert_close(pooled, torch.einsum("bt,btd->bd", weights, h))


def test_auto_on_cpu_is_the_reference_path():
    q, k, v = _attention_inputs(torch.float32)
    torch.testing.assert_close(attention(q, k, v, impl="auto"), attention(q, k, v, impl="torch"), rtol=0, atol=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: attention(torch.ones(1, 1, 2, 4), torch.ones(1, 1, 3, 4), torch.ones(1, 1, 3, 4), impl="cuda"),
        lambda: attention(torch.ones(1, 2, 4), torch.ones(1, 2, 4), torch.ones(1, 2, 4)),
        lambda: attention(torch.ones(1, 1, 2, 4), torch.ones(1, 1, 3, 8), torch.ones(1, 1, 3, 8)),
        lambda: attention(torch.ones(2, 1, 2, 4), torch.ones(2, 1, 3, 4), torch.ones(2, 1, 3, 4),
                          key_lengths=torch.tensor([1.0, 2.0])),
        lambda: attention_pool(torch.ones(2, 3, 4), torch.ones(5)),
        lambda: attention_pool(torch.ones(2, 3, 4), torch.ones(4), lengths=torch.tensor([3])),
        lambda: attention_pool(torch.ones(2, 3, 4), torch.ones(4), lengths=[3, 3]),
        lambda: attention_pool(torch.ones(2, 3, 4), torch.ones(4), lengths=torch.tensor([3, 3], dtype=torch.cfloat)),
    ],
    ids=["unknown-impl", "q-not-4d", "head-size-mismatch", "float-lengths", "w-size", "lengths-shape",
         "lengths-list", "complex-lengths"],
)
def test_bad_input_raises_config_error(call):
    with pytest.raises(ConfigError):
        call()


@pytest.mark.parametrize("impl", IMPLS)
def test_integer_inputs_and_an_empty_head_are_refused_on_every_path(impl):
    """Integer q, k, v or h ran on the reference path and came back cast to int64 (pooling weights all 0), and
    a head size of 0 was a ZeroDivisionError there (the Triton path refused both)."""
    q = torch.ones(1, 1, 2, 4, dtype=torch.int64)
    with pytest.raises(ConfigError, match=r"attention wants floating-point q, k, v; got q torch.int64, "
                                          r"k torch.int64, v torch.int64: convert with \.float\(\)"):
        attention(q, q, q, impl=impl)
    with pytest.raises(ConfigError, match=r"attention wants floating-point q, k, v; got v torch.int32"):
        attention(q.float(), q.float(), q.int(), impl=impl)
    with pytest.raises(ConfigError, match=r"attention_pool wants floating-point h, w; got h torch.int64:"):
        attention_pool(torch.ones(2, 3, 4, dtype=torch.int64), torch.ones(4), impl=impl)
    with pytest.raises(ConfigError, match=r"attention_pool wants floating-point h, w; got w torch.complex64:"):
        attention_pool(torch.ones(2, 3, 4), torch.ones(4, dtype=torch.cfloat), impl=impl)
    empty = torch.ones(1, 1, 2, 0)
    with pytest.raises(ConfigError, match=r"attention wants .* with D >= 1; got q \(1, 1, 2, 0\)"):
        attention(empty, empty, empty, impl=impl)
    with pytest.raises(ConfigError, match=r"attention_pool wants .* with D >= 1; got h \(2, 3, 0\), w \(0,\)"):
        attention_pool(torch.ones(2, 3, 0), torch.ones(0), impl=impl)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (the gpu extra)")
def test_triton_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="TRITON_INTERPRET"):
        attention_pool(torch.ones(1, 3, 4), torch.ones(4), impl="triton")


def test_kernels_take_only_tensors_they_can_index_with_int32():
    small = torch.ones(2, 1, 3, 16)
    assert configs.attention_covers(small, small, small) and configs.pool_covers(small[:, 0])
    assert not configs.attention_covers(small, small.half(), small)  # one dtype, or the reference path
    # Three elements, but the last sits 2 * (2**30 + 1) elements from the first: beyond int32 offsets.
    far = torch.empty(3, 2**30 + 1, device="meta")[:, :1]
    assert far.numel() == 3 and not configs.int32_indexable(far)
    assert not configs.int32_indexable(torch.zeros(1).expand(2**31))  # one element, but copied to 2**31
    assert configs.int32_indexable(torch.zeros(1).expand(2**31 - 1))


def test_attention_covers_at_most_cudas_grid_y_limit_of_batch_times_heads():
    """The kernels put B * H on grid axis y (at most 65535 on CUDA): 16384 x 4 failed at launch with "invalid
    argument", and impl='auto' picked Triton for it."""
    q = torch.empty(16384, 4, 3, 16, device="meta")
    assert not configs.attention_covers(q, q, q)
    at_limit = torch.empty(65535, 1, 3, 16, device="meta")
    assert configs.attention_covers(at_limit, at_limit, at_limit)


def test_supported_shapes_table():
    assert all(configs.attention_supported(d, t) for d in (16, 32, 64, 128) for t in configs.DTYPES)
    assert not configs.attention_supported(48, torch.float32)
    assert not configs.attention_supported(64, torch.float64)
    assert configs.pool_supported(1000, torch.bfloat16) and not configs.pool_supported(2048, torch.float32)
    assert [configs.pool_block_dim(d) for d in (1, 16, 17, 1000)] == [16, 16, 32, 1024]
