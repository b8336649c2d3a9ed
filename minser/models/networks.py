"""The networks of the paper's Tables 1 and 2, built from :mod:`minser.models.blocks`.

Every network maps log-Mel features ``(batch, n_mels, frames)`` and optional valid-frame
counts ``lengths`` (integer ``(batch,)``) to logits ``(batch, n_classes)``. Options and
their defaults are documented in :mod:`minser.models.config`.

Choices where the paper is silent (all options):

- A transformer's output sequence becomes a vector by masked mean over time (``pool``).
- CAT's two cross-attention outputs have different lengths (the CNN's 750 / 16 -> 46 steps,
  the LSTM's 750 / 4 = 187 steps); each is pooled to a vector, and the vectors are added.
- ``pe`` adds the positional encoding to every sequence that enters a transformer (both
  streams of CAT).
- The LSTM vector of ILT and CNN+LSTM is the BiLSTM's attention pooling (equations 6-10).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
from torch import nn

from minser.errors import ConfigError, DataError
from minser.kernels import _check_lengths
from minser.kernels.reference import key_mask
from minser.models import config
from minser.models.blocks import (
    CNN,
    AttentionPool,
    BiLSTM,
    Classifier,
    CrossAttentionTransformer,
    FrameConv,
    Fusion,
    PositionalEncoding,
    SequencePool,
    TransformerEncoder,
    masked_batch_norm,
)


class Network(nn.Module):
    """Base class: holds the resolved options and exposes ``spec`` and ``min_frames``."""

    name: ClassVar[str]
    Options: ClassVar[type[config.BaseOptions]]

    def __init__(self, n_classes: int, options: config.BaseOptions) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.options = options
        # Only with input_norm: the default networks keep their state-dict keys.
        self.input_norm = nn.BatchNorm1d(options.n_mels) if options.input_norm else None

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-able ``{"name", "n_classes", "options"}`` with every option resolved."""
        return {"name": self.name, "n_classes": self.n_classes, "options": config.options_to_json(self.options)}

    @functools.cached_property
    def min_frames(self) -> int:
        """The fewest frames an utterance may have: every branch must keep at least one step."""
        shorteners = [m for m in self.modules() if isinstance(m, (CNN, FrameConv))]
        frames = 1
        while any(m.output_lengths(frames) < 1 for m in shorteners):
            frames += 1
        return frames

    def set_impl(self, impl: str) -> None:
        """Route every attention / attention-pooling call through kernel path ``impl``; raises ConfigError,
        leaving the network as it was, for an ``impl`` its options refuse (see :class:`config.BaseOptions`)."""
        self.options = type(self.options)(**{**vars(self.options), "impl": impl})
        for module in self.modules():
            if hasattr(module, "impl"):
                module.impl = impl

    def prepare(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """The checked (see :meth:`check_input`) input ``(batch, n_mels, frames)``, its padding zeroed (with
        ``lengths``) and, with ``input_norm``, standardised."""
        self.check_input(x, lengths)
        if not len(x) and x.shape[2] < self.min_frames:  # no utterance to be short: give the branches their steps
            x = x.new_zeros(0, x.shape[1], self.min_frames)
        if lengths is not None:  # selected out, not multiplied by 0: a NaN or Inf in the padding would survive that
            x = x.masked_fill(~key_mask(lengths, x.shape[2])[:, None, :], 0.0)
        return x if self.input_norm is None else masked_batch_norm(self.input_norm, x, lengths)

    def check_input(self, x: torch.Tensor, lengths: torch.Tensor | None) -> None:
        """Raise DataError for features of a wrong shape or dtype, lengths out of range or an utterance shorter
        than ``min_frames`` (an empty batch has none), and ConfigError (as :mod:`minser.kernels` does) for lengths
        that are not an integer tensor ``(batch,)``."""
        if x.dim() != 3 or x.shape[1] != self.options.n_mels:
            raise DataError(
                f"{self.name} wants features (batch, {self.options.n_mels}, frames), got {tuple(x.shape)}"
            )
        # Autocast casts float32 / float16 / bfloat16 features itself (not float64); otherwise torch wants the dtype
        # of the convolutions that read them, and said so in the first one as "expected scalar type Double but found
        # Float". The first convolution's, not the first parameter's: a bf16 network may keep its BatchNorms (the
        # input's first of all) in float32. Found in a few microseconds, where weighing every parameter's dtype
        # took 0.1 ms of each forward.
        dtype = next(m.weight.dtype for m in self.modules() if isinstance(m, nn.modules.conv._ConvNd))
        autocast = torch.is_autocast_enabled(x.device.type)
        if x.dtype != dtype and not (autocast and x.dtype in (torch.float32, torch.float16, torch.bfloat16)):
            raise DataError(
                f"{self.name} got features of dtype {x.dtype}, but its parameters are {dtype}; convert the features "
                f"with features.to({dtype}) (torch.from_numpy keeps a float64 array float64)"
            )
        _check_lengths(lengths, x.shape[0], "lengths")
        if lengths is not None and len(lengths) and (int(lengths.min()) < 0 or int(lengths.max()) > x.shape[2]):
            raise DataError(
                f"lengths must be ({x.shape[0]},) values in [0, {x.shape[2]}] frames, got {lengths.tolist()}"
            )
        shortest = x.shape[2] if lengths is None or not len(lengths) else int(lengths.min())
        if len(x) and shortest < self.min_frames:
            if lengths is None:
                fix = "pad the features to at least that many frames"
            else:  # the features may be long enough: it is the length that must grow, into the padding
                fix = (f"raise those lengths to at least {self.min_frames} "
                       f"(lengths.clamp(min={self.min_frames}), as Recognizer does)")
                if x.shape[2] < self.min_frames:
                    fix += f" and pad the features to at least {self.min_frames} frames"
            raise DataError(
                f"{self.name} got an utterance of {shortest} frames, fewer than its minimum of {self.min_frames} "
                f"(each branch must keep one step); {fix}"
            )


def _number(weight: torch.Tensor | float) -> float:
    """A fusion weight as a Python float (a trained one is a tensor that requires grad)."""
    return float(weight.detach()) if isinstance(weight, torch.Tensor) else weight


def _cnn(o: config.CNNOptions) -> CNN:
    return CNN(o.n_mels, o.channels, o.strides, o.pools, o.kernel_size, o.d_model, o.dropout)


def _encoder(o: config.TransformerOptions) -> TransformerEncoder:
    return TransformerEncoder(o.d_model, o.heads, o.layers, o.ff_dim, o.dropout, o.impl)


def _cross(o: config.TransformerOptions) -> CrossAttentionTransformer:
    return CrossAttentionTransformer(o.d_model, o.heads, o.layers, o.ff_dim, o.dropout, o.impl)


def _positions(o: config.TransformerOptions) -> nn.Module:
    return PositionalEncoding(o.d_model) if o.pe else nn.Identity()


def _classifier(o: config.BaseOptions, n_classes: int, in_dim: int | None = None) -> Classifier:
    return Classifier(in_dim or o.d_model, o.d_model, n_classes, o.dropout)


class LogMelLSTM(nn.Module):
    """:class:`FrameConv` then :class:`BiLSTM` over the log-Mel sequence.

    ``(batch, n_mels, frames)`` -> ``((batch, frames // lstm_stride, d_model), lengths)``.
    """

    def __init__(self, o: config.LogMelLSTMOptions) -> None:
        super().__init__()
        self.frames = FrameConv(o.n_mels, o.d_model, o.lstm_stride)
        self.lstm = BiLSTM(o.d_model, o.d_model, o.lstm_layers)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, lengths = self.frames(x, lengths)
        return self.lstm(h, lengths), lengths


class CNNClassifier(Network):
    """``cnn``: CNN -> pooling over time -> classifier."""

    name = "cnn"
    Options = config.CNNClassifierOptions

    def __init__(self, n_classes: int, options: config.CNNClassifierOptions) -> None:
        super().__init__(n_classes, options)
        self.cnn = _cnn(options)
        self.pool = SequencePool(options.pool, options.d_model, options.impl)
        self.classifier = _classifier(options, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x, lengths)
        h, lengths = self.cnn(x, lengths)
        return self.classifier(self.pool(h, lengths))


class TransformerHeadNetwork(Network):
    """Base of the networks that end in [PE] -> transformer -> pool -> classifier over one sequence.

    A subclass builds its front end first and then calls :meth:`add_head`, so that modules are
    created (and randomly initialised) in the order front, positions, transformer, pool,
    classifier; its ``forward`` hands the front end's ``(batch, steps, d_model)`` output to :meth:`head`.
    """

    def add_head(self, options: config.TransformerOptions, n_classes: int) -> None:
        self.positions = _positions(options)
        self.transformer = _encoder(options)
        self.pool = SequencePool(options.pool, options.d_model, options.impl)
        self.classifier = _classifier(options, n_classes)

    def head(self, h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Logits ``(batch, n_classes)`` of a sequence ``(batch, steps, d_model)`` with ``lengths`` valid steps."""
        return self.classifier(self.pool(self.transformer(self.positions(h), lengths), lengths))


class CNNTransformer(TransformerHeadNetwork):
    """``cnn_transformer`` (Table 1 baseline 1, Table 2 CNN-Transformer): CNN -> [PE] -> transformer -> pool."""

    name = "cnn_transformer"
    Options = config.CNNTransformerOptions

    def __init__(self, n_classes: int, options: config.CNNTransformerOptions) -> None:
        super().__init__(n_classes, options)
        self.cnn = _cnn(options)
        self.add_head(options, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x, lengths)
        return self.head(*self.cnn(x, lengths))


class CNNLSTMTransformer(TransformerHeadNetwork):
    """``cnn_lstm_transformer`` (Table 1 baseline 2): CNN -> BiLSTM -> [PE] -> transformer -> pool."""

    name = "cnn_lstm_transformer"
    Options = config.CNNLSTMTransformerOptions

    def __init__(self, n_classes: int, options: config.CNNLSTMTransformerOptions) -> None:
        super().__init__(n_classes, options)
        self.cnn = _cnn(options)
        self.lstm = BiLSTM(options.d_model, options.d_model, options.lstm_layers)
        self.add_head(options, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x, lengths)
        h, lengths = self.cnn(x, lengths)
        return self.head(self.lstm(h, lengths), lengths)


class ILT(Network):
    """``ilt`` (Table 1): a BiLSTM with attention pooling in parallel with a CNN-transformer, fused.

    LSTM branch: log-Mel -> :class:`LogMelLSTM` -> :class:`AttentionPool` = ``L``.
    Transformer branch: log-Mel -> CNN -> [PE] -> transformer -> pool = ``T``.
    ``fusion`` combines ``L`` and ``T`` (see :class:`~minser.models.blocks.Fusion`).
    """

    name = "ilt"
    Options = config.ILTOptions

    def __init__(self, n_classes: int, options: config.ILTOptions) -> None:
        super().__init__(n_classes, options)
        self.lstm = LogMelLSTM(options)
        self.lstm_pool = AttentionPool(options.d_model, options.impl)
        self.cnn = _cnn(options)
        self.positions = _positions(options)
        self.transformer = _encoder(options)
        self.transformer_pool = SequencePool(options.pool, options.d_model, options.impl)
        self.fusion = Fusion(options.fusion, options.alpha)
        self.classifier = _classifier(options, n_classes, self.fusion.out_dim(options.d_model))

    def fusion_weights(self) -> dict[str, float]:
        """``{"lstm": a_L, "transformer": a_T}`` of ``fusion="plus"`` or ``"attention"``
        (the paper reports 0.65 and 0.35 once trained)."""
        weights = self.fusion.weights()
        if weights is None:
            raise ConfigError("fusion='concat' has no fusion weights; use fusion='plus' or 'attention'")
        return {"lstm": _number(weights[0]), "transformer": _number(weights[1])}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x, lengths)
        h, h_lengths = self.lstm(x, lengths)
        lstm = self.lstm_pool(h, h_lengths)
        c, c_lengths = self.cnn(x, lengths)
        transformer = self.transformer_pool(self.transformer(self.positions(c), c_lengths), c_lengths)
        return self.classifier(self.fusion(lstm, transformer))


class CAT(Network):
    """``cat`` (Table 2): cross-attention transformers between the CNN and the BiLSTM streams.

    CNN stream ``C`` (CNN -> [PE]) and LSTM stream ``L`` (:class:`LogMelLSTM` -> [PE]).
    CNN->LSTM: ``L`` queries ``C``; LSTM->CNN: ``C`` queries ``L``. Each output is pooled over
    its own valid steps and the vectors are added (``branches="both"``), or one branch is
    used alone (``"c2l"``, ``"l2c"``: the paper's ablations).
    """

    name = "cat"
    Options = config.CATOptions

    def __init__(self, n_classes: int, options: config.CATOptions) -> None:
        super().__init__(n_classes, options)
        self.cnn = _cnn(options)
        self.lstm = LogMelLSTM(options)
        self.positions = _positions(options)
        use_c2l = options.branches in ("both", "c2l")
        use_l2c = options.branches in ("both", "l2c")
        self.cnn_to_lstm = _cross(options) if use_c2l else None
        self.cnn_to_lstm_pool = SequencePool(options.pool, options.d_model, options.impl) if use_c2l else None
        self.lstm_to_cnn = _cross(options) if use_l2c else None
        self.lstm_to_cnn_pool = SequencePool(options.pool, options.d_model, options.impl) if use_l2c else None
        self.classifier = _classifier(options, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x, lengths)
        c, c_lengths = self.cnn(x, lengths)
        h, h_lengths = self.lstm(x, lengths)
        c, h = self.positions(c), self.positions(h)
        pooled = []
        if self.cnn_to_lstm is not None:
            pooled.append(self.cnn_to_lstm_pool(self.cnn_to_lstm(h, c, c_lengths), h_lengths))
        if self.lstm_to_cnn is not None:
            pooled.append(self.lstm_to_cnn_pool(self.lstm_to_cnn(c, h, h_lengths), c_lengths))
        return self.classifier(sum(pooled))


class CNNPlusLSTM(Network):
    """``cnn_plus_lstm`` (Table 2 CNN+LSTM): pooled CNN vector + attention-pooled BiLSTM vector, no transformer."""

    name = "cnn_plus_lstm"
    Options = config.CNNPlusLSTMOptions

    def __init__(self, n_classes: int, options: config.CNNPlusLSTMOptions) -> None:
        super().__init__(n_classes, options)
        self.cnn = _cnn(options)
        self.cnn_pool = SequencePool(options.pool, options.d_model, options.impl)
        self.lstm = LogMelLSTM(options)
        self.lstm_pool = AttentionPool(options.d_model, options.impl)
        self.classifier = _classifier(options, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x, lengths)
        c, c_lengths = self.cnn(x, lengths)
        h, h_lengths = self.lstm(x, lengths)
        return self.classifier(self.cnn_pool(c, c_lengths) + self.lstm_pool(h, h_lengths))


class LSTMTransformer(TransformerHeadNetwork):
    """``lstm_transformer`` (Table 2 LSTM-Transformer): :class:`LogMelLSTM` -> [PE] -> transformer -> pool."""

    name = "lstm_transformer"
    Options = config.LSTMTransformerOptions

    def __init__(self, n_classes: int, options: config.LSTMTransformerOptions) -> None:
        super().__init__(n_classes, options)
        self.lstm = LogMelLSTM(options)
        self.add_head(options, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.prepare(x, lengths)
        return self.head(*self.lstm(x, lengths))


NETWORKS: tuple[type[Network], ...] = (
    CNNClassifier,
    CNNTransformer,
    CNNLSTMTransformer,
    ILT,
    CAT,
    CNNPlusLSTM,
    LSTMTransformer,
)
