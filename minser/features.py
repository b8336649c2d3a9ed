"""The log-Mel front end, in numpy/scipy only (librosa is the test oracle, never imported here).

The paper's input is a 40 x 750 log-Mel spectrogram of 7.5 s of 16 kHz audio: 25 ms periodic Hann
windows (400 samples, ``n_fft=400``) every 10 ms (``hop_length=160``), 40 Slaney Mel bands, power
in dB. Frames are centred as in ``librosa.stft(center=True)``: the wave is zero-padded by
``n_fft // 2`` samples on each side (librosa's ``pad_mode="constant"``, its default since 0.10), so
frame ``t`` is centred on sample ``t * hop_length`` and 120000 samples give ``1 + 120000 // 160 = 751``
frames. The paper's 750 frames are the first 750: :func:`extract` drops the last centred frame,
which is centred on the very last sample and sees half a window of padding.

Everything is float32 and vectorised per utterance: strided framing (a view, no copy), one
windowing pass, one batched real FFT over all frames (``scipy.fft.rfft`` on every CPU the process
may use) and one sparse matrix product with the filterbank.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.sparse

from minser.audio import MAX_SECONDS, _check_rate, _is_duration, _is_number, check_wave
from minser.errors import AudioError, ConfigError

__all__ = ["MAX_SECONDS", "FrontEnd", "extract", "frequency_bins", "hz_to_mel", "log_mel", "mel_filterbank",
           "mel_power", "mel_to_hz", "most_mel_bands", "power_to_db"]

# Threads for the FFT: the CPUs this process may run on (taskset, container CPU sets), not the host's.
_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

# Slaney's Mel scale (Auditory Toolbox; librosa's default): linear below 1 kHz, logarithmic above.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Frequencies in Hz to Mel, float64: HTK's ``2595 log10(1 + f/700)`` or Slaney's scale."""
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = hz / _SLANEY_HZ_PER_MEL
    # The where() evaluates both branches; clamping keeps log() away from zero below the break.
    log = _SLANEY_BREAK_MEL + np.log(np.maximum(hz, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_BREAK_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float, htk: bool = False) -> np.ndarray:
    """Mel to Hz, float64: the inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    linear = mel * _SLANEY_HZ_PER_MEL
    log = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, log, linear)


def frequency_bins(n_fft: int) -> int:
    """The frequency bins of an ``n_fft``-point real FFT, ``n_fft // 2 + 1``: a bound on the Mel bands it can fill
    (the bands of the lowest frequencies, the narrowest, are left without a bin well before it)."""
    return n_fft // 2 + 1


def _band_points(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None,
                 htk: bool) -> tuple[np.ndarray, np.ndarray]:
    """The frequencies in Hz, float64, of the FFT bins ``(1 + n_fft // 2,)`` and of the filterbank's Mel points
    ``(n_mels + 2,)``: band ``m`` rises from point ``m`` to ``m + 1`` and falls to ``m + 2``."""
    fmax = sr / 2 if fmax is None else fmax
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sr)  # k * sr / n_fft: for an odd n_fft the last bin is below sr / 2
    points_hz = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    return bin_hz, points_hz


@lru_cache(maxsize=16)
def _first_empty_band(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool) -> int | None:
    """The first band of :func:`mel_filterbank` that is all zeros, or None: without computing the bank, as a
    band's weights are positive at exactly the bins strictly between its feet (Mel points ``m`` and ``m + 2``).
    Cached: every FrontEnd checks its settings, most of them the same ones."""
    bin_hz, points_hz = _band_points(sr, n_fft, n_mels, fmin, fmax, htk)
    first_inside = np.searchsorted(bin_hz, points_hz[:-2], side="right")
    first_past = np.searchsorted(bin_hz, points_hz[2:], side="left")
    empty = np.flatnonzero(first_inside >= first_past)
    return int(empty[0]) if empty.size else None


def _check_settings(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, norm: str | None,
    hop_length: int = 1, win_length: int = 1, htk: bool = False,
) -> None:
    """Raise ConfigError naming the first invalid front-end option."""
    integers = {"sample_rate": sr, "n_fft": n_fft, "n_mels": n_mels, "hop_length": hop_length, "win_length": win_length}
    for name, value in integers.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ConfigError(f"front end: {name}={value!r} must be a positive integer")
    if win_length > n_fft:
        raise ConfigError(f"front end: win_length={win_length} must not exceed n_fft={n_fft}")
    if not _is_number(fmin) or not (fmax is None or _is_number(fmax)):
        raise ConfigError(f"front end: fmin={fmin!r} and fmax={fmax!r} must be numbers in Hz (fmax may be None)")
    if fmax is not None and not fmin < fmax <= sr / 2:
        raise ConfigError(f"front end: fmax={fmax} Hz must be above fmin={fmin} and at most sample_rate / 2 = {sr / 2}")
    if not 0.0 <= fmin < sr / 2:
        raise ConfigError(f"front end: fmin={fmin} Hz must be in [0, sample_rate / 2 = {sr / 2})")
    if norm not in ("slaney", None):
        raise ConfigError(f"front end: norm={norm!r} must be 'slaney' (area-normalised bands) or None")
    if not isinstance(htk, bool):  # htk="no" is truthy: it would pick the HTK scale
        raise ConfigError(f"front end: htk={htk!r} must be True (HTK Mel scale) or False (Slaney's)")
    _check_bands(sr, n_fft, n_mels, fmin, fmax, htk)


def most_mel_bands(sr: int, n_fft: int, fmin: float = 0.0, fmax: float | None = None, htk: bool = False) -> int:
    """The largest ``n`` such that every ``n_mels <= n`` gives each Mel band a frequency bin (149 at 16 kHz with
    ``n_fft=400``); 0 when not even one band gets one."""
    # Counted up from 1: on some settings (HTK, a raised fmin) a larger n_mels fills every band where a smaller
    # one does not, so only the first that fails bounds an "at most" that holds for every value below it.
    bins = frequency_bins(n_fft)
    return next((n - 1 for n in range(1, bins + 1) if _first_empty_band(sr, n_fft, n, fmin, fmax, htk) is not None),
                bins)


def _check_bands(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool) -> None:
    """Raise ConfigError when there are more Mel bands than frequency bins, and warn (UserWarning, as librosa does)
    when a band holds no bin (an all-zero filterbank row, whose feature is the dB floor whatever the audio), naming
    the most bands these settings fill; the other settings are valid. A warning, not an error: front ends that
    checkpoints of earlier versions record must still load (``python -m minser.train`` refuses such a --n-mels)."""
    bins = frequency_bins(n_fft)
    # More bands than bins were always refused; checked, they would first build n_mels + 2 Mel points, however many.
    too_many = n_mels > bins
    empty = None if too_many else _first_empty_band(sr, n_fft, n_mels, fmin, fmax, htk)
    if not too_many and empty is None:
        return
    problem = (f"exceeds the {bins} frequency bins of an n_fft={n_fft} FFT" if too_many else
               f"leaves Mel band {empty} without a frequency bin of the n_fft={n_fft} FFT (an all-zero filter, "
               "whose feature is the dB floor whatever the audio)")
    most = most_mel_bands(sr, n_fft, fmin, fmax, htk)
    settings = f"at these settings (sample_rate={sr}, fmin={fmin}, fmax={fmax}, htk={htk})"
    advice = (f"{settings} every band holds a bin up to n_mels={most}: use at most that many Mel bands, or a larger "
              "n_fft" if most else
              f"{settings} no n_mels gives every band a bin: widen fmin..fmax or use a larger n_fft")
    if too_many:
        raise ConfigError(f"front end: n_mels={n_mels} {problem}; {advice}")
    # Reported at this line (no stacklevel): Python's default filter then shows it once per process, where a
    # caller's line, other for a FrontEnd and for the filterbank it builds, printed it twice.
    warnings.warn(f"front end: n_mels={n_mels} {problem}; {advice}", UserWarning)


def _check_amin(amin: float) -> None:
    if not _is_number(amin) or not 0 < amin < np.inf:  # NaN fails both; inf floors every feature at inf
        raise ConfigError(f"front end: amin={amin!r} must be a positive finite number (it is the floor under log10)")


def mel_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None,
    htk: bool = False, norm: str | None = "slaney",
) -> np.ndarray:
    """Triangular Mel filterbank, float32 ``(n_mels, 1 + n_fft // 2)``; equals ``librosa.filters.mel``.

    Band ``m`` rises from Mel point ``m`` to ``m + 1`` and falls to ``m + 2``, with ``n_mels + 2``
    points evenly spaced in Mel (``htk`` picks the HTK scale, else Slaney's) between ``fmin`` and
    ``fmax`` Hz (default ``sr / 2``). ``norm="slaney"`` divides each band by its width in Hz over 2,
    so every band has the same area; ``norm=None`` leaves peaks at 1.
    """
    return _filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm).copy()


@lru_cache(maxsize=16)
def _filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None,
) -> np.ndarray:
    """Cached, read-only :func:`mel_filterbank` (computed in float64, stored as float32)."""
    _check_settings(sr, n_fft, n_mels, fmin, fmax, norm, htk=htk)
    bin_hz, points_hz = _band_points(sr, n_fft, n_mels, fmin, fmax, htk)
    widths = np.diff(points_hz)
    offsets = points_hz[:, None] - bin_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (points_hz[2:] - points_hz[:-2]))[:, None]
    weights = weights.astype(np.float32)
    weights.flags.writeable = False
    return weights


@lru_cache(maxsize=16)
def _sparse_filterbank(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None,
) -> scipy.sparse.csr_array:
    """The filterbank as a sparse matrix.

    Each band covers a few bins (383 of the 40 x 201 weights are non-zero by default): the sparse
    product is ~20x less arithmetic than a dense one and runs without BLAS threads, which on a busy
    machine made the dense product tens of times slower in our measurements.
    """
    matrix = scipy.sparse.csr_array(_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm))
    for part in (matrix.data, matrix.indices, matrix.indptr):  # cached and shared, as the dense bank is
        part.flags.writeable = False
    return matrix


@lru_cache(maxsize=16)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    """Periodic Hann window of ``win_length`` samples, zero-padded on both sides to ``n_fft``; read-only."""
    window = np.zeros(n_fft, dtype=np.float32)
    start = (n_fft - win_length) // 2
    # scipy.signal.get_window("hann", win_length, fftbins=True), bit for bit in float32, without importing
    # scipy.signal (about 0.6 s).
    window[start : start + win_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
    window.flags.writeable = False
    return window


def _power_frames(wave: np.ndarray, n_fft: int, hop_length: int, window: np.ndarray, n_frames: int) -> np.ndarray:
    """Power spectrum of the first ``n_frames`` centred frames: ``(samples,)`` -> ``(n_frames, 1 + n_fft // 2)``.

    The wave is zero-padded by ``n_fft // 2`` on the left and as far as those frames reach on the
    right; framing is a strided view of it, and the windowing pass makes the one copy the FFT reads.
    """
    half = n_fft // 2
    right = max(half, (n_frames - 1) * hop_length + n_fft - half - len(wave))
    padded = np.pad(wave, (half, right))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:n_frames]
    windowed = np.multiply(frames, window, dtype=np.float32)
    spectrum = scipy.fft.rfft(windowed, axis=-1, workers=_WORKERS)
    real, imag = spectrum.real, spectrum.imag
    return real * real + imag * imag


def _active_samples(wave: np.ndarray) -> int:
    """Samples up to and including the last non-zero one (0 for digital silence)."""
    nonzero = wave != 0
    return 0 if not nonzero.any() else len(wave) - int(np.argmax(nonzero[::-1]))


def _mel_power_rows(
    waves: Iterable[np.ndarray], count: int, frames: int, sr: int, n_fft: int, hop_length: int,
    win_length: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None,
    amin: float | None = None, name: str = "waves[{}]",
) -> np.ndarray:
    """Mel power of ``count`` 1-D float32 waves -> ``(count, n_mels, frames)`` float32; in dB given ``amin``.

    Each wave is read as if zero-padded on the right to ``frames`` centred frames. One utterance
    per FFT call: measured on EmoDB, this beats large batches, whose frames spill out of cache, and
    keeps memory flat in the batch size. Frames that lie wholly past the last non-zero sample (the
    padding to 7.5 s: ~60% of EmoDB's frames) have exactly zero power and are not transformed.
    Converting to dB row by row (``amin``) writes the large output once instead of twice.
    A wave loud enough for its power to overflow float32 raises AudioError naming it (``name.format(index)``).
    The settings are checked by the callers: :func:`mel_power`, and :class:`FrontEnd` for :func:`extract`.
    """
    bank = _sparse_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    window = _window(n_fft, win_length)
    silence = 0.0 if amin is None else power_to_db(np.zeros(1, dtype=np.float32), amin)[0]
    out = np.empty((count, n_mels, frames), dtype=np.float32)
    for index, wave in enumerate(waves):
        voiced = min(frames, -(-(_active_samples(wave) + n_fft // 2) // hop_length))
        if voiced:
            with np.errstate(over="ignore"):  # reported below, naming the wave
                mel = bank @ _power_frames(wave, n_fft, hop_length, window, voiced).T
            if not np.isfinite(mel).all():
                raise AudioError(f"{name.format(index)}: samples reach {np.max(np.abs(wave)):.3g}, so loud that their "
                                 "power overflows float32; float audio lies in [-1, 1]: scale the samples")
            out[index, :, :voiced] = mel if amin is None else power_to_db(mel, amin)
        out[index, :, voiced:] = silence
    return out


def mel_power(
    wave: np.ndarray, sr: int = 16000, *, n_fft: int = 400, hop_length: int = 160, win_length: int = 400,
    n_mels: int = 40, fmin: float = 0.0, fmax: float | None = None, htk: bool = False, norm: str | None = "slaney",
) -> np.ndarray:
    """Mel power spectrogram of centred frames, float32.

    ``wave`` ``(samples,)`` gives ``(n_mels, frames)``; ``(batch, samples)`` gives
    ``(batch, n_mels, frames)``, with ``frames = 1 + samples // hop_length`` (even ``n_fft``).
    Equals ``librosa.feature.melspectrogram(y=wave, sr=sr, n_fft=n_fft, hop_length=hop_length,
    win_length=win_length, window="hann", center=True, pad_mode="constant", power=2.0, ...)``.
    """
    _check_settings(sr, n_fft, n_mels, fmin, fmax, norm, hop_length, win_length, htk)  # before hop_length divides
    waves = check_wave(wave, sr=sr, min_length=win_length)
    batch = waves if waves.ndim == 2 else waves[None]
    frames = 1 + (batch.shape[-1] + 2 * (n_fft // 2) - n_fft) // hop_length
    out = _mel_power_rows(
        batch, len(batch), frames, sr, n_fft, hop_length, win_length, n_mels, fmin, fmax, htk, norm,
        name="array[{}]" if waves.ndim == 2 else "array",
    )
    return out if waves.ndim == 2 else out[0]


def power_to_db(power: np.ndarray, amin: float = 1e-10) -> np.ndarray:
    """Power to decibels with a floor, ``10 * log10(max(power, amin))``, as a new float32 array.

    Equals ``librosa.power_to_db(power, ref=1.0, amin=amin, top_db=None)``: no reference scaling and no
    dynamic-range clipping, so digital silence maps to ``10 * log10(amin)`` (-100 dB by default).
    """
    _check_amin(amin)
    db = np.maximum(power, np.float32(amin), dtype=np.float32)
    np.log10(db, out=db)
    db *= np.float32(10.0)
    return db


def log_mel(
    wave: np.ndarray, sr: int = 16000, *, n_fft: int = 400, hop_length: int = 160, win_length: int = 400,
    n_mels: int = 40, fmin: float = 0.0, fmax: float | None = None, htk: bool = False,
    norm: str | None = "slaney", amin: float = 1e-10,
) -> np.ndarray:
    """Log-Mel spectrogram in dB, float32: :func:`power_to_db` of :func:`mel_power`.

    ``(samples,)`` -> ``(n_mels, frames)``; ``(batch, samples)`` -> ``(batch, n_mels, frames)``;
    all centred frames are kept (7.5 s at 16 kHz gives 40 x 751; :func:`extract` gives the paper's 40 x 750).
    """
    power = mel_power(
        wave, sr, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
        n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm,
    )
    return power_to_db(power, amin)


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """Front-end settings; the defaults are the paper's (40 x 750 log-Mel of 7.5 s at 16 kHz).

    Times: ``win_length`` and ``n_fft`` 400 samples (25 ms), ``hop_length`` 160 samples (10 ms),
    ``seconds`` 7.5 s per utterance (at most :data:`MAX_SECONDS`); ``fmin``/``fmax`` in Hz (``fmax=None``
    is ``sample_rate / 2``); ``amin`` is the power floor of the dB step.
    """

    sample_rate: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    fmin: float = 0.0
    fmax: float | None = None
    htk: bool = False
    norm: str | None = "slaney"
    seconds: float = 7.5
    amin: float = 1e-10

    def __post_init__(self) -> None:
        # First: a rate outside what load() reads (500 Hz) failed at the first file, blamed on "load: sr".
        _check_rate(self.sample_rate, "front end: sample_rate")
        _check_settings(
            self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax, self.norm,
            self.hop_length, self.win_length, self.htk,
        )
        if not _is_duration(self.seconds) or self.n_samples < self.win_length:
            raise ConfigError(f"front end: seconds={self.seconds!r} must be a duration of at least one window and "
                              f"at most {MAX_SECONDS:g} s (minser.features.MAX_SECONDS); Recognizer scores longer "
                              "recordings in windows of this length")
        _check_amin(self.amin)
        # Checked numpy scalars (np.int64(40)) become Python numbers: to_dict() goes to json.dumps (cache keys,
        # checkpoints), which rejects numpy types.
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("fmin", "fmax", "seconds", "amin"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else float(value))

    @property
    def n_samples(self) -> int:
        """Samples per utterance after padding or cutting: ``round(seconds * sample_rate)`` (120000)."""
        return round(self.seconds * self.sample_rate)

    @property
    def n_frames(self) -> int:
        """Frames per utterance: the centred frames less the last one, ``n_samples // hop_length`` (750)."""
        return self.n_samples // self.hop_length

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (stored in checkpoints and feature caches)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings: Mapping) -> FrontEnd:
        """Rebuild from :meth:`to_dict`'s output; missing keys take defaults, unknown keys raise ConfigError."""
        if not isinstance(settings, Mapping):
            raise ConfigError(f"front end: settings must be a dict, got {type(settings).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"front end: unknown settings {unknown}; known: {sorted(known)}")
        return cls(**settings)


def _check_frontend(frontend: object, name: str) -> FrontEnd:
    """``frontend``, or ConfigError naming ``name`` (the function it was given to) unless it is a FrontEnd:
    a dict of settings reached an AttributeError."""
    if not isinstance(frontend, FrontEnd):
        raise ConfigError(f"{name}: frontend must be a FrontEnd, got {type(frontend).__name__}; "
                          "use FrontEnd.from_dict(settings) for stored settings")
    return frontend


def _checked_waves(waves: np.ndarray | Sequence[np.ndarray], frontend: FrontEnd) -> list[np.ndarray]:
    """Validate raw waves: a list of 1-D float32 arrays, each named in errors (``waves`` / ``waves[i]``)."""
    check = dict(sr=frontend.sample_rate, min_length=frontend.win_length)
    if isinstance(waves, np.ndarray):
        array = check_wave(waves, "waves", **check)
        return list(array) if array.ndim == 2 else [array]
    if not isinstance(waves, Sequence) or len(waves) == 0:
        raise AudioError("waves: expected an array (samples,) / (batch, samples) or a non-empty list of 1-D arrays")
    checked = []
    for index, wave in enumerate(waves):
        wave = check_wave(wave, f"waves[{index}]", **check)
        if wave.ndim != 1:
            raise AudioError(f"waves[{index}]: expected a 1-D wave (samples,), got shape {wave.shape}")
        checked.append(wave)
    return checked


def extract(
    waves: np.ndarray | Sequence[np.ndarray], frontend: FrontEnd = FrontEnd()
) -> tuple[np.ndarray, np.ndarray]:
    """Model input from raw waves: ``(features, lengths)``.

    ``waves`` is ``(samples,)``, ``(batch, samples)`` or a list of 1-D waves of any lengths, at
    ``frontend.sample_rate``. Each is zero-padded or cut to ``frontend.n_samples`` (120000) and turned
    into log-Mel features, float32 ``(batch, n_mels, n_frames)`` (40 x 750: the last centred frame is
    dropped). ``lengths`` int64 ``(batch,)`` counts the frames that carry signal,
    ``min(n_frames, 1 + samples // hop_length)`` of each unpadded wave.
    """
    fe = _check_frontend(frontend, "extract")
    checked = _checked_waves(waves, fe)
    # Cutting here and padding inside _mel_power_rows equals fit_length(), without a padded copy.
    features = _mel_power_rows(
        (wave[: fe.n_samples] for wave in checked), len(checked), fe.n_frames, fe.sample_rate,
        fe.n_fft, fe.hop_length, fe.win_length, fe.n_mels, fe.fmin, fe.fmax, fe.htk, fe.norm, fe.amin,
    )
    samples = np.array([len(wave) for wave in checked], dtype=np.int64)
    return features, np.minimum(fe.n_frames, 1 + samples // fe.hop_length)
