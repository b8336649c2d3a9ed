"""Recognizer: loading, input handling (files, arrays, batches, rates, stereo, short and long audio), scores."""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import resample_poly

import minser
from minser import checkpoint
from minser.errors import AudioError, CheckpointError, ConfigError
from minser.features import FrontEnd
from minser.models import build
from minser.recognizer import Ensemble, Prediction, Recognizer, default_checkpoint, resolve_checkpoint, window_starts

SR = 16000
LABELS = ("anger", "boredom", "neutral")
REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "examples" / "clips"


def save_tiny(path: Path, pad_to: str = "batch", seed: int = 0, labels: tuple[str, ...] = LABELS, **extra) -> Path:
    """A randomly initialised small cnn_transformer checkpoint, as minser.train writes it."""
    torch.manual_seed(seed)
    model = build("cnn_transformer", len(labels), d_model=16, heads=2, ff_dim=16, layers=1, channels=[4, 4, 4])
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode differs from identity
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-50.0, -20.0)
                module.running_var.uniform_(100.0, 400.0)
    return checkpoint.save(path, spec=model.spec, labels=labels, frontend=FrontEnd().to_dict(),
                           state_dict=model.state_dict(), train={"pad_to": pad_to}, **extra)


def wave(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A deterministic voiced-like test signal: a wobbling harmonic tone plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sr)) / sr
    f0 = 140.0 + 40.0 * np.sin(2 * np.pi * (0.7 + 0.3 * seed) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t) ** 2
    return (0.2 * envelope * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def rec(tiny) -> Recognizer:
    return Recognizer.load(tiny)


def scores_of(prediction: Prediction) -> np.ndarray:
    return np.array([prediction.scores[label] for label in LABELS])


def test_predict_file_gives_label_and_probabilities(rec, tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, wave(2.0), SR)
    prediction = rec.predict(path)
    assert isinstance(prediction, Prediction)
    assert list(prediction.scores) == list(LABELS)
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.label == max(prediction.scores, key=prediction.scores.get)
    # The file path and the same samples as an array give the same scores.
    np.testing.assert_allclose(scores_of(rec.predict(str(path))), scores_of(rec.predict(wave(2.0), sr=SR)), atol=1e-6)


def test_scores_are_the_softmax_of_the_model_on_the_front_end(rec):
    from minser.features import extract

    x = wave(3.0, seed=1)
    features, lengths = extract(x)
    with torch.no_grad():
        logits = rec.model(torch.from_numpy(features[:, :, : lengths[0]]), torch.from_numpy(lengths))
    expected = torch.softmax(logits, -1)[0].numpy()
    np.testing.assert_allclose(scores_of(rec.predict(x, sr=SR)), expected, atol=1e-6)


def test_array_without_sample_rate_is_an_error_that_says_to_pass_sr(rec):
    with pytest.raises(AudioError, match="sr="):
        rec.predict(wave(1.0))
    with pytest.raises(AudioError, match="sample rate"):
        rec.predict(wave(1.0), sr=-5)
    with pytest.raises(AudioError, match=r"sr=16 Hz is outside .* e\.g\. sr=16000"):
        rec.predict(wave(1.0), sr=16)  # meant 16 kHz: would upsample 1000x


@pytest.mark.parametrize(("change", "message"), [
    ({"frontend": "16k"}, "front end: settings must be a dict"),
    ({"frontend": {"seconds": 1e9}}, "at most 600 s"),  # loaded, then predict ran out of memory
    ({"spec": {"name": "transformer_xl", "n_classes": 3, "options": {}}}, "unknown model 'transformer_xl'"),
    ({"state_dict": [1, 2]}, "weights do not fit the network"),  # a TypeError traceback before
])
def test_a_checkpoint_that_cannot_be_built_is_named(tmp_path, tiny, change, message):
    """These raised ConfigError (no file named) or a TypeError traceback from deep in torch."""
    saved = checkpoint.load(tiny)
    torch.save({**saved, **change}, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(tmp_path / 'edited.pt'))}: .*{re.escape(message)}"):
        Recognizer.load(tmp_path / "edited.pt")


def test_torch_tensors_are_read_as_their_numpy_arrays(rec):
    """A tensor that requires grad raised a RuntimeError, bfloat16 an advice for ragged lists, and a 2-D
    tensor was refused where the same numpy array is a batch."""
    a, b = wave(1.0), wave(1.0, seed=1)
    expected = rec.predict(np.stack([a, b]), sr=SR)
    assert rec.predict(torch.from_numpy(np.stack([a, b])), sr=SR) == expected
    assert rec.predict([torch.from_numpy(a).requires_grad_(True), b], sr=SR) == rec.predict([a, b], sr=SR)
    assert rec.predict(torch.from_numpy(a)[None], sr=SR) == rec.predict(a[None], sr=SR)
    widened = rec.predict(torch.from_numpy(a).to(torch.bfloat16), sr=SR)
    assert widened.scores == pytest.approx(expected[0].scores, abs=0.02)  # bfloat16 keeps 8 bits of each sample
    with pytest.raises(AudioError, match="samples have dtype int16, expected floating point"):
        rec.predict(torch.zeros(SR, dtype=torch.int16), sr=SR)


def test_unscaled_pcm_is_refused(rec):
    with pytest.raises(AudioError, match="unscaled integer PCM; divide 16-bit samples by 32768$"):
        rec.predict(wave(1.0) * 32767, sr=SR)
    rec.predict(np.clip(wave(1.0) * 4, -1.2, 1.2), sr=SR)  # clipped but float-scaled audio is fine


@pytest.mark.parametrize("sr", [8000, 44100])
def test_other_sample_rates_are_resampled(rec, tmp_path, sr):
    native = wave(2.0, sr=sr)
    expected = resample_poly(native, SR // np.gcd(sr, SR), sr // np.gcd(sr, SR)).astype(np.float32)
    np.testing.assert_allclose(scores_of(rec.predict(native, sr=sr)), scores_of(rec.predict(expected, sr=SR)), atol=1e-6)
    path = tmp_path / f"at{sr}.wav"
    soundfile.write(path, native, sr, subtype="FLOAT")
    np.testing.assert_allclose(scores_of(rec.predict(path)), scores_of(rec.predict(expected, sr=SR)), atol=1e-5)


def test_stereo_is_downmixed(rec, tmp_path):
    left, right = wave(2.0, seed=2), wave(2.0, seed=3)
    stereo = np.stack([left, right], axis=1)  # (samples, channels), soundfile's layout
    mono = scores_of(rec.predict((left + right) / 2, sr=SR))
    np.testing.assert_allclose(scores_of(rec.predict(stereo, sr=SR)), mono, atol=1e-6)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, SR, subtype="FLOAT")
    np.testing.assert_allclose(scores_of(rec.predict(path)), mono, atol=1e-5)


def test_batches_equal_single_predictions(rec, tmp_path):
    waves = [wave(1.0, seed=4), wave(2.5, seed=5), wave(6.0, seed=6)]
    singles = [scores_of(rec.predict(w, sr=SR)) for w in waves]
    batch = rec.predict(waves, sr=SR)
    assert isinstance(batch, list) and len(batch) == 3
    for prediction, single in zip(batch, singles):
        np.testing.assert_allclose(scores_of(prediction), single, atol=1e-5)
    paths = []
    for i, w in enumerate(waves):
        paths.append(tmp_path / f"{i}.wav")
        soundfile.write(paths[-1], w, SR, subtype="FLOAT")
    for prediction, single in zip(rec.predict(paths), singles):
        np.testing.assert_allclose(scores_of(prediction), single, atol=1e-5)
    # A 2-D array is a batch of equal-length waves.
    equal = np.stack([wave(2.0, seed=7), wave(2.0, seed=8)])
    rows = rec.predict(equal, sr=SR)
    np.testing.assert_allclose(scores_of(rows[1]), scores_of(rec.predict(equal[1], sr=SR)), atol=1e-5)


def test_an_array_of_paths_is_a_batch_of_files(rec, tmp_path):
    """df["path"].values, an object or str array of paths, was refused with advice on converting samples."""
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.wav")
        soundfile.write(paths[-1], wave(1.5, seed=20 + i), SR)
    expected = rec.predict(paths)
    assert rec.predict(np.array([str(p) for p in paths])) == expected  # dtype <U...
    assert rec.predict(np.array(paths, dtype=object)) == expected
    with pytest.raises(AudioError, match=rf"^{re.escape(str(tmp_path / 'missing.wav'))}: does not exist"):
        rec.predict(np.array([str(paths[0]), str(tmp_path / "missing.wav")], dtype=object))


def test_zero_channels_are_refused_as_such(rec):
    """(1000, 0) printed numpy's "Mean of empty slice" and was called corrupt audio (NaN or Inf samples)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AudioError, match=r"^array: got shape \(16000, 0\), 16000 samples of zero channels; "
                                             r"pass audio with at least one channel$"):
            rec.predict(np.zeros((16000, 0), dtype=np.float32), sr=SR)
        with pytest.raises(AudioError, match=r"^item 1: got shape \(16000, 0\), 16000 samples of zero channels"):
            rec.predict([wave(1.0), torch.zeros(16000, 0)], sr=SR)


def test_probabilities_name_the_wave_not_a_window(rec):
    """A bad wave was named by its window in a chunk of 16: "waves[5]" for the second of two waves."""
    long, short = wave(20.0), np.zeros(100, dtype=np.float32)
    with pytest.raises(AudioError, match=r"^waves\[1\]: has 100 samples, shorter than one analysis window "
                                         r"\(400 samples at 16000 Hz\); use longer audio$"):
        rec.probabilities([long, short])
    broken = long.copy()
    broken[-1] = np.nan
    with pytest.raises(AudioError, match=r"^waves\[1\]: contains NaN or Inf samples"):
        rec.probabilities([long, broken])
    assert rec.probabilities([long, wave(1.0)]).shape == (2, len(LABELS))


def test_batch_reports_the_bad_item(rec, tmp_path):
    with pytest.raises(AudioError, match="item 1"):
        rec.predict([wave(1.0), np.zeros(10, dtype=np.float32)], sr=SR)
    with pytest.raises(AudioError, match="missing.wav: does not exist; check the path"):
        rec.predict([tmp_path / "missing.wav"])
    with pytest.raises(AudioError, match="empty batch"):
        rec.predict([])
    for empty in (np.zeros((0, 16000), dtype=np.float32), torch.zeros(0, 16000)):  # was numpy's "need at least one"
        with pytest.raises(AudioError, match=r"^array: got shape \(0, 16000\), a batch of no waves"):
            rec.predict(empty, sr=SR)
    # An item is one wave: a batch inside the list is not offered as a layout.
    with pytest.raises(AudioError, match=r"^item 0: expected one wave \(samples,\) or \(samples, channels\), "
                                         r"got shape \(2, 2, 100\)$"):
        rec.predict([np.zeros((2, 2, 100), dtype=np.float32)], sr=SR)


def test_too_many_channels_is_not_read_as_a_batch_of_tiny_waves(rec):
    nine = np.stack([wave(3.0, seed=k) for k in range(9)], axis=1)  # (48000, 9): more than MAX_CHANNELS
    with pytest.raises(AudioError, match=r"^array: got shape \(48000, 9\): read as a batch of 48000 waves of 9 "
                                         r"samples each, .*at most 8 channels.*\(batch, samples\)"):
        rec.predict(nine, sr=SR)
    # The layouts it names work: averaged channels, at most 8 of them, and a genuine batch.
    assert isinstance(rec.predict(nine[:, :8], sr=SR), Prediction)
    assert len(rec.predict(nine.T, sr=SR)) == 9


@pytest.mark.parametrize(("x", "shown"), [(None, "None"), (3, "3"), ({"wave": [0.1]}, "{'wave': [0.1]}")])
def test_what_is_not_audio_is_named(rec, x, shown):
    message = rf"^input: {re.escape(shown)} \({type(x).__name__}\) is not audio; pass a file path, an array"
    with pytest.raises(AudioError, match=message):
        rec.predict(x)
    with pytest.raises(AudioError, match=message):
        rec.predict(x, sr=SR)
    with pytest.raises(AudioError, match=rf"^item 1: {re.escape(shown)} .* is not audio"):
        rec.predict([wave(1.0), x], sr=SR)


def test_ragged_nested_lists_are_named(rec):
    with pytest.raises(AudioError, match=r"^item 0: cannot be read as an array of samples .*equal-length waves"):
        rec.predict([[[0.1] * 500, [0.2] * 400]], sr=SR)


def test_for_speaker_names_what_is_not_a_list_of_recordings(tmp_path, tiny):
    normed = Recognizer.load(save_tiny(tmp_path / "normed.pt", speaker_norm={"03": [[0.0] * 40, [1.0] * 40]}))
    with pytest.raises(AudioError, match=r"^for_speaker: None \(NoneType\) is not a list of recordings"):
        normed.for_speaker(None)
    with pytest.raises(AudioError, match=r"^item 0: 3 \(int\) is not audio"):
        normed.for_speaker([3])
    # One stereo recording (samples, channels) was read as 48000 recordings of 2 samples each.
    with pytest.raises(AudioError, match=r"^for_speaker: pass a list of recordings of the speaker \(several\), "
                                         r"not one$"):
        normed.for_speaker(np.stack([wave(3.0), wave(3.0, seed=1)], axis=1), sr=SR)


def test_for_speaker_refuses_one_file_passed_twice(tmp_path):
    """Ten copies of one path enrolled silently (no "fewer than 10" warning) with one recording's statistics."""
    normed = Recognizer.load(save_tiny(tmp_path / "normed.pt", speaker_norm={"03": [[0.0] * 40, [1.0] * 40]}))
    clips = []
    for i in range(3):
        clips.append(tmp_path / f"{i}.wav")
        soundfile.write(clips[-1], wave(1.0, seed=i), SR)
    (tmp_path / "link.wav").symlink_to(clips[0])
    with pytest.raises(AudioError, match=rf"^for_speaker: items 0 and 3 \({re.escape(str(clips[0]))}, "
                                         rf"{re.escape(str(tmp_path / 'link.wav'))}\) are one file; pass each "
                                         r"recording of the speaker once$"):
        normed.for_speaker([clips[0], clips[1], wave(1.0, seed=5), tmp_path / "link.wav"], sr=SR)
    with pytest.raises(AudioError, match=r"^for_speaker: items 0 and 1 .* are one file"):
        normed.for_speaker([str(clips[0])] * 10)


def test_for_speaker_warns_below_ten_recordings_and_refuses_silence(tmp_path):
    normed = Recognizer.load(save_tiny(tmp_path / "normed.pt", speaker_norm={"03": [[0.0] * 40, [1.0] * 40]}))
    speech = [wave(1.0, seed=i) for i in range(10)]
    with pytest.warns(UserWarning, match=r"^for_speaker: 3 recording\(s\); with fewer than 10 .* 84 from 10"):
        normed.for_speaker(speech[:3], sr=SR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normed.for_speaker(speech, sr=SR)
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(SR), SR)
    with pytest.raises(AudioError, match=rf"^for_speaker: {re.escape(str(silent))} holds no sound"):
        normed.for_speaker([*speech, silent], sr=SR)


def test_too_short_audio(rec):
    with pytest.raises(AudioError, match="shorter than one analysis window"):
        rec.predict(np.ones(100, dtype=np.float32), sr=SR)
    # Longer than one window but shorter than the network's time stride: scored, not rejected.
    assert rec.min_frames > 1 + 800 // 160
    prediction = rec.predict(wave(0.05), sr=SR)
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)


def test_window_starts_cover_the_audio():
    assert window_starts(100, 120, 60) == [0]
    assert window_starts(120, 120, 60) == [0]
    assert window_starts(121, 120, 60) == [0, 1]
    assert window_starts(180, 120, 60) == [0, 60]
    assert window_starts(300, 120, 60) == [0, 60, 120, 180]
    assert window_starts(310, 120, 60) == [0, 48, 95, 142, 190]
    for n in range(121, 1000):  # the fewest windows no more than a hop apart, evenly spaced, first to last sample
        starts = window_starts(n, 120, 60)
        gaps = np.diff(starts)
        assert starts[0] == 0 and starts[-1] == n - 120 and len(starts) == -(-(n - 120) // 60) + 1
        assert gaps.min() > 0 and gaps.max() <= 60 and gaps.max() - gaps.min() <= 1


def test_window_starts_do_not_count_the_end_twice_just_past_a_multiple_of_the_hop():
    """One sample past 11.25 s gave [0, 60000, 60001]: the last 7.5 s weighed twice and one sample flipped the
    label (7.5 s of sadness then 3.75 s of anger: sadness at 180000 samples, anger at 180001)."""
    window, hop = FrontEnd().n_samples, FrontEnd().n_samples // 2
    assert window_starts(window + hop, window, hop) == [0, 60000]
    assert window_starts(window + hop + 1, window, hop) == [0, 30000, 60001]
    assert window_starts(window + 2 * hop + 1, window, hop) == [0, 40000, 80001, 120001]


def test_long_audio_is_the_mean_over_sliding_windows(rec, monkeypatch):
    # Logits of the windows' loudness, so that the windows' probabilities differ widely (the tiny network's
    # differed by 1e-7 across windows: the mean could not be told from the max).
    def loudness_logits(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        loud = (np.array([f[:, :n].mean() for f, n in zip(features, lengths)]) + 60) / 10  # near 0: no class saturates
        return np.stack([loud, -loud, np.zeros_like(loud)], axis=1).astype(np.float32)

    monkeypatch.setattr(rec, "logits", loudness_logits)
    long = np.concatenate([0.02 * wave(5.0, seed=9), wave(5.0, seed=10), 0.2 * wave(10.0, seed=11)])  # 20 s
    window, hop = FrontEnd().n_samples, FrontEnd().n_samples // 2
    starts = window_starts(long.size, window, hop)
    assert starts == [0, 50000, 100000, 150000, 200000]
    windows = np.array([scores_of(rec.predict(long[s:s + window], sr=SR)) for s in starts])
    assert np.ptp(windows, axis=0).min() > 0.05
    np.testing.assert_allclose(scores_of(rec.predict(long, sr=SR)), windows.mean(axis=0), rtol=1e-6)


def test_full_padding_checkpoints_score_the_fixed_input(tmp_path):
    rec = Recognizer.load(save_tiny(tmp_path / "full.pt", pad_to="full"))
    assert not rec.pass_lengths
    from minser.features import extract

    x = wave(2.0, seed=12)
    with torch.no_grad():
        expected = torch.softmax(rec.model(torch.from_numpy(extract(x)[0])), -1)[0].numpy()
    np.testing.assert_allclose(scores_of(rec.predict(x, sr=SR)), expected, atol=1e-6)


def test_cut_keeps_the_frames_the_network_reads(tmp_path):
    """Cut to the longest valid length (at least the network's minimum) for a network that masks padding;
    uncut for one trained on full inputs, and for an ensemble holding one; logits unchanged by the cut."""
    cut = Recognizer.load(save_tiny(tmp_path / "cut.pt"))
    full = Recognizer.load(save_tiny(tmp_path / "full.pt", pad_to="full"))
    features = np.random.default_rng(0).normal(-40.0, 10.0, (2, 40, 750)).astype(np.float32)
    lengths = np.array([300, 120])
    assert cut.cut(features, lengths).shape == (2, 40, 300)
    assert cut.cut(features, np.array([3, 2])).shape == (2, 40, cut.min_frames)
    assert cut.cut(features[:0], lengths[:0]).shape == (0, 40, cut.min_frames)  # was numpy's "zero-size array"
    assert full.cut(features, lengths).shape == (2, 40, 750)
    assert Ensemble([cut, full]).cut(features, lengths).shape == (2, 40, 750)
    assert Ensemble([cut, cut]).cut(features, lengths).shape == (2, 40, 300)
    with torch.no_grad():  # the masked network reads the whole padded input to the same logits
        uncut = cut.model(torch.from_numpy(features), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(cut.logits(features, lengths), uncut, atol=1e-5)


def test_logits_read_any_float_array_or_tensor_and_name_bad_shapes(rec):
    features = np.random.default_rng(0).normal(-40.0, 10.0, (2, 40, 300)).astype(np.float32)
    lengths = np.array([300, 120])
    want = rec.logits(features, lengths)
    for x, n in ((features.astype(np.float64), lengths), (torch.from_numpy(features), torch.from_numpy(lengths)),
                 (features, lengths.astype(np.int32))):
        np.testing.assert_allclose(rec.logits(x, n), want, atol=1e-6)
    for x, n, message in ((features[0], lengths[:1], r"features of shape \(40, 300\) .* features\[None\]"),
                          (features[:, :20], lengths, r"features of shape \(2, 20, 300\) and dtype float32; "
                                                      r"expected floats \(batch, 40, frames\)"),
                          (features.astype(np.int16), lengths, r"features of shape \(2, 40, 300\) and dtype int16"),
                          (features, lengths[:1], r"lengths of shape \(1,\) .* expected 2 integers"),
                          (features, lengths.astype(float), r"lengths of shape \(2,\) and dtype float64"),
                          (features, np.array([301, 0]), r"lengths \[301, 0\] outside 1 to 300")):
        with pytest.raises(ConfigError, match=f"^logits: {message}"):
            rec.logits(x, n)


def test_logits_refuse_frames_the_network_cannot_read_and_take_an_empty_batch(tmp_path, rec):
    """Fewer frames than min_frames failed inside the network over a length never passed; a --pad-to full
    network gave other logits for any frame count but 750; an empty batch crashed in cut()."""
    full = Recognizer.load(save_tiny(tmp_path / "full.pt", pad_to="full"))
    features = np.full((2, 40, 750), -60.0, dtype=np.float32)
    short = rec.min_frames - 1
    with pytest.raises(ConfigError, match=rf"^logits: features of {short} frames, fewer than the network's "
                                          rf"min_frames \({rec.min_frames}\); pad them to at least {rec.min_frames} "
                                          r"frames with silence \(-100 dB, as minser.features.extract pads\), or "
                                          r"pass extract's 750 frames uncut$"):
        rec.logits(features[:1, :, :short], np.array([short]))
    assert rec.logits(features[:1, :, :rec.min_frames], np.array([short])).shape == (1, len(LABELS))
    for frames in (300, 751):
        with pytest.raises(ConfigError, match=rf"^logits: features of {frames} frames, but the network was trained "
                                              r"on full inputs \(--pad-to full\) and takes all 750; pass them "
                                              r"uncut, as minser.features.extract gives them$"):
            full.logits(np.full((1, 40, frames), -60.0, dtype=np.float32), np.array([frames]))
    with pytest.raises(ConfigError, match=r"^logits: features of 300 frames, but the network was trained on full"):
        Ensemble([rec, full]).logits(features[:, :, :300], np.array([300, 120]))
    for recognizer in (rec, full, Ensemble([rec, full])):
        empty = recognizer.logits(features[:0], np.zeros(0, dtype=np.int64))
        assert empty.shape == (0, len(LABELS)) and empty.dtype == np.float32


def test_speaker_stats_are_checked_before_they_turn_scores_into_nan(tmp_path, rec):
    normed = Recognizer.load(save_tiny(tmp_path / "normed.pt", speaker_norm={"03": [[0.0] * 40, [1.0] * 40]}))
    mean, std = [-40.0] * 40, [10.0] * 40
    prediction = normed.with_speaker_stats((np.array(mean), std)).predict(wave(1.0), sr=SR)
    assert np.isfinite(scores_of(prediction)).all()
    for stats, message in (([mean], r"shape \(1, 40\), expected \(2, 40\)"),
                           ([mean[:39], std[:39]], r"shape \(2, 39\)"),
                           ([mean, ["a"] * 40], "cannot be read as numbers"),
                           ([[float("nan")] * 40, std], "hold values that are not finite"),
                           ([mean, [10.0] * 39 + [0.0]], "std of Mel band 39 is 0; every std must be > 0"),
                           # finite in float64, not in the float32 standardise computes in: every score was NaN
                           ([[1e39] * 40, std], r"hold values that are not finite in float32 \(NaN, inf, or beyond "
                                                r"3\.4e\+38\)"),
                           ([mean, [1e-50] * 40], "std of Mel band 0 is 1e-50; every std must be > 0 in float32"),
                           ([mean, [1e-40] * 40], r"Mel band 0's mean -40 and std 1e-40 take log-Mels within 1000 dB "
                                                  r"of 0 beyond float32's range"),  # subnormal: > 0, yet NaN scores
                           ([[1e38] * 40, [1e-3] * 40], "Mel band 0's mean 1e\\+38 and std 0.001 take")):
        with pytest.raises(ConfigError, match=f"^speaker statistics: {message}"):
            normed.with_speaker_stats(stats)
    with pytest.raises(CheckpointError, match="trained without --speaker-norm, so it takes no speaker statistics"):
        rec.with_speaker_stats([mean, std])


def test_int8_flag_quantizes_at_load(tmp_path):
    """The shipped default quantized at load scores the example clips within 5e-3 of the float network
    (7.5e-4 measured; the clips' scores differ from each other by up to 0.98)."""
    with default_checkpoint() as default:
        saved = checkpoint.load(default)
    path = checkpoint.save(tmp_path / "int8.pt", **{k: v for k, v in saved.items() if k != "format"}, quantize="int8")
    quantized, plain = Recognizer.load(path), Recognizer.from_checkpoint(saved)
    kinds = {type(m).__module__ for m in quantized.model.modules()}
    assert any("quantized" in kind for kind in kinds)
    clips = sorted(CLIPS.glob("*.wav"))
    np.testing.assert_allclose([list(p.scores.values()) for p in quantized.predict(clips)],
                               [list(p.scores.values()) for p in plain.predict(clips)], atol=5e-3)
    bad = checkpoint.save(tmp_path / "int4.pt", **{k: v for k, v in saved.items() if k != "format"}, quantize="int4")
    with pytest.raises(CheckpointError, match="int4"):
        Recognizer.load(bad)


def test_an_ensemble_labels_with_the_members_mean_probability(tmp_path):
    """Recognizer.load([a, b]) averages the members' probabilities, window by window on long audio, and
    a checkpoint ensembled with itself scores what it scores alone."""
    a, b = save_tiny(tmp_path / "a.pt"), save_tiny(tmp_path / "b.pt", seed=1)
    alone_a, alone_b = Recognizer.load(a), Recognizer.load(b)
    both = Recognizer.load([a, b])
    waves = [wave(2.0, seed=14), wave(11.0, seed=15)]  # one window, and three sliding windows
    pa, pb = alone_a.probabilities(waves), alone_b.probabilities(waves)
    assert np.abs(pa - pb).max() > 0.01  # the members disagree, so the mean is a real test
    np.testing.assert_allclose(both.probabilities(waves), (pa + pb) / 2, rtol=1e-5, atol=1e-6)
    assert both.source == f"{a} + {b}" and both.labels == LABELS
    np.testing.assert_allclose(Recognizer.ensemble([alone_a, alone_a]).probabilities(waves), pa, rtol=1e-5, atol=1e-6)
    assert Recognizer.ensemble([alone_a]) is alone_a and not isinstance(Recognizer.load([a]), Ensemble)


def test_an_ensemble_takes_recognizers_and_flattens_an_ensemble_member(tmp_path, rec):
    """Paths gave AttributeError "'str' object has no attribute 'labels'"; an Ensemble member weighed its networks
    1/4, 1/4 against 1/2 for the other member, and minser.export failed on it with an AttributeError."""
    with pytest.raises(CheckpointError, match=r"^ensemble: member 0 is 'a\.pt' \(str\), not "
                                              r"a Recognizer; pass loaded recognizers, or use Recognizer\.load\(\[\.\.\.\]\) "
                                              "for checkpoint paths$"):
        Recognizer.ensemble(["a.pt", "b.pt"])
    with pytest.raises(CheckpointError, match=r"^ensemble: member 1 is None \(NoneType\), not a Recognizer"):
        Recognizer.ensemble([rec, None])
    b, c = (Recognizer.load(save_tiny(tmp_path / f"{n}.pt", seed=s)) for n, s in (("b", 1), ("c", 2)))
    nested = Recognizer.ensemble([Recognizer.ensemble([rec, b]), c])
    assert nested.members == (rec, b, c) and len(nested.model) == 3
    waves = [wave(2.0, seed=21), wave(9.0, seed=22)]
    np.testing.assert_allclose(nested.probabilities(waves), Recognizer.ensemble([rec, b, c]).probabilities(waves),
                               rtol=1e-6, atol=1e-7)
    assert nested.source == f"{rec.source} + {b.source} + {c.source}"


@pytest.mark.filterwarnings("ignore:for_speaker:UserWarning")  # enrols from fewer than 10 recordings
def test_an_ensemble_of_unlike_members_is_refused(tmp_path, tiny):
    with pytest.raises(CheckpointError, match="no members"):
        Recognizer.ensemble([])
    reordered = save_tiny(tmp_path / "reordered.pt", labels=LABELS[::-1])
    with pytest.raises(CheckpointError, match=f"reordered.pt differs from .*{tiny.name} in its labels"):
        Recognizer.load([tiny, reordered])
    saved = checkpoint.load(tiny)
    saved["frontend"] = FrontEnd(n_mels=80).to_dict()
    other_bands = checkpoint.save(tmp_path / "80.pt", **{k: v for k, v in saved.items() if k != "format"})
    with pytest.raises(CheckpointError, match="80.pt differs .* front end"):
        Recognizer.load([tiny, other_bands])
    normed = save_tiny(tmp_path / "normed.pt", speaker_norm={"03": [[0.0] * 40, [1.0] * 40]})
    enrolled = Recognizer.load(normed).for_speaker([wave(3.0, seed=16)], sr=SR)
    with pytest.raises(CheckpointError, match="already enrolled.*as a whole"):
        Recognizer.ensemble([enrolled, enrolled])


def test_an_ensemble_naming_one_checkpoint_twice_is_refused(tmp_path, tiny):
    """Under any name, a member twice would weigh double; before, only minser.export refused it."""
    run = tmp_path / "run"
    (run / "fold-1").mkdir(parents=True)
    os.link(tiny, run / "fold-1" / "best.pt")
    other = save_tiny(tmp_path / "other.pt", seed=1)
    for twice in ([tiny, other, tiny], [tiny, run]):
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(tiny))} and {re.escape(str(twice[-1]))} name the "
                                              "same checkpoint; name each checkpoint once$"):
            Recognizer.load(twice)
    with pytest.raises(ConfigError, match=r"^None \(the shipped default\) and None \(the shipped default\) name"):
        Recognizer.load([None, tiny, None])
    # A nested list got past the check, and the ensemble, flattened, counted the checkpoint twice.
    with pytest.raises(ConfigError, match=r"^Recognizer\.load: a list of checkpoints holds another list; give one "
                                          r"flat list$"):
        Recognizer.load([tiny, [tiny]])


@pytest.mark.filterwarnings("ignore:for_speaker:UserWarning")  # enrols from fewer than 10 recordings
def test_an_ensemble_mixes_padding_and_speaker_normalisation(tmp_path, tiny, rec):
    """Each member scores the shared features its own way: full padding or lengths, speaker statistics
    or none; the ensemble is enrolled as a whole and refuses to label before it is."""
    full = save_tiny(tmp_path / "full.pt", pad_to="full", seed=2)
    normed = save_tiny(tmp_path / "normed.pt", seed=3, speaker_norm={"03": [[0.0] * 40, [1.0] * 40]})
    speech, enrolment = [wave(2.0, seed=17), wave(9.0, seed=18)], [wave(3.0, seed=16), wave(4.0, seed=19)]
    mixed = Recognizer.load([tiny, full, normed])
    assert mixed.speaker_norm
    with pytest.raises(CheckpointError, match=rf"its member\(s\) {re.escape(str(normed))} were trained with "
                                              "--speaker-norm, so the ensemble needs the speaker's statistics"):
        mixed.predict(speech[0], sr=SR)
    anna = mixed.for_speaker(enrolment, sr=SR)
    expected = (rec.probabilities(speech) + Recognizer.load(full).probabilities(speech)
                + Recognizer.load(normed).for_speaker(enrolment, sr=SR).probabilities(speech)) / 3
    np.testing.assert_allclose(anna.probabilities(speech), expected, rtol=1e-5, atol=1e-6)
    assert mixed.speaker_stats is None and anna.members[0] is mixed.members[0]  # enrolment copies, shares


def test_run_folders_and_bad_checkpoints(tiny, tmp_path):
    one = tmp_path / "run1"
    save_tiny(one / "fold-1" / "best.pt")
    assert resolve_checkpoint(one) == one / "fold-1" / "best.pt"
    assert Recognizer.load(one).labels == LABELS
    save_tiny(one / "fold-2" / "best.pt")
    with pytest.raises(CheckpointError, match="2 folds"):
        Recognizer.load(one)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no fold"):
        Recognizer.load(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Recognizer.load(tmp_path / "missing.pt")
    for bad in (3, b"model.pt", [tiny, 3]):
        with pytest.raises(CheckpointError, match=r"^Recognizer\.load: (3|b'model\.pt') \((int|bytes)\) is not a "
                                                  r"checkpoint; pass None for the shipped default, the path of a "
                                                  r"checkpoint file or run folder, or a list of them$"):
            Recognizer.load(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        Recognizer.load(garbage)
    saved = checkpoint.load(tiny)
    saved["state_dict"].pop(next(iter(saved["state_dict"])))
    broken = checkpoint.save(tmp_path / "broken.pt", **{k: v for k, v in saved.items() if k != "format"})
    with pytest.raises(CheckpointError, match="do not fit"):
        Recognizer.load(broken)


def test_copies_beside_a_runs_fold_folders_are_not_folds(tmp_path):
    """Only fold-<digits> folders are folds, as --resume counts them: a copy fold-1.bak or fold-1-old made the
    one-fold run "a run of 3 folds", and a run of copies only lacked fold-<k>/best.pt without saying so."""
    run = tmp_path / "run"
    for fold in ("fold-1", "fold-1.bak", "fold-1-old", "fold-x"):
        save_tiny(run / fold / "best.pt")
    assert resolve_checkpoint(run) == run / "fold-1" / "best.pt"
    assert Recognizer.load(run).labels == LABELS
    for fold in ("fold-10", "fold-2"):
        save_tiny(run / fold / "best.pt")
    from minser.recognizer import fold_checkpoints

    assert fold_checkpoints(run) == [run / f"fold-{k}" / "best.pt" for k in (1, 2, 10)]  # in fold order
    with pytest.raises(CheckpointError, match=rf"the run has 3 folds \({re.escape(str(run / 'fold-1' / 'best.pt'))}, "):
        Recognizer.load(run)
    copies = tmp_path / "copies"
    save_tiny(copies / "fold-2.bak" / "best.pt")
    with pytest.raises(CheckpointError, match=r"the folder holds no fold-<k>/best.pt; give the --out folder"):
        Recognizer.load(copies)


def test_import_minser_stays_light():
    import subprocess

    code = ("import sys, minser; assert 'torch' not in sys.modules; assert set(minser.__all__) <= set(dir(minser)); "
            "assert 'torch' not in sys.modules; print(minser.Recognizer.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Recognizer"
    assert minser.Prediction is Prediction


def test_default_model_labels_the_example_clips():
    """The shipped default (minser/assets/default.pt) gets every example clip right (see docs/MODEL_CARD.md)."""
    rec = Recognizer.load()
    assert rec.labels == ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")
    clips = sorted(CLIPS.glob("*.wav"))
    assert [clip.name.split("_")[0] for clip in clips] == sorted(rec.labels)
    for clip, prediction in zip(clips, rec.predict(clips)):
        assert prediction.label == clip.name.split("_")[0], (clip.name, prediction.scores)


def test_loading_leaves_the_callers_random_stream_alone(tiny):
    """Building the network drew its (replaced) initial weights from the global stream: a seeded application
    saw other random numbers after Recognizer.load() or checkpoint.load_model()."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    Recognizer.load(tiny)
    checkpoint.load_model(checkpoint.load(tiny))
    assert torch.equal(torch.rand(3), expected)
