"""Speaker normalisation (``python -m minser.train --speaker-norm``): standardise every Mel band of
an utterance with its speaker's mean and standard deviation.

Emotion shows in how a voice departs from its own habits (pitch, loudness, spectral tilt); the
speaker's statistics remove the habits, so the network sees the departures. The statistics of a
speaker are taken over the valid frames (``lengths``) of that speaker's utterances; the transform
``(x - mean) / std`` is applied to every frame, padding included, so that padded silence is mapped
the same way in training and at test time.

Statistics are data, label-free: a speaker never heard in training (leave-one-speaker-out) and
every speaker of another corpus (whose ids may name other people) is normalised with the
statistics of their own utterances, which needs several of them.
A single recording of an unknown speaker cannot be normalised this way. :class:`minser.Recognizer`
serves such checkpoints after *enrolment*: ``rec.for_speaker(recordings)`` takes the statistics of
several recordings of the speaker (on EmoDB's leave-one-speaker-out folds, 4 classes: 10 recordings come
within 3 UA of all of a speaker's utterances, and fewer than about 10 do worse than no normalisation; 7
classes: 5 recordings already beat no normalisation, 69 against 64 UA, and 10 stay 5 UA short of all; see
docs/RESULTS.md). ONNX export (``minser.export``) still refuses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from minser.errors import CheckpointError, ConfigError, DataError

if TYPE_CHECKING:
    from minser.splits import Split

# dB: a band that is (nearly) constant for a speaker, e.g. silence at the floor, is not blown up.
STD_FLOOR = 1.0
# The log-Mels (dB) that statistics must standardise to finite float32 numbers: far wider than speech's -100..+100.
REACH_DB = 1000.0

__all__ = ["STD_FLOOR", "checked_speaker_stats", "normalise_by_speaker", "refuse_single_recordings",
           "speaker_statistics", "split_statistics", "standardise", "statistics_for"]

SpeakerStats = Mapping[str, Sequence[Sequence[float]]]


def speaker_statistics(x: np.ndarray, lengths: np.ndarray, speakers: np.ndarray) -> dict[str, list[list[float]]]:
    """Per speaker, ``[mean, std]`` of each Mel band over the valid frames of their utterances.

    ``x (N, n_mels, frames)`` log-Mels in dB, ``lengths (N,)`` valid frames, ``speakers (N,)`` ids ->
    ``{speaker: [[mean per band], [std per band]]}`` (JSON-able; std floored at :data:`STD_FLOOR` dB).
    """
    speakers = _speaker_ids(speakers, len(x))
    stats = {}
    for speaker in np.unique(speakers):
        frames = np.concatenate([x[i, :, :max(int(lengths[i]), 1)] for i in np.flatnonzero(speakers == speaker)],
                                axis=1).astype(np.float64)
        std = np.maximum(frames.std(axis=1), STD_FLOOR)
        stats[str(speaker)] = [frames.mean(axis=1).tolist(), std.tolist()]
    return stats


def _speaker_ids(speakers: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
    """``speakers`` as a string array ``(n,)`` (the keys of the statistics), or DataError: a list compared with
    one id as a single False, and too few ids left utterances unnormalised, uninitialised memory."""
    ids = np.asarray(speakers).astype(str)
    if ids.shape != (n,):
        raise DataError(f"speaker normalisation: {ids.size} speaker ids for {n} utterances; give one per utterance")
    return ids


def checked_speaker_stats(stats: Sequence[Sequence[float]], n_mels: int) -> list[list[float]]:
    """``stats`` (one speaker's ``[mean, std]``, each ``(n_mels,)``) as lists of floats; ConfigError for
    another shape, a value that is not finite, or a std <= 0 (each would turn every score into NaN or inf)."""
    try:
        array = np.asarray(stats, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"speaker statistics: cannot be read as numbers ({exc}); pass [mean, std], each "
                          f"{n_mels} numbers (one per Mel band), as Recognizer.for_speaker computes them") from exc
    if array.shape != (2, n_mels):
        raise ConfigError(f"speaker statistics: shape {array.shape}, expected (2, {n_mels}): [mean, std] with one "
                          f"number per Mel band, as Recognizer.for_speaker computes them")
    with np.errstate(over="ignore"):  # checked as standardise computes, in float32: a std of 1e-50 is 0 there, a
        as_used = array.astype(np.float32)  # mean of 1e39 inf (every score NaN)
    if not np.isfinite(as_used).all():
        raise ConfigError("speaker statistics: hold values that are not finite in float32 (NaN, inf, or beyond "
                          f"{float(np.finfo(np.float32).max):.1e}); enrol the speaker "
                          "again from recordings of their speech (Recognizer.for_speaker)")
    if not (as_used[1] > 0).all():
        band = int(np.argmin(as_used[1]))
        raise ConfigError(f"speaker statistics: std of Mel band {band} is {array[1, band]:g}; every std must be > 0 in "
                          f"float32 (minser floors it at STD_FLOOR = {STD_FLOOR} dB)")
    with np.errstate(over="ignore"):  # a subnormal std (1e-40) or a mean near float32's end standardise to inf
        reach = (np.abs(as_used[0]) + np.float32(REACH_DB)) / as_used[1]
    if not np.isfinite(reach).all():
        band = int(np.flatnonzero(~np.isfinite(reach))[0])
        raise ConfigError(f"speaker statistics: Mel band {band}'s mean {array[0, band]:g} and std {array[1, band]:g} "
                          f"take log-Mels within {REACH_DB:g} dB of 0 beyond float32's range; enrol the speaker again "
                          "from recordings of their speech (Recognizer.for_speaker)")
    return array.tolist()


def standardise(x: np.ndarray, stats: Sequence[Sequence[float]]) -> np.ndarray:
    """``(x - mean) / std`` per Mel band of ``x (N, n_mels, frames)`` with one speaker's ``[mean, std]``
    (each ``(n_mels,)``): float32, every frame, padding included."""
    mean, std = (np.asarray(v, dtype=np.float32)[:, None] for v in stats)
    return (x - mean) / std


def normalise_by_speaker(x: np.ndarray, speakers: np.ndarray, stats: SpeakerStats) -> np.ndarray:
    """``(x - mean) / std`` of each utterance's speaker, per Mel band: ``(N, n_mels, frames)`` float32.

    Raises DataError naming the speakers that ``stats`` lacks.
    """
    speakers = _speaker_ids(speakers, len(x))
    missing = sorted(set(speakers) - set(stats))
    if missing:
        raise DataError(f"speaker normalisation: no statistics for speaker(s) {', '.join(missing)}; "
                        f"the statistics cover {', '.join(sorted(stats)) or 'no speaker'}")
    out = np.empty_like(x, dtype=np.float32)
    for speaker in np.unique(speakers):
        rows = np.flatnonzero(speakers == speaker)
        out[rows] = standardise(x[rows], stats[str(speaker)])
    return out


def statistics_for(x: np.ndarray, lengths: np.ndarray, speakers: np.ndarray, known: SpeakerStats,
                   ) -> dict[str, list[list[float]]]:
    """``known`` plus, for every speaker of ``speakers`` that it lacks, the statistics of that speaker's
    own utterances in ``x`` (label-free adaptation to a speaker not heard in training)."""
    speakers = _speaker_ids(speakers, len(x))
    new = np.array([s not in known for s in speakers], dtype=bool)
    return {**known, **(speaker_statistics(x[new], lengths[new], speakers[new]) if new.any() else {})}


def split_statistics(x: np.ndarray, lengths: np.ndarray, speakers: np.ndarray, split: Split,
                     ) -> dict[str, list[list[float]]]:
    """The statistics a fold normalises with: those of ``split.train``'s utterances, plus, for a speaker
    absent from it (the test speaker when leaving one out), those of their own utterances in
    ``split.val`` and ``split.test``. ``x``, ``lengths`` and ``speakers`` cover the whole corpus."""
    speakers = _speaker_ids(speakers, len(x))
    rest = np.concatenate([split.val, split.test]).astype(np.int64)
    train = np.asarray(split.train, dtype=np.int64)
    return statistics_for(x[rest], lengths[rest], speakers[rest],
                          speaker_statistics(x[train], lengths[train], speakers[train]))


def refuse_single_recordings(saved: Mapping, name: str) -> None:
    """Raise CheckpointError when the checkpoint ``saved`` (called ``name``) was trained with
    speaker normalisation: its inputs need the statistics of several recordings per speaker."""
    if saved.get("speaker_norm"):
        raise CheckpointError(
            f"{name}: trained with --speaker-norm, so its inputs must be standardised with each speaker's "
            "statistics over several recordings, which an exported model cannot take; serve it with "
            "minser.Recognizer.load(...).for_speaker(recordings), or train without --speaker-norm to export")
