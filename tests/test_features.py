"""minser.features against librosa (the test oracle), and the extract() contract.

How agreement is measured. The Mel power spectrogram spans ~10 orders of magnitude, and both
implementations round in float32, so an element-wise relative error is meaningless for elements
far below the peak. Two checks, both strict:

- normwise: ``max |ours - ref| / max |ref| <= 1e-5`` per spectrogram (observed <= 5e-7 on EmoDB);
- element-wise: ``|ours - ref| <= 1e-5 * |ref| + 1e-9 * max |ref|``, i.e. 1e-5 relative error for
  every element more than ~1e-4 of the peak (within 40 dB of it), and an absolute error of 1e-9 of
  the peak below that (observed <= 1.4e-10 of the peak on EmoDB).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest

from minser.audio import fit_length, load
from minser.errors import AudioError, ConfigError
from minser.features import (
    FrontEnd,
    extract,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_power,
    mel_to_hz,
    most_mel_bands,
    power_to_db,
)

EMODB_FILES = ("03a01Fa.wav", "08b09Tb.wav", "11a04Nd.wav", "14a07Wc.wav", "16b10Wb.wav")
RTOL = 1e-5
ATOL_OF_PEAK = 1e-9


def _assert_agrees(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape and ours.dtype == np.float32
    peak = np.abs(ref).max()
    assert np.abs(ours - ref).max() / peak <= RTOL
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL_OF_PEAK * peak)


def _librosa_mel(wave: np.ndarray, **options: object) -> np.ndarray:
    settings = dict(sr=16000, n_fft=400, hop_length=160, win_length=400, n_mels=40) | options
    return librosa.feature.melspectrogram(
        y=wave, window="hann", center=True, pad_mode="constant", power=2.0, **settings
    )


@pytest.fixture(scope="module")
def emodb_waves(emodb_root: Path) -> list[np.ndarray]:
    return [load(emodb_root / "wav" / name) for name in EMODB_FILES]


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("norm", ["slaney", None])
@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "fmin", "fmax"),
    [
        (16000, 400, 40, 0.0, None),
        (16000, 512, 80, 50.0, 7600.0),
        (22050, 2048, 128, 0.0, None),
        (8000, 256, 24, 20.0, 3000.0),
        (16000, 401, 40, 0.0, None),  # odd sizes: bins at k * sr / n_fft, the last one short of sr / 2
        (16000, 511, 64, 0.0, None),
    ],
)
def test_filterbank_matches_librosa(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, htk: bool, norm: str | None
) -> None:
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    assert ours.shape == (n_mels, 1 + n_fft // 2)
    _assert_agrees(ours, ref)


def test_filterbank_is_a_fresh_writable_copy() -> None:
    bank = mel_filterbank(16000, 400, 40)
    bank[:] = 0
    assert mel_filterbank(16000, 400, 40).any()


@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_matches_librosa_and_inverts(htk: bool) -> None:
    hz = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0, 22050.0])
    np.testing.assert_allclose(hz_to_mel(hz, htk), librosa.hz_to_mel(hz, htk=htk), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz, htk), htk), hz, rtol=1e-12, atol=1e-9)


def test_mel_power_matches_librosa_on_emodb(emodb_waves: list[np.ndarray]) -> None:
    for wave in emodb_waves:
        _assert_agrees(mel_power(wave), _librosa_mel(wave))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"win_length": 320},
        {"n_fft": 512, "hop_length": 128, "n_mels": 64, "htk": True, "norm": None},
        {"fmin": 80.0, "fmax": 7000.0},
    ],
)
def test_mel_power_matches_librosa_on_random_signals(options: dict) -> None:
    rng = np.random.default_rng(3)
    for samples in (512, 1234, 16000):
        wave = (0.1 * rng.standard_normal(samples)).astype(np.float32)
        wave *= np.linspace(0.01, 1.0, samples, dtype=np.float32)  # a dynamic range, not flat noise
        _assert_agrees(mel_power(wave, **options), _librosa_mel(wave, **options))


def test_mel_power_of_zero_padded_waves_matches_librosa() -> None:
    # Frames wholly in trailing zeros are skipped (their power is exactly 0); check the boundary frames.
    rng = np.random.default_rng(8)
    for samples in (400, 401, 439, 440, 441, 600, 5000):
        wave = np.zeros(8000, dtype=np.float32)
        wave[:samples] = 0.1 * rng.standard_normal(samples)
        ours, ref = mel_power(wave), _librosa_mel(wave)
        _assert_agrees(ours, ref)
        voiced = -(-(samples + 200) // 160)  # frames that reach a non-zero sample
        assert ours[:, : voiced - 1].all() and not ours[:, voiced:].any()


def test_power_to_db_matches_librosa() -> None:
    power = np.concatenate([np.zeros(3), np.logspace(-14, 3, 200)]).astype(np.float32)
    ref = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
    ours = power_to_db(power.copy())
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    assert ours[0] == pytest.approx(-100.0)  # the floor: 10 * log10(amin)


def test_log_mel_matches_librosa_in_db(emodb_waves: list[np.ndarray]) -> None:
    # Per element, 5e-3 dB is a relative power error of 1.2e-3: reached only by the elements far
    # below the peak (see the module docstring); the worst seen on EmoDB is 1.2e-3 dB.
    for wave in emodb_waves[:2]:
        ref = librosa.power_to_db(_librosa_mel(wave), ref=1.0, amin=1e-10, top_db=None)
        ours = log_mel(wave)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-3)


def test_log_mel_of_silence_is_the_floor() -> None:
    # -100 dB up to float32 rounding of amin = 1e-10.
    np.testing.assert_allclose(log_mel(np.zeros(1600, dtype=np.float32)), np.full((40, 11), -100.0), rtol=0, atol=1e-4)


def test_shapes_single_and_batch() -> None:
    rng = np.random.default_rng(4)
    batch = (0.1 * rng.standard_normal((3, 120000))).astype(np.float32)
    assert log_mel(batch[0]).shape == (40, 751)  # 7.5 s, centred frames: 1 + 120000 // 160
    batched = log_mel(batch)
    assert batched.shape == (3, 40, 751) and batched.dtype == np.float32
    for row, features in zip(batch, batched):
        np.testing.assert_array_equal(log_mel(row), features)


def test_frontend_defaults_are_the_papers() -> None:
    frontend = FrontEnd()
    assert (frontend.sample_rate, frontend.n_fft, frontend.win_length, frontend.hop_length) == (16000, 400, 400, 160)
    assert (frontend.n_mels, frontend.seconds, frontend.amin) == (40, 7.5, 1e-10)
    assert frontend.n_samples == 120000 and frontend.n_frames == 750
    with pytest.raises(dataclasses.FrozenInstanceError):
        frontend.n_mels = 80  # type: ignore[misc]


def test_frontend_dict_round_trip_through_json() -> None:
    frontend = FrontEnd(n_mels=64, fmax=7600.0, htk=True, norm=None, seconds=3.0)
    assert FrontEnd.from_dict(json.loads(json.dumps(frontend.to_dict()))) == frontend
    assert FrontEnd.from_dict({}) == FrontEnd()


def test_a_frontend_of_numpy_numbers_is_the_one_of_python_numbers() -> None:
    """Its numpy scalars reached to_dict(), and cached_features' json.dumps raised "int64 is not JSON serializable"."""
    numpy_made = FrontEnd(sample_rate=np.int32(16000), n_mels=np.int64(40), fmax=np.float64(7600.0),
                          seconds=np.float32(1.5))
    plain = FrontEnd(n_mels=40, fmax=7600.0, seconds=1.5)
    assert numpy_made == plain and hash(numpy_made) == hash(plain)
    assert numpy_made.to_dict() == plain.to_dict()
    assert json.dumps(numpy_made.to_dict()) == json.dumps(plain.to_dict())
    assert all(type(value) in (int, float, bool, str, type(None)) for value in numpy_made.to_dict().values())


def test_frontend_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown settings.*'nmels'"):
        FrontEnd.from_dict({"nmels": 40})
    with pytest.raises(ConfigError, match="must be a dict"):
        FrontEnd.from_dict([("n_mels", 40)])  # type: ignore[arg-type]
    bad = [{"n_fft": "400"}, {"win_length": 512}, {"n_mels": 202}, {"hop_length": 0}, {"fmax": 9000.0},
           {"norm": "l2"}, {"htk": 1}, {"seconds": 0.01}, {"amin": 0.0},
           # were a ValueError / OverflowError from n_samples, and features all inf
           {"seconds": float("nan")}, {"seconds": float("inf")}, {"amin": float("inf")},
           # was accepted: predict with a checkpoint saying so then ran out of memory padding one clip
           {"seconds": 1e9}]
    for options in bad:
        with pytest.raises(ConfigError, match="front end: " + next(iter(options))):
            FrontEnd(**options)


@pytest.mark.parametrize("rate", [500, 999, 400000])
def test_frontend_refuses_a_sample_rate_load_cannot_give(rate: int) -> None:
    """Accepted before, then every file failed inside load, blamed on "load: sr"."""
    with pytest.raises(ConfigError, match=rf"^front end: sample_rate={rate} is not a sample rate: give a whole "
                                          r"number of Hz from 1000 to 384000, e.g. 16000$"):
        FrontEnd(sample_rate=rate, n_fft=40, win_length=40, hop_length=10, n_mels=10)


@pytest.mark.parametrize("options", [{"hop_length": 0}, {"amin": float("nan")}, {"htk": "no"}],
                         ids=["hop-0", "amin-nan", "htk-str"])
def test_log_mel_checks_its_settings_as_the_front_end_does(options: dict) -> None:
    """Before: a ZeroDivisionError, features all NaN, and htk="no" taken as True."""
    with pytest.raises(ConfigError, match="front end: " + next(iter(options))):
        log_mel(np.zeros(1000, dtype=np.float32), **options)


def test_n_mels_that_leave_a_band_without_a_bin_are_named() -> None:
    """n_mels up to the 201 frequency bins was accepted silently, yet from 150 bands at the defaults the lowest holds
    no bin: an all-zero filter, whose feature is -100 dB whatever the audio (201 bands had 19 such). A warning, as
    librosa gives: a checkpoint of an earlier version recording such a front end must still load."""
    assert mel_filterbank(16000, 400, 149).any(axis=1).all()
    advice = (r"; at these settings \(sample_rate=16000, fmin=0.0, fmax=None, htk=False\) every band holds a bin up "
              r"to n_mels=149: use at most that many Mel bands, or a larger n_fft$")
    for n_mels in (150, 201):
        with pytest.warns(UserWarning, match=rf"^front end: n_mels={n_mels} leaves Mel band 0 without a frequency bin "
                                             r"of the n_fft=400 FFT \(an all-zero filter, whose feature is the dB "
                                             r"floor whatever the audio\)" + advice):
            assert FrontEnd.from_dict(FrontEnd(n_mels=n_mels).to_dict()).n_mels == n_mels
    with pytest.warns(UserWarning, match=r"^front end: n_mels=150 leaves Mel band 0 "):
        np.testing.assert_allclose(log_mel(np.full(1000, 0.1, dtype=np.float32), n_mels=150)[0], -100.0, atol=1e-4)
    with pytest.raises(ConfigError, match=r"^front end: n_mels=202 exceeds the 201 frequency bins of an n_fft=400 FFT"
                                          + advice):
        FrontEnd(n_mels=202)
    with pytest.warns(UserWarning, match=r"fmax=30.0, htk=False\) no n_mels gives every band a bin: widen fmin..fmax "
                                         r"or use a larger n_fft$"):
        FrontEnd(fmax=30.0, n_mels=1)  # bins at 0 and 40 Hz: neither lies strictly inside the one band


@pytest.mark.parametrize(("sr", "n_fft", "fmin", "fmax", "htk"), [
    (16000, 400, 0.0, None, False),
    (16000, 401, 300.0, 4000.0, True),  # refused from 80 bands, accepted again at 81 to 90
    (22050, 256, 50.0, None, True),
    (22050, 256, 50.0, 4000.0, False),
])
def test_the_band_check_names_exactly_the_filterbanks_with_an_all_zero_row(
    sr: int, n_fft: int, fmin: float, fmax: float | None, htk: bool
) -> None:
    """The check derives the empty bands from the Mel points alone (it runs for every FrontEnd); librosa's bank says
    which are empty."""
    refused, empty = [], []
    for n_mels in range(1, n_fft // 2 + 2):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                FrontEnd(sample_rate=sr, n_fft=n_fft, win_length=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk)
        except ConfigError:  # more bands than bins
            refused.append(n_mels)
        else:
            if any("without a frequency bin" in str(w.message) for w in caught):
                refused.append(n_mels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns of the empty filters looked for here
            bank = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk)
        if not bank.any(axis=1).all():
            empty.append(n_mels)
    assert refused == empty and refused
    assert most_mel_bands(sr, n_fft, fmin, fmax, htk) == refused[0] - 1  # the "at most" the error offers


def test_extract_matches_log_mel_less_the_last_frame(emodb_waves: list[np.ndarray]) -> None:
    features, lengths = extract(emodb_waves)
    assert features.shape == (len(emodb_waves), 40, 750) and features.dtype == np.float32
    assert lengths.dtype == np.int64
    for wave, feature, length in zip(emodb_waves, features, lengths):
        np.testing.assert_array_equal(feature, log_mel(fit_length(wave))[:, :750])
        assert length == min(750, 1 + len(wave) // 160)


def test_extract_accepts_arrays_and_lists() -> None:
    rng = np.random.default_rng(5)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (400, 16000, 130000)]
    features, lengths = extract(waves)
    np.testing.assert_array_equal(lengths, [3, 101, 750])
    single, single_lengths = extract(waves[1])
    assert single.shape == (1, 40, 750)
    np.testing.assert_array_equal(single[0], features[1])
    np.testing.assert_array_equal(single_lengths, [101])
    padded = np.stack([fit_length(wave) for wave in waves])
    from_array, array_lengths = extract(padded)
    np.testing.assert_array_equal(from_array, features)
    np.testing.assert_array_equal(array_lengths, [750, 750, 750])  # an array carries no original lengths
    # Padding is digital silence: frames wholly past the signal sit on the floor.
    np.testing.assert_allclose(features[0, :, 4:], -100.0, rtol=0, atol=1e-4)


def test_extract_uses_the_frontend_settings() -> None:
    frontend = FrontEnd(n_mels=64, seconds=2.0, hop_length=200)
    wave = (0.1 * np.random.default_rng(6).standard_normal(40000)).astype(np.float32)
    features, lengths = extract(wave, frontend)
    assert features.shape == (1, 64, frontend.n_frames) == (1, 64, 160)
    np.testing.assert_array_equal(features[0], log_mel(wave[:32000], n_mels=64, hop_length=200)[:, :160])
    np.testing.assert_array_equal(lengths, [160])


def test_extract_names_bad_inputs() -> None:
    good = np.zeros(1000, dtype=np.float32)
    nan = good.copy()
    nan[5] = np.nan
    with pytest.raises(AudioError, match=r"^waves\[1\]: .*NaN or Inf"):
        extract([good, nan])
    with pytest.raises(AudioError, match=r"^waves\[0\]: has 100 samples"):
        extract([good[:100]])
    with pytest.raises(AudioError, match=r"^waves\[0\]: expected a 1-D wave"):
        extract([np.zeros((2, 1000), dtype=np.float32)])
    with pytest.raises(AudioError, match="non-empty list"):
        extract([])
    with pytest.raises(AudioError, match=r"^waves: .*NaN or Inf"):
        extract(nan)
    with pytest.raises(ConfigError, match="frontend must be a FrontEnd"):
        extract(good, FrontEnd().to_dict())  # type: ignore[arg-type]


def test_samples_whose_power_overflows_float32_are_named_not_turned_into_inf() -> None:
    quiet, loud = np.full(1000, 0.1, dtype=np.float32), np.full(1000, 1e18, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning before the error
        with pytest.raises(AudioError, match=r"^waves\[1\]: samples reach 1e\+18, .*overflows float32"):
            extract([quiet, loud])
        with pytest.raises(AudioError, match=r"^array: samples reach"):
            log_mel(loud)
        with pytest.raises(AudioError, match=r"^array\[1\]: samples reach"):
            mel_power(np.stack([quiet, loud]))
    assert np.isfinite(log_mel(np.full(1000, 1e15, dtype=np.float32))).all()  # loud, but within float32


@pytest.mark.parametrize("win_length", [200, 256, 400, 401, 551, 1024])
def test_the_window_is_scipys_periodic_hann_bit_for_bit(win_length: int) -> None:
    import scipy.signal

    from minser.features import _window

    expected = scipy.signal.get_window("hann", win_length, fftbins=True).astype(np.float32)
    np.testing.assert_array_equal(_window(win_length, win_length), expected)


def test_the_front_end_does_not_import_scipy_signal() -> None:
    """scipy.signal costs about 0.6 s to import (stats, optimize, ...); 16 kHz audio needs none of it."""
    import subprocess
    import sys

    code = "import sys, minser.features, minser.audio; print('scipy.signal' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_the_fft_uses_the_cpus_the_process_may_run_on() -> None:
    """Not os.cpu_count(): pinned to one CPU of many (taskset, a container), it would start a thread per host CPU."""
    import subprocess
    import sys

    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); import minser.features as f; "
            "print(f._WORKERS)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "1", done.stderr


def test_the_cached_sparse_filterbank_cannot_be_changed_in_place() -> None:
    """It is shared by every later log_mel: `bank.data *= 2` raised every band by 3 dB for the whole process."""
    from minser.features import _sparse_filterbank

    bank = _sparse_filterbank(16000, 400, 40, 0.0, None, False, "slaney")
    with pytest.raises(ValueError, match="read-only"):
        bank.data *= 2
