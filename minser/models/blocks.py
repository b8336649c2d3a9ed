"""Building blocks of minser's networks.

Sequences are ``(batch, time, dim)`` with optional ``lengths`` (valid steps per utterance,
integer ``(batch,)``; ``None`` means every step is valid). Blocks that shorten a sequence
return the new lengths, computed through the same conv/pool arithmetic as the tensors; every
block zeroes what lies beyond its input's lengths before it mixes steps, so that padded steps
never reach a valid output: a padded batch gives the same result as each utterance run alone,
cut to its length. (Zeroing multiplies by the mask, which is cheaper than selecting; the networks
select their input's padding out once, so that a NaN or Inf there, which 0 * x keeps, never enters.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minser import kernels
from minser.errors import DataError
from minser.kernels.reference import key_mask


def zero_padding(x: torch.Tensor, lengths: torch.Tensor | None, dim: int) -> torch.Tensor:
    """``x`` with the steps at ``index >= lengths[b]`` along ``dim`` set to zero.

    Args:
        x: any tensor whose first axis is the batch.
        lengths: valid steps per batch element ``(batch,)``, or ``None`` (``x`` is returned).
        dim: the time axis of ``x``.
    """
    if lengths is None:
        return x
    mask = key_mask(lengths, x.shape[dim])
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[dim] = x.shape[dim]
    return x * mask.reshape(shape).to(x.dtype)


def strided_lengths(lengths: torch.Tensor | None, stride: int) -> torch.Tensor | None:
    """Valid steps after a convolution with "same" padding and ``stride``: ``ceil(lengths / stride)``.

    Output step ``j`` reads input steps ``j * stride +- kernel // 2``; the last valid one may
    read up to ``kernel // 2`` steps past the end, which are zeros both in a zero-masked
    batch and in the convolution's own padding of the cut utterance. Works on ints too.
    """
    return None if lengths is None else (lengths - 1) // stride + 1


def pooled_lengths(lengths: torch.Tensor | None, stride: int) -> torch.Tensor | None:
    """Valid steps after a window of kernel = stride without padding: ``floor(lengths / stride)``. Works on ints too."""
    return None if lengths is None else lengths // stride


def masked_mean(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean over the valid steps of ``x`` ``(batch, time, dim)`` -> ``(batch, dim)``."""
    if lengths is None:
        return x.mean(dim=1)
    total = zero_padding(x, lengths, dim=1).sum(dim=1)
    return total / lengths.clamp(min=1).to(x.dtype)[:, None]


def masked_batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``norm(x)`` for ``x`` ``(batch, channels, ..., time)``, with training statistics over the valid steps only.

    In training mode with ``lengths``, the batch mean and variance (and so the running
    statistics) skip the steps at ``time >= lengths[b]``, as PyTorch's BatchNorm would on the
    unpadded utterances; otherwise this is ``norm(x)``. Same parameters and buffers as ``norm``. The
    statistics are float32 whatever the dtype of ``x`` (bfloat16 or float16 under autocast, whose output
    keeps that dtype), as PyTorch's BatchNorm keeps them, and float64 for float64 (a float64 network, gradcheck);
    the running buffers take them in their own dtype (bfloat16 or float16 in a network cast to it). An empty
    batch is ``norm(x)`` too: it leaves the running statistics alone, as PyTorch's BatchNorm does.

    Raises:
        DataError: in training mode without ``lengths``, one value per channel (one utterance of one step).
    """
    if lengths is None and norm.training and x.numel() == x.shape[1]:
        # PyTorch's own "Expected more than 1 value per channel when training" says neither where nor what to do.
        raise DataError(f"{type(norm).__name__} in training mode got one value per channel (its input is "
                        f"{tuple(x.shape)}: one utterance of one step), too few for batch statistics; pass the "
                        "features' lengths (model(features, lengths)), or train on more frames or a larger batch")
    if lengths is None or not norm.training or x.shape[0] == 0:
        return norm(x)
    steps, channel = x.shape[-1], (1, -1, *[1] * (x.dim() - 2))
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    mask = key_mask(lengths, steps).to(xf.dtype).view(x.shape[0], *[1] * (x.dim() - 2), steps)
    dims = [0, *range(2, x.dim())]
    count = mask.sum() * (x[0, 0].numel() // steps)
    mean = (xf * mask).sum(dims) / count
    # Two passes: convolutions of log-Mel features have means far from 0, where
    # E[x^2] - E[x]^2 cancels badly in float32.
    centred = (xf - mean.view(channel)) * mask
    var = centred.square().sum(dims) / count
    with torch.no_grad():
        momentum = norm.momentum
        norm.num_batches_tracked += 1
        if momentum is None:  # cumulative moving average, as nn.BatchNorm
            momentum = 1.0 / float(norm.num_batches_tracked)
        norm.running_mean.lerp_(mean.detach().to(norm.running_mean.dtype), momentum)
        norm.running_var.lerp_((var.detach() * count / (count - 1).clamp(min=1)).to(norm.running_var.dtype), momentum)
    scale = norm.weight * torch.rsqrt(var + norm.eps)
    return (xf * scale.view(channel) + (norm.bias - mean * scale).view(channel)).to(x.dtype)


class ConvBlock(nn.Module):
    """2-D convolution -> BatchNorm -> ReLU -> average pooling -> dropout.

    Input and output are images ``(batch, channels, n_mels, frames)``. The convolution has
    "same" zero padding and stride ``(freq_stride, time_stride)``; frames beyond ``lengths``
    are zeroed first, so that at a padded utterance's right edge it sees the same zeros as
    its own padding on the cut utterance. Pooling has kernel = stride (no padding), so the
    valid outputs depend only on valid frames.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: tuple[int, int],
        pool: tuple[int, int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.pool = nn.AvgPool2d(pool)
        self.dropout = nn.Dropout(dropout)
        self.time_stride = stride[1]
        self.time_pool = pool[1]

    def output_lengths(self, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """Valid output frames for ``lengths`` valid input frames (tensor or int)."""
        return pooled_lengths(strided_lengths(lengths, self.time_stride), self.time_pool)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.conv(zero_padding(x, lengths, dim=3))
        x = torch.relu(masked_batch_norm(self.norm, x, strided_lengths(lengths, self.time_stride)))
        return self.dropout(self.pool(x)), self.output_lengths(lengths)


class CNN(nn.Module):
    """Stacked :class:`ConvBlock` over the log-Mel image, read out as a sequence over time.

    ``(batch, n_mels, frames)`` -> ``(batch, K, d_model)``, ``K`` = ``output_lengths(frames)``
    (``frames / 16`` by default): each step's channels x remaining Mel bands are projected
    linearly to ``d_model``.
    """

    def __init__(
        self,
        n_mels: int,
        channels: tuple[int, ...],
        strides: tuple[tuple[int, int], ...],
        pools: tuple[tuple[int, int], ...],
        kernel_size: int,
        d_model: int,
        dropout: float,
    ) -> None:
        super().__init__()
        ins = (1, *channels[:-1])
        self.blocks = nn.ModuleList(
            ConvBlock(i, o, kernel_size, s, p, dropout) for i, o, s, p in zip(ins, channels, strides, pools)
        )
        self.project = nn.Linear(channels[-1] * cnn_bands(n_mels, strides, pools), d_model)

    def output_lengths(self, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """Valid output steps for ``lengths`` valid input frames (tensor or int)."""
        for block in self.blocks:
            lengths = block.output_lengths(lengths)
        return lengths

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x[:, None]
        for block in self.blocks:
            x, lengths = block(x, lengths)
        batch, channels, bands, steps = x.shape
        x = x.permute(0, 3, 1, 2).reshape(batch, steps, channels * bands)
        return zero_padding(self.project(x), lengths, dim=1), lengths


def cnn_bands(n_mels: int, strides: tuple[tuple[int, int], ...], pools: tuple[tuple[int, int], ...]) -> int:
    """Mel bands left after the CNN's strided convolutions and poolings."""
    for (freq_stride, _), (freq_pool, _) in zip(strides, pools):
        n_mels = pooled_lengths(strided_lengths(n_mels, freq_stride), freq_pool)
    return n_mels


class FrameConv(nn.Module):
    """1-D convolution that shortens the log-Mel sequence before an LSTM (the paper's CAT, Section 2.3).

    ``(batch, n_mels, frames)`` -> ``(batch, frames // stride, d_model)``: kernel = stride (each
    output step reads its own ``stride`` frames, so valid steps never read padding), then
    BatchNorm and ReLU.
    """

    def __init__(self, n_mels: int, d_model: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(n_mels, d_model, stride, stride=stride, bias=False)
        self.norm = nn.BatchNorm1d(d_model)
        self.stride = stride

    def output_lengths(self, lengths: torch.Tensor | None) -> torch.Tensor | None:
        """Valid output steps for ``lengths`` valid input frames (tensor or int)."""
        return pooled_lengths(lengths, self.stride)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        lengths = self.output_lengths(lengths)
        x = torch.relu(masked_batch_norm(self.norm, self.conv(x), lengths))
        return zero_padding(x.transpose(1, 2), lengths, dim=1), lengths


def reverse_valid(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``x`` ``(batch, time, dim)`` with each utterance's valid steps in reverse order; padding stays put."""
    if lengths is None:
        return x.flip(1)
    batch, steps, dim = x.shape
    t = torch.arange(steps, device=x.device)[None, :]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, index[:, :, None].expand(batch, steps, dim))


class BiLSTM(nn.Module):
    """Bidirectional LSTM ``(batch, time, in_dim)`` -> ``(batch, time, d_model)``, ``d_model // 2`` units per direction.

    Each direction is a unidirectional ``nn.LSTM`` run on the padded batch: the forward one
    is causal, so padding after an utterance cannot reach its valid steps; the backward one
    reads each utterance reversed within its length, so it starts at the last valid step.
    This equals packing (``pack_padded_sequence``) but keeps PyTorch's fused CPU kernel,
    about 5x faster than packed sequences in forward + backward. Padded outputs are zero.
    """

    def __init__(self, in_dim: int, d_model: int, layers: int) -> None:
        super().__init__()
        widths = [in_dim] + [d_model] * (layers - 1)
        self.forwards = nn.ModuleList(nn.LSTM(w, d_model // 2, batch_first=True) for w in widths)
        self.backwards = nn.ModuleList(nn.LSTM(w, d_model // 2, batch_first=True) for w in widths)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        for forward, backward in zip(self.forwards, self.backwards):
            ahead = forward(x)[0]
            behind = reverse_valid(backward(reverse_valid(x, lengths))[0], lengths)
            x = zero_padding(torch.cat([ahead, behind], dim=-1), lengths, dim=1)
        return x


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal positional encoding (the paper's equations 3-4) to ``(batch, time, d_model)``.

    ``PE(pos, 2i) = sin(pos / 10000^(2i / d_model))``, ``PE(pos, 2i + 1) = cos(...)``. No
    parameters; the table is computed once and grown on demand.
    """

    def __init__(self, d_model: int, max_len: int = 1024) -> None:
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", self._table(max_len), persistent=False)

    def _table(self, length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / self.d_model))
        table = torch.zeros(length, self.d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        return table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.table.shape[0]:
            self.table = self._table(x.shape[1]).to(self.table.device)
        return x + self.table[: x.shape[1]].to(x.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention through :func:`minser.kernels.attention`.

    Queries come from ``x`` ``(batch, Lq, d_model)``, keys and values from ``memory``
    ``(batch, Lk, d_model)`` (``memory = x`` for self-attention); keys beyond
    ``memory_lengths`` are masked.
    """

    def __init__(self, d_model: int, heads: int, impl: str) -> None:
        super().__init__()
        self.query = nn.Linear(d_model, d_model)
        self.key_value = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.heads = heads
        self.impl = impl

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        return x.view(batch, steps, self.heads, width // self.heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        key, value = self.key_value(memory).chunk(2, dim=-1)
        out = kernels.attention(
            self._split(self.query(x)), self._split(key), self._split(value), key_lengths=memory_lengths, impl=self.impl
        )
        batch, heads, steps, head_dim = out.shape  # explicit sizes: -1 is ambiguous for an empty batch
        return self.out(out.transpose(1, 2).reshape(batch, steps, heads * head_dim))


class TransformerEncoderLayer(nn.Module):
    """Post-norm transformer layer: attention and feed-forward sublayers, each with residual and LayerNorm.

    ``forward(x, memory=None, memory_lengths=None)``: self-attention when ``memory`` is
    ``None`` (pass the sequence's own lengths as ``memory_lengths``), else cross-attention
    with queries from ``x`` and keys/values from ``memory``. ``(batch, Lq, d_model)`` in and out.
    """

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float, impl: str) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(d_model, heads, impl)
        # Dropout on the sublayer outputs only: on a 2-core CPU, dropout on the wider
        # feed-forward hidden layer costs more than the layer's matmuls.
        self.feed_forward = nn.Sequential(nn.Linear(d_model, ff_dim), nn.ReLU(), nn.Linear(ff_dim, d_model))
        self.norm_attention = nn.LayerNorm(d_model)
        self.norm_feed_forward = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, memory_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        memory = x if memory is None else memory
        x = self.norm_attention(x + self.dropout(self.attention(x, memory, memory_lengths)))
        return self.norm_feed_forward(x + self.dropout(self.feed_forward(x)))


class TransformerEncoder(nn.Module):
    """Stacked self-attention :class:`TransformerEncoderLayer` over ``(batch, time, d_model)``."""

    def __init__(self, d_model: int, heads: int, layers: int, ff_dim: int, dropout: float, impl: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(d_model, heads, ff_dim, dropout, impl) for _ in range(layers))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory_lengths=lengths)
        return x


class CrossAttentionTransformer(nn.Module):
    """Cross-modal transformer (as in MulT): every layer's queries come from the target
    stream and its keys and values from the same source stream.

    ``forward(target (batch, Lt, d_model), source (batch, Ls, d_model), source_lengths)``
    -> ``(batch, Lt, d_model)``: the target stream, enriched with the source.
    """

    def __init__(self, d_model: int, heads: int, layers: int, ff_dim: int, dropout: float, impl: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerEncoderLayer(d_model, heads, ff_dim, dropout, impl) for _ in range(layers))

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, source_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            target = layer(target, source, source_lengths)
        return target


class AttentionPool(nn.Module):
    """Attention pooling (the paper's equations 9-10) through :func:`minser.kernels.attention_pool`.

    ``beta_t = softmax_t(w . h_t)`` over the valid steps, ``O = sum_t beta_t h_t``:
    ``(batch, time, dim)`` -> ``(batch, dim)``; with ``return_weights=True`` also the weights
    ``beta (batch, time)``, zero on padded steps (returned, not kept on the module: one module may
    serve several threads).
    """

    def __init__(self, dim: int, impl: str) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.impl = impl

    def forward(
        self, h: torch.Tensor, lengths: torch.Tensor | None = None, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        pooled, weights = kernels.attention_pool(h, self.w, lengths=lengths, impl=self.impl)
        return (pooled, weights) if return_weights else pooled


class SequencePool(nn.Module):
    """``(batch, time, dim)`` -> ``(batch, dim)`` by masked mean (``kind="mean"``) or
    :class:`AttentionPool` (``kind="attention"``)."""

    def __init__(self, kind: str, dim: int, impl: str) -> None:
        super().__init__()
        self.attention = AttentionPool(dim, impl) if kind == "attention" else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.attention is None:
            return masked_mean(x, lengths)
        return self.attention(x, lengths)


class Classifier(nn.Module):
    """Linear -> ReLU -> dropout -> linear: ``(batch, in_dim)`` -> logits ``(batch, n_classes)``."""

    def __init__(self, in_dim: int, hidden: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Fusion(nn.Module):
    """Fuses the LSTM vector ``L`` and transformer vector ``T`` (both ``(batch, dim)``) of ILT.

    - ``"concat"``: ``[L, T]`` ``(batch, 2 * dim)``;
    - ``"plus"``: ``alpha * L + (1 - alpha) * T`` with fixed ``alpha``;
    - ``"attention"``: ``a_L * L + a_T * T`` with ``(a_L, a_T) = softmax(s_L, s_T)`` of two
      trainable scores (the paper's equations 14-16), both 0 at start (equal weights).
    """

    def __init__(self, kind: str, alpha: float) -> None:
        super().__init__()
        self.kind = kind
        self.alpha = alpha
        self.scores = nn.Parameter(torch.zeros(2)) if kind == "attention" else None

    def out_dim(self, dim: int) -> int:
        """Width of the fused vector for inputs of width ``dim``."""
        return 2 * dim if self.kind == "concat" else dim

    def weights(self) -> tuple[torch.Tensor | float, torch.Tensor | float] | None:
        """``(weight of L, weight of T)``: floats for ``"plus"`` (``alpha`` as given, not its float32
        rounding), 0-dim tensors for ``"attention"``; ``None`` for ``"concat"``."""
        if self.kind == "concat":
            return None
        if self.scores is None:
            return self.alpha, 1.0 - self.alpha
        a_lstm, a_transformer = torch.softmax(self.scores, dim=0)
        return a_lstm, a_transformer

    def forward(self, lstm: torch.Tensor, transformer: torch.Tensor) -> torch.Tensor:
        weights = self.weights()
        if weights is None:
            return torch.cat([lstm, transformer], dim=-1)
        return weights[0] * lstm + weights[1] * transformer
