"""Speaker normalisation: statistics over valid frames, the transform, and its path through train and evaluate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from minser import Recognizer, checkpoint
from minser import train as train_module
from minser.data import cached_features
from minser.errors import AudioError, CheckpointError, DataError
from minser.evaluate import evaluate
from minser.export import main as export_main
from minser.features import FrontEnd
from minser.speakers import STD_FLOOR, normalise_by_speaker, speaker_statistics, split_statistics, statistics_for
from minser.splits import Split


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(-40.0, 12.0, size=(6, 3, 20)).astype(np.float32)
    x[:, 2] *= 0.01  # a nearly constant band: its std is floored
    return x, np.array([20, 7, 12, 20, 3, 15]), np.array(["a", "b", "a", "b", "c", "c"])


def test_statistics_are_taken_over_the_valid_frames_only() -> None:
    x, lengths, speakers = _batch()
    stats = speaker_statistics(x, lengths, speakers)
    assert sorted(stats) == ["a", "b", "c"]
    frames = np.concatenate([x[0], x[2, :, :12]], axis=1)
    np.testing.assert_allclose(stats["a"][0], frames.mean(1), rtol=1e-6)
    np.testing.assert_allclose(stats["a"][1][:2], frames.std(1)[:2], rtol=1e-6)
    assert stats["a"][1][2] == STD_FLOOR
    x[1, :, 7:] = -100.0  # padding is silence: it must not move speaker b's statistics
    assert speaker_statistics(x, lengths, speakers)["b"] == stats["b"]


def test_each_speaker_comes_out_with_zero_mean_and_unit_std() -> None:
    x, lengths, speakers = _batch()
    out = normalise_by_speaker(x, speakers, speaker_statistics(x, lengths, speakers))
    assert out.dtype == np.float32 and out.shape == x.shape
    for speaker in ("a", "b", "c"):
        rows = np.flatnonzero(speakers == speaker)
        frames = np.concatenate([out[i, :2, :lengths[i]] for i in rows], axis=1)
        np.testing.assert_allclose(frames.mean(1), 0.0, atol=1e-5)
        np.testing.assert_allclose(frames.std(1), 1.0, rtol=1e-5)
    # The transform is affine per speaker and band, padding included.
    mean, std = (np.float32(v[0]) for v in speaker_statistics(x, lengths, speakers)["b"])
    np.testing.assert_allclose(out[1, 0, 15], (x[1, 0, 15] - mean) / std, rtol=1e-5)


def test_a_speaker_without_statistics_is_named() -> None:
    x, lengths, speakers = _batch()
    with pytest.raises(DataError, match="speaker\\(s\\) c; the statistics cover a, b"):
        normalise_by_speaker(x, speakers, speaker_statistics(x[:4], lengths[:4], speakers[:4]))


def test_speaker_ids_are_one_per_utterance_of_any_sequence() -> None:
    """A list of ids compared with each id as one False, and too few ids left rows unwritten: normalise_by_speaker
    returned uninitialised memory, speaker_statistics a bare "need at least one array to concatenate"."""
    x, lengths, speakers = _batch()
    stats = speaker_statistics(x, lengths, speakers)
    assert speaker_statistics(x, lengths, speakers.tolist()) == stats
    np.testing.assert_array_equal(normalise_by_speaker(x, speakers.tolist(), stats),
                                  normalise_by_speaker(x, speakers, stats))
    assert statistics_for(x, lengths, speakers.tolist(), {}) == stats  # these indexed the list with an array
    split = Split("toy", train=np.arange(4), val=np.array([4]), test=np.array([5]))
    assert split_statistics(x, lengths, speakers.tolist(), split) == split_statistics(x, lengths, speakers, split)
    for call in (lambda: normalise_by_speaker(x, speakers[:5], stats),
                 lambda: speaker_statistics(x, lengths, speakers[:5])):
        with pytest.raises(DataError, match=r"^speaker normalisation: 5 speaker ids for 6 utterances; give one per "
                                            r"utterance$"):
            call()


def test_new_speakers_get_the_statistics_of_their_own_utterances() -> None:
    x, lengths, speakers = _batch()
    known = {"a": [[0.0] * 3, [1.0] * 3]}
    stats = statistics_for(x, lengths, speakers, known)
    assert stats["a"] == known["a"]  # kept, not recomputed from x
    assert stats["c"] == speaker_statistics(x[4:], lengths[4:], speakers[4:])["c"]


def test_train_normalises_with_the_training_part_and_evaluate_repeats_it(
        emodb_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, out = tmp_path / "cache", tmp_path / "run"
    train_module.main(["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]",
                       "--speaker-norm", "--data", "emodb", "--subset", "5", "--folds", "1", "--epochs", "1",
                       "--batch-size", "8", "--threads", "1", "--out", str(out), "--cache-dir", str(cache)])
    saved = checkpoint.load(out / "fold-1/best.pt")
    config = train_module.TrainConfig(subset=5)
    corpus = train_module.load_data(config)
    (split,) = train_module.make_splits(corpus, config)[:1]
    x, lengths = cached_features(corpus, FrontEnd(), cache, progress=False)
    speakers = corpus.speakers()
    trained = speaker_statistics(x[split.train], lengths[split.train], speakers[split.train])
    assert {s: saved["speaker_norm"][s] for s in trained} == trained
    assert set(saved["speaker_norm"]) == set(speakers[np.concatenate([split.train, split.val, split.test])])

    scored = []
    logits = train_module.class_logits
    monkeypatch.setattr(train_module, "class_logits",
                        lambda model, items, **kw: scored.append(items) or logits(model, items, **kw))
    evaluate(out, cache_dir=str(cache))
    expected = normalise_by_speaker(x, speakers, saved["speaker_norm"])[split.test]
    assert torch.equal(scored[0].x, torch.from_numpy(expected))

    # Another corpus may reuse speaker ids for other people: there every speaker gets their own statistics.
    files = sorted((emodb_root / "wav").glob("03*[WN]a.wav"))[:4]
    manifest = tmp_path / "other.csv"
    manifest.write_text("path,label,speaker\n" + "".join(
        f"{p},{'anger' if p.stem[5] == 'W' else 'neutral'},03\n" for p in files))
    evaluate(out / "fold-1/best.pt", data=str(manifest), cache_dir=str(cache))
    other = train_module.load_data(train_module.TrainConfig(data=str(manifest)))
    ox, olengths = cached_features(other, FrontEnd(), cache, progress=False)
    own = speaker_statistics(ox, olengths, other.speakers())
    assert "03" in saved["speaker_norm"] and own["03"] != saved["speaker_norm"]["03"]
    assert torch.equal(scored[1].x, torch.from_numpy(normalise_by_speaker(ox, other.speakers(), own)))


def _tiny_speaker_norm_run(out: Path, cache: Path) -> Path:
    """fold-1/best.pt of a 1-epoch tiny CNN trained with --speaker-norm on 5 EmoDB utterances per class."""
    train_module.main(["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]",
                       "--speaker-norm", "--pad-to", "batch", "--data", "emodb", "--subset", "5", "--folds", "1",
                       "--epochs", "1", "--batch-size", "8", "--threads", "1", "--out", str(out),
                       "--cache-dir", str(cache)])
    return out / "fold-1/best.pt"


@pytest.mark.filterwarnings("ignore:for_speaker:UserWarning")  # enrols from fewer than 10 recordings
def test_an_enrolled_recognizer_normalises_like_evaluate_on_that_speakers_recordings(
        emodb_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Recognizer.for_speaker(files) takes the statistics evaluate takes for an unknown speaker from the
    same files, so it gives the same probabilities; without enrolment it refuses, naming the way out."""
    from minser.audio import load
    from minser.evaluate import _member_logits
    from minser.predict import main as predict_main

    best = _tiny_speaker_norm_run(tmp_path / "run", tmp_path / "cache")
    files = sorted((emodb_root / "wav").glob("03*[WN]a.wav"))[:6]
    manifest = tmp_path / "speaker03.csv"
    manifest.write_text("path,label,speaker\n" + "".join(
        f"{p},{'anger' if p.stem[5] == 'W' else 'neutral'},03\n" for p in files))
    rec = Recognizer.load(best)
    with pytest.raises(CheckpointError, match="--speaker-norm.*for_speaker"):
        rec.predict(files[0])
    enrolled = rec.for_speaker(files)
    assert rec.speaker_stats is None and enrolled.model is rec.model  # a copy for the speaker
    *_, logits = _member_logits(best, str(manifest), None, False, "cpu", 64, str(tmp_path / "cache"))
    mine = enrolled.probabilities([load(p, sr=16000) for p in files])
    np.testing.assert_allclose(mine, torch.softmax(logits, -1).numpy(), rtol=1e-4, atol=1e-5)

    assert predict_main([str(files[0]), "--model", str(best)]) == 2
    assert "--enrol FILE" in capsys.readouterr().err
    assert predict_main([str(files[0]), "--model", str(best), *(f"--enrol={p}" for p in files)]) == 0
    assert '"label"' in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:for_speaker:UserWarning")  # enrols from fewer than 10 recordings
def test_enrolment_cuts_long_recordings_into_windows_and_is_refused_where_it_does_not_apply(tmp_path: Path,
                                                                                           capsys) -> None:
    from minser.models import build

    model = build("cnn", 4, d_model=8, channels=[2, 2, 2])
    fields = dict(spec=model.spec, labels=["a", "b", "c", "d"], frontend=FrontEnd().to_dict(),
                  state_dict=model.state_dict())
    normed = checkpoint.save(tmp_path / "normed.pt", **fields, speaker_norm={"03": [[0.0] * 40, [1.0] * 40]})
    plain = checkpoint.save(tmp_path / "plain.pt", **fields)
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(20 * 16000) * np.linspace(0.2, 1.0, 20 * 16000)).astype(np.float32)
    rec = Recognizer.load(normed)
    # 20 s = two 7.5 s windows and a 5 s rest: the same statistics as the three pieces given apart.
    one = rec.for_speaker([wave], sr=16000).speaker_stats
    apart = rec.for_speaker([wave[:120000], wave[120000:240000], wave[240000:]], sr=16000).speaker_stats
    np.testing.assert_allclose(one, apart, rtol=1e-6)
    with pytest.raises(AudioError, match="a list of recordings"):
        rec.for_speaker(wave, sr=16000)
    with pytest.raises(AudioError, match="no recordings"):
        rec.for_speaker([])
    with pytest.raises(CheckpointError, match=r"was trained without --speaker-norm, so it takes no speaker statistics; "
                                              r"label without enrolling \(predict, or minser.predict without --enrol\)$"):
        Recognizer.load(plain).for_speaker([wave], sr=16000)
    assert export_main([str(normed), "--format", "onnx"]) == 2  # an ONNX graph cannot be enrolled
    assert "for_speaker" in capsys.readouterr().err and not (tmp_path / "normed.onnx").exists()
    assert export_main([str(normed), "--quantize", "int8"]) == 0  # the Recognizer serving int8 enrols
    assert Recognizer.load(tmp_path / "normed.int8.pt").for_speaker([wave], sr=16000).speaker_stats == one


def test_enrolment_curve_with_every_recording_is_evaluates_score(emodb_root: Path, tmp_path: Path) -> None:
    """tools/enrolment_curve.py enrols through Recognizer.for_speaker; with all of the test speaker's
    recordings it takes the statistics evaluate takes for that unseen speaker, so it prints evaluate's UA."""
    import subprocess
    import sys

    out, cache = tmp_path / "run", tmp_path / "cache"
    train_module.main(["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]",
                       "--speaker-norm", "--pad-to", "batch", "--protocol", "speaker", "--data", "emodb",
                       "--subset", "8", "--folds", "1", "--epochs", "1", "--batch-size", "8", "--threads", "1",
                       "--out", str(out), "--cache-dir", str(cache)])
    scored = evaluate(out, cache_dir=str(cache))
    tool = Path(__file__).resolve().parents[1] / "tools" / "enrolment_curve.py"
    done = subprocess.run([sys.executable, str(tool), str(out), "--counts", "2,all", "--draws", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isalnum()]
    assert [r.split(" | ")[0] for r in rows] == ["| k", "| 2", "| all"]
    assert rows[2] == f"| all | {scored['ua']:.2f} |"
    bad = subprocess.run([sys.executable, str(tool), str(out), "--counts", "two"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--counts 'two'" in bad.stderr
