"""Emotion recognition from audio with a trained checkpoint: file or samples in, label and scores out.

>>> rec = Recognizer.load()                          # the pretrained default shipped in minser/assets
>>> rec.predict("examples/clips/anger_03a01Wa.wav")
Prediction(label='anger', scores={'anger': 0.99, ...})
>>> rec.predict(samples, sr=44100)                   # a 1-D array needs its sample rate
>>> rec.predict(["a.wav", "b.flac"])                 # a batch gives a list of predictions

Input handling (needs only torch, numpy, scipy and soundfile):

- Files are read with :func:`minser.audio.load`: any soundfile format, downmixed to mono and
  resampled to the model's rate. Arrays (numpy, or torch tensors, read detached on the CPU) are
  float samples in [-1, 1]: ``(samples,)`` mono, or ``(samples, channels)`` with at most
  :data:`MAX_CHANNELS` channels (soundfile's layout; averaged to mono), or a 2-D ``(batch, samples)``
  batch of equal-length mono waves. A 2-D array is taken as multi-channel only when it has at most
  :data:`MAX_CHANNELS` columns and more rows than columns; a batch always has at least 400 columns
  (one analysis window), so the two never clash. ``(channels, samples)``, the layout of librosa's
  ``load(mono=False)`` and of torchaudio, reads as a batch: one prediction per channel; transpose it
  (``x.T``) or average the channels to label the recording. Any other 2-D array, such as
  ``(48000, 9)`` (more channels than allowed), is refused with an error
  that names its shape. An array needs ``sr``; a rate other than the model's is resampled (polyphase
  filter). What holds no samples (None, a number, a dict) is an :class:`~minser.errors.AudioError`.
- Audio of at most the network's 7.5 s is scored in one pass: zero-padded, with the valid frame
  count passed as ``lengths`` when the checkpoint was trained that way (``pad_to="batch"``).
  Audio shorter than the network's minimum (``model.min_frames``: 15 frames, 0.14 s, for the
  shipped default ILT, whose CNN sets it) is scored as if it were padded with silence up to that minimum.
- Longer audio is scored over sliding windows of 7.5 s, the fewest whose hop is at most 50% (3.75 s),
  spaced evenly from the start of the audio to its end so every sample is seen
  (:func:`window_starts`). The label probabilities are the mean of the windows' probabilities
  (softmax of each window's logits).

Several checkpoints serve as one :class:`Ensemble`: ``Recognizer.load([a, b, c])`` labels with the mean of
their label probabilities (window by window), as ``python -m minser.evaluate a b c`` scores them. They
must share their labels and front end; each member keeps its own input convention and, if trained with
``--speaker-norm``, standardises with the speaker the ensemble is enrolled with.

A checkpoint trained with ``--speaker-norm`` standardises every Mel band with its speaker's statistics,
so it labels audio only after enrolment: ``rec.for_speaker(recordings)`` returns a recognizer for one
speaker, whose statistics come from the valid frames of ``recordings`` (several recordings of that
speaker, cut into non-overlapping 7.5 s pieces; 10 or more, see :mod:`minser.speakers`).

Checkpoints are loaded as data only (``torch.load(..., weights_only=True)``). A checkpoint with
``"quantize": "int8"`` (written by ``python -m minser.export --quantize int8``) holds the float
weights and is quantized when loaded: the packed int8 LSTM weights of
``torch.ao.quantization.quantize_dynamic`` are script objects that weights-only loading refuses, so
the float network is rebuilt, its weights loaded, and its linear and LSTM layers converted to
dynamic int8 (:func:`quantize_int8`). Quantization is deterministic, so every load gives the same
int8 model.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import reprlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from minser import checkpoint
from minser.audio import (MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, check_peak, check_wave, first_repeated_file, load,
                          min_samples, resample)
from minser.errors import AudioError, CheckpointError, ConfigError
from minser.features import FrontEnd, extract
from minser.speakers import checked_speaker_stats, speaker_statistics, standardise

__all__ = ["DEFAULT_MODEL", "Ensemble", "HOP_FRACTION", "MAX_CHANNELS", "Prediction", "Recognizer", "ServedNetwork",
           "default_checkpoint", "fold_checkpoints", "log_mean_softmax", "quantize_int8", "refuse_repeated_checkpoints",
           "resolve_checkpoint", "window_starts"]

# The pretrained default, inside the installed package (see docs/MODEL_CARD.md).
DEFAULT_MODEL = "default.pt"
# Sliding windows over long audio advance by at most this fraction of the window (7.5 s -> 3.75 s).
HOP_FRACTION = 0.5
# A 2-D array with at most this many columns (and more rows) is one multi-channel wave.
MAX_CHANNELS = 8
# Recordings to enrol a speaker from, for accuracy near the evaluated one (docs/RESULTS.md, enrolment curve).
ENROL_RECORDINGS = 10
# Windows scored per forward pass: bounds the memory of very long audio.
WINDOWS_PER_PASS = 16
Audio = Union[str, os.PathLike, np.ndarray, torch.Tensor]


class ServedNetwork(torch.nn.Module):
    """A network with the input convention it was trained with, the one :meth:`Recognizer.logits` runs and
    :mod:`minser.export` exports: ``(features (batch, n_mels, frames), lengths (batch,)) -> logits (batch,
    n_classes)``. Lengths are raised to the network's ``min_frames`` (shorter audio scores as if padded
    with silence up to it); a network trained on full 7.5 s inputs (``pass_lengths=False``) saw its padding
    and ignores them."""

    def __init__(self, model: torch.nn.Module, pass_lengths: bool, min_frames: int) -> None:
        super().__init__()
        self.model, self.pass_lengths, self.min_frames = model, pass_lengths, min_frames

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.pass_lengths:
            return self.model(features, None)
        return self.model(features, lengths.clamp(min=self.min_frames))


@dataclass(frozen=True)
class Prediction:
    """The most probable label and the probability of every label (in the model's class order, summing to 1)."""

    label: str
    scores: dict[str, float]


@contextlib.contextmanager
def default_checkpoint() -> Iterator[Path]:
    """The file of the pretrained default (:data:`DEFAULT_MODEL` in ``minser.assets``), wherever minser is
    installed, as importlib.resources finds it; valid inside the ``with`` block (a temporary copy should the
    package be installed zipped)."""
    with resources.as_file(resources.files("minser.assets") / DEFAULT_MODEL) as path:
        yield path


def fold_checkpoints(run: Path) -> list[Path]:
    """The ``fold-<k>/best.pt`` files of the run folder ``run`` (``python -m minser.train --out``), in fold order
    (``fold-10`` after ``fold-9``). Only ``fold-<digits>`` folders are folds, as ``--resume`` counts them: a copy
    beside them (``fold-2.bak``, ``fold-2-old``) is not scored as one."""
    numbered = ((re.fullmatch(r"fold-(\d+)", best.parent.name), best) for best in run.glob("fold-*/best.pt"))
    return [best for _, best in sorted((int(match[1]), best) for match, best in numbered if match)]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: itself if a file; in a run folder of ``python -m minser.train``
    its only ``fold-<k>/best.pt`` (:func:`fold_checkpoints`; a run with several folds must name one, e.g.
    ``RUN/fold-1/best.pt``)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder; pass a .pt file written by "
                              "minser.train or minser.export, or a run folder")
    found = fold_checkpoints(path)
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(f"{path}: the folder holds no fold-<k>/best.pt; give the --out folder of a "
                              "python -m minser.train run or one of its .pt files")
    raise CheckpointError(f"{path}: the run has {len(found)} folds ({', '.join(str(p) for p in found)}); "
                          "pass the checkpoint of one of them")


def refuse_repeated_checkpoints(named: Sequence[object], files: Sequence[Path]) -> None:
    """Raise ConfigError when two of ``files`` (the checkpoint files the items of ``named`` name) are one file,
    under any name (a run folder and its ``best.pt``, a link): an ensemble would count that network twice.
    A file that cannot be stat'ed is passed over: loading it reports it."""
    pair = first_repeated_file(files)
    if pair is not None:
        raise ConfigError(f"{named[pair[0]]} and {named[pair[1]]} name the same checkpoint; name each checkpoint once")


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of ``model``'s linear and LSTM layers, for CPU inference.

    Weights are stored as int8 with a per-tensor scale; activations are quantized on the fly
    per batch. Convolutions, normalisations and attention products stay float32.
    """
    # torch.ao.quantization warns that it will move to torchao, an extra dependency minser avoids;
    # the eager dynamic API is what the CPU kernels (fbgemm / qnnpack) serve today.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear, torch.nn.LSTM}, dtype=torch.qint8, inplace=False)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of the sliding windows of ``window`` samples over ``n_samples`` samples: the fewest
    windows whose starts lie at most ``hop`` samples apart, ``k + 1`` with ``k = ceil((n_samples - window) /
    hop)``, spaced evenly from 0 to ``n_samples - window`` (the last window ends with the audio), so every
    sample is covered. ``[0]`` when the audio fits in one window."""
    if n_samples <= window:
        return [0]
    # Evenly spaced rather than 0, hop, 2 hop, ... plus one aligned with the end: just past a multiple of the
    # hop that last pair nearly coincides, the end of the audio counts twice and one more sample moves the mean.
    span = n_samples - window
    k = math.ceil(span / hop)
    return [round(i * span / k) for i in range(k + 1)]


def _shown(value: object) -> str:
    """``value`` for an error message: its repr, cut short, and its type."""
    return f"{reprlib.repr(value)} ({type(value).__name__})"


def _is_channels(array: np.ndarray) -> bool:
    """True for a 2-D ``(samples, channels)`` array (soundfile's layout), not a ``(batch, samples)`` batch."""
    return array.ndim == 2 and array.shape[1] <= MAX_CHANNELS and array.shape[0] > array.shape[1]


def _numpy(item: object) -> object:
    """A torch tensor as a numpy array of its samples (detached, on the CPU; bfloat16, which numpy lacks,
    widened to float32); anything else as it is."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        return (item.float() if item.dtype == torch.bfloat16 else item).numpy()
    return item


def _samples(item: object, name: str) -> np.ndarray:
    """``item``, neither a path nor yet checked as a wave, as an array; an AudioError for what holds no
    samples at all (None, a number, a dict, ...), which numpy would take for a 0-d or object array."""
    try:
        array = np.asarray(item)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise AudioError(f"{name}: cannot be read as an array of samples ({exc}); pass equal-length waves") from exc
    if not isinstance(item, np.ndarray) and (array.ndim == 0 or array.dtype == object):
        raise AudioError(f"{name}: {_shown(item)} is not audio; pass a file path, an array of samples with its "
                         "sample rate (sr=...), or a list of them")
    return array


def _check_batch_shape(array: np.ndarray, sr: int) -> None:
    """Refuse a 2-D array taken as a ``(batch, samples)`` batch whose waves are shorter than one analysis
    window: most likely ``(samples, channels)`` with more than :data:`MAX_CHANNELS` channels, which would
    otherwise fail once per row as too short. An empty batch ``(0, samples)`` is refused as an empty list is."""
    if array.shape[0] == 0:
        raise AudioError(f"array: got shape {array.shape}, a batch of no waves; pass a file, an array or a "
                         "non-empty batch of them")
    if array.shape[1] < min_samples(sr):
        raise AudioError(
            f"array: got shape {array.shape}: read as a batch of {array.shape[0]} waves of {array.shape[1]} "
            f"samples each, shorter than one analysis window ({min_samples(sr)} samples at {sr} Hz); pass "
            f"(samples,) mono, (samples, channels) with at most {MAX_CHANNELS} channels (average more yourself), "
            "or (batch, samples) with one wave per row")


def checked_features(features: object, lengths: object, frontend: FrontEnd, pass_lengths: bool, min_frames: int,
                     name: str) -> tuple[np.ndarray, np.ndarray]:
    """``features`` as float32 ``(batch, n_mels, frames)`` and ``lengths`` as int64 ``(batch,)``, or ConfigError
    naming ``name`` (the function given them) unless they are what a network served with ``frontend`` takes: all
    of extract's frames for one trained on full inputs (not ``pass_lengths``), at least ``min_frames``, lengths in
    1 to the frames given. Shared by :meth:`Recognizer.logits` and :func:`minser.export.onnx_logits`."""
    x, n = np.asarray(_numpy(features)), np.asarray(_numpy(lengths))
    bands = frontend.n_mels
    if x.ndim != 3 or x.shape[1] != bands or not np.issubdtype(x.dtype, np.floating):
        raise ConfigError(f"{name}: features of shape {x.shape} and dtype {x.dtype}; expected floats "
                          f"(batch, {bands}, frames), e.g. from minser.features.extract (one utterance: "
                          "features[None])")
    if n.shape != x.shape[:1] or not np.issubdtype(n.dtype, np.integer):
        raise ConfigError(f"{name}: lengths of shape {n.shape} and dtype {n.dtype}; expected {x.shape[0]} "
                          "integers, the valid frames of each utterance")
    if n.size and not ((n >= 1) & (n <= x.shape[2])).all():
        raise ConfigError(f"{name}: lengths {n.tolist()} outside 1 to {x.shape[2]} (the frames given)")
    frames, full = x.shape[2], frontend.n_frames
    if not pass_lengths and frames != full:
        # It was trained on every utterance padded to 7.5 s: other frame counts give other logits.
        raise ConfigError(f"{name}: features of {frames} frames, but the network was trained on full inputs "
                          f"(--pad-to full) and takes all {full}; pass them uncut, as minser.features.extract "
                          "gives them")
    if frames < min_frames:
        raise ConfigError(f"{name}: features of {frames} frames, fewer than the network's min_frames "
                          f"({min_frames}); pad them to at least {min_frames} frames with silence "
                          f"({10 * math.log10(frontend.amin):g} dB, as minser.features.extract pads), "
                          f"or pass extract's {full} frames uncut")
    return x.astype(np.float32, copy=False), n.astype(np.int64, copy=False)


class Recognizer:
    """A trained network with its front end and class names, ready to label audio on the CPU.

    Build it with :meth:`load`; ``model`` maps log-Mel features ``(batch, n_mels, frames)`` and
    ``lengths`` ``(batch,)`` to logits ``(batch, n_classes)``. ``speaker_norm`` marks a network
    trained on speaker-normalised features: it needs ``speaker_stats`` (``[mean, std]`` per Mel band,
    from :meth:`for_speaker`) before it labels anything.
    """

    def __init__(self, model: torch.nn.Module, labels: Sequence[str], frontend: FrontEnd, *,
                 pass_lengths: bool = True, source: str | None = None, speaker_norm: bool = False) -> None:
        self.model = model.eval()
        self.labels = tuple(labels)
        self.frontend = frontend
        # Checkpoints trained on full 7.5 s inputs saw no lengths; keep what they were trained with.
        self.pass_lengths = pass_lengths
        self.source = source
        self.min_frames = int(getattr(model, "min_frames", 1))
        self.speaker_norm = speaker_norm
        self.speaker_stats: list[list[float]] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike | Sequence[str | os.PathLike] | None = None) -> Recognizer:
        """Load a checkpoint file or run folder (see :func:`resolve_checkpoint`); ``None`` loads the
        pretrained default shipped inside the package (``minser/assets/default.pt``); a list or tuple
        of them loads each and serves them as one ensemble (:meth:`ensemble`), refusing (ConfigError) one
        checkpoint named twice."""
        if isinstance(path, (list, tuple)):
            if any(isinstance(member, (list, tuple)) for member in path):  # [a, [a]] got past the check below
                raise ConfigError("Recognizer.load: a list of checkpoints holds another list; give one flat list")
            named = [member for member in path if member is None or isinstance(member, (str, os.PathLike))]
            with default_checkpoint() as default:
                refuse_repeated_checkpoints(["None (the shipped default)" if m is None else m for m in named],
                                            [default if m is None else resolve_checkpoint(m) for m in named])
            return cls.ensemble([cls.load(member) for member in path])
        if path is None:
            with default_checkpoint() as default:
                return cls.from_checkpoint(checkpoint.load(default), source=f"minser.assets/{DEFAULT_MODEL}")
        if not isinstance(path, (str, os.PathLike)):
            raise CheckpointError(f"Recognizer.load: {_shown(path)} is not a checkpoint; pass None for the shipped "
                                  "default, the path of a checkpoint file or run folder, or a list of them")
        file = resolve_checkpoint(path)
        return cls.from_checkpoint(checkpoint.load(file), source=str(file))

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any], source: str | None = None) -> Recognizer:
        """A recognizer from a checkpoint dict already loaded by :func:`minser.checkpoint.load`."""
        name = source or "checkpoint"
        quantize = checkpoint.quantization(saved, name)
        with checkpoint.built_from(saved, name):
            frontend = FrontEnd.from_dict(saved["frontend"])
            model = checkpoint.load_model(saved)
        # Inference is on the CPU, where the PyTorch attention path is the one that runs anyway.
        model.set_impl("torch")
        if quantize == "int8":
            model = quantize_int8(model)
        pad_to = saved.get("train", {}).get("pad_to", "full") if isinstance(saved.get("train"), dict) else "full"
        return cls(model, saved["labels"], frontend, pass_lengths=pad_to == "batch",
                   source=source, speaker_norm=bool(saved.get("speaker_norm")))

    @classmethod
    def ensemble(cls, members: Sequence[Recognizer]) -> Recognizer:
        """One recognizer that labels with the mean label probability of ``members`` (an :class:`Ensemble`;
        one member is returned as it is).

        The members must have the same labels in the same order and the same front end. Members trained
        with and without ``--speaker-norm`` mix: the ensemble is then enrolled as a whole
        (``ensemble.for_speaker(...)``), so members must not be enrolled already.

        An :class:`Ensemble` member counts as its members, each weighing as much as any other member.

        Raises:
            CheckpointError: no members, a member that is no Recognizer (a checkpoint path, say), a member
                that differs from the first (naming both), or an enrolled member.
        """
        if not members:
            raise CheckpointError("ensemble: no members; pass one or more checkpoints")
        for i, member in enumerate(members):
            if not isinstance(member, Recognizer):
                raise CheckpointError(f"ensemble: member {i} is {_shown(member)}, not a Recognizer; pass loaded "
                                      "recognizers, or use Recognizer.load([...]) for checkpoint paths")
        first = members[0]
        for member in members[1:]:
            for what, a, b in (("labels", first.labels, member.labels), ("front end", first.frontend, member.frontend)):
                if a != b:
                    raise CheckpointError(f"ensemble: {member.source or 'a member'} differs from "
                                          f"{first.source or 'the first member'} in its {what} ({b!r} against "
                                          f"{a!r}); ensemble checkpoints trained on the same classes and features")
        if any(member.speaker_stats is not None for member in members):
            raise CheckpointError("ensemble: a member is already enrolled; build the ensemble from the loaded "
                                  "checkpoints and enrol it as a whole with ensemble.for_speaker(...)")
        return first if len(members) == 1 else Ensemble(members)

    def for_speaker(self, recordings: Sequence[Audio], sr: int | None = None) -> Recognizer:
        """This recognizer for one speaker of a ``--speaker-norm`` network, enrolled from ``recordings``
        (paths or 1-D arrays with ``sr``; several, 10 or more for accuracy near the evaluated one).

        The speaker's ``[mean, std]`` per Mel band are taken over the valid frames of the recordings,
        cut into non-overlapping windows of 7.5 s (a piece shorter than one analysis window is
        dropped); the returned copy shares the network and standardises its inputs with them.
        """
        self._refuse_unless_speaker_norm()
        one_wave = isinstance(recordings, np.ndarray) and (recordings.ndim == 1 or _is_channels(recordings))
        if isinstance(recordings, (str, os.PathLike)) or one_wave:
            raise AudioError("for_speaker: pass a list of recordings of the speaker (several), not one")
        if not isinstance(recordings, (Sequence, np.ndarray)):
            raise AudioError(f"for_speaker: {_shown(recordings)} is not a list of recordings; pass several file "
                             "paths or arrays of the speaker")
        if len(recordings) == 0:
            raise AudioError("for_speaker: no recordings; pass several recordings of the speaker (10 or more)")
        paths = [(i, Path(r)) for i, r in enumerate(recordings) if isinstance(r, (str, os.PathLike))]
        pair = first_repeated_file(path for _, path in paths)
        if pair is not None:  # counted twice, one file passed the "10 or more" the statistics need
            (i, first), (j, again) = paths[pair[0]], paths[pair[1]]
            raise AudioError(f"for_speaker: items {i} and {j} ({first}, {again}) are one file; pass each "
                             "recording of the speaker once")
        waves, _ = self._waves(list(recordings), sr)
        for i, wave in enumerate(waves):
            if not wave.any():
                shown = recordings[i] if isinstance(recordings[i], (str, os.PathLike)) else f"item {i}"
                raise AudioError(f"for_speaker: {shown} holds no sound (every sample is zero); the speaker's "
                                 "statistics need their speech: pass their recordings only")
        if len(waves) < ENROL_RECORDINGS:
            warnings.warn(f"for_speaker: {len(waves)} recording(s); with fewer than {ENROL_RECORDINGS} the speaker's "
                          "statistics are noisy and accuracy drops (EmoDB, 4 classes: 49 UA from 1 recording, "
                          "84 from 10; README, 'Speaker-normalised models')", UserWarning, stacklevel=2)
        window = self.frontend.n_samples
        pieces = [wave[start:start + window] for wave in waves for start in range(0, len(wave), window)]
        pieces = [p for p in pieces if len(p) >= self.frontend.win_length] or pieces[:1]
        features, lengths = extract(pieces, self.frontend)
        stats = speaker_statistics(features, lengths, np.array(["enrolled"] * len(pieces)))["enrolled"]
        return self.with_speaker_stats(stats)

    def with_speaker_stats(self, stats: Sequence[Sequence[float]]) -> Recognizer:
        """A copy, sharing the network, that standardises its inputs with ``stats`` (``[mean, std]`` per
        Mel band, as :meth:`for_speaker` computes them: ``(2, n_mels)`` finite numbers, std > 0).

        Raises:
            CheckpointError: the network was trained without ``--speaker-norm``.
            ConfigError: ``stats`` of another shape, or not finite, or a std <= 0.
        """
        self._refuse_unless_speaker_norm()
        enrolled = copy.copy(self)
        enrolled.speaker_stats = checked_speaker_stats(stats, self.frontend.n_mels)
        return enrolled

    def _refuse_unless_speaker_norm(self) -> None:
        if not self.speaker_norm:
            raise CheckpointError(f"{self.source or 'checkpoint'}: was trained without --speaker-norm, so it takes "
                                  "no speaker statistics; label without enrolling (predict, or minser.predict "
                                  "without --enrol)")

    def check_enrolled(self) -> None:
        """Raise CheckpointError, saying how to enrol, when a ``--speaker-norm`` network has no speaker yet."""
        if self.speaker_norm and self.speaker_stats is None:
            raise _not_enrolled(self.source, "was trained with --speaker-norm, so it needs")

    # ------------------------------------------------------------------------------------------
    # Input

    def _sample_rate(self, sr: int | None, name: str) -> int:
        """``sr``, the rate in Hz of array ``name``, checked: given, an integer, and a plausible audio rate."""
        rate = self.frontend.sample_rate
        if sr is None:
            raise AudioError(f"{name}: an array of samples needs its sample rate; pass sr=..., e.g. "
                             f"rec.predict(wave, sr={rate})")
        if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise AudioError(f"{name}: sr={sr!r} is not a sample rate; give a positive integer in Hz")
        if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
            # sr=16 for 16 kHz would otherwise upsample 1000x, for minutes and gigabytes.
            raise AudioError(f"{name}: sr={sr} Hz is outside {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz; give the "
                             f"rate in Hz, e.g. sr={rate} for 16 kHz")
        return int(sr)

    def _wave(self, item: Audio, sr: int | None, name: str) -> np.ndarray:
        """One input as mono float32 ``(samples,)`` at the model's rate."""
        rate = self.frontend.sample_rate
        if isinstance(item, (str, os.PathLike)):
            return load(item, sr=rate)
        array = _samples(_numpy(item), name)
        sr = self._sample_rate(sr, name)
        if _is_channels(array):
            if not array.shape[1]:  # averaging no channels gives NaN samples, reported as corrupt audio
                raise AudioError(f"{name}: got shape {array.shape}, {array.shape[0]} samples of zero channels; "
                                 "pass audio with at least one channel")
            array = check_wave(array.T, name, sr=sr).mean(axis=0)
        if array.ndim != 1:  # before check_wave, which would offer a batch (batch, samples) here
            raise AudioError(f"{name}: expected one wave (samples,) or (samples, channels), got shape {array.shape}")
        wave = check_wave(array, name, sr=sr)
        check_peak(wave, name, "divide 16-bit samples by 32768")
        return check_wave(resample(wave, sr, rate), name, sr=rate)

    def _waves(self, x: Audio | Sequence[Audio], sr: int | None) -> tuple[list[np.ndarray], bool]:
        """The waves of ``x`` and whether ``x`` was a batch."""
        x = _numpy(x)
        if isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind in "OU" \
                and all(isinstance(item, (str, os.PathLike)) for item in x):
            x = x.tolist()  # an array of paths (df["path"].values) is a batch of files, as their list is
        if isinstance(x, np.ndarray) and x.ndim == 2 and not _is_channels(x):
            _check_batch_shape(x, self._sample_rate(sr, "array"))
            return [self._wave(row, sr, f"array[{i}]") for i, row in enumerate(x)], True
        if isinstance(x, (list, tuple)):
            if not x:
                raise AudioError("predict: got an empty batch; pass a file, an array or a non-empty list of them")
            return [self._wave(item, sr, str(item) if isinstance(item, (str, os.PathLike)) else f"item {i}")
                    for i, item in enumerate(x)], True
        name = str(x) if isinstance(x, (str, os.PathLike)) else "array" if isinstance(x, np.ndarray) else "input"
        return [self._wave(x, sr, name)], False

    # ------------------------------------------------------------------------------------------
    # Scoring

    @torch.no_grad()
    def logits(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Logits ``(batch, n_classes)`` of features ``(batch, n_mels, frames)`` with valid frames ``(batch,)``
        (standardised with the enrolled speaker's statistics first for a ``--speaker-norm`` network).

        ``features`` may be any float array or tensor (computed in float32); ConfigError for other shapes,
        lengths outside ``1..frames``, fewer frames than ``min_frames``, or, for a network trained on full
        inputs (``pass_lengths`` False), other than the front end's ``n_frames``. An empty batch gives
        ``(0, n_classes)``."""
        features, lengths = self._checked_features(features, lengths)
        if self.speaker_norm:
            self.check_enrolled()
            features = standardise(features, self.speaker_stats)
        if not len(features):  # nothing to run; cut() would take the max of no lengths
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        network = ServedNetwork(self.model, self.pass_lengths, self.min_frames)
        return network(torch.from_numpy(self.cut(features, lengths)), torch.as_tensor(lengths)).float().numpy()

    def _checked_features(self, features: object, lengths: object) -> tuple[np.ndarray, np.ndarray]:
        """``features`` as float32 ``(batch, n_mels, frames)`` and ``lengths`` as int64 ``(batch,)``, checked."""
        return checked_features(features, lengths, self.frontend, self.pass_lengths, self.min_frames, "logits")

    def cut(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``features (batch, n_mels, frames)`` cut to the frames the network reads: up to the longest of
        ``lengths`` (at least ``min_frames``) when it masks padding, all of them when it was trained on full
        7.5 s inputs. Cutting saves the work on padding that the mask would discard."""
        if not self.pass_lengths:
            return features
        return np.ascontiguousarray(features[:, :, :max(int(np.max(lengths, initial=0)), self.min_frames)])

    def probabilities(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Label probabilities ``(batch, n_classes)`` of mono waves at the model's rate (see the module
        docstring for the sliding windows over long audio); AudioError naming ``waves[i]`` for a wave
        that is not float samples, holds NaN or Inf, or is shorter than one analysis window."""
        window = self.frontend.n_samples
        hop = max(1, round(window * HOP_FRACTION))
        pieces, owner = [], []
        for index, wave in enumerate(waves):
            # Checked whole: the front end would name a window of a chunk of windows, not the wave given.
            wave = check_wave(wave, f"waves[{index}]", sr=self.frontend.sample_rate,
                              min_length=self.frontend.win_length)
            for start in window_starts(len(wave), window, hop):
                pieces.append(wave[start:start + window])
                owner.append(index)
        probs = []
        for first in range(0, len(pieces), WINDOWS_PER_PASS):
            features, lengths = extract(pieces[first:first + WINDOWS_PER_PASS], self.frontend)
            probs.append(torch.softmax(torch.from_numpy(self.logits(features, lengths)), dim=-1).numpy())
        window_probs, owner = np.concatenate(probs), np.asarray(owner)
        return np.stack([window_probs[owner == i].mean(axis=0) for i in range(len(waves))])

    def predict(self, x: Audio | Sequence[Audio], sr: int | None = None) -> Prediction | list[Prediction]:
        """Label ``x``: a file path, a 1-D array (with ``sr``), or a batch (a list of paths or arrays, a 1-D
        array of paths such as ``df["path"].values``, or a 2-D ``(batch, samples)`` array); a batch gives a list
        of :class:`Prediction`."""
        waves, batch = self._waves(x, sr)
        predictions = [
            Prediction(self.labels[int(np.argmax(p))], {label: float(v) for label, v in zip(self.labels, p)})
            for p in self.probabilities(waves)
        ]
        return predictions if batch else predictions[0]

    def __repr__(self) -> str:
        name = getattr(self.model, "name", type(self.model).__name__)
        return f"Recognizer({name}, labels={list(self.labels)}, source={self.source!r})"


def _not_enrolled(source: str | None, trained: str) -> CheckpointError:
    """The error of a ``--speaker-norm`` recognizer labelling before enrolment; ``trained`` says who needs it."""
    return CheckpointError(f"{source or 'checkpoint'}: {trained} the speaker's statistics: enrol the speaker first, "
                           "rec = rec.for_speaker([several recordings of them]) (python -m minser.predict --enrol "
                           "FILE ...), then predict")


def log_mean_softmax(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log(mean_k softmax(logits_k))`` ``(batch, n_classes)`` of the members' logits, each ``(batch, n_classes)``:
    the ensemble rule, whose softmax is the mean of the members' probabilities."""
    # log-sum-exp of log-probabilities: the log of the mean without underflow to log(0).
    log_probs = torch.stack([torch.log_softmax(x, dim=-1) for x in logits])
    return torch.logsumexp(log_probs, dim=0) - math.log(len(log_probs))


class Ensemble(Recognizer):
    """Several recognizers as one: the label probabilities are the mean of the members' probabilities,
    the ensemble rule of :mod:`minser.evaluate` (build it with :meth:`Recognizer.ensemble` or
    ``Recognizer.load([a, b, c])``).

    ``logits`` are ``log(mean_k softmax(logits_k))`` ``(batch, n_classes)``. Each member scores the shared
    features its own way (lengths or full padding, speaker statistics or none); ``speaker_norm`` is set
    when any member needs the speaker, and :meth:`for_speaker` enrols those members together.
    ``model`` is a ``ModuleList`` of the members' networks (to move or count them). Each member keeps its
    own input convention; ``pass_lengths`` is set when every member masks padding, so that :meth:`cut`
    gives an input all of them can read (all frames when one was trained on full inputs), as an exported
    ensemble graph takes it.
    """

    def __init__(self, members: Sequence[Recognizer]) -> None:
        # An ensemble among the members stands for its networks: kept whole, they would share one member's weight.
        members = [part for member in members for part in (member.members if isinstance(member, Ensemble)
                                                           else (member,))]
        first = members[0]
        super().__init__(torch.nn.ModuleList(m.model for m in members), first.labels, first.frontend,
                         pass_lengths=all(m.pass_lengths for m in members),
                         source=" + ".join(str(m.source) for m in members),
                         speaker_norm=any(m.speaker_norm for m in members))
        self.members = tuple(members)
        self.min_frames = max(m.min_frames for m in members)

    def check_enrolled(self) -> None:
        """As :meth:`Recognizer.check_enrolled`, naming the members trained with ``--speaker-norm``."""
        if self.speaker_norm and self.speaker_stats is None:
            normed = ", ".join(str(m.source) for m in self.members if m.speaker_norm)
            raise _not_enrolled(self.source, f"its member(s) {normed} were trained with --speaker-norm, so the "
                                             "ensemble needs")

    def with_speaker_stats(self, stats: list[list[float]]) -> Recognizer:
        enrolled = super().with_speaker_stats(stats)
        enrolled.members = tuple(m.with_speaker_stats(stats) if m.speaker_norm else m for m in self.members)
        return enrolled

    @torch.no_grad()
    def logits(self, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        self.check_enrolled()
        return log_mean_softmax([torch.from_numpy(m.logits(features, lengths)) for m in self.members]).numpy()

    def __repr__(self) -> str:
        return f"Ensemble({', '.join(repr(m) for m in self.members)})"
