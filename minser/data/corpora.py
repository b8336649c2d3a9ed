"""Speech-emotion corpora as lists of labelled utterances.

A :class:`Corpus` is a name, a class order (``labels``) and a list of :class:`Utterance`
records (audio path, label, speaker, optional session). Loaders:

- :func:`load_emodb`: Berlin Emo-DB, 7 emotions or the paper's 4-class subset.
- :func:`load_iemocap`: IEMOCAP (``IEMOCAP_full_release`` layout), the paper's 4 classes with
  excitement merged into happiness.
- :func:`load_manifest` (CSV) and :func:`load_folder` (one folder per label): any other corpus.
- :func:`load_corpus`: one of the above from a name or a path.

Corpora are looked up under :func:`data_dir` (``$MINSER_DATA``, else a per-user cache folder).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minser.audio import (AUDIO_SUFFIXES, UNREADABLE_SUFFIXES, conversion_example, file_identity, file_problem,
                          first_repeated_file)
from minser.errors import ConfigError, DataError

# Class orders. The 4-class order is a subsequence of the 7-class one, and IEMOCAP uses the same
# 4 names, so a class index means the same emotion across corpora and class sets.
EMODB_LABELS_7 = ("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral")
FOUR_CLASS_LABELS = ("anger", "happiness", "sadness", "neutral")
IEMOCAP_LABELS = FOUR_CLASS_LABELS

# EmoDB emotion letters are German initials: Wut/Aerger, Langeweile, Ekel, Angst, Freude, Trauer, Neutral.
EMODB_LETTERS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
# File names such as 03a01Fa.wav: speaker 03, text a01, emotion F, version a.
# The suffix may be spelled in capitals (03a01Fa.WAV), as some Windows tools and FAT drives write it.
_EMODB_NAME = re.compile(r"^(?P<speaker>\d{2})(?P<text>[ab]\d{2})(?P<emotion>[WLEAFTN])(?P<version>[a-z])\.(?i:wav)$")

# IEMOCAP categorical codes kept by the paper (excitement counted as happiness); others are skipped.
IEMOCAP_CODES = {"ang": "anger", "hap": "happiness", "exc": "happiness", "sad": "sadness", "neu": "neutral"}
# Lines such as "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]".
_IEMOCAP_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\t(?P<utt>\S+)\t(?P<code>\S+)\t\[")
_IEMOCAP_UTT = re.compile(r"^Ses(?P<session>\d{2})[FM]_.+_(?P<gender>[FM])\d+$")
# A line meant as a turn (a time span, then an utterance id): one that fails _IEMOCAP_LINE is damaged (tabs
# turned into spaces by an editor, a field lost), not a header or annotator line to skip.
_IEMOCAP_TURN = re.compile(r"^\[.*\bSes\d")
_IEMOCAP_SESSIONS = 5
# What to do about a damaged or incomplete copy of the release ({} names what to restore).
_IEMOCAP_RESTORE = "restore {} from the IEMOCAP release"

# The speaker of utterances whose manifest or folder names none.
UNKNOWN_SPEAKER = "unknown"
# The columns a CSV manifest is read for (path and label required).
MANIFEST_COLUMNS = ("path", "label", "speaker", "session")
# Corpus specs that name a corpus in the data folder, not a path (see load_corpus).
CORPUS_NAMES = ("emodb", "iemocap")
# How messages describe EmoDB's own layout, which a folder corpus is not.
_EMODB_LAYOUT = "EmoDB (wav/03a01Fa.wav, ...)"
# The folders of the data folder load_corpus reads each named corpus from, the first found.
_CORPUS_FOLDERS = {"emodb": ("emodb",), "iemocap": ("IEMOCAP_full_release", "iemocap")}
DOWNLOAD_HINT = "run `python -m minser.data download emodb` or set MINSER_DATA to the folder that holds emodb/wav/"


@dataclass(frozen=True)
class Utterance:
    """One labelled recording: audio file, emotion label, speaker id and (IEMOCAP) session."""

    path: Path
    label: str
    speaker: str
    session: str | None = None

    def __post_init__(self) -> None:
        # Accept str paths from callers; the cache and loaders rely on Path methods.
        object.__setattr__(self, "path", Path(self.path))


@dataclass
class Corpus:
    """A named list of utterances with a fixed class order.

    ``labels`` is the class order: class index ``i`` is ``labels[i]``. Every utterance's label
    must be one of them.
    """

    name: str
    labels: tuple[str, ...]
    utterances: list[Utterance] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        if len(set(self.labels)) != len(self.labels):
            raise DataError(f"corpus {self.name!r}: labels {self.labels} contain duplicates; give each class once")
        known = set(self.labels)
        for utterance in self.utterances:
            if utterance.label not in known:
                raise DataError(
                    f"corpus {self.name!r}: {utterance.path} has label {utterance.label!r}, "
                    f"which is not one of the corpus labels {self.labels}"
                )

    def __len__(self) -> int:
        return len(self.utterances)

    def fingerprint(self) -> str:
        """Hex SHA-256 (16 digits) of the class order and every utterance's file, label, speaker and session, in
        order; files by their path below the folder holding them all, so that a moved corpus keeps its print."""
        paths = [os.path.abspath(u.path) for u in self.utterances]
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0]) if paths else ""
        rows = [[os.path.relpath(p, root), u.label, u.speaker, u.session] for p, u in zip(paths, self.utterances)]
        return hashlib.sha256(json.dumps([list(self.labels), rows]).encode()).hexdigest()[:16]

    def targets(self) -> np.ndarray:
        """Class indices ``(len(self),)`` int64, in ``labels`` order."""
        index = {label: i for i, label in enumerate(self.labels)}
        return np.array([index[u.label] for u in self.utterances], dtype=np.int64)

    def speakers(self) -> np.ndarray:
        """Speaker ids ``(len(self),)`` as strings: the groups of leave-one-speaker-out."""
        return np.array([u.speaker for u in self.utterances], dtype=str)

    def sessions(self) -> np.ndarray:
        """Session ids ``(len(self),)`` as strings: the groups of leave-one-session-out.

        Raises DataError when an utterance has no session (EmoDB, most manifests).
        """
        missing = [u.path for u in self.utterances if u.session is None]
        if missing:
            # EmoDB, loaded by name, has no manifest to give a session column to.
            manifest = "" if self.name in ("emodb4", "emodb7") else ", or give a session column in the manifest"
            raise DataError(
                f"corpus {self.name!r} has no session for {len(missing)} utterances (first: {missing[0]}); "
                f"group by speaker instead (--protocol speaker){manifest}"
            )
        return np.array([u.session for u in self.utterances], dtype=str)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Corpus:
        """The utterances at ``indices`` (integers, in that order), or where ``indices`` is True (a boolean mask
        ``(len(self),)``, as ``corpus.targets() == 0``); same name and labels.

        Raises ConfigError for a mask of another shape, for indices that are not integers (``1.7``), which
        would otherwise pick utterances 0 and 1 or truncate to others, and for indices outside
        ``0 .. len(self) - 1`` (a negative one would count from the end).
        """
        picks = np.asarray(indices)
        if picks.dtype == bool:
            if picks.shape != (len(self),):
                raise ConfigError(f"corpus {self.name!r}: subset got a boolean mask of shape {picks.shape}; give a "
                                  f"mask of shape ({len(self)},), one value per utterance, or integer indices")
            picks = np.flatnonzero(picks)
        elif picks.size and not np.issubdtype(picks.dtype, np.integer):
            raise ConfigError(f"corpus {self.name!r}: subset got {picks.dtype} indices (first: "
                              f"{picks.reshape(-1).tolist()[0]!r}); give integer indices or a boolean mask of shape "
                              f"({len(self)},)")
        outside = picks[(picks < 0) | (picks >= len(self))]
        if outside.size:  # a negative index counted from the end, past the end was a bare IndexError
            raise ConfigError(f"corpus {self.name!r}: subset got index {outside.reshape(-1).tolist()[0]}, outside 0 to "
                              f"{len(self) - 1} (its {len(self)} utterances)")
        return Corpus(self.name, self.labels, [self.utterances[i] for i in picks.reshape(-1).tolist()])

    def label_counts(self) -> dict[str, int]:
        """Number of utterances per label, in ``labels`` order."""
        counts = np.bincount(self.targets(), minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, counts)}


def data_dir() -> Path:
    """The folder corpora are looked up in: ``$MINSER_DATA``, else ``$XDG_CACHE_HOME/minser``
    (default ``~/.cache/minser``). It is not created here."""
    configured = os.environ.get("MINSER_DATA")
    if configured:
        return _expanded(configured, "MINSER_DATA")
    return user_cache_dir()


def _expanded(path: str, variable: str) -> Path:
    """``path`` (the value of environment variable or option ``variable``) with ``~`` expanded; ConfigError when
    the home folder it names cannot be found (``~nosuchuser``; no HOME and no passwd entry, as in a container)."""
    try:
        return Path(path).expanduser()
    except RuntimeError as exc:
        raise ConfigError(f"{variable}={path!r}: cannot find the home folder it names ({exc}); set {variable} to "
                          "an absolute path") from exc


def _base_dir(folder: str | Path | None) -> Path:
    return Path(folder) if folder is not None else data_dir()


def shown_data_dir(folder: str | Path | None = None) -> str:
    """``folder``, else :func:`data_dir`, for a message or a help text: what keeps it from being known instead
    of raising (a help text or another error must not fail on it)."""
    try:
        return str(_base_dir(folder))
    except ConfigError as exc:
        return f"unknown: {exc}"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/minser``, or ``~/.cache/minser`` when XDG_CACHE_HOME is unset."""
    cache_home = os.environ.get("XDG_CACHE_HOME")
    if cache_home:
        return _expanded(cache_home, "XDG_CACHE_HOME") / "minser"
    try:
        return Path.home() / ".cache" / "minser"
    except RuntimeError as exc:  # no HOME and no passwd entry for this user (a container's --user)
        raise ConfigError(f"cannot find the home folder ({exc}), where minser keeps corpora and features by "
                          "default; set MINSER_DATA (corpora) and XDG_CACHE_HOME (or --cache-dir) to absolute "
                          "paths") from exc


# ----------------------------------------------------------------------------------------------
# EmoDB


def _wav_files(folder: Path) -> list[Path]:
    """The files of ``folder`` whose suffix is ``.wav`` in any case (``.WAV`` too), sorted by name."""
    # Hidden entries (macOS "._x.wav" resource forks) are not data, as in label folders.
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() == ".wav" and not p.name.startswith(".") and p.is_file())


def _emodb_wav_files(root: Path) -> tuple[Path, list[Path]]:
    """The folder of EmoDB's wav files under ``root`` (``root/wav`` or ``root`` itself) and its wav files."""
    if (root / "wav").is_dir():
        return root / "wav", _wav_files(root / "wav")
    if root.is_dir() and (files := _wav_files(root)):
        return root, files
    raise DataError(
        f"EmoDB not found: {root} holds no wav/ folder (expected {root}/wav/03a01Fa.wav, ...); "
        f"{DOWNLOAD_HINT}"
    )


def _warn_if_incomplete(wav_dir: Path, names: Iterable[str], labels: tuple[str, ...]) -> None:
    """Warn when ``names`` (file names found in ``wav_dir``) lack some of the files the corpus ships with one of
    ``labels`` (the class set loaded: 535 files for the 7 classes, 339 for the 4); files of other classes
    are not missed, as they are not loaded.

    Names only, no hashes: hashing 535 files on every load is too slow (``verify_wavs`` does that once,
    at download). A part may be chosen on purpose, hence a warning and not an error.
    """
    from minser.data.download import emodb_sums  # imported here: download imports this module

    expected = [name for name in emodb_sums() if EMODB_LETTERS[_EMODB_NAME.match(name)["emotion"]] in labels]
    missing = sorted(set(expected).difference(names))
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        of = "the corpus'" if len(labels) == len(EMODB_LABELS_7) else f"the {len(labels)}-class set's"
        warnings.warn(
            f"EmoDB folder {wav_dir} holds {len(expected) - len(missing)} of {of} {len(expected)} files "
            f"({len(missing)} missing: {shown}); scores on a part are not comparable with published ones. "
            "To get the full corpus run `python -m minser.data download emodb`",
            UserWarning,
            stacklevel=3,  # the caller of load_emodb
        )


def load_emodb(root: str | Path, classes: int = 4) -> Corpus:
    """Berlin Emo-DB from its folder (the one holding ``wav/``) or from the ``wav/`` folder itself.

    Labels come from the file names (``03a01Fa.wav``: speaker ``03``, text ``a01``, emotion letter
    ``F``, version ``a``). ``classes=7`` keeps all emotions in the order ``EMODB_LABELS_7`` =
    (anger, boredom, disgust, fear, happiness, sadness, neutral); ``classes=4`` keeps the paper's
    subset ``FOUR_CLASS_LABELS`` = (anger, happiness, sadness, neutral). The full corpus has 535
    utterances (339 in the 4-class subset) from 10 speakers. Utterances are sorted by file name.
    """
    if classes not in (4, 7):
        raise ConfigError(f"EmoDB classes={classes!r}: use 4 (anger, happiness, sadness, neutral) or 7 (all emotions)")
    wav_dir, files = _emodb_wav_files(Path(root))
    labels = FOUR_CLASS_LABELS if classes == 4 else EMODB_LABELS_7
    if not files:
        raise DataError(f"EmoDB folder {wav_dir} holds no .wav files; {DOWNLOAD_HINT}")
    utterances = []
    found: dict[str, Path] = {}  # name as the corpus spells it (suffix .wav) -> the file of that name
    for path in files:
        match = _EMODB_NAME.match(path.name)
        if match is None:
            raise DataError(
                f"{path}: not an EmoDB file name (expected speaker, text, emotion letter, version, "
                "e.g. 03a01Fa.wav); remove the file or load the folder as a manifest instead"
            )
        twin = found.setdefault(f"{path.stem}.wav", path)
        if twin != path:  # one recording twice would weigh double, and could land in training and test
            raise DataError(f"EmoDB folder {wav_dir} holds {twin.name} and {path.name}: one utterance twice; "
                            "remove one of them")
        label = EMODB_LETTERS[match["emotion"]]
        if label in labels:
            utterances.append(Utterance(path, label, match["speaker"]))
    _warn_if_incomplete(wav_dir, found, labels)
    return Corpus(f"emodb{classes}", labels, utterances)


# ----------------------------------------------------------------------------------------------
# IEMOCAP


def _find_iemocap_release(root: Path) -> Path | None:
    """The folder holding IEMOCAP's Session1 ... Session5 folders: ``root`` or ``root/IEMOCAP_full_release``."""
    return next((c for c in (root, root / "IEMOCAP_full_release") if any(c.glob("Session[1-5]"))), None)


def _iemocap_release_dir(root: Path) -> Path:
    release = _find_iemocap_release(root)
    if release is not None:
        return release
    raise DataError(
        f"IEMOCAP not found: {root} holds no Session1 ... Session5 folders (expected the official "
        "IEMOCAP_full_release layout: SessionN/dialog/EmoEvaluation/*.txt and SessionN/sentences/wav/); "
        "IEMOCAP is licensed by USC SAIL: request it there and put IEMOCAP_full_release under MINSER_DATA"
    )


def _iemocap_session(session_dir: Path) -> list[Utterance]:
    eval_dir = session_dir / "dialog" / "EmoEvaluation"
    # Hidden entries (macOS "._x.txt" resource forks) are not evaluation files.
    eval_files = sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith("."))
    if not eval_files:
        raise DataError(
            f"IEMOCAP {session_dir}: no evaluation files {eval_dir}/*.txt; "
            f"the session folder is incomplete: {_IEMOCAP_RESTORE.format('it')}"
        )
    utterances = []
    for eval_file in eval_files:
        for line_number, line in enumerate(eval_file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            match = _IEMOCAP_LINE.match(line)
            if match is None and _IEMOCAP_TURN.match(line):  # skipped, its utterance would be lost without notice
                raise DataError(
                    f"{eval_file} line {line_number}: {line!r} is not a turn of the form "
                    "'[START - END]<tab>UTTERANCE<tab>CODE<tab>[V, A, D]' (one tab between fields); "
                    f"{_IEMOCAP_RESTORE.format('the file')}"
                )
            if match is None or match["code"] not in IEMOCAP_CODES:
                continue
            utt = match["utt"]
            name = _IEMOCAP_UTT.match(utt)
            if name is None:
                raise DataError(
                    f"{eval_file} line {line_number}: utterance id {utt!r} is not of the form Ses01F_impro01_F000; "
                    f"{_IEMOCAP_RESTORE.format('the file')}"
                )
            if f"Session{int(name['session'])}" != session_dir.name:
                # Its speaker would then belong to two sessions, and leave-one-session-out would test on a
                # speaker it trained on.
                raise DataError(
                    f"{eval_file} line {line_number}: utterance {utt} belongs to Session{int(name['session'])}, not "
                    f"to {session_dir.name}; a file was moved: {_IEMOCAP_RESTORE.format('the session folders')}"
                )
            wav = session_dir / "sentences" / "wav" / eval_file.stem / f"{utt}.wav"
            if not wav.is_file():
                raise DataError(
                    f"{eval_file} line {line_number}: {utt} has no audio file {wav}; "
                    f"the corpus is incomplete: {_IEMOCAP_RESTORE.format('the file')}"
                )
            # The last part's letter is the gender of who speaks this utterance (the prefix's letter
            # only says which actor wore the motion-capture markers).
            speaker = f"Ses{name['session']}{name['gender']}"
            utterances.append(Utterance(wav, IEMOCAP_CODES[match["code"]], speaker, session_dir.name))
    if not utterances:  # dropped, the session would pass for one left out on purpose
        raise DataError(
            f"IEMOCAP {session_dir}: the evaluation files {eval_dir}/*.txt label no utterance ang, hap, exc, sad "
            f"or neu; the session folder is damaged: {_IEMOCAP_RESTORE.format('it')}"
        )
    return utterances


def load_iemocap(root: str | Path) -> Corpus:
    """IEMOCAP from the official ``IEMOCAP_full_release`` folder (or the folder holding it).

    Reads the categorical labels of ``SessionN/dialog/EmoEvaluation/*.txt`` and keeps the paper's
    4 classes ``IEMOCAP_LABELS`` = (anger, happiness, sadness, neutral), excitement (``exc``)
    merged into happiness (5531 utterances on the full corpus). Audio is
    ``SessionN/sentences/wav/<dialog>/<utterance>.wav``. Speaker is the session number plus the
    speaking actor's gender (``Ses01F``); session is the folder name (``Session1``). An utterance listed
    in another session's files, a turn line that does not parse (tabs turned into spaces) and a session
    folder that yields no utterance raise DataError; a release with fewer than the 5 sessions warns.
    """
    release = _iemocap_release_dir(Path(root))
    utterances = []
    session_dirs = sorted(release.glob("Session[1-5]"))
    for session_dir in session_dirs:
        utterances.extend(_iemocap_session(session_dir))
    if len(session_dirs) < _IEMOCAP_SESSIONS:  # a part may be chosen on purpose: a warning, not an error
        warnings.warn(
            f"IEMOCAP folder {release} holds {len(session_dirs)} of the corpus' {_IEMOCAP_SESSIONS} sessions "
            f"({', '.join(p.name for p in session_dirs)}); scores on a part are not comparable with published ones",
            UserWarning,
            stacklevel=2,
        )
    return Corpus("iemocap", IEMOCAP_LABELS, utterances)


# ----------------------------------------------------------------------------------------------
# Any other corpus: CSV manifest or one folder per label


def _column(name: str) -> str:
    """A header cell as a column name: "Speaker " is the speaker column, not an unknown one."""
    return name.strip().lower()


def _manifest_rows(csv_path: Path) -> list[tuple[dict[str, str], int]]:
    """The rows of a CSV manifest as ``({column: cell}, line number)``, column names lower-cased, cells stripped."""
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheet exports start with a BOM
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise DataError(f"manifest {csv_path} is empty; give a header path,label[,speaker[,session]] and a row "
                            "per utterance")
        header = [c.strip() for c in reader.fieldnames]
        if not any(header):  # csv reads a blank first line as the header: "header is []" hid the real one below
            raise DataError(f"manifest {csv_path} line 1 is blank; the first line must be the header "
                            "path,label[,speaker[,session]]: delete the blank lines above it")
        columns = [_column(c) for c in header]
        if "path" not in columns or "label" not in columns:
            separator = next((name for sep, name in (("\t", "tabs"), (";", "semicolons"))
                              if any(sep in c for c in header)), None)
            hint = f"; its cells look separated by {separator}: save it comma-separated" if separator else ""
            raise DataError(
                f"manifest {csv_path}: header is {header}, expected columns path,label[,speaker[,session]]{hint}"
            )
        # Columns without a name (trailing commas of a spreadsheet export) hold no data.
        twice = next((c for i, c in enumerate(columns) if c and c in columns[:i]), None)
        if twice is not None:  # csv.DictReader would keep the last one's cells without notice
            raise DataError(f"manifest {csv_path}: header {header} names column {twice!r} twice; give each column once")
        unread = [c for c in header if c and _column(c) not in MANIFEST_COLUMNS]
        if unread:  # a typo ("speakers") would otherwise drop the column without notice
            warnings.warn(f"manifest {csv_path}: column(s) {', '.join(map(repr, unread))} are not read (minser reads "
                          f"{', '.join(MANIFEST_COLUMNS)}); rename a column that is meant as one of those",
                          UserWarning, stacklevel=3)  # the caller of load_manifest
        rows = []
        for row in reader:
            surplus = [v for v in row.get(None, []) if v.strip()]  # csv.DictReader's key for cells past the header
            if surplus:
                raise DataError(f"manifest {csv_path} line {reader.line_num}: {len(surplus)} cell(s) past the header's "
                                f"{len(header)} columns ({surplus[0]!r}); quote a cell that holds a comma")
            cells = {_column(k): (v or "").strip() for k, v in row.items() if k}  # missing cells read as empty
            if any("\0" in v for v in cells.values()):
                raise DataError(f"manifest {csv_path} line {reader.line_num}: a cell holds a NUL character; the file "
                                "is damaged or not text: save the manifest again as UTF-8 CSV")
            rows.append((cells, reader.line_num))
        return rows


def _spelled_twice(labels: Iterable[str]) -> tuple[str, str] | None:
    """The first two of ``labels`` that differ only in case or surrounding spaces, else None."""
    seen: dict[str, str] = {}
    for label in labels:
        first = seen.setdefault(label.strip().casefold(), label)
        if first != label:
            return first, label
    return None


def load_manifest(csv_path: str | Path, labels: Sequence[str] | None = None) -> Corpus:
    """A corpus listed in a CSV file with header ``path,label`` and optional ``speaker``, ``session``.

    Paths are relative to the CSV's folder (absolute paths are kept). ``labels`` fixes the class
    order and rejects any other label; by default the class order is the sorted set of labels
    found. Column names are read in any case (``Speaker`` is the speaker column). A missing
    speaker column makes every speaker ``"unknown"``; where the column is given, an empty speaker (or
    session) cell raises DataError naming its line. A file listed twice (under any name:
    ``a.wav``, ``./a.wav``, a symlink or hard link to it) or a label, speaker or session spelled two ways
    (``Anger``, ``anger``) raises DataError naming the lines, as do cells past the header's columns (an
    unquoted comma), a NUL character, and the speaker ``"unknown"`` in any case (minser's mark of a
    missing speaker). Other
    named columns are not read, with a warning; columns without a name (trailing commas) are ignored.
    """
    csv_path = Path(csv_path)
    problem = file_problem(csv_path)
    if problem is not None:
        raise DataError(f"manifest {csv_path} {problem}; give a CSV file with header path,label[,speaker]")
    try:
        rows = _manifest_rows(csv_path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"manifest {csv_path} is not a UTF-8 CSV file ({exc}); give a CSV manifest saved as UTF-8 "
                        "with header path,label[,speaker] (or a folder with one subfolder per label)") from exc
    utterances = []
    # File id -> line and path cell listing it first: a file listed twice could land in both the training and the
    # test part.
    listed: dict[tuple[int, int], tuple[int, str]] = {}
    # Column -> {cell -> line of its first row}: a value spelled two ways is refused for each of them.
    first_lines: dict[str, dict[str, int]] = {column: {} for column in ("label", *MANIFEST_COLUMNS[2:])}
    for row, line_number in rows:
        where = f"manifest {csv_path} line {line_number}"
        if not row["path"] or not row["label"]:
            raise DataError(f"{where}: empty path or label; every row needs both")
        if labels is not None and row["label"] not in labels:
            raise DataError(f"{where}: unknown label {row['label']!r}; expected one of {tuple(labels)}")
        path = (csv_path.parent / row["path"]) if not Path(row["path"]).is_absolute() else Path(row["path"])
        problem = file_problem(path)
        if problem is not None:
            raise DataError(f"{where}: audio file {path} {problem}; fix the path (relative to the manifest's folder)")
        first, first_cell = listed.setdefault(file_identity(path), (line_number, row["path"]))
        if first != line_number:  # the cells as written: "a.wav" and "./a.wav" are one path to pathlib
            raise DataError(f"manifest {csv_path} lines {first} and {line_number} both list one file, as "
                            f"{first_cell!r} and {row['path']!r}; list each file once")
        for column, lines in first_lines.items():
            if row.get(column):
                lines.setdefault(row[column], line_number)
        for column in MANIFEST_COLUMNS[2:]:
            # One "unknown" group of unrelated people would pass for a speaker under leave-one-speaker-out.
            if column in row and not row[column]:
                raise DataError(f"{where}: empty {column} cell; fill in every {column}, or drop the {column} column "
                                "if it is not known")
        if row.get("speaker", "").casefold() == UNKNOWN_SPEAKER:
            raise DataError(f"{where}: speaker {row['speaker']!r} is how minser marks a speaker that is not known; "
                            "give the speaker an id, or drop the speaker column if the speakers are not known")
        utterances.append(Utterance(path, row["label"], row.get("speaker") or UNKNOWN_SPEAKER, row.get("session")))
    if not utterances:
        raise DataError(f"manifest {csv_path} lists no utterances; add rows path,label[,speaker]")
    for column, lines in first_lines.items():
        # Two spellings of one label change the classes; of one speaker or session, they make two groups of one
        # person, and leaving one out would test on a voice it trained on.
        clash = _spelled_twice(lines)
        if clash is not None:
            a, b = clash
            raise DataError(f"manifest {csv_path}: {column}s {a!r} (line {lines[a]}) and {b!r} (line {lines[b]}) "
                            f"differ only in case; spell each {column} one way")
    order = tuple(labels) if labels is not None else tuple(sorted({u.label for u in utterances}))
    return Corpus(csv_path.stem, order, utterances)


def _refuse_unreadable(root: Path, files: Sequence[Path]) -> None:
    """Raise DataError when ``files`` hold audio that soundfile cannot read (``.m4a``, ...).

    Skipping them, as other files (``notes.txt``) are skipped, would load part of the data without notice.
    """
    unreadable = [p for p in files if p.suffix.lower() in UNREADABLE_SUFFIXES]
    if unreadable:
        first = unreadable[0]
        raise DataError(f"corpus folder {root}: {len(unreadable)} audio files are in a format soundfile cannot read "
                        f"(first: {first}); convert them to .wav or .flac (e.g. {conversion_example(first)}) "
                        "or remove them")


def _audio_entries(root: Path, entries: Iterable[Path]) -> list[Path]:
    """The audio files among ``entries`` of a label folder (suffix in ``AUDIO_SUFFIXES``), in that order.

    Raises DataError for an entry named as audio that is no regular file (a symlink whose target moved, a
    named pipe): skipping it would load part of the data without notice.
    """
    files = [p for p in entries if p.suffix.lower() in AUDIO_SUFFIXES]
    for path in files:
        problem = file_problem(path)
        if problem is not None:
            raise DataError(f"corpus folder {root}: {path} {problem}; put the audio file there or remove the entry")
    return files


def _refuse_linked_twice(root: Path, files: Sequence[Path]) -> None:
    """Raise DataError when two of ``files`` are one file (a symlink or hard link to the other).

    One recording twice would weigh double and could land in both the training and the test part; in two
    label folders it would also carry two labels.
    """
    pair = first_repeated_file(files)
    if pair is not None:
        first, later = files[pair[0]], files[pair[1]]
        raise DataError(f"corpus folder {root}: {first} and {later} are one file (a link to the other); "
                        "keep one of them")


def load_folder(root: str | Path) -> Corpus:
    """A corpus stored as one sub-folder per label: ``root/<label>/*.wav`` (any of ``AUDIO_SUFFIXES``:
    .wav, .flac, .ogg, .opus, .mp3, .aiff, .aif where this libsndfile reads them).

    The class order is the sorted folder names; speakers are ``"unknown"`` (use a manifest to
    give speakers). Files are sorted by name within each label. Audio soundfile cannot read
    (``UNREADABLE_SUFFIXES``: .m4a, .aac, .wma, ...), an audio name that is no regular file (a broken
    symlink), one file under two names (a symlink or hard link, in one label folder or two), a label
    folder without audio, or two folders naming one label (``Anger``, ``anger``) raise DataError; other
    files (``notes.txt``) and hidden entries (``.git``, ``._a.wav``) are skipped, but audio at the top
    of ``root`` or in sub-folders of a label folder, which would be skipped silently, raises DataError.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"corpus folder {root} {file_problem(root) or 'is not a folder'}; give a folder with one "
                        "sub-folder of audio files per label")
    # Hidden entries (".git", macOS "._x.wav" resource forks) are not data.
    label_entries = {label_dir: sorted(p for p in label_dir.iterdir() if not p.name.startswith("."))
                     for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))}
    _refuse_unsearched(root, label_entries)
    _refuse_unreadable(root, [p for entries in label_entries.values() for p in entries])
    label_files = {label_dir: _audio_entries(root, entries) for label_dir, entries in label_entries.items()}
    _refuse_linked_twice(root, [path for files in label_files.values() for path in files])
    utterances = []
    for label_dir, files in label_files.items():
        if not files:  # dropping it would silently change the class set
            raise DataError(f"corpus folder {root}: label folder {label_dir} holds no {'/'.join(AUDIO_SUFFIXES)} "
                            "files; add its audio or remove the folder (sub-folders of a label are not searched)")
        # Stripped as a manifest's label cells are: a folder "anger " is the label "anger".
        utterances.extend(Utterance(path, label_dir.name.strip(), UNKNOWN_SPEAKER) for path in files)
    if not utterances:
        raise DataError(
            f"corpus folder {root} holds no audio: expected one sub-folder per label with "
            f"{'/'.join(AUDIO_SUFFIXES)} files inside (root/anger/a.wav, root/neutral/b.wav, ...)"
        )
    clash = _spelled_twice(sorted(label_dir.name for label_dir in label_files))
    if clash is not None:
        raise DataError(f"corpus folder {root}: label folders {str(root / clash[0])!r} and {str(root / clash[1])!r} "
                        "name one label spelled two ways (case or surrounding spaces); merge them into one folder")
    # The folder's own name even when given as "." or "..": it names the cache file and the results (abspath, not
    # resolve: a symlinked corpus keeps the link's name).
    return Corpus(Path(os.path.abspath(root)).name, tuple(sorted({u.label for u in utterances})), utterances)


def _refuse_unsearched(root: Path, label_entries: dict[Path, list[Path]]) -> None:
    """Raise DataError for audio a folder corpus would skip without notice: files at its top, beside label folders
    or instead of them, and files in sub-folders of a label folder; and for EmoDB's own layout (``emodb/wav/``),
    which would load as one label named ``wav``. Where the folder, or a label folder, holds EmoDB or IEMOCAP in
    its own layout, the message says how to load it by the corpus name instead."""
    if _holds_emodb(root):
        raise DataError(f"corpus folder {root} is laid out as {_EMODB_LAYOUT}, not as one folder per label; "
                        f"{_by_name(root, 'emodb')}")
    loose = [p.name for p in sorted(root.iterdir())
             if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")]
    shown = f"{', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''}"
    if loose and label_entries:
        raise DataError(f"corpus folder {root} holds audio next to its label folders ({shown}), which has no label; "
                        "move each file into its label's folder or out of the corpus")
    if loose:
        if _has_emodb_names(root):  # EmoDB's wav/ folder: its copy is the folder above it (load_emodb's root)
            folder = Path(os.path.abspath(root))
            advice = f"the names are EmoDB's: {_by_name(folder.parent if folder.name == 'wav' else folder, 'emodb')}"
        else:
            advice = ("a folder corpus takes each file's label from its sub-folder (root/anger/a.wav, "
                      "root/neutral/b.wav, ...): move each file into its label's folder, or list the files in a CSV "
                      "manifest (path,label[,speaker])")
        raise DataError(f"corpus folder {root} holds audio files at its top ({shown}), none in label sub-folders; "
                        f"{advice}")
    for label_dir, entries in label_entries.items():
        nested = next((f for d in entries if d.is_dir() for f in sorted(d.rglob("*"))
                       if f.suffix.lower() in AUDIO_SUFFIXES and not f.name.startswith(".")), None)
        if nested is None:
            continue
        # A corpus one level down (MINSER_DATA given as a folder corpus), or IEMOCAP's release given as one.
        if (named := _named_corpus(label_dir)) is not None:
            raise DataError(f"corpus folder {root}: label folder {label_dir} is laid out as {named[0]}, not as the "
                            f"audio of one label; {named[1]}")
        if (named := _named_corpus(root)) is not None:
            raise DataError(f"corpus folder {root} is laid out as {named[0]}, not as one folder per label; {named[1]}")
        raise DataError(f"corpus folder {root}: label folder {label_dir} holds audio in a sub-folder ({nested}), "
                        "and sub-folders of a label are not searched; move the files up into the label folder")


def _has_emodb_names(folder: Path) -> bool:
    """Whether the first wav file of ``folder`` (by name) has an EmoDB name (03a01Fa.wav)."""
    return _EMODB_NAME.match(next((p.name for p in _wav_files(folder)), "")) is not None


def _holds_emodb(folder: Path) -> bool:
    """Whether ``folder`` is laid out as EmoDB: its one sub-folder is ``wav/``, holding EmoDB file names."""
    folders = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return folders == ["wav"] and _has_emodb_names(folder / "wav")


def _named_corpus(folder: Path) -> tuple[str, str] | None:
    """For a message: the layout of the named corpus ``folder`` holds and how to load it by name; None when it
    holds neither EmoDB nor IEMOCAP in their own layout."""
    if _holds_emodb(folder):
        return _EMODB_LAYOUT, _by_name(folder, "emodb")
    if _find_iemocap_release(folder) is not None:
        return "IEMOCAP (Session1 ... Session5)", _by_name(folder, "iemocap")
    return None


def _by_name(folder: Path, name: str) -> str:
    """How to load ``folder``, a copy of the corpus ``name`` ('emodb' or 'iemocap'), by that name.

    load_corpus looks for it only in the data folder, under one of ``_CORPUS_FOLDERS[name]`` spelled exactly (a
    file system may tell case): a copy under another name must be renamed or linked. The advice names no option,
    as train's and evaluate's --data and ``minser.data info`` all take the name.
    """
    folder = Path(os.path.abspath(folder))  # "." names its folder
    steps = f"give the corpus name '{name}' instead of its path, with MINSER_DATA={folder.parent}"
    if folder.name not in _CORPUS_FOLDERS[name]:
        return f"rename it, or link it, as {folder.parent / _CORPUS_FOLDERS[name][0]}, then {steps}"
    return steps


def check_classes_option(classes: int | None, data: str | os.PathLike, given_as: str = "--data ") -> None:
    """Refuse ``--classes`` (None: not given) with a corpus ``data`` that is a CSV manifest or a folder, which
    takes its classes from its labels, so the option would be ignored (train, evaluate and ``minser.data info``
    share this). ``given_as`` is how the command names ``data`` in the message."""
    if classes is not None and str(data).lower() not in CORPUS_NAMES:
        raise ConfigError(f"--classes {classes} with {given_as}{data}: a CSV manifest or a folder takes its "
                          "classes from its labels; drop --classes (it picks EmoDB's 4- or 7-class set)")


def load_corpus(spec: str | Path, classes: int = 4, data_dir: str | Path | None = None) -> Corpus:
    """A corpus from a name or a path.

    ``spec`` is ``"emodb"`` (``<data_dir>/emodb``), ``"iemocap"`` (``<data_dir>/IEMOCAP_full_release``
    or ``<data_dir>/iemocap``), a CSV manifest or a folder with one sub-folder per label.
    ``data_dir`` defaults to :func:`data_dir`. ``classes`` chooses EmoDB's 4- or 7-class set;
    IEMOCAP has 4 classes only; manifests and folders take their classes from the data.
    """
    name = str(spec).lower()
    if name in CORPUS_NAMES:  # only named corpora live in the data folder: a manifest needs none
        base = _base_dir(data_dir)
    if name == "emodb":
        return load_emodb(base / _CORPUS_FOLDERS["emodb"][0], classes)
    if name == "iemocap":
        if classes != 4:
            raise ConfigError(f"IEMOCAP classes={classes!r}: only the paper's 4 classes are supported")
        for folder in _CORPUS_FOLDERS["iemocap"]:
            if (base / folder).is_dir():
                return load_iemocap(base / folder)
        return load_iemocap(base / _CORPUS_FOLDERS["iemocap"][0])
    path = Path(spec)
    if path.is_file():
        return load_manifest(path)
    if path.is_dir():
        return load_folder(path)
    if os.path.lexists(path):  # a named pipe, a symlink whose target moved: say what it is
        raise DataError(f"corpus {str(spec)!r} {file_problem(path)}; give a CSV manifest (path,label[,speaker]) or a "
                        "folder with one sub-folder per label")
    raise DataError(
        f"corpus {str(spec)!r} not found: give 'emodb', 'iemocap' (looked up in {shown_data_dir(data_dir)}), "
        "a CSV manifest (path,label[,speaker]) or a folder with one sub-folder per label"
    )
