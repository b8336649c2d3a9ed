"""Feature cache: same features as extract(), reused, invalidated by file or setting changes, never corrupt."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

import minser.data.cache as cache
from minser.audio import load
from minser.data import Corpus, Utterance, cached_features, load_emodb
from minser.errors import AudioError, ConfigError, DataError
from minser.features import FrontEnd, extract

SHORT = FrontEnd(seconds=0.5)  # 50 frames: keeps every test fast


def make_corpus(root: Path, n: int = 5) -> Corpus:
    """``n`` synthetic utterances of different lengths: tones in noise, 0.2 s to 0.7 s."""
    utterances = []
    for i in range(n):
        seconds = 0.2 + 0.125 * i
        t = np.arange(round(16000 * seconds)) / 16000
        rng = np.random.default_rng(i)
        wave = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(t.size)
        path = root / f"u{i}.wav"
        soundfile.write(path, wave.astype(np.float32), 16000, subtype="FLOAT")
        utterances.append(Utterance(path, "a" if i % 2 else "b", "s"))
    return Corpus("toy", ("a", "b"), utterances)


def reference(corpus: Corpus, frontend: FrontEnd) -> tuple[np.ndarray, np.ndarray]:
    return extract([load(u.path) for u in corpus.utterances], frontend)


def forbid_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("features were recomputed instead of read from the cache")

    monkeypatch.setattr(cache, "_compute", fail)


def test_matches_extract_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    corpus = make_corpus(tmp_path)
    monkeypatch.setattr(cache, "BATCH", 2)  # several batches, including a short last one
    features, lengths = cached_features(corpus, SHORT, tmp_path / "cache")
    want_features, want_lengths = reference(corpus, SHORT)
    assert features.shape == (5, 40, 50) and features.dtype == np.float32
    assert lengths.dtype == np.int64
    np.testing.assert_array_equal(features, want_features)
    np.testing.assert_array_equal(lengths, want_lengths)
    assert lengths.tolist() == [21, 33, 46, 50, 50]
    assert "toy: 5/5 utterances" in capsys.readouterr().err
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].name.startswith("toy-") and files[0].suffix == ".npz"

    forbid_compute(monkeypatch)
    again, again_lengths = cached_features(corpus, SHORT, tmp_path / "cache")
    np.testing.assert_array_equal(again, features)
    np.testing.assert_array_equal(again_lengths, lengths)
    assert capsys.readouterr().err == ""
    # Corpus order is honoured: a reordered corpus is its own cache entry with reordered rows.
    monkeypatch.undo()
    reordered, _ = cached_features(corpus.subset([4, 0]), SHORT, tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(reordered, features[[4, 0]])


def test_rebuilt_when_a_file_or_a_setting_changes(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, n=2)
    first = cache.cache_path(corpus, SHORT, tmp_path / "cache")
    old, _ = cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert cache.cache_path(corpus, FrontEnd(seconds=0.5, n_mels=32), tmp_path / "cache") != first

    path = corpus.utterances[0].path
    soundfile.write(path, np.zeros(8000, dtype=np.float32) + 0.5, 16000, subtype="FLOAT")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.cache_path(corpus, SHORT, tmp_path / "cache") != first
    new, _ = cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert not np.array_equal(new[0], old[0])
    np.testing.assert_array_equal(new[1], old[1])

    mels, _ = cached_features(corpus, FrontEnd(seconds=0.5, n_mels=32), tmp_path / "cache", progress=False)
    assert mels.shape == (2, 32, 50)


def test_rebuilt_when_a_file_is_rewritten_at_the_same_size(tmp_path: Path) -> None:
    """Only the modification time tells a re-recorded (or re-encoded) file of the same length from the old one."""
    corpus = make_corpus(tmp_path, n=2)
    old, _ = cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    path = corpus.utterances[0].path
    size, stat = path.stat().st_size, path.stat()
    samples = soundfile.read(path, dtype="float32")[0]
    soundfile.write(path, -samples[::-1].copy(), 16000, subtype="FLOAT")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert path.stat().st_size == size
    new, _ = cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert not np.array_equal(new[0], old[0])
    np.testing.assert_array_equal(new[0], reference(corpus, SHORT)[0][0])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "npy"])
def test_corrupt_cache_file_is_rebuilt(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture) -> None:
    corpus = make_corpus(tmp_path, n=2)
    good, lengths = cached_features(corpus, SHORT, tmp_path, progress=False)
    path = cache.cache_path(corpus, SHORT, tmp_path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    elif damage == "wrong_shape":
        np.savez(path, features=good[:, :, :10], lengths=lengths)
    else:  # one bare array under the archive's name: np.load gives an ndarray, which has no context manager
        with path.open("wb") as file:
            np.save(file, good)
    features, _ = cached_features(corpus, SHORT, tmp_path, progress=False)
    np.testing.assert_array_equal(features, good)
    assert "recomputing" in capsys.readouterr().err
    # ... and the rebuilt file is whole again.
    with np.load(path) as stored:
        np.testing.assert_array_equal(stored["features"], good)


def test_interrupted_write_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = make_corpus(tmp_path, n=2)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("minser.checkpoint.os.replace", interrupted)  # the atomic writer of the cache
    with pytest.raises(KeyboardInterrupt):
        cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_unwritable_cache_warns_and_returns_features(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = make_corpus(tmp_path, n=2)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    features, _ = cached_features(corpus, SHORT, blocker / "cache", progress=False)
    np.testing.assert_array_equal(features, reference(corpus, SHORT)[0])
    err = capsys.readouterr().err
    # Before: "give a writable cache folder" whatever the cause, and mkdir's bare "File exists".
    assert f"the features are not cached, and the next run computes them again: cannot write {blocker}/cache/" in err
    assert f"{blocker} is a file, not a folder; choose another folder (--cache-dir" in err


def test_a_corpus_name_too_long_for_a_file_name_is_cut_in_the_cache_name(tmp_path: Path) -> None:
    """The whole name went into the file name: 'File name too long' on every cache write, whatever the folder."""
    corpus = make_corpus(tmp_path, n=2)
    corpus = Corpus("é" * 200, corpus.labels, corpus.utterances)  # 400 bytes in UTF-8
    path = cache.cache_path(corpus, SHORT, tmp_path / "cache")
    assert path.name.startswith("é" * 60 + "-") and len(path.name.encode()) < 200
    cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert path.is_file()


@pytest.mark.skipif(os.name == "nt", reason="POSIX file names are bytes; Windows names are UTF-16")
def test_a_corpus_name_that_is_not_utf8_is_cached(tmp_path: Path) -> None:
    """A folder named b"\\xe9motions" (surrogates in Python) was a UnicodeEncodeError: a raw traceback."""
    corpus = make_corpus(tmp_path, n=2)
    key = cache.cache_key(corpus, SHORT)[:20]
    latin1 = Corpus(os.fsdecode(b"\xe9motions"), corpus.labels, corpus.utterances)
    path = cache.cache_path(latin1, SHORT, tmp_path)
    assert path == tmp_path / f"motions-{key}.npz"  # the byte UTF-8 cannot show is dropped
    cached_features(latin1, SHORT, tmp_path, progress=False)
    assert path.is_file()
    # UTF-8 names keep the cache files they had, a character cut at NAME_BYTES dropped as before.
    for name, kept in [("toy", "toy"), ("a" + "é" * 100, "a" + "é" * 59)]:
        renamed = Corpus(name, corpus.labels, corpus.utterances)
        assert cache.cache_path(renamed, SHORT, tmp_path) == tmp_path / f"{kept}-{key}.npz"


def test_a_frontend_that_is_not_a_frontend_is_refused_by_name(tmp_path: Path) -> None:
    """A dict of settings was an AttributeError ('dict' object has no attribute 'to_dict')."""
    with pytest.raises(ConfigError, match=r"^cached_features: frontend must be a FrontEnd, got dict; use "
                                          r"FrontEnd\.from_dict\(settings\) for stored settings$"):
        cached_features(make_corpus(tmp_path, n=2), {"n_mels": 40}, tmp_path / "cache")  # type: ignore[arg-type]


def test_a_file_shorter_than_the_front_ends_window_is_named(tmp_path: Path) -> None:
    """Past load's 25 ms but short of a longer window, the file was named by its batch index, "waves[2]"."""
    corpus = make_corpus(tmp_path, n=3)
    short = corpus.utterances[2].path
    soundfile.write(short, 0.1 * np.ones(450, dtype=np.float32), 16000, subtype="FLOAT")
    wide = FrontEnd(n_fft=512, win_length=512, seconds=0.5)
    with pytest.raises(AudioError, match=rf"^{re.escape(str(short))}: has 450 samples, shorter than one analysis "
                                         r"window \(512 samples at 16000 Hz\); use longer audio$"):
        cached_features(corpus, wide, tmp_path / "cache", progress=False)
    assert cached_features(corpus, SHORT, tmp_path / "cache", progress=False)[1][2] == 3  # 400 is enough for it


def test_bad_audio_and_missing_files(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, n=2)
    corpus.utterances[1].path.write_bytes(b"RIFF....WAVEgarbage")
    with pytest.raises(AudioError, match="u1.wav"):
        cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    corpus.utterances[1].path.unlink()
    with pytest.raises(DataError, match=r"u1\.wav.*the corpus changed or moved"):
        cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_an_all_zero_file_is_refused_before_anything_is_cached(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, n=3)
    silent = corpus.utterances[1].path
    soundfile.write(silent, np.zeros(8000, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=rf"{silent}: holds no sound \(every sample is zero\), likely a failed "
                                         r"recording or export; .*remove it from corpus 'toy'"):
        cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    # Only corpora are checked: a silent clip is legitimate input at inference time.
    features, lengths = extract([load(silent)], SHORT)
    np.testing.assert_allclose(features, -100.0, rtol=1e-6)  # the dB floor: silence
    assert lengths.tolist() == [50]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("MINSER_DATA", str(tmp_path / "read-only-data"))
    assert cache.default_cache_dir() == tmp_path / "minser" / "features"


def test_a_tilde_in_the_cache_dir_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cache_dir="~/c" (and --cache-dir=~/c, which bash leaves as it is) made a folder named ~ in the current one."""
    (tmp_path / "audio").mkdir()
    corpus = make_corpus(tmp_path / "audio", n=2)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    cached_features(corpus, SHORT, "~/c", progress=False)
    assert [p.parent for p in home.rglob("*.npz")] == [home / "c"]
    assert cache.cache_path(corpus, SHORT, "~/c").parent == home / "c"
    assert list(work.iterdir()) == []


def test_real_emodb_subset(emodb_root: Path, tmp_path: Path) -> None:
    """Four real files (two with the extra PAD chunk) through the paper's 40 x 750 front end."""
    corpus = load_emodb(emodb_root, classes=7)
    picks = [i for i, u in enumerate(corpus.utterances) if u.path.name.startswith("14a07")][:2] + [0, 1]
    part = corpus.subset(picks)
    features, lengths = cached_features(part, FrontEnd(), tmp_path, progress=False)
    assert features.shape == (4, 40, 750)
    durations = np.array([soundfile.info(u.path).frames for u in part.utterances])
    np.testing.assert_array_equal(lengths, np.minimum(750, 1 + durations // 160))
    assert np.isfinite(features).all()


def test_writing_the_cache_deletes_what_killed_writes_of_it_left(tmp_path: Path) -> None:
    """Each SIGKILL mid-write left a temporary as large as the cache (40 MB for EmoDB), kept for ever; one
    written a moment ago may be another process's write in progress, and is left alone."""
    corpus = make_corpus(tmp_path, n=2)
    path = cache.cache_path(corpus, SHORT, tmp_path / "cache")
    path.parent.mkdir()
    stale, live = path.parent / f".{path.name}.k1ll3d00.tmp", path.parent / f".{path.name}.wr1t1ng0.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    old = stale.stat().st_mtime - cache.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    cached_features(corpus, SHORT, tmp_path / "cache", progress=False)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, live.name])
