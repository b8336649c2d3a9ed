"""Corpora: EmoDB (real), IEMOCAP (synthetic tree in the official layout), manifests, folders, errors."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile

from minser.data import (
    EMODB_LABELS_7,
    FOUR_CLASS_LABELS,
    Corpus,
    Utterance,
    data_dir,
    load_corpus,
    load_emodb,
    load_folder,
    load_iemocap,
    load_manifest,
)
from minser.audio import AUDIO_SUFFIXES, load
from minser.data.__main__ import main
from minser.errors import ConfigError, DataError

EMODB_COUNTS = {"anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71, "sadness": 62, "neutral": 79}
EMODB_SPEAKERS = ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]


def write_wav(path: Path, seconds: float = 0.05, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.random.default_rng(seed).standard_normal(round(16000 * seconds))
    soundfile.write(path, wave.astype(np.float32), 16000, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------------------------------
# EmoDB (real corpus)


def test_emodb_seven_classes(emodb_root: Path) -> None:
    corpus = load_emodb(emodb_root, classes=7)
    assert len(corpus) == 535
    assert corpus.labels == EMODB_LABELS_7
    assert corpus.label_counts() == EMODB_COUNTS
    assert sorted(set(corpus.speakers())) == EMODB_SPEAKERS
    assert np.bincount(corpus.targets()).tolist() == [EMODB_COUNTS[label] for label in EMODB_LABELS_7]
    first = corpus.utterances[0]
    assert (first.path.name, first.label, first.speaker, first.session) == ("03a01Fa.wav", "happiness", "03", None)


def test_emodb_four_classes_and_wav_folder_root(emodb_root: Path) -> None:
    corpus = load_emodb(emodb_root / "wav")
    assert len(corpus) == 339
    assert corpus.labels == FOUR_CLASS_LABELS == ("anger", "happiness", "sadness", "neutral")
    assert corpus.label_counts() == {label: EMODB_COUNTS[label] for label in FOUR_CLASS_LABELS}
    assert len(set(corpus.speakers())) == 10
    targets = corpus.targets()
    assert all(corpus.labels[t] == u.label for t, u in zip(targets, corpus.utterances))


def test_load_corpus_emodb_from_data_dir(emodb_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINSER_DATA", str(emodb_root.parent))
    assert data_dir() == emodb_root.parent
    assert len(load_corpus("emodb", classes=7)) == 535
    assert len(load_corpus("EmoDB", data_dir=emodb_root.parent)) == 339


def test_info_cli(emodb_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MINSER_DATA", str(emodb_root.parent))
    assert main(["info", "emodb"]) == 0
    out = capsys.readouterr().out
    assert "emodb4: 339 utterances" in out and "anger: 127" in out and "speakers (10)" in out
    assert main(["info", "emodb", "--classes", "7"]) == 0
    assert "emodb7: 535 utterances" in capsys.readouterr().out


def test_command_line_warnings_are_one_plain_line(emodb_root: Path, tmp_path: Path) -> None:
    """Python's warning format adds the file and source line of minser that raised it; the commands print
    ``warning: <message>``, as they print errors. (In a subprocess: pytest records warnings, never prints them.)"""
    wav = tmp_path / "emodb" / "wav"
    wav.mkdir(parents=True)
    for name in ("03a01Fa.wav", "03a01Nc.wav", "03a01Wa.wav"):
        (wav / name).symlink_to(emodb_root / "wav" / name)
    done = subprocess.run([sys.executable, "-m", "minser.data", "info", "emodb"], capture_output=True, text=True,
                          env={**os.environ, "MINSER_DATA": str(tmp_path)}, check=True)
    assert done.stdout.startswith("emodb4: 3 utterances\n")
    assert done.stderr == (f"warning: EmoDB folder {wav} holds 3 of the 4-class set's 339 files (336 missing: "
                           "03a02Fc.wav, 03a02Nc.wav, 03a02Ta.wav, ...); scores on a part are not comparable with "
                           "published ones. To get the full corpus run `python -m minser.data download emodb`\n")


def test_info_cli_refuses_classes_with_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """As train and evaluate do: before, --classes 7 was ignored and the manifest's labels printed."""
    write_wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path,label\na.wav,sad\n")
    assert main(["info", str(tmp_path / "m.csv"), "--classes", "7"]) == 2
    assert capsys.readouterr().err == (f"error: --classes 7 with {tmp_path / 'm.csv'}: a CSV manifest or a folder "
                                       "takes its classes from its labels; drop --classes (it picks EmoDB's 4- or "
                                       "7-class set)\n")
    assert main(["info", str(tmp_path / "m.csv")]) == 0


def test_a_manifest_that_is_not_utf8_is_a_data_error(tmp_path: Path) -> None:
    manifest = tmp_path / "latin1.csv"
    manifest.write_bytes("path,label\na.wav,\u00e4rger\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv is not a UTF-8 CSV file.*saved as UTF-8"):
        load_manifest(manifest)


def test_info_cli_error_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MINSER_DATA", str(tmp_path))
    assert main(["info", "emodb"]) == 2  # as every minser command: 2 when the job could not be done
    assert "python -m minser.data download emodb" in capsys.readouterr().err


def test_emodb_missing_says_how_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"python -m minser.data download emodb.*MINSER_DATA"):
        load_emodb(tmp_path / "nowhere")
    with pytest.raises(DataError, match="download emodb"):
        load_corpus("emodb", data_dir=tmp_path)


def test_emodb_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "wav").mkdir()
    with pytest.raises(DataError, match="holds no .wav files"):
        load_emodb(tmp_path)
    write_wav(tmp_path / "wav" / "03a01Fa.wav")
    write_wav(tmp_path / "wav" / "recording.wav")
    with pytest.raises(DataError, match=r"recording\.wav: not an EmoDB file name"):
        load_emodb(tmp_path)
    with pytest.raises(ConfigError, match="classes=5"):
        load_emodb(tmp_path, classes=5)


@pytest.mark.filterwarnings("ignore:EmoDB folder .* of the corpus' 535 files")
def test_emodb_skips_macos_resource_forks(tmp_path: Path) -> None:
    """A copy made on macOS leaves ._03a01Fa.wav beside each file; it was 'not an EmoDB file name'."""
    write_wav(tmp_path / "wav" / "03a01Fa.wav")
    (tmp_path / "wav" / "._03a01Fa.wav").write_bytes(b"\x00\x05\x16\x07 resource fork")
    assert [u.path.name for u in load_emodb(tmp_path, classes=7).utterances] == ["03a01Fa.wav"]


@pytest.mark.filterwarnings("ignore:EmoDB folder .* of the corpus' 535 files")
def test_emodb_loads_files_spelled_upper_case_wav(tmp_path: Path) -> None:
    # Some Windows tools and FAT drives spell the suffix in capitals; the names are EmoDB's all the same.
    write_wav(tmp_path / "wav" / "03a01Fa.WAV")
    write_wav(tmp_path / "wav" / "03a01Wa.wav")
    for root in (tmp_path, tmp_path / "wav"):
        corpus = load_emodb(root)
        assert [(u.path.name, u.label, u.speaker) for u in corpus.utterances] == [
            ("03a01Fa.WAV", "happiness", "03"), ("03a01Wa.wav", "anger", "03")]
    (tmp_path / "wav" / "03a01Wa.wav").unlink()
    assert len(load_emodb(tmp_path / "wav")) == 1  # a wav folder holding only .WAV files is found too


def test_emodb_file_in_two_spellings_is_refused(tmp_path: Path) -> None:
    write_wav(tmp_path / "wav" / "03a01Fa.wav")
    write_wav(tmp_path / "wav" / "03a01Fa.WAV")
    wav = re.escape(str(tmp_path / "wav"))
    with pytest.raises(DataError, match=rf"^EmoDB folder {wav} holds 03a01Fa\.WAV and 03a01Fa\.wav: one utterance "
                                        r"twice; remove one of them$"):
        load_emodb(tmp_path)


def test_incomplete_emodb_warns_naming_what_is_missing(tmp_path: Path, emodb_root: Path) -> None:
    for name in ("03a01Fa.wav", "03a01Nc.wav", "03a02Fc.wav"):
        shutil.copy(emodb_root / "wav" / name, tmp_path / name)
    # Not refused: a part can be chosen on purpose. The names are compared, not the hashes (too slow).
    with pytest.warns(UserWarning) as caught:
        corpus = load_emodb(tmp_path, classes=7)
    assert [str(w.message) for w in caught] == [
        f"EmoDB folder {tmp_path} holds 3 of the corpus' 535 files (532 missing: 03a01Wa.wav, 03a02Nc.wav, "
        "03a02Ta.wav, ...); scores on a part are not comparable with published ones. To get the full corpus run "
        "`python -m minser.data download emodb`"
    ]
    assert len(corpus) == 3


def test_the_four_class_set_alone_is_complete_for_four_classes(tmp_path: Path, emodb_root: Path) -> None:
    """A folder of exactly the 339 files of the 4-class set, loaded with classes=4, was told that scores on a part
    are not comparable with published ones: the files of the other classes were counted as missing."""
    four = [p for p in sorted((emodb_root / "wav").iterdir()) if p.name[5] in "WFTN"]
    for path in four:
        (tmp_path / path.name).symlink_to(path)  # names are all the check reads
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_emodb(tmp_path, classes=4)) == 339
    with pytest.warns(UserWarning, match=rf"^EmoDB folder {re.escape(str(tmp_path))} holds 339 of the corpus' 535 "
                                         r"files \(196 missing: 03a04Ad\.wav, 03a04Lc\.wav, 03a05Aa\.wav, \.\.\.\)"):
        load_emodb(tmp_path, classes=7)
    (tmp_path / "03a01Fa.wav").unlink()
    with pytest.warns(UserWarning) as caught:
        load_emodb(tmp_path, classes=4)
    assert [str(w.message) for w in caught] == [
        f"EmoDB folder {tmp_path} holds 338 of the 4-class set's 339 files (1 missing: 03a01Fa.wav); scores on a "
        "part are not comparable with published ones. To get the full corpus run `python -m minser.data download "
        "emodb`"
    ]


def test_full_emodb_gives_no_warning(emodb_root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_emodb(emodb_root, classes=7)) == 535


# ----------------------------------------------------------------------------------------------
# IEMOCAP (synthetic tree in the official layout)

IEMOCAP_LINES = {
    # (session, dialog): [(utterance, code)]
    (1, "Ses01F_impro01"): [
        ("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "fru"), ("Ses01F_impro01_M001", "ang"),
    ],
    (1, "Ses01M_script01_1"): [("Ses01M_script01_1_F000", "exc"), ("Ses01M_script01_1_M003", "sad")],
    (2, "Ses02F_impro02"): [
        ("Ses02F_impro02_F000", "hap"), ("Ses02F_impro02_M000", "xxx"), ("Ses02F_impro02_M001", "neu"),
    ],
}


def make_iemocap(root: Path, dialogs: dict[tuple[int, str], list[tuple[str, str]]] = IEMOCAP_LINES) -> Path:
    """A tiny IEMOCAP_full_release tree: evaluation files (with the real header and attribute lines) and WAVs."""
    release = root / "IEMOCAP_full_release"
    for (session, dialog), rows in dialogs.items():
        session_dir = release / f"Session{session}"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, (utt, code) in enumerate(rows):
            lines += [
                f"[{6.2901 + i:.4f} - {8.2357 + i:.4f}]\t{utt}\t{code}\t[2.5000, 2.5000, 2.5000]",
                "C-E2:\tNeutral;\t()",
                "A-E3:\tval 3; act 2; dom  2;\t()",
                "",
            ]
            write_wav(session_dir / "sentences" / "wav" / dialog / f"{utt}.wav", seed=i)
        eval_dir = session_dir / "dialog" / "EmoEvaluation"
        eval_dir.mkdir(parents=True, exist_ok=True)
        (eval_dir / f"{dialog}.txt").write_text("\n".join(lines))
        # The real tree has sub-folders of per-annotator files: they must be ignored.
        (eval_dir / "Categorical").mkdir(exist_ok=True)
        (eval_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text(f"{rows[0][0]} :Anger; ()\n")
    return release


def test_iemocap_synthetic_tree(tmp_path: Path) -> None:
    release = make_iemocap(tmp_path)
    with pytest.warns(UserWarning, match=rf"^IEMOCAP folder {re.escape(str(release))} holds 2 of the corpus' 5 "
                                         r"sessions \(Session1, Session2\); scores on a part are not comparable"):
        corpus = load_iemocap(release)
    assert corpus.labels == FOUR_CLASS_LABELS
    got = [(u.path.stem, u.label, u.speaker, u.session) for u in corpus.utterances]
    assert got == [
        ("Ses01F_impro01_F000", "neutral", "Ses01F", "Session1"),
        ("Ses01F_impro01_M001", "anger", "Ses01M", "Session1"),
        ("Ses01M_script01_1_F000", "happiness", "Ses01F", "Session1"),  # exc merged into happiness
        ("Ses01M_script01_1_M003", "sadness", "Ses01M", "Session1"),
        ("Ses02F_impro02_F000", "happiness", "Ses02F", "Session2"),
        ("Ses02F_impro02_M001", "neutral", "Ses02M", "Session2"),
    ]
    assert all(u.path.is_file() for u in corpus.utterances)
    assert corpus.sessions().tolist() == ["Session1"] * 4 + ["Session2"] * 2
    # The parent folder and load_corpus("iemocap") find the same corpus.
    with pytest.warns(UserWarning, match="holds 2 of the corpus' 5 sessions"):
        assert load_iemocap(tmp_path).utterances == corpus.utterances
        assert load_corpus("iemocap", data_dir=tmp_path).utterances == corpus.utterances
    with pytest.raises(ConfigError, match="4 classes"):
        load_corpus("iemocap", classes=7, data_dir=tmp_path)


def test_iemocap_with_all_five_sessions_loads_without_warning(tmp_path: Path) -> None:
    more = {(n, f"Ses0{n}F_impro01"): [(f"Ses0{n}F_impro01_M000", "ang")] for n in (3, 4, 5)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        corpus = load_iemocap(make_iemocap(tmp_path, {**IEMOCAP_LINES, **more}))
    assert sorted(set(corpus.sessions().tolist())) == [f"Session{n}" for n in range(1, 6)]


def test_iemocap_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"^IEMOCAP not found: {re.escape(str(tmp_path))} holds no Session1 "
                                        r"\.\.\. Session5 folders \(expected the official IEMOCAP_full_release "
                                        r"layout: SessionN/dialog/EmoEvaluation/\*\.txt and SessionN/sentences/wav/\); "
                                        r"IEMOCAP is licensed by USC SAIL: request it there and put "
                                        r"IEMOCAP_full_release under MINSER_DATA$"):
        load_iemocap(tmp_path)
    release = make_iemocap(tmp_path)
    session2 = release / "Session2"
    missing = session2 / "sentences" / "wav" / "Ses02F_impro02" / "Ses02F_impro02_M001.wav"
    missing.unlink()
    evaluation = session2 / "dialog" / "EmoEvaluation" / "Ses02F_impro02.txt"
    with pytest.raises(DataError, match=rf"^{re.escape(str(evaluation))} line 11: Ses02F_impro02_M001 has no audio "
                                        rf"file {re.escape(str(missing))}; the corpus is incomplete: restore the file "
                                        r"from the IEMOCAP release$"):
        load_iemocap(release)
    write_wav(missing)
    evaluation.write_text(evaluation.read_text() + "[1.0000 - 2.0000]\tSes2_F000\tneu\t[2.5000, 2.5000, 2.5000]\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(evaluation))} line 14: utterance id 'Ses2_F000' is not "
                                        r"of the form Ses01F_impro01_F000; restore the file from the IEMOCAP release$"):
        load_iemocap(release)
    # An utterance of session 1 in session 2's files: its speaker would be in two leave-one-session-out folds.
    evaluation.write_text(evaluation.read_text().replace("Ses2_F000", "Ses01F_impro01_F009"))
    with pytest.raises(DataError, match=rf"^{re.escape(str(evaluation))} line 14: utterance Ses01F_impro01_F009 "
                                        r"belongs to Session1, not to Session2; a file was moved: restore the session "
                                        r"folders from the IEMOCAP release$"):
        load_iemocap(release)
    shutil.rmtree(session2)
    (session2 / "dialog").mkdir(parents=True)
    eval_dir = re.escape(str(session2 / "dialog" / "EmoEvaluation"))
    with pytest.raises(DataError, match=rf"^IEMOCAP {re.escape(str(session2))}: no evaluation files "
                                        rf"{eval_dir}/\*\.txt; the session folder is incomplete: restore it from the "
                                        r"IEMOCAP release$"):
        load_iemocap(release)


@pytest.mark.parametrize("damage", [
    ("\t", " "),  # tabs turned into spaces by an editor
    ("\t[2.5000, 2.5000, 2.5000]", ""),  # the [V, A, D] field lost
    ("]\t", "]\t\t"),  # a double tab
])
def test_iemocap_a_turn_line_that_does_not_parse_is_refused(tmp_path: Path, damage: tuple[str, str]) -> None:
    """Such a line was skipped as header and annotator lines are, and its utterance lost without notice."""
    release = make_iemocap(tmp_path)
    evaluation = release / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    lines = evaluation.read_text().split("\n")
    lines[2] = lines[2].replace(*damage)
    evaluation.write_text("\n".join(lines))
    with pytest.raises(DataError, match=rf"^{re.escape(str(evaluation))} line 3: {re.escape(repr(lines[2]))} is not a "
                                        r"turn of the form '\[START - END\]<tab>UTTERANCE<tab>CODE<tab>\[V, A, D\]' "
                                        r"\(one tab between fields\); restore the file from the IEMOCAP release$"):
        load_iemocap(release)


def test_iemocap_a_session_that_yields_no_utterance_is_refused(tmp_path: Path) -> None:
    """A session whose files label none of the 4 classes vanished, and the warning still counted its folder."""
    release = make_iemocap(tmp_path, {**IEMOCAP_LINES, (2, "Ses02F_impro02"): [("Ses02F_impro02_F000", "fru")]})
    session2 = release / "Session2"
    eval_dir = re.escape(str(session2 / "dialog" / "EmoEvaluation"))
    with pytest.raises(DataError, match=rf"^IEMOCAP {re.escape(str(session2))}: the evaluation files "
                                        rf"{eval_dir}/\*\.txt label no utterance ang, hap, exc, sad or neu; the "
                                        r"session folder is damaged: restore it from the IEMOCAP release$"):
        load_iemocap(release)


def test_iemocap_skips_macos_resource_forks(tmp_path: Path) -> None:
    """A ._x.txt file (macOS metadata, whatever it holds) was read as an evaluation file of a dialog ._x."""
    release = make_iemocap(tmp_path)
    eval_dir = release / "Session1" / "dialog" / "EmoEvaluation"
    (eval_dir / "._Ses01F_impro01.txt").write_bytes((eval_dir / "Ses01F_impro01.txt").read_bytes())
    with pytest.warns(UserWarning, match="holds 2 of the corpus' 5 sessions"):
        assert len(load_iemocap(release)) == 6


# ----------------------------------------------------------------------------------------------
# Manifests and folders


def test_manifest(tmp_path: Path) -> None:
    write_wav(tmp_path / "audio" / "a.wav")
    write_wav(tmp_path / "audio" / "b.flac")
    absolute = write_wav(tmp_path / "elsewhere" / "c.wav")
    manifest = tmp_path / "mine.csv"
    manifest.write_text(f"path,label,speaker\naudio/a.wav,sad,s1\naudio/b.flac,angry,s2\n{absolute},sad,s1\n")
    corpus = load_manifest(manifest)
    assert corpus.name == "mine"
    assert corpus.labels == ("angry", "sad")
    assert corpus.targets().tolist() == [1, 0, 1]
    assert corpus.speakers().tolist() == ["s1", "s2", "s1"]
    assert corpus.utterances[0].path == tmp_path / "audio" / "a.wav"
    assert load_corpus(manifest).utterances == corpus.utterances
    ordered = load_manifest(manifest, labels=("sad", "angry"))
    assert ordered.targets().tolist() == [0, 1, 0]


def test_manifest_without_speaker_column(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path,label\na.wav,calm\n")
    assert load_manifest(tmp_path / "m.csv").utterances == [Utterance(tmp_path / "a.wav", "calm", "unknown")]


@pytest.mark.parametrize(
    ("text", "labels", "message"),
    [
        ("path,label\na.wav,sad\nmissing.wav,sad\n", None,
         r"m\.csv line 3: audio file .*missing\.wav does not exist; fix the path"),
        # both raised from the file check, as tracebacks
        ("path,label\na.wav/x.wav,sad\n", None, r"line 2: audio file .*a\.wav/x\.wav does not exist: a folder on its"),
        (f"path,label\n{'x' * 300}.wav,sad\n", None, r"line 2: audio file .*x\.wav cannot be examined \(File name too"),
        ("path,label\na.wav,joy\n", ("sad",), r"m\.csv line 2: unknown label 'joy'; expected one of \('sad',\)"),
        ("file,emotion\na.wav,sad\n", None, r"header is \['file', 'emotion'\], expected columns path,label"),
        ("path,label\n", None, "lists no utterances"),
        ("path,label\na.wav,\n", None, "line 2: empty path or label"),
        ("path,label,speaker\na.wav,sad,\n", None, "line 2: empty speaker cell; fill in every speaker, or drop"),
        ("path,label,session\na.wav,sad, \n", None, "line 2: empty session cell; fill in every session, or drop"),
        ("path\tlabel\na.wav\tsad\n", None, r"header is \['path\\tlabel'\], .*separated by tabs: save it comma-"),
        ("path;label\na.wav;sad\n", None, "its cells look separated by semicolons: save it comma-separated"),
        ("path,label\na.wav,sad,extra\n", None, r"line 2: 1 cell\(s\) past the header's 2 columns \('extra'\); quote"),
        ("path,label\na.wav,sad\x00\n", None, "line 2: a cell holds a NUL character; the file is damaged"),
        ("path,label,speaker\na.wav,sad,unknown\n", None,
         "line 2: speaker 'unknown' is how minser marks a speaker that is not known; give the speaker an id"),
        ("path,label,speaker\na.wav,sad,Unknown\n", None, "line 2: speaker 'Unknown' is how minser marks"),  # was read
        # were "header is []"
        ("\n\npath,label\na.wav,sad\n", None, r"m\.csv line 1 is blank; the first line must be the header"),
        ("", None, r"m\.csv is empty; give a header path,label"),
    ],
)
def test_manifest_errors(tmp_path: Path, text: str, labels: tuple[str, ...] | None, message: str) -> None:
    write_wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_manifest(tmp_path / "m.csv", labels=labels)


def test_manifest_columns_without_a_name_are_ignored_and_unknown_ones_warned(tmp_path: Path) -> None:
    """A spreadsheet export's trailing commas were 'column '' twice'; a typo such as 'speakers' went unnoticed."""
    write_wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path,label,,\na.wav,sad,,\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [u.label for u in load_manifest(tmp_path / "m.csv").utterances] == ["sad"]
    (tmp_path / "m.csv").write_text("path,label,Speakers\na.wav,sad,03\n")
    with pytest.warns(UserWarning, match=r"m\.csv: column\(s\) 'Speakers' are not read \(minser reads path, label, "
                                         r"speaker, session\); rename a column"):
        corpus = load_manifest(tmp_path / "m.csv")
    assert corpus.speakers().tolist() == ["unknown"]


@pytest.mark.parametrize("spelling", ["./a.wav", "audio/../a.wav", "{root}/a.wav"])
def test_manifest_listing_a_file_twice_is_refused(tmp_path: Path, spelling: str) -> None:
    write_wav(tmp_path / "a.wav")
    write_wav(tmp_path / "b.wav")
    (tmp_path / "audio").mkdir()
    (tmp_path / "m.csv").write_text(f"path,label\na.wav,sad\nb.wav,sad\n{spelling.format(root=tmp_path)},joy\n")
    # Else one utterance could land in both the training and the test part.
    cell = re.escape(repr(spelling.format(root=tmp_path)))
    with pytest.raises(DataError, match=rf"m\.csv lines 2 and 4 both list one file, as 'a\.wav' and {cell}; list each "
                                        "file once$"):
        load_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_manifest_listing_a_file_under_two_names_is_refused(tmp_path: Path, link: Callable[[Path, Path], None]) -> None:
    write_wav(tmp_path / "a.wav")
    link(tmp_path / "a.wav", tmp_path / "b.wav")
    (tmp_path / "m.csv").write_text("path,label\na.wav,sad\nb.wav,joy\n")
    with pytest.raises(DataError, match=rf"^manifest {re.escape(str(tmp_path / 'm.csv'))} lines 2 and 3 both list one "
                                        r"file, as 'a\.wav' and 'b\.wav'; list each file once$"):
        load_manifest(tmp_path / "m.csv")


def test_manifest_label_spelled_two_ways_is_refused(tmp_path: Path) -> None:
    for name in "abc":
        write_wav(tmp_path / f"{name}.wav")
    (tmp_path / "m.csv").write_text("path,label\na.wav,anger\nb.wav, sad \nc.wav,Anger\n")
    with pytest.raises(DataError, match=r"m\.csv: labels 'anger' \(line 2\) and 'Anger' \(line 4\) differ only in "
                                        r"case; spell each label one way"):
        load_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("column", ["speaker", "session"])
def test_manifest_speaker_or_session_spelled_two_ways_is_refused(tmp_path: Path, column: str) -> None:
    """'anna' and 'Anna' were two speakers: leave-one-speaker-out tested on a voice it had trained on."""
    for name in "abc":
        write_wav(tmp_path / f"{name}.wav")
    (tmp_path / "m.csv").write_text(f"path,label,{column}\na.wav,anger,anna\nb.wav,sad,bo\nc.wav,sad,Anna\n")
    with pytest.raises(DataError, match=rf"m\.csv: {column}s 'anna' \(line 2\) and 'Anna' \(line 4\) differ only "
                                        rf"in case; spell each {column} one way"):
        load_manifest(tmp_path / "m.csv")


def test_manifest_column_names_in_any_case(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("Path, Label ,SPEAKER,Session\na.wav,sad,s1,one\n")
    # Before, a "Speaker" column was ignored without notice and every speaker read as "unknown".
    assert load_manifest(tmp_path / "m.csv").utterances == [Utterance(tmp_path / "a.wav", "sad", "s1", "one")]
    (tmp_path / "m.csv").write_text("path,label,Label\na.wav,sad,joy\n")
    with pytest.raises(DataError, match=r"m\.csv: header \['path', 'label', 'Label'\] names column 'label' twice; "
                                        "give each column once"):
        load_manifest(tmp_path / "m.csv")


def test_manifest_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest .*nope\.csv does not exist; give a CSV file"):
        load_manifest(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"'.*nope\.csv' not found: give 'emodb', 'iemocap'"):
        load_corpus(tmp_path / "nope.csv", data_dir=tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_manifest_or_audio_path_that_is_no_regular_file_says_what_it_is(tmp_path: Path) -> None:
    # Before, a named pipe was "not found"; opening it would wait for a writer forever.
    os.mkfifo(tmp_path / "pipe.csv")
    with pytest.raises(DataError, match=r"^manifest .*pipe\.csv is not a regular file but a named pipe; give a CSV"):
        load_manifest(tmp_path / "pipe.csv")
    with pytest.raises(DataError, match=r"^corpus '.*pipe\.csv' is not a regular file but a named pipe; give a CSV "
                                        r"manifest \(path,label\[,speaker\]\) or a folder"):
        load_corpus(tmp_path / "pipe.csv", data_dir=tmp_path)
    (tmp_path / "moved.csv").symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(DataError, match=r"^corpus '.*moved\.csv' is a symbolic link to .*elsewhere\.csv, which does "
                                        "not exist; give a CSV manifest"):
        load_corpus(tmp_path / "moved.csv", data_dir=tmp_path)
    os.mkfifo(tmp_path / "a.wav")
    (tmp_path / "b.wav").mkdir()
    for name, problem in (("a.wav", "is not a regular file but a named pipe"), ("b.wav", "is a directory")):
        (tmp_path / "m.csv").write_text(f"path,label\n{name},sad\n")
        with pytest.raises(DataError, match=rf"m\.csv line 2: audio file .*{name} {problem}; fix the path"):
            load_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize(("stray", "message"), [
    ("loose.wav", r"holds audio next to its label folders \(loose\.wav\), which has no label; move each file"),
    ("anger/takes/b.wav", r"label folder .*anger holds audio in a sub-folder \(.*takes/b\.wav\), and sub-folders"),
])
def test_folder_audio_it_would_skip_is_refused(tmp_path: Path, stray: str, message: str) -> None:
    """Both were skipped without notice: a part of the data would be missing from the corpus."""
    for name in ("anger/a.wav", "neutral/n.wav", stray):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_wav(tmp_path / name)
    with pytest.raises(DataError, match=message):
        load_folder(tmp_path)


def test_an_emodb_folder_given_as_a_folder_corpus_says_to_name_emodb(tmp_path: Path) -> None:
    """It loaded as one label, 'wav', and training then refused a corpus of one emotion."""
    write_wav(tmp_path / "emodb" / "wav" / "03a01Fa.wav")
    # The advice named --data, which `python -m minser.data info` lacks: the corpus name serves every caller.
    data = re.escape(str(tmp_path))
    with pytest.raises(DataError, match=rf"^corpus folder {data}/emodb is laid out as EmoDB \(wav/03a01Fa\.wav, "
                                        r"\.\.\.\), not as one folder per label; give the corpus name 'emodb' instead "
                                        rf"of its path, with MINSER_DATA={data}$"):
        load_corpus(tmp_path / "emodb", data_dir=tmp_path)


@pytest.mark.filterwarnings("ignore:EmoDB folder .* of the corpus' 535 files")
@pytest.mark.parametrize("name", ["EmoDB", "emodb_copy"])
def test_an_emodb_folder_named_otherwise_says_to_rename_or_link_it(tmp_path: Path, name: str) -> None:
    """The advice was MINSER_DATA=<parent>, but the corpus 'emodb' is read from <MINSER_DATA>/emodb only."""
    write_wav(tmp_path / name / "wav" / "03a01Fa.wav")
    with pytest.raises(DataError, match=rf"not as one folder per label; rename it, or link it, as "
                                        rf"{re.escape(str(tmp_path / 'emodb'))}, then give the corpus name 'emodb' "
                                        rf"instead of its path, with MINSER_DATA={re.escape(str(tmp_path))}$"):
        load_folder(tmp_path / name)
    (tmp_path / "emodb").symlink_to(tmp_path / name)  # as advised, it then loads
    assert len(load_corpus("emodb", data_dir=tmp_path)) == 1


@pytest.mark.filterwarnings("ignore:EmoDB folder .* of the corpus' 535 files")
@pytest.mark.parametrize(("folder", "advice"), [
    ("emodb/wav", "give the corpus name 'emodb' instead of its path, with MINSER_DATA={tmp}"),
    ("emodb", "give the corpus name 'emodb' instead of its path, with MINSER_DATA={tmp}"),
    ("EmoDB/wav", "rename it, or link it, as {tmp}/emodb, then give the corpus name 'emodb' instead of its path, "
                  "with MINSER_DATA={tmp}"),
    ("emodb_wavs", "rename it, or link it, as {tmp}/emodb, then give the corpus name 'emodb' instead of its path, "
                   "with MINSER_DATA={tmp}"),
], ids=["wav", "emodb", "renamed-wav", "renamed"])
def test_a_flat_folder_of_emodb_files_says_to_load_emodb(tmp_path: Path, emodb_root: Path, folder: str,
                                                          advice: str) -> None:
    """EmoDB's wav/ folder given as a folder corpus was said to hold no audio, one sub-folder per label expected."""
    (tmp_path / folder).mkdir(parents=True)
    for name in ("03a01Fa.wav", "03a01Nc.wav", "03a01Wa.wav", "03a02Fc.wav"):
        (tmp_path / folder / name).symlink_to(emodb_root / "wav" / name)
    advice = advice.format(tmp=tmp_path)
    with pytest.raises(DataError, match=rf"^corpus folder {re.escape(str(tmp_path / folder))} holds audio files at its "
                                        r"top \(03a01Fa\.wav, 03a01Nc\.wav, 03a01Wa\.wav, \.\.\.\), none in label "
                                        rf"sub-folders; the names are EmoDB's: {re.escape(advice)}$"):
        load_folder(tmp_path / folder)
    if not advice.startswith("rename"):  # the advice, followed, loads it
        assert len(load_corpus("emodb", classes=7, data_dir=tmp_path)) == 4


def test_the_data_folder_given_as_a_folder_corpus_says_to_name_its_corpora(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`info $MINSER_DATA` said label folder emodb holds audio in a sub-folder: "move the files up into the label
    folder", which would break the EmoDB copy; IEMOCAP's release was told the same of its Session1 folder."""
    write_wav(tmp_path / "emodb" / "wav" / "03a01Fa.wav")
    (tmp_path / "emodb" / "SHA256SUMS").write_text("")
    assert main(["info", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: corpus folder {tmp_path}: label folder {tmp_path / 'emodb'} is laid out as EmoDB (wav/03a01Fa.wav, "
        f"...), not as the audio of one label; give the corpus name 'emodb' instead of its path, with "
        f"MINSER_DATA={tmp_path}\n")
    shutil.rmtree(tmp_path / "emodb")
    release, data = make_iemocap(tmp_path), re.escape(str(tmp_path))
    with pytest.raises(DataError, match=rf"^corpus folder {data}: label folder "
                                        rf"{re.escape(str(release))} is laid out as IEMOCAP \(Session1 \.\.\. "
                                        r"Session5\), not as the audio of one label; give the corpus name 'iemocap' "
                                        rf"instead of its path, with MINSER_DATA={data}$"):
        load_folder(tmp_path)
    with pytest.raises(DataError, match=rf"^corpus folder {re.escape(str(release))} is laid out as IEMOCAP "
                                        r"\(Session1 \.\.\. Session5\), not as one folder per label; give the "
                                        rf"corpus name 'iemocap' instead of its path, with MINSER_DATA={data}$"):
        load_folder(release)
    release.rename(tmp_path / "IEMOCAP")
    with pytest.raises(DataError, match=rf"rename it, or link it, as {re.escape(str(release))}, then give the corpus "
                                        "name 'iemocap'"):
        load_folder(tmp_path / "IEMOCAP")
    release.symlink_to(tmp_path / "IEMOCAP")  # as advised, it then loads
    with pytest.warns(UserWarning, match="holds 2 of the corpus' 5 sessions"):
        assert len(load_corpus("iemocap", data_dir=tmp_path)) == 6


def test_folder(tmp_path: Path) -> None:
    for name in ("neutral/x.wav", "neutral/a.wav", "anger/y.flac", "anger/notes.txt"):
        if name.endswith(".txt"):
            (tmp_path / "corpus" / name).write_text("not audio")
        else:
            write_wav(tmp_path / "corpus" / name)
    (tmp_path / "corpus" / "anger" / "._y.flac").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork
    write_wav(tmp_path / "corpus" / ".hidden" / "z.wav")
    corpus = load_folder(tmp_path / "corpus")
    assert corpus.labels == ("anger", "neutral")
    got = [(u.path.name, u.label) for u in corpus.utterances]
    assert got == [("y.flac", "anger"), ("a.wav", "neutral"), ("x.wav", "neutral")]
    assert load_corpus(tmp_path / "corpus").utterances == corpus.utterances


def test_folder_labels_are_stripped_and_the_corpus_named_as_its_folder(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder "anger " was the label "anger " (a manifest strips its cells); `info .` named the corpus ''."""
    write_wav(tmp_path / "calls" / "anger " / "a.wav")
    write_wav(tmp_path / "calls" / "neutral" / "n.wav")
    monkeypatch.chdir(tmp_path / "calls")
    corpus = load_folder(".")
    assert corpus.name == "calls" and corpus.labels == ("anger", "neutral")


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [
        (".mp3", "MP3", "MPEG_LAYER_III"), (".opus", "OGG", "OPUS"), (".aiff", "AIFF", "PCM_16"),
        (".AIF", "AIFF", "PCM_16"),
    ],
)
def test_folder_reads_every_audio_format_soundfile_reads(tmp_path: Path, suffix: str, fmt: str, subtype: str) -> None:
    if fmt not in soundfile.available_formats() or subtype not in soundfile.available_subtypes(fmt):
        pytest.skip(f"libsndfile {soundfile.__libsndfile_version__} here has no {fmt} {subtype}")
    wave = 0.1 * np.random.default_rng(0).standard_normal(1600).astype(np.float32)
    (tmp_path / "anger").mkdir()
    path = tmp_path / "anger" / f"a{suffix}"
    soundfile.write(path, wave, 16000, format=fmt, subtype=subtype)
    write_wav(tmp_path / "anger" / "b.wav")
    corpus = load_folder(tmp_path)
    assert [u.path.name for u in corpus.utterances] == [f"a{suffix}", "b.wav"]
    assert len(load(path)) == soundfile.info(path).frames > 0


def test_folder_with_audio_soundfile_cannot_read_is_refused(tmp_path: Path) -> None:
    write_wav(tmp_path / "anger" / "a.wav")
    (tmp_path / "anger" / "b.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    (tmp_path / "neutral").mkdir()
    (tmp_path / "neutral" / "c.WMA").write_bytes(bytes(64))
    (tmp_path / "neutral" / "notes.txt").write_text("not audio")  # other files stay ignored
    (tmp_path / "neutral" / "._c.m4a").write_bytes(bytes(4))  # and so do hidden ones
    # Skipping them would load part of the data, or call a folder of .m4a files empty.
    first = re.escape(str(tmp_path / "anger" / "b.m4a"))
    with pytest.raises(DataError, match=rf"^corpus folder {re.escape(str(tmp_path))}: 2 audio files are in a format "
                                        rf"soundfile cannot read \(first: {first}\); convert them to \.wav or \.flac "
                                        r"\(e\.g\. `ffmpeg -i b\.m4a b\.wav`\) or remove them$"):
        load_folder(tmp_path)


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent does not exist; give a folder with one sub-folder"):
        load_folder(tmp_path / "absent")
    with pytest.raises(DataError, match="holds no audio: expected one sub-folder per label"):
        load_folder(tmp_path)
    write_wav(tmp_path / "a.wav")  # audio, but not in a label folder: it was said to hold none
    with pytest.raises(DataError, match=r"holds audio files at its top \(a\.wav\), none in label sub-folders; a folder "
                                        r"corpus takes each file's label from its sub-folder \(root/anger/a\.wav, "
                                        r"root/neutral/b\.wav, \.\.\.\): move each file into its label's folder, or "
                                        r"list the files in a CSV manifest \(path,label\[,speaker\]\)$"):
        load_folder(tmp_path)


def test_folder_with_an_audio_name_that_is_no_file_is_refused(tmp_path: Path) -> None:
    write_wav(tmp_path / "anger" / "a.wav")
    write_wav(tmp_path / "anger" / "b.wav")
    (tmp_path / "neutral").mkdir()
    (tmp_path / "neutral" / "c.wav").symlink_to(tmp_path / "moved" / "c.wav")  # the corpus it pointed into moved
    # Before, the link was skipped: the corpus loaded without its neutral class's file and without a word.
    link = re.escape(str(tmp_path / "neutral" / "c.wav"))
    with pytest.raises(DataError, match=rf"^corpus folder {re.escape(str(tmp_path))}: {link} is a symbolic link to "
                                        rf"{re.escape(str(tmp_path / 'moved' / 'c.wav'))}, which does not exist; put "
                                        "the audio file there or remove the entry$"):
        load_folder(tmp_path)


@pytest.mark.parametrize("link", [os.symlink, os.link])
@pytest.mark.parametrize("folder", ["anger", "neutral"])
def test_folder_holding_one_file_under_two_names_is_refused(
    tmp_path: Path, link: Callable[[Path, Path], None], folder: str
) -> None:
    write_wav(tmp_path / "anger" / "a.wav")
    write_wav(tmp_path / "neutral" / "b.wav")
    link(tmp_path / "anger" / "a.wav", tmp_path / folder / "z.wav")
    # One recording twice could land in training and test; in two label folders it has two labels as well.
    with pytest.raises(DataError, match=rf"^corpus folder {re.escape(str(tmp_path))}: "
                                        rf"{re.escape(str(tmp_path / 'anger' / 'a.wav'))} and "
                                        rf"{re.escape(str(tmp_path / folder / 'z.wav'))} are one file \(a link to the "
                                        r"other\); keep one of them$"):
        load_folder(tmp_path)


def test_folder_with_an_empty_label_folder_is_refused(tmp_path: Path) -> None:
    write_wav(tmp_path / "anger" / "a.wav")
    (tmp_path / "neutral").mkdir()
    (tmp_path / "neutral" / "notes.txt").write_text("not audio")
    (tmp_path / ".cache").mkdir()  # hidden folders are not labels
    # Dropping it would silently change the class set.
    with pytest.raises(DataError, match=rf"label folder .*neutral holds no {re.escape('/'.join(AUDIO_SUFFIXES))} "
                                        r"files; add its audio or remove the folder"):
        load_folder(tmp_path)
    (tmp_path / "neutral" / "notes.txt").unlink()
    (tmp_path / "neutral").rmdir()
    assert load_folder(tmp_path).labels == ("anger",)


@pytest.mark.parametrize("other", ["Anger", "anger "])
def test_folder_label_spelled_two_ways_is_refused(tmp_path: Path, other: str) -> None:
    write_wav(tmp_path / "anger" / "a.wav")
    write_wav(tmp_path / other / "b.wav")
    first, second = (re.escape(repr(str(tmp_path / name))) for name in sorted(["anger", other]))
    with pytest.raises(DataError, match=rf"label folders {first} and {second} name one label spelled two ways "
                                        r"\(case or surrounding spaces\); merge them into one folder"):
        load_folder(tmp_path)


# ----------------------------------------------------------------------------------------------
# Corpus record and data folder


def test_corpus_methods(tmp_path: Path) -> None:
    utterances = [Utterance(tmp_path / f"{i}.wav", label, f"s{i % 2}") for i, label in enumerate("abcab")]
    corpus = Corpus("toy", ("c", "b", "a"), utterances)
    assert len(corpus) == 5
    assert corpus.targets().dtype == np.int64
    assert corpus.targets().tolist() == [2, 1, 0, 2, 1]
    assert corpus.speakers().tolist() == ["s0", "s1", "s0", "s1", "s0"]
    part = corpus.subset(np.array([4, 0]))
    assert (part.name, part.labels, part.utterances) == ("toy", ("c", "b", "a"), [utterances[4], utterances[0]])
    assert corpus.subset(corpus.targets() == 2).utterances == [utterances[0], utterances[3]]  # a boolean mask
    assert corpus.subset([]).utterances == []
    # A mask was read as indices 0 and 1, and floats were truncated: both picked the wrong utterances.
    with pytest.raises(ConfigError, match=r"^corpus 'toy': subset got a boolean mask of shape \(2,\); give a mask of "
                                          r"shape \(5,\), one value per utterance, or integer indices$"):
        corpus.subset([True, False])
    with pytest.raises(ConfigError, match=r"^corpus 'toy': subset got float64 indices \(first: 1\.7\); give integer "
                                          r"indices or a boolean mask of shape \(5,\)$"):
        corpus.subset([1.7, 2.2])
    for index in (-1, 5):
        with pytest.raises(ConfigError, match=rf"^corpus 'toy': subset got index {index}, outside 0 to 4 \(its 5 "
                                              r"utterances\)$"):
            corpus.subset([0, index])
    with pytest.raises(DataError, match=r"has no session .* \(--protocol speaker\), or give a session column in the "
                                        r"manifest$"):
        corpus.sessions()
    with pytest.raises(DataError, match="label 'z', which is not one of"):
        Corpus("toy", ("a",), [Utterance(tmp_path / "z.wav", "z", "s")])
    with pytest.raises(DataError, match="duplicates"):
        Corpus("toy", ("a", "a"), [])
    assert Utterance("x/a.wav", "a", "s").path == Path("x/a.wav")
    with pytest.raises(dataclasses.FrozenInstanceError):
        utterances[0].label = "c"  # type: ignore[misc]


def test_data_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MINSER_DATA", str(tmp_path / "data"))
    assert data_dir() == tmp_path / "data"
    monkeypatch.delenv("MINSER_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "minser"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "minser"


def test_the_suite_keeps_its_features_out_of_the_users_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """conftest points the default feature cache at this session's folder: the suite filled ~/.cache/minser,
    and a stale entry there (a front-end edit without a version bump) decided a bench test."""
    from minser.data.cache import default_cache_dir

    assert tmp_path_factory.getbasetemp() in default_cache_dir().parents
    script = "from minser.data.cache import default_cache_dir; print(default_cache_dir())"
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert tmp_path_factory.getbasetemp() in Path(child.stdout.strip()).parents


def test_a_home_folder_that_cannot_be_found_is_named_and_a_manifest_needs_none(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """MINSER_DATA='~nosuchuser/...' or a container user without HOME or passwd entry: every command, even
    one reading a manifest, ended in Python's RuntimeError('Could not determine home directory.')."""
    from minser.data.corpora import load_corpus, shown_data_dir, user_cache_dir

    wav = tmp_path / "a.wav"
    soundfile.write(wav, np.full(1600, 0.1, dtype=np.float32), 16000)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\n{wav},anger\n")
    monkeypatch.setenv("MINSER_DATA", "~no_such_user_of_minser/data")
    assert len(load_corpus(manifest)) == 1
    with pytest.raises(ConfigError, match=r"^MINSER_DATA='~no_such_user_of_minser/data': cannot find the home "
                                          r"folder it names .*; set MINSER_DATA to an absolute path"):
        load_corpus("emodb")
    assert shown_data_dir().startswith("unknown: MINSER_DATA=")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(ConfigError, match=r"^cannot find the home folder .* set MINSER_DATA .* XDG_CACHE_HOME"):
        user_cache_dir()
