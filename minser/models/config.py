"""Options of minser's networks, as dataclasses.

Every network takes one flat options dataclass built by multiple inheritance from the
parts it contains (CNN, LSTM, transformer). The defaults are where the paper is silent;
they were chosen for speed on a 2-core CPU at the paper's input of 40 Mel bands x 750
frames (see README "Models"):

- CNN: 3 blocks of 3x3 convolution with 8, 16, 32 channels; the first convolution strides
  by (2, 2) over (Mel, time), then average pooling of (1, 2), (2, 2), (2, 2): 750 frames
  become 46 steps of 32 channels x 5 bands, projected to ``d_model``.
- LSTM: a 1-D convolution of kernel and stride 4 (the paper's CAT, Section 2.3) shortens
  the log-Mel sequence from 750 to 187 steps before a 1-layer BiLSTM of ``d_model // 2``
  units per direction.
- Transformer: ``d_model = 64``, 4 heads, 2 layers (1 in each of CAT's two cross-attention
  transformers), feed-forward width 128, post-norm (as in Vaswani et al.); its output sequence becomes a vector by masked mean over time
  (``pool="mean"``) or attention pooling (``pool="attention"``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from minser.errors import ConfigError
from minser.kernels import IMPLS
from minser.kernels.configs import ATTENTION_HEAD_DIMS, POOL_MAX_DIM
from minser.models.blocks import cnn_bands

POOLS = ("mean", "attention")
FUSIONS = ("concat", "plus", "attention")
CAT_BRANCHES = ("both", "c2l", "l2c")


def _fail(option: str, value: Any, why: str) -> None:
    raise ConfigError(f"option {option}={value!r} is invalid: {why}")


def _check_int(option: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(option, value, f"give an integer >= {minimum}")


def _check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(option, value, f"valid values are {', '.join(map(repr, choices))}")


def _check_fraction(option: str, value: Any, *, closed: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(option, value, "give a number")
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        _fail(option, value, "give a number in [0, 1]" if closed else "give a number in [0, 1)")


def _check_even_width(d_model: int, why: str) -> None:
    """Only the parts that split ``d_model`` in two (BiLSTM directions, sin/cos pairs) need an even width."""
    if d_model % 2:
        _fail("d_model", d_model, f"give an even width ({why})")


def _int_tuple(option: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        _fail(option, value, "give a list of positive integers")
    items = tuple(value)
    if not items:
        _fail(option, value, "give at least one value")
    for item in items:
        _check_int(option, item)
    return items


@dataclass
class BaseOptions:
    """Options every network has.

    Attributes:
        n_mels: Mel bands of the input ``(batch, n_mels, frames)``; the paper uses 40.
        d_model: width of every sequence inside the network (CNN projection, BiLSTM output,
            transformer), and of the classifier's hidden layer; even where a BiLSTM or the positional encoding
            (``pe``) splits it in two.
        dropout: dropout probability (CNN blocks, transformer, classifier).
        impl: kernel path for attention and attention pooling: ``"auto"``, ``"torch"`` or
            ``"triton"`` (see :mod:`minser.kernels`); does not change the weights. ``"triton"`` refuses here the
            sizes the kernels lack: a head size ``d_model / heads`` not in ``ATTENTION_HEAD_DIMS``, attention
            pooling of ``d_model`` above ``POOL_MAX_DIM`` (:mod:`minser.kernels.configs`); dtypes are checked
            at the first forward.
        input_norm: standardise each Mel band of the input with BatchNorm statistics (over the
            valid frames of the training batches; running statistics at inference), before any
            branch. Off by default: the paper feeds the log-Mels (dB) as they are.
    """

    n_mels: int = 40
    d_model: int = 64
    dropout: float = 0.1
    impl: str = "auto"
    input_norm: bool = False

    def __post_init__(self) -> None:
        _check_int("n_mels", self.n_mels)
        _check_int("d_model", self.d_model, minimum=2)
        _check_fraction("dropout", self.dropout)
        _check_choice("impl", self.impl, IMPLS)
        if not isinstance(self.input_norm, bool):
            _fail("input_norm", self.input_norm, "give true or false")


@dataclass
class CNNOptions(BaseOptions):
    """The CNN over the log-Mel image (blocks of strided conv -> BatchNorm -> ReLU -> avg pool -> dropout).

    Attributes:
        channels: output channels of each block.
        freq_strides, time_strides: stride of each block's convolution along Mel and time.
            The first block strides by 2 along both: the full-resolution 40 x 750 image is
            the most expensive place in every network, and a strided convolution there is
            about 9x cheaper (forward + backward) than a convolution followed by pooling.
        freq_pools, time_pools: average-pooling factor of each block along Mel and time.
            The total time stride is 16 by default: 750 frames -> 46 steps, 40 bands -> 5.
        kernel_size: odd side of the square convolution kernels ("same" padding).
    """

    channels: tuple[int, ...] = (8, 16, 32)
    freq_strides: tuple[int, ...] = (2, 1, 1)
    time_strides: tuple[int, ...] = (2, 1, 1)
    freq_pools: tuple[int, ...] = (1, 2, 2)
    time_pools: tuple[int, ...] = (2, 2, 2)
    kernel_size: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        per_block = ("channels", "freq_strides", "time_strides", "freq_pools", "time_pools")
        for name in per_block:
            setattr(self, name, _int_tuple(name, getattr(self, name)))
        counts = {name: len(getattr(self, name)) for name in per_block}
        if len(set(counts.values())) != 1:
            # The dataclass cannot tell set options from defaults; the odd one out is most likely the one set.
            common = max(counts.values(), key=list(counts.values()).count)
            odd = next(name for name in per_block if counts[name] != common)
            alike = [name for name in per_block if counts[name] == common]
            _fail(odd, getattr(self, odd), f"it has {counts[odd]} entries and {', '.join(alike)} {common}; "
                                           f"{', '.join(per_block)} need one entry per block each")
        _check_int("kernel_size", self.kernel_size)
        if self.kernel_size % 2 == 0:
            _fail("kernel_size", self.kernel_size, "give an odd size so that 'same' padding is symmetric")
        if self.bands() < 1:
            _fail("freq_pools", self.freq_pools, f"with freq_strides they shrink the {self.n_mels} Mel bands to nothing")

    @property
    def strides(self) -> tuple[tuple[int, int], ...]:
        """``(freq_stride, time_stride)`` of each block."""
        return tuple(zip(self.freq_strides, self.time_strides))

    @property
    def pools(self) -> tuple[tuple[int, int], ...]:
        """``(freq_pool, time_pool)`` of each block."""
        return tuple(zip(self.freq_pools, self.time_pools))

    def bands(self) -> int:
        """Mel bands left after the CNN."""
        return cnn_bands(self.n_mels, self.strides, self.pools)


@dataclass
class LSTMOptions(BaseOptions):
    """A BiLSTM of ``d_model // 2`` units per direction.

    Attributes:
        lstm_layers: stacked BiLSTM layers.
    """

    lstm_layers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("lstm_layers", self.lstm_layers)
        _check_even_width(self.d_model, "two LSTM directions of d_model / 2 units")


@dataclass
class LogMelLSTMOptions(LSTMOptions):
    """A BiLSTM that reads the log-Mel sequence itself (not the CNN's).

    Attributes:
        lstm_stride: kernel and stride of the 1-D convolution that shortens the log-Mel
            sequence before the BiLSTM (the paper's CAT, Section 2.3); 1 keeps every frame.
    """

    lstm_stride: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("lstm_stride", self.lstm_stride)


@dataclass
class PoolOptions(BaseOptions):
    """How a sequence becomes a vector.

    Attributes:
        pool: ``"mean"`` (masked mean over time) or ``"attention"`` (attention pooling,
            equations 9-10, with its own scoring vector).
    """

    pool: str = "mean"
    lstm_attention_pool: ClassVar[bool] = False
    """True where an LSTM branch ends in attention pooling whatever ``pool`` is (ILT, CNN+LSTM)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("pool", self.pool, POOLS)
        # Here, not at the first forward after the data is loaded; sizes only, as the dtype is not known yet.
        attention_pooled = self.pool == "attention" or self.lstm_attention_pool
        if self.impl == "triton" and attention_pooled and self.d_model > POOL_MAX_DIM:
            pooling = "pool='attention'" if self.pool == "attention" else "the LSTM branch's attention pooling"
            _fail("d_model", self.d_model, f"impl='triton' runs {pooling} through the fused kernel, which takes "
                                           f"feature sizes up to {POOL_MAX_DIM}; give d_model <= {POOL_MAX_DIM}, "
                                           "or impl='auto' or 'torch'")


@dataclass
class TransformerOptions(PoolOptions):
    """Transformer layers (self- or cross-attention).

    Attributes:
        heads: attention heads; ``d_model`` must be a multiple.
        layers: stacked layers.
        ff_dim: hidden width of the feed-forward sublayer.
        pe: add the sinusoidal positional encoding (equations 3-4) to the transformer input.
    """

    heads: int = 4
    layers: int = 2
    ff_dim: int = 128
    pe: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("heads", self.heads)
        _check_int("layers", self.layers)
        _check_int("ff_dim", self.ff_dim)
        if self.d_model % self.heads:
            _fail("heads", self.heads, f"d_model={self.d_model} must be a multiple of heads")
        head_dim = self.d_model // self.heads
        if self.impl == "triton" and head_dim not in ATTENTION_HEAD_DIMS:
            fitting = [str(self.d_model // d) for d in reversed(ATTENTION_HEAD_DIMS) if self.d_model % d == 0]
            fix = f"give heads={' or '.join(fitting)}" if fitting else "give d_model a multiple of one of them"
            _fail("heads", self.heads, f"impl='triton' runs attention through the fused kernels, which take head sizes "
                                       f"(d_model / heads) {', '.join(map(str, ATTENTION_HEAD_DIMS))}, and "
                                       f"d_model={self.d_model} / heads={self.heads} is {head_dim}; {fix}, "
                                       "or impl='auto' or 'torch'")
        if not isinstance(self.pe, bool):
            _fail("pe", self.pe, "give True or False")
        if self.pe and not isinstance(self, LSTMOptions):  # an LSTM branch asks for it, whatever pe is
            _check_even_width(self.d_model, "sin/cos pairs of the positional encoding; or pe=False")


@dataclass
class CNNClassifierOptions(CNNOptions, PoolOptions):
    """``cnn``: the plain CNN, its sequence pooled over time."""


@dataclass
class CNNTransformerOptions(CNNOptions, TransformerOptions):
    """``cnn_transformer``: Table 1 baseline 1, Table 2 CNN-Transformer."""


@dataclass
class CNNLSTMTransformerOptions(CNNOptions, LSTMOptions, TransformerOptions):
    """``cnn_lstm_transformer``: Table 1 baseline 2 (a BiLSTM between the CNN and the transformer)."""


@dataclass
class ILTOptions(CNNOptions, LogMelLSTMOptions, TransformerOptions):
    """``ilt``: BiLSTM with attention pooling in parallel with a CNN-transformer.

    Attributes:
        fusion: ``"concat"`` (concatenate the two vectors), ``"plus"`` (``alpha * L +
            (1 - alpha) * T``) or ``"attention"`` (trainable softmax weights, equations 14-16).
        alpha: the LSTM's fixed weight for ``fusion="plus"``; the other fusions refuse a value other than the
            default (they would ignore it).
    """

    fusion: str = "attention"
    alpha: float = 0.5
    lstm_attention_pool: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("fusion", self.fusion, FUSIONS)
        _check_fraction("alpha", self.alpha, closed=True)
        # A spec stores every option, so the default alpha of the other fusions must still load.
        if self.fusion != "plus" and self.alpha != ILTOptions.alpha:
            _fail("alpha", self.alpha, f"only fusion='plus' (alpha * L + (1 - alpha) * T) uses alpha, and fusion is "
                                       f"{self.fusion!r}; give fusion='plus' or drop alpha")


@dataclass
class CATOptions(CNNOptions, LogMelLSTMOptions, TransformerOptions):
    """``cat``: cross-attention transformers between the CNN and the BiLSTM.

    Attributes:
        branches: ``"both"`` (CNN->LSTM and LSTM->CNN, pooled and added), ``"c2l"`` (CNN->LSTM
            only: the LSTM's steps query the CNN's) or ``"l2c"`` (LSTM->CNN only).
        layers: layers of each cross-attention transformer; 1 by default (two transformers,
            so as many layers in all as the other networks' single encoder).
    """

    branches: str = "both"
    layers: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("branches", self.branches, CAT_BRANCHES)


@dataclass
class CNNPlusLSTMOptions(CNNOptions, LogMelLSTMOptions, PoolOptions):
    """``cnn_plus_lstm``: the CNN's pooled vector plus the BiLSTM's attention-pooled vector."""

    lstm_attention_pool: ClassVar[bool] = True


@dataclass
class LSTMTransformerOptions(LogMelLSTMOptions, TransformerOptions):
    """``lstm_transformer``: a transformer over the BiLSTM's sequence."""


def option_names(options_class: type) -> tuple[str, ...]:
    """The option names of an options dataclass, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(options_class))


def options_to_json(options: Any) -> dict[str, Any]:
    """A JSON-able dict of every option (tuples become lists)."""
    return {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in dataclasses.asdict(options).items()
    }


__all__ = [
    "BaseOptions",
    "CATOptions",
    "CAT_BRANCHES",
    "CNNClassifierOptions",
    "CNNLSTMTransformerOptions",
    "CNNOptions",
    "CNNPlusLSTMOptions",
    "CNNTransformerOptions",
    "FUSIONS",
    "ILTOptions",
    "LSTMOptions",
    "LogMelLSTMOptions",
    "LSTMTransformerOptions",
    "POOLS",
    "PoolOptions",
    "TransformerOptions",
    "option_names",
    "options_to_json",
]
