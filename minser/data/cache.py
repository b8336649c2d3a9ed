"""On-disk cache of a corpus' log-Mel features, computed once per corpus and front end.

One ``.npz`` file per key, where the key hashes the front-end settings and every audio file's
(absolute path, size, mtime_ns): changing a setting or touching a file gives a new key, so a file
changed in place is recomputed (a change that keeps both its size and its modification time, as
``cp -p`` or ``touch -r`` can, is not seen). Writes are atomic (temporary file in the cache folder, fsync, then
``os.replace``) and a cache file that cannot be read back whole is recomputed, never trusted.

The default folder is ``$XDG_CACHE_HOME/minser/features`` (``~/.cache/minser/features``), not the
data folder: shared corpora are often read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

import minser
from minser.audio import check_wave, load
from minser.files import atomic_write, remove_temporaries
from minser.data.corpora import Corpus, _expanded, user_cache_dir
from minser.errors import AudioError, ConfigError, DataError
from minser.features import FrontEnd, _check_frontend, extract

# Bump when the file layout changes, so old files are ignored rather than misread.
CACHE_FORMAT = 1
# Utterances read and featurised together: bounds memory to a few MB of raw audio per batch.
BATCH = 32
# A temporary cache file untouched this long is what a killed write left (a live write touches it often).
STALE_SECONDS = 3600
# Bytes of the corpus name kept in a cache file's name: with the key and atomic_write's temporary-file
# affixes it stays under the 255 bytes a file name may have.
NAME_BYTES = 120


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/minser/features``, or ``~/.cache/minser/features``."""
    return user_cache_dir() / "features"


def cache_key(corpus: Corpus, frontend: FrontEnd) -> str:
    """Hex SHA-256 of the front-end settings, minser's version and every file's (path, size, mtime_ns).

    Raises DataError naming the first audio file that does not exist.
    """
    files = []
    for utterance in corpus.utterances:
        try:
            stat = utterance.path.stat()
        except OSError as exc:
            raise DataError(
                f"corpus {corpus.name!r}: cannot read {utterance.path} ({exc}); "
                "the corpus changed or moved"
            ) from exc
        files.append([str(utterance.path.resolve()), stat.st_size, stat.st_mtime_ns])
    description = {
        "format": CACHE_FORMAT,
        "minser": minser.__version__,
        "frontend": frontend.to_dict(),
        "files": files,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def cache_path(corpus: Corpus, frontend: FrontEnd, cache_dir: str | Path | None = None) -> Path:
    """The cache file of ``corpus`` under ``frontend``: ``<cache_dir>/<corpus name>-<key[:20]>.npz`` (``~`` in
    ``cache_dir`` expanded, as the shell does not in ``--cache-dir=~/c``)."""
    folder = _expanded(str(cache_dir), "--cache-dir") if cache_dir is not None else default_cache_dir()
    # The key tells files apart; the name is for people, cut so that the file name stays within the 255
    # bytes file systems allow (a manifest named at length made every cache write fail). os.fsencode: a
    # folder name that is not UTF-8 (b"\xe9motions") holds surrogates, which .encode() refused; its undecodable
    # bytes are dropped as a character cut in two is, so UTF-8 names keep the file names they had.
    name = os.fsencode(corpus.name)[:NAME_BYTES].decode(errors="ignore")
    return folder / f"{name}-{cache_key(corpus, frontend)[:20]}.npz"


def _read(path: Path, n: int, frontend: FrontEnd) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached ``(features, lengths)`` if ``path`` holds a complete, well-shaped entry, else None."""
    try:
        stored = np.load(path, allow_pickle=False)
        if not isinstance(stored, np.lib.npyio.NpzFile):  # a bare .npy array saved under this name
            raise ValueError("it holds one array, not an .npz archive")
        with stored:
            features, lengths = stored["features"], stored["lengths"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        print(f"minser: cache file {path} is unreadable ({exc}); recomputing it", file=sys.stderr)
        return None
    expected = (n, frontend.n_mels, frontend.n_frames)
    if features.shape != expected or features.dtype != np.float32 or lengths.shape != (n,) or lengths.dtype != np.int64:
        print(f"minser: cache file {path} has unexpected shapes or types; recomputing it", file=sys.stderr)
        return None
    return features, lengths


def _write_atomic(path: Path, features: np.ndarray, lengths: np.ndarray) -> None:
    """Write ``path`` so that it is either absent or complete, even if the process dies mid-write; first delete
    what writes of it killed mid-way left (as large as the cache: 40 MB for EmoDB, per kill), when older than
    :data:`STALE_SECONDS`: a younger one may be another process's write in progress."""
    remove_temporaries(path.parent, [path.name], older_than=STALE_SECONDS)
    atomic_write(path, lambda file: np.savez(file, features=features, lengths=lengths))


def load_sounding(path: Path, corpus: Corpus, sample_rate: int, min_length: int | None = None) -> np.ndarray:
    """Corpus file ``path`` as :func:`~minser.audio.load` reads it at ``sample_rate`` Hz; AudioError naming it
    when every sample is zero, or when it is shorter than ``min_length`` samples at ``sample_rate`` (a front
    end's ``win_length``; load checks one 25 ms window, and extract would name the file by its batch index).

    Checked here, for corpora, and not in :func:`~minser.features.extract`: a silent clip is
    legitimate input at inference time, but a silent training or test file is a broken one.
    """
    wave = load(path, sr=sample_rate)
    if min_length is not None:
        check_wave(wave, str(path), sr=sample_rate, min_length=min_length)
    if not wave.any():
        raise AudioError(
            f"{path}: holds no sound (every sample is zero), likely a failed recording or export; "
            f"record or export it again, or remove it from corpus {corpus.name!r}"
        )
    return wave


def _compute(corpus: Corpus, frontend: FrontEnd, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Load, check (:func:`load_sounding`) and featurise every utterance in batches of :data:`BATCH`; progress
    on stderr."""
    n = len(corpus)
    features = np.empty((n, frontend.n_mels, frontend.n_frames), dtype=np.float32)
    lengths = np.empty(n, dtype=np.int64)
    start_time = time.monotonic()
    reported = 0
    for start in range(0, n, BATCH):
        chunk = corpus.utterances[start : start + BATCH]
        waves = [load_sounding(u.path, corpus, frontend.sample_rate, frontend.win_length) for u in chunk]
        features[start : start + len(chunk)], lengths[start : start + len(chunk)] = extract(waves, frontend)
        done = start + len(chunk)
        # One line per ~10% of the corpus keeps logs short for large corpora.
        if progress and (done == n or done - reported >= max(BATCH, n // 10)):
            reported = done
            elapsed = time.monotonic() - start_time
            print(f"minser: features of {corpus.name}: {done}/{n} utterances ({elapsed:.1f} s)", file=sys.stderr)
    return features, lengths


def cached_features(
    corpus: Corpus, frontend: FrontEnd | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Log-Mel features of every utterance, in corpus order, from the cache or computed and cached.

    Returns ``features`` float32 ``(N, n_mels, n_frames)`` (``(N, 40, 750)`` for the paper's
    front end, the default) and ``lengths`` int64 ``(N,)``, the frames that carry signal (see
    :func:`minser.features.extract`). ``cache_dir`` defaults to :func:`default_cache_dir`; a ``frontend``
    that is not a :class:`~minser.features.FrontEnd` raises :class:`~minser.errors.ConfigError`.
    Progress goes to stderr when ``progress``. A corrupt audio file, or one whose samples are
    all zero, raises :class:`~minser.errors.AudioError` naming it (a cache file is trusted as it is).
    """
    frontend = FrontEnd() if frontend is None else _check_frontend(frontend, "cached_features")
    if len(corpus) == 0:
        raise DataError(f"corpus {corpus.name!r} has no utterances; nothing to featurise")
    path = cache_path(corpus, frontend, cache_dir)
    cached = _read(path, len(corpus), frontend)
    if cached is not None:
        return cached
    if progress:
        print(f"minser: computing features of {corpus.name} ({len(corpus)} utterances) into {path}", file=sys.stderr)
    features, lengths = _compute(corpus, frontend, progress)
    try:
        _write_atomic(path, features, lengths)
    except (OSError, ConfigError) as exc:  # ConfigError: atomic_write found no writable folder there
        # The features are good; only reuse is lost, so warn instead of failing the run.
        # The error names the cause and its remedy (a full disk, a file in the way); only reuse is lost.
        print(f"minser: the features are not cached, and the next run computes them again: {exc} "
              "(--cache-dir, or cache_dir= in Python, moves the cache)", file=sys.stderr)
    return features, lengths
