"""Re-scoring checkpoints: reproduces the run's results from the checkpoint alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minser.errors import CheckpointError, ConfigError
from minser.evaluate import _member_logits, checkpoints_of, evaluate, evaluate_checkpoint, main
from minser.train import main as train
from minser.train import parse_args, score

TINY_RUN = ["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]", "--data", "emodb",
            "--subset", "5", "--folds", "2", "--epochs", "1", "--batch-size", "8", "--threads", "1"]


def anger_neutral_manifest(path: Path, files: list[Path]) -> Path:
    """A CSV manifest of EmoDB files whose emotion letter (the 6th character) is W (anger) or N (neutral)."""
    path.write_text("path,label\n" + "".join(f"{p},{'anger' if p.stem[5] == 'W' else 'neutral'}\n" for p in files))
    return path


def build_cnn(n_classes: int):
    """An untrained tiny CNN."""
    from minser.models import build

    return build("cnn", n_classes, d_model=8, channels=[2, 2, 2])


def untrained_checkpoint(path: Path, data: str = "emodb") -> Path:
    """A checkpoint of an untrained tiny CNN recording ``data`` (EmoDB's 4 classes) as its training corpus
    and utterances 0 and 1 as its test split: enough for evaluate to reach its input checks."""
    from minser import checkpoint
    from minser.data.corpora import FOUR_CLASS_LABELS
    from minser.features import FrontEnd

    model = build_cnn(len(FOUR_CLASS_LABELS))
    return checkpoint.save(path, spec=model.spec, labels=FOUR_CLASS_LABELS, frontend=FrontEnd().to_dict(),
                           state_dict=model.state_dict(), data={"spec": data, "classes": 4, "subset": None},
                           train={"seed": 0}, fold={"index": 0, "name": "random-0", "test": [0, 1]})


@pytest.fixture(scope="module")
def run(emodb_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-fold, 1-epoch tiny CNN run on 5 EmoDB utterances per class: (run folder, feature cache)."""
    out, cache = tmp_path_factory.mktemp("run") / "cnn", tmp_path_factory.mktemp("cache")
    train([*TINY_RUN, "--out", str(out), "--cache-dir", str(cache)])
    return out, cache


def test_rescoring_a_run_reproduces_its_results(run: tuple[Path, Path]) -> None:
    out, cache = run
    results = json.loads((out / "results.json").read_text())
    scored = evaluate(out, cache_dir=str(cache))
    assert [f["checkpoint"] for f in scored["folds"]] == [str(out / "fold-1/best.pt"), str(out / "fold-2/best.pt")]
    for mine, theirs in zip(scored["folds"], results["folds"]):
        assert (mine["wa"], mine["ua"], mine["confusion"], mine["fold"]) == (
            theirs["wa"], theirs["ua"], theirs["confusion"], theirs["name"])
    assert scored["wa"] == pytest.approx(results["wa"]) and scored["ua_std"] == pytest.approx(results["ua_std"])


def test_cli_scores_a_checkpoint_on_another_corpus(run: tuple[Path, Path], emodb_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out, cache = run
    files = sorted((emodb_root / "wav").glob("*[WN]a.wav"))[:6]
    manifest = anger_neutral_manifest(tmp_path / "other.csv", files)
    assert main([str(out / "fold-1" / "best.pt"), "--data", str(manifest), "--cache-dir", str(cache)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{out / 'fold-1' / 'best.pt'}: 6 utterances  WA")


def test_bad_paths_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(CheckpointError, match="a run folder holding fold-<k>/best.pt"):
        checkpoints_of(tmp_path)
    assert main([str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    for bad, message in ((["--device", "tpu"], "--device 'tpu' is not a device"),
                         (["--batch-size", "0"], "--batch-size 0: give an integer >= 1")):
        assert main([str(tmp_path / "missing.pt"), *bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("data", ["my.csv", "corpus_folder"])
def test_classes_with_a_manifest_or_folder_is_refused_as_train_refuses_it(data: str, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """A manifest or folder takes its classes from its labels, so --classes would be ignored: evaluate refuses
    it with train's message, before looking for the corpus (neither path exists here)."""
    with pytest.raises(ConfigError) as refused:
        parse_args(["--data", data, "--classes", "4"])
    assert str(refused.value).startswith(f"--classes 4 with --data {data}: a CSV manifest or a folder takes its "
                                         "classes from its labels; drop --classes")
    best = untrained_checkpoint(tmp_path / "best.pt")
    assert main([str(best), "--data", data, "--classes", "4"]) == 2
    assert capsys.readouterr().err == f"error: {refused.value}\n"
    with pytest.raises(ConfigError, match="--classes 7 with --data "):
        evaluate(best, data=str(tmp_path / data), classes=7)


def test_missing_emodb_says_how_to_get_it_without_offering_trains_download(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """Evaluate has no --download: a missing EmoDB names the command and the variable that provide it,
    whether evaluate scores the recorded corpus or another class set of it."""
    from minser.data.corpora import DOWNLOAD_HINT

    empty = tmp_path / "empty"
    monkeypatch.setenv("MINSER_DATA", str(empty))
    best = untrained_checkpoint(tmp_path / "best.pt")
    missing = (f"EmoDB not found: {empty / 'emodb'} holds no wav/ folder (expected {empty / 'emodb'}/wav/03a01Fa.wav, "
               f"...); {DOWNLOAD_HINT}")
    assert main([str(best)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {best} was trained on --data emodb, which cannot be "
                                              f"loaded here: {missing}. If it has moved, set MINSER_DATA to the "
                                              "folder that now holds it (scored on the fold's test split)")
    # (was "pass --data with its new place": a path to EmoDB's folder is refused as "laid out as EmoDB")
    # Named by the user, the corpus is reported as it is: advice to pass --data would be no help.
    for named in (["--data", "emodb"], ["--data", "emodb", "--classes", "7"]):
        assert main([str(best), *named]) == 2
        assert capsys.readouterr().err == f"error: {missing}\n"


def test_classes_without_data_other_than_trained_is_refused(run: tuple[Path, Path],
                                                            capsys: pytest.CaptureFixture) -> None:
    """Without --data a checkpoint is scored on its test split with its own classes, so another --classes
    would be ignored; the classes it was trained with are accepted."""
    out, cache = run
    assert evaluate(out, classes=4, cache_dir=str(cache)) == evaluate(out, cache_dir=str(cache))
    assert main([str(out), "--classes", "7", "--cache-dir", str(cache)]) == 2
    assert capsys.readouterr().err == (
        f"error: --classes 7 without --data: {out / 'fold-1/best.pt'} is then scored on its fold's test split, with "
        "the classes it was trained on (anger, happiness, sadness, neutral); it knows only these 4 classes and cannot "
        "tell EmoDB's 7 apart: drop --classes\n")


def test_classes_without_data_advises_data_only_where_it_helps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 4-class checkpoint given --classes 7 was advised `--data emodb --classes 7`, which scores its own 4 classes
    again; a 7-class one given --classes 4 is still advised so (its test split's utterances of those 4)."""
    from minser import checkpoint
    from minser.data.corpora import EMODB_LABELS_7

    four = untrained_checkpoint(tmp_path / "four.pt")
    saved = checkpoint.load(four)
    model = build_cnn(len(EMODB_LABELS_7))
    seven = checkpoint.save(tmp_path / "seven.pt", **{**saved, "spec": model.spec, "labels": EMODB_LABELS_7,
                                                      "state_dict": model.state_dict(),
                                                      "data": {**saved["data"], "classes": 7}})
    head = "error: --classes {} without --data: {} is then scored on its fold's test split, with the classes it was "
    assert main([str(four), "--classes", "7"]) == 2
    assert capsys.readouterr().err == (head.format(7, four) + "trained on (anger, happiness, sadness, neutral); it "
                                       "knows only these 4 classes and cannot tell EmoDB's 7 apart: drop --classes\n")
    assert main([str(seven), "--classes", "4"]) == 2
    assert capsys.readouterr().err == (head.format(4, seven) + f"trained on ({', '.join(EMODB_LABELS_7)}); to score "
                                       "it on EmoDB's 4 classes pass --data emodb --classes 4\n")


def test_another_class_set_of_the_training_corpus_scores_only_the_test_split(run: tuple[Path, Path], tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """EmoDB's other class set holds the utterances trained on: only the fold's test utterances are scored
    (before, every utterance was, training ones included), in either direction."""
    from minser import checkpoint
    from minser.evaluate import training_corpus

    out, cache = run
    four = evaluate(out, cache_dir=str(cache))
    # The 4-class run's test utterances are all 4-class: on the 7-class set the same ones score the same.
    with pytest.warns(UserWarning, match=r"skipping utterances labelled \['boredom', 'disgust', 'fear'\]"):
        assert evaluate(out, data="emodb", classes=7, cache_dir=str(cache))["folds"] == four["folds"]
    seven = tmp_path / "seven"
    train([*TINY_RUN, "--classes", "7", "--folds", "1", "--out", str(seven), "--cache-dir", str(cache)])
    best = seven / "fold-1" / "best.pt"
    saved = checkpoint.load(best)
    trained_on = training_corpus(saved, best)
    tested = [trained_on.utterances[i] for i in saved["fold"]["test"]]
    scored = evaluate(best, data="emodb", classes=4, cache_dir=str(cache))["folds"][0]
    assert scored["n"] == sum(u.label in ("anger", "happiness", "sadness", "neutral") for u in tested) < len(tested)


def test_a_checkpoint_trained_on_every_utterance_has_no_test_split_in_any_class_set(
    emodb_root: Path, capsys: pytest.CaptureFixture
) -> None:
    """The shipped default records no fold (tools/train_default.py trains on all of EmoDB): before, evaluate
    failed with a KeyError, and with --classes 4 it scored 339 training utterances."""
    from minser.recognizer import default_checkpoint

    with default_checkpoint() as default:
        for options in ([], ["--data", "emodb"], ["--data", "emodb", "--classes", "4"]):
            assert main([str(default), *options]) == 2
            assert capsys.readouterr().err.startswith("error: the checkpoint was trained on every utterance of its "
                                                      "corpus (--protocol all), so it has no held-out test split; ")


def test_a_speaker_norm_checkpoint_on_a_corpus_without_speakers_is_refused(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """Its features need each speaker's statistics; a corpus that names no speaker would make one speaker of
    everybody. Refused before any features are computed."""
    import soundfile

    from minser import checkpoint

    best = untrained_checkpoint(tmp_path / "plain.pt")
    normed = checkpoint.save(tmp_path / "normed.pt", **{**checkpoint.load(best), "speaker_norm": {"03": [[0.0], [1.0]]}})
    for name in ("a.wav", "b.wav"):
        soundfile.write(tmp_path / name, np.random.default_rng(0).normal(0, 0.1, 16000), 16000)
    manifest = tmp_path / "mine.csv"
    manifest.write_text("path,label\na.wav,anger\nb.wav,neutral\n")
    assert main([str(normed), "--data", str(manifest)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: mine: {normed} (trained with --speaker-norm) needs the speaker of every utterance, and this "
        "corpus names none: a CSV manifest needs a speaker column")


def test_copies_beside_a_runs_fold_folders_are_not_scored_as_folds(run: tuple[Path, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """Only fold-<digits> folders are folds, as --resume counts them: a copy fold-2.bak crashed evaluate with a
    ValueError, and fold-2-old was scored as a third fold of the mean."""
    out, cache = run
    results = json.loads((out / "results.json").read_text())
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    shutil.copytree(copy / "fold-2", copy / "fold-2-old")
    assert checkpoints_of(copy) == [copy / "fold-1" / "best.pt", copy / "fold-2" / "best.pt"]
    shutil.copytree(copy / "fold-2", copy / "fold-2.bak")
    scored = evaluate(copy, cache_dir=str(cache))
    assert [f["checkpoint"] for f in scored["folds"]] == [str(copy / "fold-1/best.pt"), str(copy / "fold-2/best.pt")]
    assert [f["confusion"] for f in scored["folds"]] == [f["confusion"] for f in results["folds"]]
    assert scored["wa"] == pytest.approx(results["wa"])
    assert main([str(copy), "--cache-dir", str(cache)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # two folds and the mean


def test_the_training_corpus_moved_elsewhere_is_scored_on_the_folds_test_split(emodb_root: Path,
                                                                               tmp_path: Path) -> None:
    """--data with the training corpus in another place (a manifest moved with its audio) scored every
    utterance, the trained-on ones included; its print, which a moved corpus keeps, tells it is the training
    corpus, with the run's --subset pick. An edited copy is another corpus."""
    from minser import checkpoint

    corpus, cache = tmp_path / "corpus", str(tmp_path / "cache")
    corpus.mkdir()
    files = sorted((emodb_root / "wav").glob("*[WN]a.wav"))[:40]  # 25 anger, 15 neutral
    for file in files:
        shutil.copy(file, corpus / file.name)
    anger_neutral_manifest(corpus / "m.csv", [Path(file.name) for file in files])  # relative: moves with the audio
    out = tmp_path / "run"
    # The last --data and --subset win: 15 utterances per class, 30 in all.
    train([*TINY_RUN, "--data", str(corpus / "m.csv"), "--subset", "15", "--out", str(out), "--cache-dir", cache])
    results = json.loads((out / "results.json").read_text())
    moved = corpus.rename(tmp_path / "moved") / "m.csv"
    scored = evaluate(out, data=str(moved), cache_dir=cache)
    tests = [len(checkpoint.load(out / f"fold-{k}/best.pt")["fold"]["test"]) for k in (1, 2)]
    assert [f["n"] for f in scored["folds"]] == tests and sum(tests) < 30
    for mine, theirs in zip(scored["folds"], results["folds"]):
        assert (mine["wa"], mine["ua"], mine["confusion"]) == (theirs["wa"], theirs["ua"], theirs["confusion"])
    assert [f["n"] for f in evaluate(out, data=str(moved), everything=True, cache_dir=cache)["folds"]] == [30, 30]
    lines = moved.read_text().splitlines()
    moved.write_text("\n".join([*lines[:-1], lines[-1].replace("anger", "neutral")]) + "\n")  # one label edited
    assert [f["n"] for f in evaluate(out, data=str(moved), cache_dir=cache)["folds"]] == [40, 40]


def test_a_training_corpus_not_found_says_that_data_overrides_it(run: tuple[Path, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from minser import checkpoint

    out, cache = run
    saved = checkpoint.load(out / "fold-1/best.pt")
    moved = tmp_path / "moved.pt"
    checkpoint.save(moved, **{**saved, "data": {**saved["data"], "spec": str(tmp_path / "gone.csv")}})
    assert main([str(moved), "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {moved} was trained on --data {tmp_path / 'gone.csv'}, which cannot be loaded here: ")
    assert f"corpus '{tmp_path / 'gone.csv'}' not found" in err
    assert err.endswith(". If it has moved, pass --data with its new place (scored on the fold's test split); to "
                        "score on another corpus instead, pass --data with that (scored on every utterance)\n")


def test_split_seed_shares_the_test_folds_and_the_runs_ensemble(
        run: tuple[Path, Path], tmp_path: Path, emodb_root: Path, capsys: pytest.CaptureFixture) -> None:
    """--seed 1 --split-seed 0 trains other weights on seed 0's splits; evaluate scores both runs as an
    ensemble: per fold, the argmax of the members' summed softmax probabilities."""
    from minser import checkpoint
    from minser.evaluate import _member_logits

    out, cache = run
    other = tmp_path / "seed1"
    results = train([*TINY_RUN, "--seed", "1", "--split-seed", "0", "--out", str(other), "--cache-dir", str(cache)])
    assert results["seed"] == 1 and results["split_seed"] == 0
    for k in (1, 2):
        a, b = checkpoint.load(out / f"fold-{k}/best.pt"), checkpoint.load(other / f"fold-{k}/best.pt")
        assert a["fold"]["test"] == b["fold"]["test"]
        assert any(not torch.equal(a["state_dict"][n], b["state_dict"][n]) for n in a["state_dict"])

    ensemble = evaluate([out, other], cache_dir=str(cache))
    for k, fold in enumerate(ensemble["folds"], start=1):
        members = [_member_logits(r / f"fold-{k}/best.pt", None, None, False, "cpu", 64, str(cache)) for r in (out, other)]
        targets = members[0][2]
        expected = sum(torch.softmax(m[3], -1) for m in members).argmax(-1)
        assert fold["confusion"] == score(targets, expected, 4)["confusion"]
        assert fold["checkpoint"] == f"{out / f'fold-{k}/best.pt'} + {other / f'fold-{k}/best.pt'}"
    assert main([str(out), str(other), "--cache-dir", str(cache)]) == 0
    assert f"{out / 'fold-1/best.pt'} + {other / 'fold-1/best.pt'}: " in capsys.readouterr().out

    # Recognizer serves the same ensemble: its probabilities are the mean evaluate takes.
    from minser.audio import load
    from minser.recognizer import Recognizer

    files = sorted((emodb_root / "wav").glob("03*[WN]a.wav"))[:4]
    manifest = anger_neutral_manifest(tmp_path / "short.csv", files)
    pair = [out / "fold-1/best.pt", other / "fold-1/best.pt"]
    members = [_member_logits(p, str(manifest), None, False, "cpu", 64, str(cache))[3] for p in pair]
    served = Recognizer.load(pair).probabilities([load(p, sr=16000) for p in files])
    np.testing.assert_allclose(served, sum(torch.softmax(m, -1) for m in members).numpy() / 2, rtol=1e-4, atol=1e-5)


def test_an_ensemble_of_different_splits_or_fold_counts_is_refused(run: tuple[Path, Path], tmp_path: Path) -> None:
    out, cache = run
    other = tmp_path / "seed1"
    train([*TINY_RUN, "--seed", "1", "--out", str(other), "--cache-dir", str(cache)])
    with pytest.raises(CheckpointError, match="different utterances.*same --split-seed and --subset, or pass --data "
                                              "with another corpus"):
        evaluate([out, other], cache_dir=str(cache))
    with pytest.raises(CheckpointError, match=r"same number of folds.*: 2, .*: 1"):
        evaluate([out, other / "fold-1/best.pt"], cache_dir=str(cache))
    # One run twice would weigh double (and score as that run alone); before, it was accepted.
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(out))} and {re.escape(str(out))} name the same "
                                          "checkpoint; name each checkpoint once$"):
        evaluate([out, other, out], cache_dir=str(cache))
    fold = out / "fold-1" / "best.pt"
    with pytest.raises(ConfigError, match="name the same checkpoint"):
        evaluate_checkpoint([fold, Path(f"{out}/./fold-1/best.pt")], cache_dir=str(cache))


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_classes_other_than_4_or_7_are_refused_by_the_parser(command: str, capsys: pytest.CaptureFixture) -> None:
    """evaluate --classes 5 advised `--data emodb --classes 5`, which failed in turn."""
    from minser import train as train_module

    run = main if command == "evaluate" else train_module.cli
    with pytest.raises(SystemExit) as exit_:
        run(["minser/assets/default.pt", "--classes", "5"] if command == "evaluate" else ["--classes", "5"])
    assert exit_.value.code == 2
    assert "argument --classes: invalid choice: 5 (choose from 4, 7)" in capsys.readouterr().err


@pytest.mark.parametrize("cli", ["train", "evaluate"])
def test_help_states_each_default_once(cli: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        (train if cli == "train" else main)(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert not re.search(r"\(default[^)]*\) \(default", text), "an option's default is stated twice"
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: cpu)" in text if cli == "evaluate" else "(default: 0)" in text  # 0 is a default to show


def test_targets_follow_the_checkpoints_class_order_not_the_corpus() -> None:
    """A checkpoint's output i is its labels[i], whatever order the scored corpus lists its classes in; the
    rescoring tests' one-class predictions could not tell the orders apart."""
    from minser.data import Corpus, Utterance
    from minser.evaluate import _scored_items

    corpus = Corpus("c", ("anger", "happiness", "neutral"),
                    [Utterance(Path(f"{i}.wav"), label, "s") for i, label in
                     enumerate(["neutral", "anger", "happiness", "anger", "neutral"])])
    index, targets = _scored_items({"labels": ["neutral", "happiness", "anger"]}, corpus, None, False)
    assert index.tolist() == [0, 1, 2, 3, 4] and targets.tolist() == [0, 2, 1, 2, 0]
    index, targets = _scored_items({"labels": ["neutral", "happiness", "anger"]}, corpus, np.array([4, 1]), False)
    assert index.tolist() == [4, 1] and targets.tolist() == [0, 2]


def test_rescoring_uses_the_runs_precision(emodb_root: Path, tmp_path: Path) -> None:
    # Training scores validation and test under the run's autocast; float32 rescoring moved argmaxes.
    out = tmp_path / "bf16"
    train([*TINY_RUN, "--precision", "bf16", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    results = json.loads((out / "results.json").read_text())
    scored = evaluate(out, cache_dir=str(tmp_path / "cache"))
    assert [f["confusion"] for f in scored["folds"]] == [f["confusion"] for f in results["folds"]]
    # The logits come out of the classifier's bf16 matmul, as they did in training (float32 ones are not bf16
    # numbers: the confusion above agrees by luck on so few utterances).
    *_, logits = _member_logits(out / "fold-1" / "best.pt", None, None, everything=False, device="cpu",
                                batch_size=64, cache_dir=str(tmp_path / "cache"))
    assert torch.equal(logits, logits.bfloat16().float())


def test_an_int8_checkpoint_is_scored_as_recognizer_serves_it(run: tuple[Path, Path], tmp_path: Path) -> None:
    """evaluate scored the float weights an int8 checkpoint keeps, as if it were the float network."""
    from minser.data import cached_features
    from minser.evaluate import training_corpus
    from minser.export import main as export
    from minser.features import FrontEnd
    from minser.recognizer import Recognizer

    out, cache = run
    best, int8 = out / "fold-1" / "best.pt", tmp_path / "best.int8.pt"
    assert export([str(best), "--quantize", "int8", "--out", str(int8)]) == 0
    saved, files, _, logits = _member_logits(int8, None, None, True, "cpu", 64, str(cache))
    *_, float_logits = _member_logits(best, None, None, True, "cpu", 64, str(cache))
    corpus = training_corpus(saved, int8)
    assert files == [u.path for u in corpus.utterances]  # --all: every utterance, in corpus order
    features, lengths = cached_features(corpus, FrontEnd.from_dict(saved["frontend"]), str(cache), progress=False)
    np.testing.assert_allclose(logits.numpy(), Recognizer.load(int8).logits(features, lengths), atol=1e-6)
    assert (logits - float_logits).abs().max() > 1e-4  # the quantized network, not the float one
    with pytest.raises(ConfigError, match=r"best.int8.pt: an int8 checkpoint .* runs on the CPU only .*; drop "
                                          r"--device cuda$"):
        _member_logits(int8, None, None, True, "cuda", 64, str(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()  # refused before any features were computed


def test_a_triton_run_is_rescored_where_the_kernels_cannot_run(emodb_root: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint recording impl='triton' (trained with --impl triton on a GPU) failed on the CPU ("the
    Triton kernels need a CUDA device"): the kernel path does not change the weights."""
    from minser import checkpoint
    from minser.data.corpora import FOUR_CLASS_LABELS
    from minser.features import FrontEnd
    from minser.models import build

    model = build("cnn_transformer", 4, d_model=32, heads=2, channels=[2, 2, 2], impl="triton")
    paths = {}
    for impl in ("triton", "torch"):
        model.set_impl(impl)
        paths[impl] = checkpoint.save(tmp_path / f"{impl}.pt", spec=model.spec, labels=FOUR_CLASS_LABELS,
                                      frontend=FrontEnd().to_dict(), state_dict=model.state_dict(),
                                      data={"spec": "emodb", "classes": 4, "subset": None}, train={"seed": 0},
                                      fold={"index": 0, "name": "random-0", "test": [0, 1, 2]})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the CPU as it is, without Triton's interpreter
    logits, expected = (_member_logits(paths[impl], None, None, False, "cpu", 64, str(tmp_path / "cache"))[3]
                        for impl in ("triton", "torch"))
    assert logits.shape == (3, 4) and torch.equal(logits, expected)


def test_an_unknown_quantization_is_refused_naming_the_file(tmp_path: Path) -> None:
    from minser import checkpoint
    from minser.recognizer import Recognizer

    path = untrained_checkpoint(tmp_path / "int4.pt")
    checkpoint.save(path, **{**checkpoint.load(path), "quantize": "int4"})
    message = rf"^{re.escape(str(path))}: quantize='int4' is unknown; minser writes only 'int8'$"
    with pytest.raises(CheckpointError, match=message):
        _member_logits(path, None, None, False, "cpu", 64, str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match=message):
        Recognizer.load(path)


def test_a_checkpoint_whose_spec_does_not_fit_its_weights_is_named(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """Options that are no dict, or that build another network than the weights', were a raw ConfigError (naming no
    file) or a RuntimeError traceback from load_state_dict; Recognizer.load named the file."""
    from minser import checkpoint

    path = untrained_checkpoint(tmp_path / "edited.pt")
    saved = checkpoint.load(path)
    for options, message in (([["d_model", 8]], r": a model spec's options are a dict of option names to values .*; "
                                                 r"the file was edited or written by another version$"),
                             ({"d_model": 32, "channels": [2, 2, 2]}, r": weights do not fit the network 'cnn' \(Error"
                                                                      r"\(s\) in loading state_dict .*size mismatch .*"
                                                                      r"\); the file was edited or written by another "
                                                                      r"version$")):
        checkpoint.save(path, **{**saved, "spec": {**saved["spec"], "options": options}})
        with pytest.raises(CheckpointError, match=rf"(?s)^{re.escape(str(path))}{message}"):  # torch's lines too
            evaluate_checkpoint(path, cache_dir=str(tmp_path / "cache"))
        assert main([str(path), "--cache-dir", str(tmp_path / "cache")]) == 2
        assert capsys.readouterr().err.startswith(f"error: {path}: ")
    assert not (tmp_path / "cache").exists()  # refused before any features were computed


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C printed a KeyboardInterrupt traceback through torch: main caught minser's errors alone."""
    import minser.evaluate

    def interrupted(path: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(minser.evaluate, "checkpoints_of", interrupted)
    try:
        status = main(["runs/any"])
    except KeyboardInterrupt:  # uncaught, it would end the pytest session rather than fail
        pytest.fail("Ctrl-C escaped python -m minser.evaluate")
    assert status == 130
    assert capsys.readouterr() == ("", "interrupted before the scores were printed; rerun the same command\n")


def test_a_reader_that_stops_early_ends_the_run_quietly(run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """`python -m minser.evaluate RUN | head -1`: the closed pipe gave a BrokenPipeError traceback (or, buffered,
    "Exception ignored" and exit status 120 at exit)."""
    out, cache = run
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    with os.fdopen(write, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main([str(out), "--cache-dir", str(cache)]) == 141
        print("after", file=pipe, flush=True)  # stdout now leads nowhere, without another error
    assert capsys.readouterr().err == ""
