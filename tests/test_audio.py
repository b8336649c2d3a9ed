"""minser.audio: reading, downmixing, resampling, fixed length, exact-SNR noise and bad-input errors."""

from __future__ import annotations

import os
import re
import struct
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import soundfile
from scipy.signal import resample_poly

from minser.audio import AUDIO_SUFFIXES, add_white_noise, check_wave, fit_length, load, min_samples, resample
from minser.errors import AudioError, ConfigError


def _tone(freq: float, sr: int, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.argmax(spectrum) * sr / len(wave))


def _ratio(sr: int, file_sr: int) -> tuple[int, int]:
    divisor = gcd(sr, file_sr)
    return sr // divisor, file_sr // divisor


def test_load_emodb_matches_soundfile(emodb_root: Path) -> None:
    # 14a07Wc.wav has a PAD chunk before its data: a 44-byte-header reader would get it wrong.
    for name in ("03a01Fa.wav", "14a07Wc.wav"):
        path = emodb_root / "wav" / name
        wave = load(path)
        expected, sr = soundfile.read(path, dtype="float32")
        assert sr == 16000
        assert wave.dtype == np.float32 and wave.ndim == 1
        np.testing.assert_array_equal(wave, expected)


def test_load_downmixes_stereo_to_mean(tmp_path: Path) -> None:
    left, right = _tone(440, 16000), _tone(1000, 16000)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load(path), (left + right) / 2, atol=1e-7)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes; Windows names are UTF-16")
def test_load_reads_a_file_whose_name_is_not_utf8(tmp_path: Path) -> None:
    """Python keeps such a name's bytes as surrogates, which soundfile cannot encode: it was called corrupt."""
    wave = (0.1 * np.random.default_rng(0).standard_normal(1600)).astype(np.float32)
    name = os.fsdecode(os.fsencode(tmp_path) + b"/latin-1 \xe9.wav")
    soundfile.write(tmp_path / "plain.wav", wave, 16000, subtype="FLOAT")
    os.rename(tmp_path / "plain.wav", name)
    np.testing.assert_array_equal(load(name), wave)


@pytest.mark.parametrize("file_sr", [8000, 22050, 44100])
def test_load_resamples_with_polyphase_filter(tmp_path: Path, file_sr: int) -> None:
    tone = _tone(1000, file_sr)
    path = tmp_path / f"tone_{file_sr}.flac"
    soundfile.write(path, tone, file_sr, subtype="PCM_24")
    wave = load(path, sr=16000)
    stored, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_allclose(wave, resample_poly(stored, *_ratio(16000, file_sr)), atol=1e-6)
    assert wave.dtype == np.float32 and len(wave) == 8000
    assert _peak_hz(wave, 16000) == pytest.approx(1000, abs=2)


def test_resample_rows_and_identity() -> None:
    batch = np.stack([_tone(440, 22050), _tone(3000, 22050)])
    resampled = resample(batch, 22050, 16000)
    assert resampled.shape == (2, 8000) and resampled.dtype == np.float32
    for row, tone in zip(resampled, batch):
        np.testing.assert_array_equal(row, resample(tone, 22050, 16000))
    assert _peak_hz(resampled[1], 16000) == pytest.approx(3000, abs=2)
    assert resample(batch, 16000, 16000) is batch


@pytest.mark.parametrize("rate", [0, -8000, 22050.5, 16000.0, True, 999, 384001, None])
def test_a_rate_that_is_no_sample_rate_is_refused_by_name(tmp_path: Path, rate: object) -> None:
    """0 and -8000 were scipy's "up and down must be >= 1"; 22050.5 was truncated to 22050 silently."""
    tone = _tone(440, 16000)
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone, 16000)
    advice = (rf"={re.escape(repr(rate))} is not a sample rate: give a whole number of Hz from 1000 to 384000, "
              r"e\.g\. 16000$")
    calls = {"load: sr": lambda: load(path, sr=rate), "resample: sr": lambda: resample(tone, 16000, rate),
             "resample: orig_sr": lambda: resample(tone, rate), "fit_length: sr": lambda: fit_length(tone, sr=rate)}
    for name, call in calls.items():
        with pytest.raises(ConfigError, match=f"^{name}{advice}"):
            call()
    assert resample(tone, np.int64(16000), np.int32(8000)).shape == (4000,)  # numpy integers are rates


def test_resample_checks_the_wave() -> None:
    """int16 PCM came back as float32 of unscaled values (thousands), with no error."""
    with pytest.raises(AudioError, match=r"^array: samples have dtype int16, .*samples / 32768"):
        resample((_tone(440, 16000) * 32767).astype(np.int16), 16000, 8000)
    with pytest.raises(AudioError, match=r"^array: .*NaN or Inf"):
        resample(np.full(1000, np.nan, dtype=np.float32), 16000, 16000)


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"nope\.wav: does not exist; check the path$"):
        load(path)
    path.symlink_to(tmp_path / "moved.wav")
    with pytest.raises(AudioError, match=rf"nope\.wav: is a symbolic link to {re.escape(str(tmp_path))}/moved\.wav, "
                                         r"which does not exist; check the path$"):
        load(path)


def test_load_corrupt_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    with pytest.raises(AudioError, match=r"corrupt\.wav.*cannot be read as audio"):
        load(path)
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    with pytest.raises(AudioError, match=r"notes\.txt.*cannot be read as audio"):
        load(text)


def test_load_audio_soundfile_cannot_read_says_to_convert_it(tmp_path: Path) -> None:
    path = tmp_path / "talk.M4A"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: cannot be read as audio \(.*\); soundfile "
                                         r"cannot read \.M4A files: convert it first "
                                         r"\(e\.g\. `ffmpeg -i talk\.M4A talk\.wav`\)$"):
        load(path)


def _cut(path: Path, keep: int) -> Path:
    """``path`` with only its first ``keep`` bytes, as an interrupted copy leaves it."""
    path.write_bytes(path.read_bytes()[:keep])
    return path


@pytest.mark.parametrize("fmt", ["WAV", "AIFF"])
def test_load_truncated_file_says_truncated(tmp_path: Path, fmt: str) -> None:
    # soundfile reads what is left without complaint (1 s -> 7989 frames, or 0), so only the header's
    # declared length shows that samples are missing.
    path = tmp_path / f"cut.{fmt.lower()}"
    soundfile.write(path, _tone(440, 16000, seconds=1.0), 16000, format=fmt, subtype="PCM_16")
    full = path.stat().st_size
    truncated = rf"^{re.escape(str(path))}: is truncated: .* declares 32000 bytes of samples but the file holds"
    with pytest.raises(AudioError, match=rf"{truncated} 15978"):
        load(_cut(path, full - 16022))
    with pytest.raises(AudioError, match=rf"{truncated} 0; .* again"):
        load(_cut(path, full - 32000))  # cut right after the header: soundfile reads zero samples


def test_load_truncated_rf64_says_truncated(tmp_path: Path) -> None:
    """RF64, the WAV of long recordings, keeps its sizes in a ds64 chunk: cut, it read as shorter audio."""
    path = tmp_path / "long.wav"
    soundfile.write(path, _tone(440, 16000, seconds=1.0), 16000, format="RF64", subtype="PCM_16")
    full = path.stat().st_size
    assert load(path).shape == (16000,)
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: is truncated: it ends after {full // 2} bytes, "
                                         rf"but its ds64 chunk declares a file of {full} bytes"):
        load(_cut(path, full // 2))


def test_load_wav_cut_inside_its_header_says_truncated(tmp_path: Path) -> None:
    path = tmp_path / "header.wav"
    soundfile.write(path, _tone(440, 16000), 16000)
    truncated = rf"^{re.escape(str(path))}: is truncated: it ends after 40 bytes, inside its header, which declares"
    with pytest.raises(AudioError, match=rf"{truncated} a file of 16044 bytes"):
        load(_cut(path, 40))  # inside the data chunk's header: soundfile finds no data chunk


def _noise_ogg(path: Path, subtype: str) -> Path:
    """2 s of noise as Ogg: noise compresses badly, so the audio pages outweigh the codec headers."""
    wave = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    soundfile.write(path, wave, 16000, format="OGG", subtype=subtype)
    return path


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_load_truncated_ogg_says_truncated(tmp_path: Path, subtype: str) -> None:
    # Cut inside a page, libsndfile reads the pages before it without complaint, or reads zero samples.
    path = _noise_ogg(tmp_path / "cut.ogg", subtype)
    assert len(load(path)) == 32000
    full = path.read_bytes()
    last_page = full.rindex(b"OggS")
    half = len(full) // 2
    page_end = full.index(b"OggS", half)  # where the page holding byte `half` ends
    truncated = rf"^{re.escape(str(path))}: is truncated: "
    again = r"; the file was cut short \(an interrupted copy or recording\?\): copy or export it again$"
    with pytest.raises(AudioError, match=rf"{truncated}it ends after {half} bytes, inside an Ogg page that runs to "
                                         rf"byte {page_end}{again}"):
        load(_cut(path, half))
    path.write_bytes(full)
    with pytest.raises(AudioError, match=rf"{truncated}its Ogg stream stops after {last_page} bytes, without the page "
                                         rf"that ends it{again}"):
        load(_cut(path, last_page))  # cut between two pages
    path.write_bytes(full)
    with pytest.raises(AudioError, match=rf"{truncated}it ends after {last_page + 10} bytes, inside the header of an "
                                         rf"Ogg page{again}"):
        load(_cut(path, last_page + 10))


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0x7FFFF000, 0x7FFFFF00, 0x7FFFFFFF], ids=hex)
def test_load_reads_wav_written_to_a_pipe(tmp_path: Path, size: int) -> None:
    """A writer that cannot seek back leaves a placeholder size (ffmpeg, SoX, arecord): SoX's and arecord's
    were called truncated, though libsndfile reads them to the end of the file."""
    path = tmp_path / "pipe.wav"
    soundfile.write(path, _tone(440, 16000), 16000, subtype="PCM_16")
    expected, _ = soundfile.read(path, dtype="float32")
    data = bytearray(path.read_bytes())
    at = data.find(b"data") + 4
    data[4:8], data[at : at + 4] = struct.pack("<I", (size + 36) % 2**32), struct.pack("<I", size)
    path.write_bytes(data)
    np.testing.assert_array_equal(load(path), expected)
    data[at : at + 4] = struct.pack("<I", size - 2)  # a real size, just not one of the placeholders
    path.write_bytes(data)
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: is truncated: its data chunk declares "
                                         rf"{size - 2} bytes of samples but the file holds 16000"):
        load(path)


def test_load_reads_wav_files_with_extra_chunks(tmp_path: Path, emodb_root: Path) -> None:
    # The EmoDB files 14a07*.wav hold a PAD chunk before their data; a FLOAT file a fact and a PEAK chunk.
    for path in sorted((emodb_root / "wav").glob("14a07*.wav")):
        assert len(load(path)) == soundfile.info(path).frames
    path = tmp_path / "float.wav"
    soundfile.write(path, _tone(440, 16000), 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load(path), _tone(440, 16000))


def test_load_directory_says_it_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.mkdir()
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: is a directory; pass the path of an audio file$"):
        load(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_load_pipe_or_device_says_it_is_not_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    os.mkfifo(path)  # opening it to read would wait for a writer forever
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: is not a regular file but a named pipe; pass the "
                                         r"path of an audio file$"):
        load(path)
    with pytest.raises(AudioError, match=rf"^{re.escape(os.devnull)}: is not a regular file but a device; pass the "
                                         r"path of an audio file$"):
        load(os.devnull)


@pytest.mark.parametrize("name", ["empty.wav", "empty.ogg"])
def test_load_empty_file_names_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    soundfile.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: has zero samples; the audio is empty$"):
        load(path)


@pytest.mark.skipif(".opus" not in AUDIO_SUFFIXES, reason="this libsndfile has no Opus")
def test_load_empty_opus_says_empty_not_truncated(tmp_path: Path) -> None:
    # libsndfile writes no end-of-stream page for an Opus file without samples, and cannot read the file back.
    path = tmp_path / "empty.opus"
    soundfile.write(path, np.zeros(0, dtype=np.float32), 16000, format="OGG", subtype="OPUS")
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: has zero samples: its Ogg stream holds codec "
                                         r"headers and no audio; the audio is empty \(or the file was cut short right "
                                         r"after its headers\)$"):
        load(path)


def test_load_ogg_cut_after_its_headers_says_it_has_no_samples(tmp_path: Path) -> None:
    path = _noise_ogg(tmp_path / "cut.ogg", "VORBIS")
    full = path.read_bytes()
    first_audio_page = full.index(b"OggS", full.index(b"OggS", 1) + 1)  # Vorbis: 2 header pages, then audio
    with pytest.raises(AudioError, match=r": has zero samples: its Ogg stream holds codec headers and no audio"):
        load(_cut(path, first_audio_page))


def test_load_non_finite_file_names_it(tmp_path: Path) -> None:
    wave = _tone(440, 16000)
    wave[100] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, wave, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*NaN or Inf"):
        load(path)


def test_load_too_short_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    soundfile.write(path, _tone(440, 16000)[:399], 16000)
    with pytest.raises(AudioError, match=r"short\.wav.*399 samples.*400 samples"):
        load(path)


def test_a_short_file_is_counted_at_its_own_rate(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    soundfile.write(path, _tone(440, 8000)[:150], 8000)
    with pytest.raises(AudioError, match=r"short\.wav: has 150 samples, shorter than one analysis window \(200 "
                                         r"samples at 8000 Hz\)"):
        load(path)


@pytest.mark.parametrize("rate", [1003, 8000, 11025, 22050, 44100])
def test_one_analysis_window_at_any_rate_is_one_at_16_khz(tmp_path: Path, rate: int) -> None:
    """min_samples rounds up: 25 ms at 1003 Hz passed as 25 samples (24.9 ms), then failed as 399 at 16 kHz."""
    path = tmp_path / "window.wav"
    soundfile.write(path, _tone(440, rate)[:min_samples(rate)], rate, subtype="FLOAT")
    assert len(load(path)) >= min_samples(16000)
    soundfile.write(path, _tone(440, rate)[:min_samples(rate) - 1], rate, subtype="FLOAT")
    with pytest.raises(AudioError, match=rf"has {min_samples(rate) - 1} samples.* at {rate} Hz"):
        load(path)


def test_a_float_file_of_unscaled_pcm_is_refused(tmp_path: Path) -> None:
    """The check predict makes for arrays: 16-bit values saved as float would be scored 90 dB too loud."""
    path = tmp_path / "hot.wav"
    soundfile.write(path, _tone(440, 16000) * 32767, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"hot\.wav: samples reach 16384, but float audio lies in \[-1, 1\]; this "
                                         "looks like unscaled integer PCM; divide its 16-bit samples by 32768 and "
                                         "save it again$"):
        load(path)
    soundfile.write(path, np.clip(_tone(440, 16000) * 4, -1.2, 1.2), 16000, subtype="FLOAT")
    assert np.abs(load(path)).max() > 1  # float headroom past 1 is audio all the same


@pytest.mark.parametrize(
    ("wave", "message"),
    [
        (np.zeros(0, dtype=np.float32), "zero samples"),
        (np.zeros(399, dtype=np.float32), "shorter than one analysis window"),
        (np.array([0.1] * 500 + [np.inf], dtype=np.float32), "NaN or Inf"),
        (np.zeros(1000, dtype=np.int16), "dtype int16"),
        (np.zeros((2, 2, 1000), dtype=np.float32), r"shape \(samples,\) or \(batch, samples\)"),
        (["a", "b"], "dtype"),
    ],
)
def test_arrays_get_the_same_checks(wave: object, message: str) -> None:
    with pytest.raises(AudioError, match=rf"^array: .*{message}"):
        check_wave(wave)
    with pytest.raises(AudioError, match=message):
        fit_length(wave)


@pytest.mark.parametrize(("dtype", "advice"), [(np.int16, "samples / 32768"), (np.int32, "samples / 2147483648"),
                                               (np.uint8, "(samples - 128) / 128"), (np.bool_, "(e.g. int16 PCM")])
def test_integer_samples_are_told_their_own_scale(dtype: type, advice: str) -> None:
    with pytest.raises(AudioError, match=re.escape(advice)):
        check_wave(np.zeros(1000, dtype=dtype))


@pytest.mark.parametrize(("peak", "advice"), [(32767, "16-bit PCM integers first: samples / 32768"),
                                             (-32768, "16-bit PCM integers first: samples / 32768"),
                                             (2**23 - 1, "24-bit PCM integers first: samples / 8388608"),
                                             (2**31 - 1, "32-bit PCM integers first: samples / 2147483648"),
                                             (-(2**63), "64-bit PCM integers first: samples / 9223372036854775808")])
def test_int64_samples_are_told_the_scale_their_values_fit(peak: int, advice: str) -> None:
    """A Python list of 16-bit samples is int64: dividing it by 2**63, as advised, silenced it."""
    with pytest.raises(AudioError, match=rf"^array: samples have dtype int64, .*; convert {re.escape(advice)} or"):
        check_wave([0, 1000, peak] * 200)


def test_check_wave_names_the_shapes_it_takes() -> None:
    with pytest.raises(AudioError, match=r"^clip: expected shape \(samples,\) or \(batch, samples\), "
                                         r"got \(2, 2, 1000\); pass one waveform or a batch of them, channels averaged "
                                         r"to mono \(minser\.audio\.load does that for files\)$"):
        check_wave(np.zeros((2, 2, 1000), dtype=np.float32), "clip")


def test_check_wave_returns_float32() -> None:
    wave = np.linspace(-1, 1, 1000)
    checked = check_wave(wave)
    assert checked.dtype == np.float32
    np.testing.assert_allclose(checked, wave, atol=1e-7)


def test_fit_length_pads_and_cuts() -> None:
    wave = _tone(440, 16000, seconds=1.0)
    padded = fit_length(wave)
    assert padded.shape == (120000,) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:16000], wave)
    assert not padded[16000:].any()
    long = _tone(440, 16000, seconds=9.0)
    np.testing.assert_array_equal(fit_length(long), long[:120000])
    assert fit_length(wave, seconds=0.5).shape == (8000,)


def test_fit_length_batch() -> None:
    batch = np.random.default_rng(0).standard_normal((3, 1000)).astype(np.float32)
    fitted = fit_length(batch, seconds=0.1, sr=16000)
    assert fitted.shape == (3, 1600)
    np.testing.assert_array_equal(fitted[:, :1000], batch)
    assert not fitted[:, 1000:].any()


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), "7.5", None, 1e12, -1, 1e-5])
def test_fit_length_refuses_seconds_that_are_no_duration(seconds: object) -> None:
    """NaN, inf, "7.5" and 1e12 were a ValueError, an OverflowError, a TypeError and a MemoryError."""
    with pytest.raises(ConfigError, match=rf"^fit_length: seconds={re.escape(repr(seconds))} must be a duration of "
                                          r"at least one sample at sr=16000 and at most 600 s"):
        fit_length(_tone(440, 16000), seconds)
    assert fit_length(_tone(440, 1000), 600, sr=1000).shape == (600000,)  # MAX_SECONDS itself is one


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0, 37.5])
def test_white_noise_has_exact_snr(snr_db: float) -> None:
    wave = _tone(440, 16000, seconds=1.0)
    noisy = add_white_noise(wave, snr_db, np.random.default_rng(1))
    noise = noisy.astype(np.float64) - wave
    measured = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise**2))
    assert noisy.dtype == np.float32 and noisy.shape == wave.shape
    assert measured == pytest.approx(snr_db, abs=1e-4)


def test_white_noise_snr_per_utterance_in_a_batch() -> None:
    batch = np.stack([_tone(440, 16000), 0.01 * _tone(300, 16000)])
    noisy = add_white_noise(batch, 15.0, np.random.default_rng(2))
    noise = noisy.astype(np.float64) - batch
    measured = 10 * np.log10(np.mean(batch.astype(np.float64) ** 2, axis=1) / np.mean(noise**2, axis=1))
    np.testing.assert_allclose(measured, [15.0, 15.0], atol=1e-4)


def test_white_noise_is_deterministic_under_a_seed() -> None:
    wave = _tone(440, 16000)
    first = add_white_noise(wave, 10.0, np.random.default_rng(7))
    np.testing.assert_array_equal(first, add_white_noise(wave, 10.0, 7))
    assert not np.array_equal(first, add_white_noise(wave, 10.0, 8))


def test_white_noise_rejects_silence() -> None:
    with pytest.raises(AudioError, match="silent"):
        add_white_noise(np.zeros(1000, dtype=np.float32), 10.0, 0)


def test_white_noise_refuses_an_snr_that_buries_the_signal_past_float_range() -> None:
    wave = 0.5 * _tone(440, 16000)
    assert np.abs(add_white_noise(wave, -20.0, 0)).max() < 16  # loud noise, still audio
    with pytest.raises(AudioError, match=r"^white noise at -200 dB SNR takes the samples to .*give a higher SNR"):
        add_white_noise(wave, -200.0, 0)


@pytest.mark.parametrize("snr_db", [float("inf"), float("nan"), float("-inf"), "30", None])
def test_white_noise_needs_a_finite_snr(snr_db: object) -> None:
    """inf returned the clean wave as the noisy copy; NaN and -inf were blamed on samples past float range."""
    with pytest.raises(ConfigError, match=r"^snr_db=.*: give a finite signal-to-noise ratio in dB"):
        add_white_noise(_tone(440, 16000), snr_db, 0)


@pytest.mark.parametrize("rng", [-1, 1.5, "7"])
def test_white_noise_refuses_an_rng_that_is_no_seed(rng: object) -> None:
    """-1 and 1.5 were numpy's ValueError and TypeError, naming no argument."""
    with pytest.raises(ConfigError, match=rf"^rng={re.escape(repr(rng))}: give a numpy.random.Generator, a "
                                          r"non-negative integer seed or None \("):
        add_white_noise(_tone(440, 16000), 30.0, rng)


@pytest.mark.parametrize("rate", [1, 999, 9_999_991])
def test_a_file_whose_header_gives_an_absurd_sample_rate_is_refused_by_name(tmp_path: Path, rate: int) -> None:
    """Before, a 256 kB file whose header said 1 Hz was resampled to 2 billion samples (7.6 GiB) and crashed."""
    path = tmp_path / "odd.wav"
    soundfile.write(path, np.full(4000, 0.1, dtype=np.float32), rate)
    with pytest.raises(AudioError, match=rf"^{re.escape(str(path))}: its header gives a sample rate of {rate} Hz, "
                                         r"outside 1000 to 384000 Hz"):
        load(path)
    soundfile.write(path, np.full(4000, 0.1, dtype=np.float32), 1000)
    assert load(path).shape == (64000,)  # the slowest rate accepted


@pytest.mark.parametrize(("name", "problem"), [("a.wav/b.wav", "does not exist: a folder on its way is a file"),
                                               ("x" * 300 + ".wav", "cannot be examined (File name too long)")])
def test_a_path_that_cannot_be_examined_says_why(tmp_path: Path, name: str, problem: str) -> None:
    """These raised NotADirectoryError / OSError through file_problem, as tracebacks from manifests."""
    soundfile.write(tmp_path / "a.wav", _tone(440, 16000), 16000)
    with pytest.raises(AudioError, match=rf": {re.escape(problem)}; check the path$"):
        load(tmp_path / name)
