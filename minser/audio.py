"""Reading and shaping waveforms: float32 mono audio at 16 kHz.

- :func:`load` reads any file soundfile can read, downmixes to mono and resamples (:func:`resample`).
- :func:`fit_length` zero-pads or cuts to the paper's fixed 7.5 s.
- :func:`add_white_noise` adds white noise at an exact signal-to-noise ratio (the paper's
  augmentation of training and validation data).
- :func:`check_wave` is the validation every entry point applies to arrays, so bad input fails
  with an :class:`~minser.errors.AudioError` that names the file or array, never deep inside numpy.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from collections.abc import Iterable
from math import gcd
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile

from minser.errors import AudioError, ConfigError

SAMPLE_RATE = 16000
SECONDS = 7.5
# One analysis window: 25 ms, i.e. 400 samples at 16 kHz (the front end's win_length).
MIN_SECONDS = 0.025

# Audio file suffixes and the libsndfile format and codec each holds (None: any codec of that format).
# Which of them a libsndfile reads depends on its build (MP3 needs 1.1 or later, Opus libopus), so it is asked.
_SNDFILE_FORMATS = {
    ".wav": ("WAV", None),
    ".flac": ("FLAC", None),
    ".ogg": ("OGG", None),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", None),
    ".aiff": ("AIFF", None),
    ".aif": ("AIFF", None),
}
# Audio that libsndfile reads in no build: these codecs and containers need a converter such as ffmpeg.
_FOREIGN_SUFFIXES = (".m4a", ".mp4", ".aac", ".wma", ".amr", ".3gp", ".ac3", ".ape", ".wv", ".webm", ".mka")


def _sndfile_reads(fmt: str, codec: str | None) -> bool:
    """Whether this libsndfile reads ``fmt`` (a soundfile format name) holding ``codec`` (None: any)."""
    return fmt in soundfile.available_formats() and (codec is None or codec in soundfile.available_subtypes(fmt))


# Lower-case suffixes of the audio files soundfile here reads, and of those it cannot.
AUDIO_SUFFIXES = tuple(suffix for suffix, (fmt, codec) in _SNDFILE_FORMATS.items() if _sndfile_reads(fmt, codec))
UNREADABLE_SUFFIXES = tuple(sorted(set(_SNDFILE_FORMATS).difference(AUDIO_SUFFIXES))) + _FOREIGN_SUFFIXES

__all__ = [
    "AUDIO_SUFFIXES",
    "MAX_PEAK",
    "MAX_SAMPLE_RATE",
    "MAX_SECONDS",
    "MIN_SAMPLE_RATE",
    "MIN_SECONDS",
    "SAMPLE_RATE",
    "SECONDS",
    "UNREADABLE_SUFFIXES",
    "add_white_noise",
    "check_peak",
    "check_wave",
    "conversion_example",
    "file_identity",
    "file_problem",
    "first_repeated_file",
    "fit_length",
    "load",
    "min_samples",
    "resample",
]


# Sample rates audio may have: from below telephone speech to studio audio (accepted, not equally well
# labelled: the default model saw 16 kHz audio only; docs/MODEL_CARD.md "Limits"). Past them, resampling to
# 16 kHz takes minutes and gigabytes (a header's 1 Hz upsamples 16000x).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000

# Float samples past this are not [-1, 1] audio (a clipped recording stays near 1); 16-bit PCM cast to float
# without scaling reaches thousands.
MAX_PEAK = 16.0

# Longest utterance a front end pads or cuts to, 80 times the paper's 7.5 s: beyond it a damaged or edited
# setting (a checkpoint's seconds=1e9) would allocate gigabytes per utterance before anything could fail.
MAX_SECONDS = 600.0


def min_samples(sr: int = SAMPLE_RATE) -> int:
    """The shortest usable audio at ``sr`` Hz: one 25 ms analysis window (400 samples at 16 kHz), rounded up,
    so that audio that long is still that long once resampled to any other rate."""
    return math.ceil(MIN_SECONDS * sr - 1e-9)  # 1e-9: 0.025 * 16000 is 400.00000000000006 in floats


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_duration(seconds: object) -> bool:
    """Whether ``seconds`` is a positive number of at most :data:`MAX_SECONDS` (NaN, inf and 1e12 failed deep in
    numpy: a ValueError, an OverflowError, a MemoryError); whether it is long enough is the caller's check."""
    return _is_number(seconds) and 0 < seconds <= MAX_SECONDS  # False for NaN; no float() to overflow on 10**400


def _check_rate(rate: object, name: str) -> int:
    """``rate`` as an int, or ConfigError naming ``name`` (e.g. ``"resample: sr"``) unless it is a whole number
    of Hz in :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE` (0 and negatives reached scipy's "up and down
    must be >= 1"; 22050.5 was truncated)."""
    whole = isinstance(rate, (int, np.integer)) and not isinstance(rate, bool)
    if not whole or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise ConfigError(f"{name}={rate!r} is not a sample rate: give a whole number of Hz from {MIN_SAMPLE_RATE} "
                          f"to {MAX_SAMPLE_RATE}, e.g. {SAMPLE_RATE}")
    return int(rate)


def check_peak(wave: np.ndarray, name: str, fix: str) -> None:
    """Raise AudioError naming ``name`` when float samples reach past :data:`MAX_PEAK`, with ``fix``."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > MAX_PEAK:
        raise AudioError(f"{name}: samples reach {peak:.0f}, but float audio lies in [-1, 1]; this looks like "
                         f"unscaled integer PCM; {fix}")


def _soundfile_name(path: Path) -> str | bytes:
    """``path`` as soundfile opens it: soundfile encodes a name as strict UTF-8, so a POSIX name that is not
    UTF-8 (whose bytes Python keeps as surrogates) is passed as the bytes the file system holds."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


# The widths of integer PCM wider than 8 bits, in bits.
_PCM_BITS = (16, 24, 32)


def _conversion_advice(array: np.ndarray) -> str:
    """How to scale the PCM integers in ``array`` to [-1, 1] floats."""
    dtype = array.dtype
    if dtype.kind == "i":
        bits = 8 * dtype.itemsize
        if bits > max(_PCM_BITS) and array.size:
            # No PCM is 64-bit: int64 is what a Python list of ints becomes, so the values tell the width
            # (dividing 16-bit samples by 2**63 silences them). Python ints: abs() of the int64 minimum overflows.
            peak = max(-int(array.min()), int(array.max()))
            bits = next((width for width in _PCM_BITS if peak <= 2 ** (width - 1)), bits)
        return f"convert {bits}-bit PCM integers first: samples / {2 ** (bits - 1)}"
    if dtype.kind == "u":  # unsigned PCM (8-bit WAV) is centred on half its range
        half = 2 ** (8 * dtype.itemsize - 1)
        return f"convert unsigned PCM first: (samples - {half}) / {half}"
    return "convert the samples to floats in [-1, 1] first (e.g. int16 PCM / 32768)"


def check_wave(
    wave: object, name: str = "array", *, sr: int = SAMPLE_RATE, min_length: int | None = None
) -> np.ndarray:
    """Validate ``wave`` and return it as a float32 array of shape ``(samples,)`` or ``(batch, samples)``.

    Raises :class:`AudioError` naming ``name`` when the array is not 1-D or 2-D, not floating point,
    has zero samples, holds NaN or Inf, or is shorter than ``min_length`` samples (default: one
    25 ms analysis window at ``sr``, i.e. 400 samples at 16 kHz).
    """
    try:
        array = np.asarray(wave)
    except (TypeError, ValueError) as exc:
        raise AudioError(f"{name}: cannot be read as a numeric array ({exc}); pass a float array of samples") from exc
    if array.dtype.kind != "f":
        raise AudioError(f"{name}: samples have dtype {array.dtype}, expected floating point in [-1, 1]; "
                         f"{_conversion_advice(array)} or read files with minser.audio.load")
    if array.ndim not in (1, 2):
        raise AudioError(f"{name}: expected shape (samples,) or (batch, samples), got {array.shape}; pass one "
                         "waveform or a batch of them, channels averaged to mono "
                         "(minser.audio.load does that for files)")
    if array.shape[-1] == 0:
        raise AudioError(f"{name}: has zero samples; the audio is empty")
    needed = min_samples(sr) if min_length is None else min_length
    if array.shape[-1] < needed:
        raise AudioError(
            f"{name}: has {array.shape[-1]} samples, shorter than one analysis window "
            f"({needed} samples at {sr} Hz); use longer audio"
        )
    if not np.isfinite(array).all():
        raise AudioError(f"{name}: contains NaN or Inf samples; the audio is corrupt")
    return array.astype(np.float32, copy=False)


def load(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as float32 mono samples at ``sr`` Hz, shape ``(samples,)``.

    Any format soundfile reads (:data:`AUDIO_SUFFIXES`: WAV, FLAC, OGG, Opus, MP3, AIFF where this
    libsndfile has them). Multi-channel audio is averaged to mono; a different sample rate is converted
    with a polyphase filter (``scipy.signal.resample_poly``). Raises :class:`AudioError` naming the file
    when it is missing, a directory or another non-regular file (a named pipe, a device), unreadable,
    corrupt, truncated (a WAV, RF64, AIFF or Ogg file holding fewer bytes than its headers declare, and FLAC
    or CAF files libsndfile finds cut; a W64, AU, NIST or MP3 file cut short reads as the shorter audio
    it holds), empty, at a sample rate outside :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE`,
    non-finite, shorter than one 25 ms analysis window (counted at the file's rate), or of float samples
    reaching past :data:`MAX_PEAK` (integer PCM saved as float without scaling). An ``sr`` that is not a whole
    number of Hz in that range raises :class:`ConfigError`.
    """
    sr = _check_rate(sr, "load: sr")
    path = Path(path)
    _check_regular_file(path)
    try:
        shortfall = _shortfall(path)
    except OSError as exc:
        raise AudioError(f"{path}: cannot be opened ({exc.strerror}); check that the file is readable") from exc
    except _HeadersOnly:
        raise AudioError(f"{path}: has zero samples: its Ogg stream holds codec headers and no audio; the audio is "
                         "empty (or the file was cut short right after its headers)") from None
    if shortfall:
        raise AudioError(f"{path}: is truncated: {shortfall}; the file was cut short (an interrupted copy or "
                         "recording?): copy or export it again")
    try:
        samples, file_sr = soundfile.read(_soundfile_name(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{path}: cannot be read as audio ({exc}); {_unreadable_advice(path)}") from exc
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: has zero samples; the audio is empty")
    if not MIN_SAMPLE_RATE <= file_sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path}: its header gives a sample rate of {file_sr} Hz, outside {MIN_SAMPLE_RATE} to "
                         f"{MAX_SAMPLE_RATE} Hz; the header is damaged or wrong: fix the rate and save it again")
    # Checked at the file's own rate, so that a message counts the file's samples; resampling keeps it finite
    # float32, and one analysis window long (min_samples rounds up).
    mono = check_wave(samples.mean(axis=1, dtype=np.float32), str(path), sr=file_sr)
    check_peak(mono, str(path), "divide its 16-bit samples by 32768 and save it again")
    return _resample(mono, file_sr, sr)


# Names of the files that are neither regular files nor directories, for messages.
_SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                  (stat.S_ISBLK, "a device"))


def file_problem(path: Path) -> str | None:
    """Why ``path`` is no regular file (after symlinks), as the end of a sentence naming it, or None when it is one.

    ``"does not exist"``, ``"is a symbolic link to <target>, which does not exist"``, ``"is a directory"``,
    ``"is not a regular file but a named pipe"`` (a socket, a device), ``"does not exist: a folder on its way
    is a file"``, or ``"cannot be examined (<reason>)"`` (no permission on a folder on the way, a name too
    long). Only stats the path: opening a named pipe to read would wait until something writes to it.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():  # a moved corpus leaves links behind: say which target went missing
            return f"is a symbolic link to {os.readlink(path)}, which does not exist"
        return "does not exist"
    except NotADirectoryError:  # "a.wav/b.wav": the first part is a file
        return "does not exist: a folder on its way is a file"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = next((name for is_kind, name in _SPECIAL_FILES if is_kind(mode)), "a special file")
    return f"is not a regular file but {kind}"


def file_identity(path: Path) -> tuple[int, int]:
    """``(device, inode)`` of the file at ``path``: the same for all its names (``a.wav``, ``./a.wav``,
    a symlink, a hard link), where comparing resolved paths misses hard links."""
    status = path.stat()
    return status.st_dev, status.st_ino


def first_repeated_file(paths: Iterable[Path]) -> tuple[int, int] | None:
    """``(i, j)``, ``i < j``, for the first of ``paths`` (the ``j``-th) that names the file an earlier one
    (the ``i``-th) names, by :func:`file_identity`; None when they name different files. A path that cannot
    be stat'ed is passed over: whoever opens it reports it."""
    seen: dict[tuple[int, int], int] = {}
    for index, path in enumerate(paths):
        try:
            first = seen.setdefault(file_identity(path), index)
        except OSError:
            continue
        if first != index:
            return first, index
    return None


def _check_regular_file(path: Path) -> None:
    """Raise AudioError unless ``path`` is a regular file (after symlinks)."""
    problem = file_problem(path)
    if problem is not None:
        advice = "pass the path of an audio file" if os.path.exists(path) else "check the path"  # never raises
        raise AudioError(f"{path}: {problem}; {advice}")


def conversion_example(path: Path) -> str:
    """A command that converts ``path`` (audio soundfile cannot read, e.g. ``.m4a``) to WAV, for messages."""
    return f"`ffmpeg -i {path.name} {path.stem}.wav`"


def _unreadable_advice(path: Path) -> str:
    """What to do with a file soundfile failed to read: convert it if its format is one soundfile lacks."""
    if path.suffix.lower() in UNREADABLE_SUFFIXES:
        return f"soundfile cannot read {path.suffix} files: convert it first (e.g. {conversion_example(path)})"
    return "the file is corrupt or not a sound format"


# IFF containers whose header declares the length of every chunk: byte order, the chunk of samples, and
# the bytes of that chunk's own fields before the samples (AIFF's SSND offset and block size).
_CONTAINERS = {b"RIFF": ("little", b"data", 0), b"FORM": ("big", b"SSND", 8)}
# A stream written to a pipe cannot go back to fill in its lengths and leaves a placeholder, which libsndfile
# reads as "to the end of the file": 0xFFFFFFFF (ffmpeg), 0x7FFFF000 (SoX's MS_UNSPEC), 0x7FFFFFFF and
# 0x7FFFFF00 (arecord). A chunk really holding that many bytes (2 GiB and more) goes unchecked: rare in speech.
_UNKNOWN_SIZES = frozenset({0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF, 0x7FFFFF00})
# An Ogg page header: capture pattern, version, flags, granule position, stream serial number, page
# number, CRC, number of segments (then that many segment lengths, then the segments).
_OGG_PAGE = struct.Struct("<4sBBqIIIB")
_OGG_END_OF_STREAM = 0x04


class _HeadersOnly(Exception):
    """An Ogg file whose only pages are its codec headers: no samples were ever written (libsndfile
    writes an empty Opus file so, without the end-of-stream page, which is not a cut file)."""


def _shortfall(path: Path) -> str | None:
    """How a WAV (RIFF or RF64), AIFF or Ogg file holds fewer bytes than its header declares (or, for Ogg,
    ends before its last page), or None when it holds them all or is another format, whose decoder reports
    damage itself.

    libsndfile clamps the declared length to the bytes present and reads on silently (a truncated file
    reads as shorter audio, or as none), so the headers are walked here. Raises ``_HeadersOnly`` for an Ogg
    file without a page of samples.
    """
    size = path.stat().st_size
    with path.open("rb") as file:
        magic = file.read(4)
        file.seek(0)
        if magic in _CONTAINERS:
            return _iff_shortfall(file, size, *_CONTAINERS[magic])
        if magic == b"OggS":
            return _ogg_shortfall(file, size)
        if magic == b"RF64":
            return _rf64_shortfall(file, size)
    return None


def _rf64_shortfall(file: BinaryIO, size: int) -> str | None:
    """:func:`_shortfall` of an RF64 file (a WAV past 4 GiB), whose 64-bit sizes sit in its ds64 chunk."""
    head = file.read(36)  # RF64, a 32-bit size of 0xFFFFFFFF, WAVE, the ds64 id and size, then its RIFF size
    if len(head) < 36 or head[12:16] != b"ds64":
        return None
    declared_total = int.from_bytes(head[20:28], "little") + 8
    if declared_total > size:
        return f"it ends after {size} bytes, but its ds64 chunk declares a file of {declared_total} bytes"
    return None


def _iff_shortfall(file: BinaryIO, size: int, order: str, samples_id: bytes, fields: int) -> str | None:
    """:func:`_shortfall` of a RIFF (WAV) or FORM (AIFF) file of ``size`` bytes, read from its start."""
    head = file.read(12)
    if len(head) < 12:
        return None
    declared_total = int.from_bytes(head[4:8], order) + 8
    while len(chunk := file.read(8)) == 8:
        declared = int.from_bytes(chunk[4:], order)
        present = size - file.tell()
        if chunk[:4] == samples_id:
            if declared not in _UNKNOWN_SIZES and declared > present:
                return (f"its {samples_id.decode()} chunk declares {declared - fields} bytes of samples "
                        f"but the file holds {max(present - fields, 0)}")
            return None
        file.seek(declared + declared % 2, os.SEEK_CUR)  # chunks are padded to an even length
    if declared_total - 8 not in _UNKNOWN_SIZES and declared_total > size:
        return f"it ends after {size} bytes, inside its header, which declares a file of {declared_total} bytes"
    return None


def _ogg_shortfall(file: BinaryIO, size: int) -> str | None:
    """:func:`_shortfall` of an Ogg file (Vorbis, Opus, ...) of ``size`` bytes, read from its start.

    Each page declares its length, and each stream's last page carries the end-of-stream flag, so a cut
    inside a page and a cut between two pages both show.
    """
    open_streams: set[int] = set()
    holds_audio = False  # whether a page ends a packet of samples: header pages have granule position 0
    while header := file.read(_OGG_PAGE.size):
        if not b"OggS".startswith(header[:4]):
            return None  # not a page: damage that the decoder reports, or trailing data it skips
        if len(header) < _OGG_PAGE.size or len(lengths := file.read(header[-1])) < header[-1]:
            return f"it ends after {size} bytes, inside the header of an Ogg page"
        end = file.tell() + sum(lengths)
        if end > size:
            return f"it ends after {size} bytes, inside an Ogg page that runs to byte {end}"
        _, _, flags, granule, serial, _, _, _ = _OGG_PAGE.unpack(header)
        holds_audio |= granule > 0
        if flags & _OGG_END_OF_STREAM:
            open_streams.discard(serial)
        else:
            open_streams.add(serial)
        file.seek(end)
    if open_streams and not holds_audio:
        raise _HeadersOnly
    if open_streams:
        return f"its Ogg stream stops after {size} bytes, without the page that ends it"
    return None


def resample(wave: np.ndarray, orig_sr: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``wave`` ``(samples,)`` or ``(batch, samples)`` from ``orig_sr`` to ``sr`` Hz, float32.

    A polyphase filter (``scipy.signal.resample_poly`` with the reduced ratio ``sr / orig_sr``);
    the same rate returns the checked wave (``wave`` itself when it is float32). ``wave`` gets
    :func:`check_wave` at ``orig_sr`` (AudioError); a rate that is not a whole number of Hz in
    :data:`MIN_SAMPLE_RATE` to :data:`MAX_SAMPLE_RATE` raises :class:`ConfigError`.
    """
    orig_sr, sr = _check_rate(orig_sr, "resample: orig_sr"), _check_rate(sr, "resample: sr")
    return _resample(check_wave(wave, sr=orig_sr), orig_sr, sr)  # integer PCM came back as unscaled float32


def _resample(wave: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """:func:`resample` of a checked float32 ``wave`` between checked rates (:func:`load` has checked both:
    checking again would scan every file's samples twice)."""
    if orig_sr == sr:
        return wave
    # Imported here: scipy.signal takes about 0.6 s to import (stats, optimize, ...), and 16 kHz audio never needs it.
    from scipy.signal import resample_poly

    divisor = gcd(orig_sr, sr)
    return resample_poly(wave, sr // divisor, orig_sr // divisor, axis=-1).astype(np.float32)


def fit_length(wave: np.ndarray, seconds: float = SECONDS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-pad at the end or cut ``wave`` to ``round(seconds * sr)`` samples (120000 by default).

    ``wave`` is ``(samples,)`` or ``(batch, samples)``; the result has the same leading shape, float32.
    ``seconds`` that is not a number giving at least one sample at ``sr`` and at most :data:`MAX_SECONDS`
    raises :class:`ConfigError`.
    """
    sr = _check_rate(sr, "fit_length: sr")  # sr=0 was blamed on seconds; NaN was a raw ValueError
    if not _is_duration(seconds) or (target := round(seconds * sr)) <= 0:
        raise ConfigError(f"fit_length: seconds={seconds!r} must be a duration of at least one sample at sr={sr} "
                          f"and at most {MAX_SECONDS:g} s (minser.audio.MAX_SECONDS)")
    wave = check_wave(wave, sr=sr)
    have = wave.shape[-1]
    if have >= target:
        return wave[..., :target]
    padding = [(0, 0)] * (wave.ndim - 1) + [(0, target - have)]
    return np.pad(wave, padding)


def add_white_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator | int | None) -> np.ndarray:
    """Return ``wave`` plus Gaussian white noise at exactly ``snr_db`` dB signal-to-noise ratio.

    The noise is scaled so that ``10 * log10(mean(wave**2) / mean(noise**2)) == snr_db`` holds for
    the noise actually drawn (not just in expectation), per utterance for a ``(batch, samples)`` batch.
    Both means run over the whole wave: a recording longer than the 7.5 s that :func:`minser.features.extract`
    keeps has that SNR over all of it, not over the part kept. ``rng`` is a ``numpy.random.Generator`` or a
    seed. Silent audio has no defined SNR and raises :class:`AudioError`, as does noise so loud that samples
    reach past :data:`MAX_PEAK`; an SNR that is not a finite number, or an ``rng`` numpy cannot seed from,
    raises :class:`ConfigError`.
    """
    if isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.number)) or not np.isfinite(snr_db):
        # inf returned the clean wave as its "noisy copy"; NaN and -inf were said to overflow the samples
        raise ConfigError(f"snr_db={snr_db!r}: give a finite signal-to-noise ratio in dB (training uses 30)")
    wave = check_wave(wave)
    try:
        rng = np.random.default_rng(rng)
    except (TypeError, ValueError) as exc:  # -1 and 1.5 were numpy's errors, naming no argument
        raise ConfigError(f"rng={rng!r}: give a numpy.random.Generator, a non-negative integer seed or None "
                          f"({exc})") from exc
    signal_power = np.mean(np.square(wave, dtype=np.float64), axis=-1, keepdims=True)
    if np.any(signal_power == 0):
        raise AudioError("array: is silent (all zeros), so no noise level gives a defined SNR; drop silent audio")
    noise = rng.standard_normal(wave.shape)
    noise_power = np.mean(np.square(noise), axis=-1, keepdims=True)
    noise *= np.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    noisy = (wave + noise).astype(np.float32)
    peak = float(np.max(np.abs(noisy)))
    if not peak <= MAX_PEAK:  # the front end would read the copy, or overflow on it, as nothing like speech
        raise AudioError(f"white noise at {snr_db:g} dB SNR takes the samples to {peak:.3g}, far past float "
                         f"audio's [-1, 1]; give a higher SNR (training uses 30 dB, --noise-snr)")
    return noisy
