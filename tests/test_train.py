"""The training command on real EmoDB: outputs, determinism, resume, batching and bad input."""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import minser.data
from minser import checkpoint, files
from minser.data import Corpus, Utterance
from minser.errors import ConfigError, DataError
from minser import train as train_module
from minser.augment import (FREQ_MASK_SHARE, FREQ_MASKS, TIME_MASK_FRAMES, TIME_MASK_SHARE, TIME_MASKS,
                            masked_with_mean, mixup_pairs, random_crops, spec_augment_masks)
from minser.train import (BUCKET_BATCHES, Learner, Tensors, TrainConfig, balanced_class_weights, batch_indices,
                          checked_device, cli, learning_rate, main, parse_args, train_step)

# Tiny widths keep every epoch well under a second; 5 utterances per class, one fold.
TINY_CNN = ["--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]"]
TINY_ILT = TINY_CNN + ["--model-opt", "ff_dim=8", "--model-opt", "layers=1", "--model-opt", "heads=2"]


def quick(out: Path, cache: Path, *extra: str) -> list[str]:
    """Arguments of a short run: 5 utterances per class, 1 fold, batches of 8."""
    return ["--data", "emodb", "--subset", "5", "--folds", "1", "--batch-size", "8", "--threads", "1",
            "--out", str(out), "--cache-dir", str(cache), *extra]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")


@pytest.fixture(scope="module")
def ilt_run(emodb_root: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short ILT run with attention fusion (shared by the output checks and tests/test_evaluate.py)."""
    out = tmp_path_factory.mktemp("run") / "ilt"
    main(["--model", "ilt", "--fusion", "attention", "--epochs", "2", "--pad-to", "batch",
          *TINY_ILT, *quick(out, cache)])
    return out


def test_run_writes_config_folds_checkpoints_and_results(ilt_run: Path) -> None:
    results = json.loads((ilt_run / "results.json").read_text())
    assert results["model"] == "ilt" and results["options"]["fusion"] == "attention"
    assert results["data"] == "emodb" and results["protocol"] == "random"
    assert results["labels"] == ["anger", "happiness", "sadness", "neutral"]
    (fold,) = results["folds"]
    confusion = np.array(fold["confusion"])
    assert confusion.sum() == fold["n_test"] == 4  # 20% of 5 utterances per class
    assert fold["wa"] == pytest.approx(100 * np.trace(confusion) / confusion.sum())
    assert results["wa"] == fold["wa"] and results["wa_std"] == 0.0 and results["ua"] == fold["ua"]
    assert sum(fold["fusion_weights"].values()) == pytest.approx(1.0)  # softmax weights a_L + a_T
    config = json.loads((ilt_run / "config.json").read_text())
    assert config["epochs"] == 2 and config["noise_snr"] == 30.0 and config["lr"] == 1e-4
    csv = (ilt_run / "confusion.csv").read_text().splitlines()
    assert csv[0] == "true\\predicted,anger,happiness,sadness,neutral" and len(csv) == 5
    assert (ilt_run / "confusion.png").stat().st_size > 0
    metrics = json.loads((ilt_run / "fold-1" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["n_train"] == 2 * 12 and metrics["n_val"] == 2 * 4  # clean + noisy copies


def test_best_checkpoint_is_self_describing(ilt_run: Path) -> None:
    saved = checkpoint.load(ilt_run / "fold-1" / "best.pt")
    assert saved["spec"]["name"] == "ilt" and saved["spec"]["options"]["d_model"] == 8
    assert saved["frontend"]["n_mels"] == 40 and saved["labels"][0] == "anger"
    assert saved["data"] == {"spec": "emodb", "classes": 4, "subset": 5}
    assert len(saved["fold"]["test"]) == 4
    model = checkpoint.load_model(saved)
    assert hasattr(model, "fusion_weights")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path)["state_dict"]


def _interrupt_after(epochs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next run stop (KeyboardInterrupt) once ``epochs`` epochs are trained and saved."""
    tick = train_module.Clock.tick

    def tick_then_stop(self: train_module.Clock, seconds: float) -> None:
        tick(self, seconds)
        if self.done == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module.Clock, "tick", tick_then_stop)


@pytest.mark.parametrize("options", [[], ["--spec-augment", "--label-smoothing", "0.1", "--lr-schedule", "cosine",
                                          "--warmup-epochs", "1.5", "--class-weights", "balanced", "--speaker-norm"], ["--ema", "0.9", "--weight-decay", "0.05", "--crop", "1.5", "--mixup", "0.4", "--pad-to", "batch"]],
                         ids=["paper", "spec-augment-smoothing-cosine-weights-speaker-norm", "ema-weight-decay-crop-mixup"])
def test_resume_equals_an_uninterrupted_run(emodb_root: Path, cache: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                            options: list[str]) -> None:
    """3 epochs in one go == a run interrupted (Ctrl-C) after 2 epochs, then --resume: same metrics and weights,
    bit for bit. The interrupted command says how to continue and exits 130, without a traceback."""
    common = ["--model", "cnn", *TINY_CNN, *options, "--epochs", "3"]
    straight = main([*common, *quick(tmp_path / "straight", cache)])
    capsys.readouterr()
    with monkeypatch.context() as patch:
        _interrupt_after(2, patch)
        assert cli([*common, *quick(tmp_path / "resumed", cache)]) == 130
    out = tmp_path / "resumed"
    assert capsys.readouterr().err == (f"interrupted: {out} holds the run up to its last completed epoch; to continue "
                                       f"from there, rerun with the same options and --resume --out {out}\n")
    assert checkpoint.load(tmp_path / "resumed/fold-1/last.pt")["epoch"] == 2
    # The ETA counts the epochs left in the interrupted fold (it counted folds that had ended only).
    assert train_module._epochs_to_run(3, train_module.trained_epochs(out), 1) == 1
    resumed = main([*common, "--resume", *quick(tmp_path / "resumed", cache)])
    for key in ("wa", "ua", "folds"):
        assert resumed[key] == straight[key]
    for name in ("last.pt", "best.pt"):
        a, b = _weights(tmp_path / "straight/fold-1" / name), _weights(tmp_path / "resumed/fold-1" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = lambda run: [{k: v for k, v in h.items() if "seconds" not in k} for h in
                           json.loads((tmp_path / run / "fold-1/metrics.json").read_text())["history"]]
    assert history("straight") == history("resumed")


def _differences(a: object, b: object, where: str = "") -> list[str]:
    """Where two loaded checkpoints differ, leaving out wall and CPU times and the run folder's name."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) if "seconds" not in str(k) and k != "out"
                for d in _differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.dtype == b.dtype and torch.equal(a, b) else [where]
    return [] if a == b else [where]


def test_two_runs_of_one_command_write_the_same_checkpoints(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    """Every entry, not only the weights: last.pt held numpy's and Python's global random states, never seeded
    (minser draws from neither), so two identical runs' checkpoints differed."""
    import random

    for run in ("a", "b"):
        np.random.seed(ord(run))  # what the embedding program did with the global generators before
        random.seed(ord(run))
        main(["--model", "cnn", *TINY_CNN, "--epochs", "2", *quick(tmp_path / run, cache)])
    for name in ("last.pt", "best.pt"):
        a, b = (checkpoint.load(tmp_path / run / "fold-1" / name) for run in ("a", "b"))
        assert _differences(a, b) == []


def test_resume_removes_what_a_killed_run_left_of_its_atomic_writes(emodb_root: Path, cache: Path,
                                                                    tmp_path: Path) -> None:
    """SIGKILL mid-write leaves `.last.pt.<random>.tmp` (as large as last.pt); they piled up with every kill."""
    args = ["--model", "cnn", *TINY_CNN, *quick(tmp_path / "run", cache)]
    main([*args, "--epochs", "1"])
    run = tmp_path / "run"
    left = [run / ".results.json.k3x9_a2b.tmp", run / "fold-1" / ".last.pt.q0wz81mn.tmp",
            run / "fold-1" / ".metrics.json.abcdefgh.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
    mine = run / "fold-1" / ".notes.txt.tmp"  # not one of the run's files: not the run's to delete
    mine.write_text("kept")
    main([*args, "--epochs", "2", "--resume"])
    assert not any(path.exists() for path in left) and mine.read_text() == "kept"
    assert sorted(p.name for p in (run / "fold-1").iterdir()) == [".notes.txt.tmp", "best.pt", "last.pt",
                                                                   "metrics.json"]


def test_ctrl_c_before_the_first_epoch_says_nothing_was_trained(emodb_root: Path, cache: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "noisy_features", interrupt)
    assert cli(["--model", "cnn", *TINY_CNN, "--epochs", "1", *quick(tmp_path / "run", cache)]) == 130
    *progress, last = capsys.readouterr().err.splitlines()
    assert last == "interrupted before the first epoch was completed: nothing was trained; rerun the same command"
    assert all(line.startswith("minser: ") for line in progress)  # features computed here when run alone


def test_a_reader_of_the_epoch_lines_that_stopped_early_ends_the_run_resumably(emodb_root: Path, cache: Path,
                                                                              tmp_path: Path) -> None:
    """`python -m minser.train ... | head -1`: the closed pipe was a BrokenPipeError traceback and exit status 120.
    The reader takes the first line (the run's header) and stops: the run ends at an epoch line or at the summary."""
    proc = subprocess.Popen([sys.executable, "-m", "minser.train", "--model", "cnn", *TINY_CNN, "--epochs", "3",
                             *quick(tmp_path / "run", cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    header = proc.stdout.readline()
    assert header.startswith("minser: cnn on emodb4") and "random protocol, 1 fold x 3 epochs," in header  # "1 folds"
    proc.stdout.close()
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 141 and "Traceback" not in stderr and "Exception ignored" not in stderr
    assert checkpoint.load(tmp_path / "run" / "fold-1" / "last.pt")["epoch"] >= 1  # saved before its line: resumable


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_under_torchrun_only_rank_0_prints_the_interrupt_line(rank: str, printed: bool, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """torchrun passes Ctrl-C to every rank: one line says it for all of them, and every rank exits 130."""
    def interrupted(argv: object) -> None:
        raise train_module.RunInterrupted(tmp_path / "run")

    monkeypatch.setattr(train_module, "main", interrupted)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    assert cli([]) == 130
    line = "interrupted before the first epoch was completed: nothing was trained; rerun the same command\n"
    assert capsys.readouterr().err == (line if printed else "")


@pytest.mark.parametrize("rank, prefix", [("0", ""), ("1", "rank 1: ")])
def test_under_torchrun_an_error_is_one_line_naming_its_rank(rank: str, prefix: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """Ranks wrote the message and its newline apart, so two ranks' lines ran together."""
    writes: list[str] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(sys.stderr, "write", writes.append)
    assert cli(["--model", "nosuch", "--out", str(tmp_path / "run")]) == 2
    assert len(writes) == 1 and writes[0].startswith(f"{prefix}error: ") and writes[0].endswith("\n")
    assert writes[0].count("\n") == 1 and "nosuch" in writes[0]


def test_protocol_all_trains_on_everything_and_reports_no_test_metrics(
        emodb_root: Path, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "all"
    args = ["--model", "cnn", *TINY_CNN, "--epochs", "2", "--protocol", "all", "--pad-to", "batch", *quick(out, cache)]
    saved: list[str] = []
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda path, **kw: (saved.append(Path(path).name), save(path, **kw))[1])
    results = main(args)
    assert saved == ["last.pt", "last.pt", "best.pt"]  # best.pt once, when the fold ends
    assert results["protocol"] == "all" and results["wa"] is None and results["ua"] is None
    assert "no WA/UA" in results["note"] and results["confusion"] is None
    assert json.loads((out / "results.json").read_text())["wa"] is None
    assert "no test metrics" in capsys.readouterr().out
    metrics = json.loads((out / "fold-1" / "metrics.json").read_text())
    assert metrics["n_train"] == 2 * 4 * 5 and metrics["n_val"] == 0 and metrics["n_test"] == 0  # clean + noisy
    assert [h["val_wa"] for h in metrics["history"]] == [None, None]
    assert not (out / "confusion.csv").exists()
    last, kept = checkpoint.load(out / "fold-1" / "last.pt"), checkpoint.load(out / "fold-1" / "best.pt")
    assert last["epoch"] == kept["epoch"] == 2 and last["fold"]["test"] == []
    assert all(torch.equal(kept["state_dict"][k], v) for k, v in last["state_dict"].items())  # best.pt = last epoch
    from minser.evaluate import evaluate
    with pytest.raises(DataError, match="no held-out test split"):
        evaluate(out, cache_dir=str(cache))
    assert evaluate(out, everything=True, cache_dir=str(cache))["folds"][0]["n"] == 4 * 5
    # The shipped model is this last epoch: the same command again gives the same weights.
    again = main([str(tmp_path / "again") if a == str(out) else a for a in args])
    assert again["wa"] is None
    a, b = last["state_dict"], _weights(tmp_path / "again/fold-1/last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_protocol_all_resumed_with_every_epoch_trained_keeps_the_last_as_best(
        emodb_root: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """best.pt was written by the epoch that reached --epochs only: stopped after epoch 2 of --epochs 3 and resumed
    with --epochs 2, a run ended (exit 0) without best.pt; one whose best.pt was of an earlier --epochs kept it."""
    out = tmp_path / "all"
    args = ["--model", "cnn", *TINY_CNN, "--protocol", "all", *quick(out, cache)]
    best, last = out / "fold-1" / "best.pt", out / "fold-1" / "last.pt"

    def stopped_after(epochs: int, extra: list[str]) -> None:
        with monkeypatch.context() as patch:
            _interrupt_after(epochs, patch)
            with pytest.raises(KeyboardInterrupt):
                main([*args, *extra])

    def best_is_the_last_epoch(epoch: int) -> None:
        kept, ended = checkpoint.load(best), checkpoint.load(last)
        assert kept["epoch"] == ended["epoch"] == epoch and kept["val_wa"] is None
        assert all(torch.equal(kept["state_dict"][k], v) for k, v in ended["state_dict"].items())

    stopped_after(2, ["--epochs", "3"])
    assert not best.exists()
    main([*args, "--epochs", "2", "--resume"])
    best_is_the_last_epoch(2)
    stopped_after(1, ["--epochs", "4", "--resume"])  # epoch 3 trained; best.pt still of epoch 2
    assert checkpoint.load(best)["epoch"] == 2
    main([*args, "--epochs", "3", "--resume"])
    best_is_the_last_epoch(3)


def test_spec_augment_masks_stay_inside_the_valid_frames() -> None:
    lengths = torch.tensor([30, 200, 750, 5])
    masks = spec_augment_masks(lengths, 40, 750, torch.Generator().manual_seed(0))
    assert masks.shape == (4, 40, 750)
    assert torch.equal(masks, spec_augment_masks(lengths, 40, 750, torch.Generator().manual_seed(0)))
    assert not torch.equal(masks, spec_augment_masks(lengths, 40, 750, torch.Generator().manual_seed(1)))
    for mask, length in zip(masks, lengths.tolist()):
        # No mask falls in the padding: under --pad-to full the network sees it, and a frequency mask over
        # every frame filled the silence of its bands with the utterance's mean.
        assert not mask[:, length:].any()
        mask = mask[:, :length]
        bands = mask.all(1)                      # frequency masks cover every valid frame of their bands
        steps = mask.all(0)                      # time masks cover every band of their frames
        assert int(bands.sum()) <= FREQ_MASKS * round(FREQ_MASK_SHARE * 40)  # 8 bands each
        assert int(steps.sum()) <= TIME_MASKS * min(TIME_MASK_FRAMES, int(length * TIME_MASK_SHARE))
        assert torch.equal(mask, bands[:, None] | steps[None, :])
    assert masks.any()
    # With few Mel bands the masks shrink with them: 8 bands each blanked 542 of 2000 utterances whole.
    few = spec_augment_masks(torch.full((2000,), 100), 8, 100, torch.Generator().manual_seed(0))
    assert not few.all(2).all(1).any() and few.all(2).sum(1).max() == 2 * int(FREQ_MASK_SHARE * 8) == 2  # 1 band each
    # The widest masks are drawn too (upper bounds alone let masks one band or frame narrower pass):
    # over 2000 utterances both masks of one reach full width, apart, in bands and in frames.
    many = spec_augment_masks(torch.full((2000,), 100), 40, 100, torch.Generator().manual_seed(0))
    assert int(many.all(2).sum(1).max()) == FREQ_MASKS * round(FREQ_MASK_SHARE * 40)
    assert int(many.all(1).sum(1).max()) == TIME_MASKS * round(TIME_MASK_SHARE * 100)


def test_masked_inputs_take_the_utterance_mean() -> None:
    x = torch.randn(2, 4, 6)
    lengths = torch.tensor([3, 6])
    mask = torch.zeros(2, 4, 6, dtype=torch.bool)
    mask[:, 1] = True
    out = masked_with_mean(x, lengths, mask)
    assert torch.equal(out[:, [0, 2, 3]], x[:, [0, 2, 3]])
    assert torch.allclose(out[0, 1], x[0, :, :3].mean().expand(6))
    assert torch.allclose(out[1, 1], x[1].mean().expand(6))


def test_learning_rate_schedules() -> None:
    cosine = TrainConfig(lr=1e-3, epochs=10, lr_schedule="cosine", warmup_epochs=2)
    assert learning_rate(cosine, 1.0) == pytest.approx(5e-4)       # half-way through the warm-up
    assert learning_rate(cosine, 2.0) == pytest.approx(1e-3)       # warm-up done: the full rate
    assert learning_rate(cosine, 6.0) == pytest.approx(5e-4)       # half-way down the cosine
    assert learning_rate(cosine, 10.0) == pytest.approx(0.0, abs=1e-12)
    constant = TrainConfig(lr=1e-3, epochs=10, warmup_epochs=0)
    assert {learning_rate(constant, e) for e in (0.0, 5.5, 10.0)} == {1e-3}


@pytest.mark.parametrize("args, message", [(["--label-smoothing", "1"], "--label-smoothing 1.0"),
                                           (["--warmup-epochs", "200"], "--warmup-epochs 200.0"),
                                           (["--ema", "1"], "--ema 1.0"),
                                           (["--weight-decay", "-1"], "--weight-decay -1.0"),
                                           (["--mixup", "-1"], "--mixup -1.0"),
                                           (["--noise-snr", "nan"], "--noise-snr nan"),
                                           # inf passed the range checks; the run then trained on NaN
                                           (["--lr", "inf"], "--lr inf: give a finite number"),
                                           (["--weight-decay", "inf"], "--weight-decay inf: give a finite"),
                                           # one slice left empty: a traceback under --pad-to batch before
                                           (["--batch-size", "8", "--micro-batches", "9"],
                                            "--micro-batches 9 is more than --batch-size 8; give at least one"),
                                           # a ValueError traceback from NumPy at the splits before
                                           (["--seed", "-1"], "--seed -1: give an integer >= 0"),
                                           (["--split-seed", "-1"], "--split-seed -1: give an integer >= 0")])
def test_bad_training_options_name_the_option(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_args(["--model", "cnn", *args])


def test_no_noise_with_a_noise_snr_is_refused(capsys: pytest.CaptureFixture) -> None:
    """Before, --no-noise won and --noise-snr was dropped without a word."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--no-noise", "--noise-snr", "10"])
    assert exit_info.value.code == 2
    assert "argument --noise-snr: not allowed with argument --no-noise" in capsys.readouterr().err


def test_a_subset_too_small_for_the_random_protocol_names_subset() -> None:
    """Every class then has too few utterances: the fix is --subset, not the labels."""
    corpus = _corpus(["a", "b", "c"] * 4)
    with pytest.raises(ConfigError, match=r"^--subset 3: --protocol random needs at least 4 utterances per class "
                                          r"\(some for training, validation and test each\); give --subset 4 or more$"):
        train_module.make_splits(corpus, TrainConfig(subset=3))


@pytest.mark.parametrize("args, message", [
    (["--data", "my.csv", "--classes", "4"], r"--classes 4 with --data my.csv: a CSV manifest or a folder takes its "
                                             r"classes from its labels; drop --classes"),
    (["--data", "corpus_folder", "--classes", "7"], "--classes 7 with --data corpus_folder: "),
    (["--model", "ilt", "--alpha", "0.3"], r"--alpha 0.3: only --fusion plus .* uses alpha, and the fusion is "
                                           r"'attention' \(the default\); add --fusion plus or drop --alpha"),
    (["--model", "ilt", "--fusion", "concat", "--alpha", "0.3"], "the fusion is 'concat'; add --fusion plus"),
    (["--n-mels", "202"], r"^--n-mels 202: the front end's 400-point FFT gives a frequency bin to every Mel band only "
                          r"up to 149 bands .*; give --n-mels 149 or fewer \(the paper: 40\)$"),
    (["--n-mels", "150"], r"^--n-mels 150: .* give --n-mels 149 or fewer"),
    (["--model-opt", "n_mels=500"], "--n-mels 500: "),
    # the network's own checks, before the data is looked for (the options were checked after it)
    (["--data", "emodb", "--model-opt", "kernel_size=4"], "option kernel_size=4 is invalid: give an odd size"),
    (["--data", "emodb", "--model-opt", "heads=2"], "model 'cnn' has no option heads; valid options: n_mels, "),
    # the flag silently won, and the alpha check then named --alpha for a fusion=plus the user had asked for
    (["--fusion", "attention", "--model-opt", "fusion=plus"], r"^--fusion and --model-opt fusion=\.\.\. both set "
                                                               r"fusion; give it once$"),
    (["--model-opt", "n_mels=64", "--n-mels", "40"], r"^--n-mels and --model-opt n_mels=\.\.\. both set n_mels"),
    # build(name, n_classes, **options) takes these itself: a TypeError traceback ("multiple values") before
    (["--model-opt", "name=cat"], r"^--model-opt name=cat: the network is not a model option; choose it with --model "
                                  r"\(e\.g\. --model cat\)$"),
    (["--model-opt", "n_classes=3"], r"^--model-opt n_classes=3: the number of classes is not a model option, it is "
                                     r"the corpus's number of labels \(EmoDB: --classes 4 or 7; a manifest or folder: "
                                     r"its labels\); drop it$"),
    # was refused only after the features, by the first batch (every utterance shorter than the network reads)
    (["--data", "emodb", "--model-opt", "time_pools=[16,16,16]"],
     r"^--model cnn with these options shortens time by more than the front end's 750 frames \(7.5 s\): it needs "
     r"at least 8191 \(81.91 s\); take smaller time strides or pools"),
])
def test_options_the_run_would_ignore_or_cannot_compute_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_args(["--model", "cnn", *args])


def test_checking_the_model_options_allocates_no_weights_and_draws_no_random_numbers() -> None:
    """The option check builds the network on the meta device: an ILT of width 4096 (about 1 GB of
    float32 weights) costs no memory there, and a seeded caller's random stream is where it was."""
    script = ("import resource, sys, torch; from minser.train import parse_args; "
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; torch.manual_seed(0); "
              "parse_args(['--model', 'ilt', '--model-opt', 'd_model=4096']); "
              "print(torch.equal(torch.rand(3), torch.manual_seed(0) and torch.rand(3)), "
              "(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    same_stream, grown_mib = run.stdout.split()
    assert same_stream == "True" and int(grown_mib) < 200, run.stdout


def test_options_the_run_uses_are_accepted() -> None:
    assert parse_args(["--model", "ilt", "--fusion", "plus", "--alpha", "0.3"]).options == {"fusion": "plus", "alpha": 0.3}
    assert parse_args(["--data", "EmoDB", "--classes", "7"]).classes == 7
    assert parse_args(["--data", "my.csv"]).classes == 4 and parse_args(["--n-mels", "149"]).options["n_mels"] == 149


def _corpus(speakers: list[str], sessions: list[str | None] | None = None) -> Corpus:
    """A corpus of two alternating classes, one utterance per entry of ``speakers`` (its audio is never read)."""
    sessions = sessions or [None] * len(speakers)
    return Corpus("toy", ("anger", "neutral"), [Utterance(Path(f"{i}.wav"), ("anger", "neutral")[i % 2], speaker, session)
                                                for i, (speaker, session) in enumerate(zip(speakers, sessions))])


def test_a_fold_that_trains_on_no_utterance_of_a_test_label_is_warned_of() -> None:
    """Only speaker a says 'happiness': its leave-one-speaker-out fold trained without the label and was scored
    on it, silently."""
    labels = ["anger", "neutral", "happiness"]
    rows = [(f"{s}{i}.wav", labels[i % 2], s) for s in "abc" for i in range(8)] + [(f"a-h{i}.wav", "happiness", "a")
                                                                              for i in range(4)]
    corpus = Corpus("toy", tuple(labels), [Utterance(Path(p), label, speaker, None) for p, label, speaker in rows])
    splits = train_module.make_splits(corpus, TrainConfig(protocol="speaker"))
    with pytest.warns(UserWarning, match=r"^--protocol speaker: fold 'a' trains on no utterance of happiness, which "
                                         r"its test part holds \(only that speaker has them\)") as caught:
        train_module._warn_untrained_classes(corpus, "speaker", splits)
    assert len(caught) == 1  # folds b and c train on a's happiness


@pytest.mark.parametrize("protocol, folds, message", [
    ("random", 6, r"--folds 6: --protocol random has 5 fold\(s\) on toy \(its seeded splits\); give --folds 5 or fewer"),
    ("speaker", 4, r"--folds 4: --protocol speaker has 3 fold\(s\) on toy \(one per speaker\); give --folds 3 or"),
    ("all", 2, r"--folds 2: --protocol all has 1 fold\(s\) on toy"),
])
def test_more_folds_than_the_protocol_has_are_refused(protocol: str, folds: int, message: str) -> None:
    corpus = _corpus(["a", "b", "c"] * 8)
    with pytest.raises(ConfigError, match=message):
        train_module.make_splits(corpus, TrainConfig(protocol=protocol, folds=folds))
    fewer = train_module.make_splits(corpus, TrainConfig(protocol=protocol, folds=folds - 1))
    assert len(fewer) == folds - 1


@pytest.mark.parametrize("speakers, sessions, protocol, message", [
    (["unknown"] * 8, None, "speaker", r"toy: --protocol speaker needs the speaker of every utterance, and this corpus "
                                       r"names none: a CSV manifest needs a speaker column \(path,label,speaker\)"),
    (["a", "b", "unknown", "a", "b", "b"], None, "speaker", r"but 1 of 6 have none \(first: 2.wav\); fill in the "
                                                            r"manifest's speaker column"),
    (["a", "b"] * 3, ["s1", None] * 3, "session", r"no session for 3 utterances .*give a session column"),
], ids=["no-speaker-column", "empty-speaker-cells", "no-session-column"])
def test_leave_one_group_out_needs_every_group(speakers: list[str], sessions: list[str | None] | None, protocol: str,
                                               message: str) -> None:
    with pytest.raises(DataError, match=message):
        train_module.make_splits(_corpus(speakers, sessions), TrainConfig(protocol=protocol))


def test_leave_one_session_out_refuses_a_speaker_in_two_sessions() -> None:
    """A manifest's session column was taken as it was: session S1 was tested on the speaker it trained on in S2."""
    corpus = _corpus(["a", "b", "a", "b"] * 3, ["s1", "s2", "s2", "s2"] * 3)
    with pytest.raises(DataError, match=r"^toy: speaker 'a' is in sessions 's1' \(0\.wav\) and 's2' \(2\.wav\), so "
                                        "leave-one-session-out would test on a voice it trained on; use --protocol"):
        train_module.make_splits(corpus, TrainConfig(protocol="session"))
    train_module.make_splits(corpus, TrainConfig(protocol="speaker"))  # speakers are whole groups there
    unknown = _corpus(["unknown"] * 12, ["s1", "s2", "s3"] * 4)  # sessions without speakers: nothing to compare
    train_module.make_splits(unknown, TrainConfig(protocol="session"))


@pytest.mark.parametrize("protocol", ["speaker", "session"])
def test_a_fold_without_validation_utterances_is_refused(protocol: str) -> None:
    """Before, such a fold trained without selecting an epoch and scored no test part, and the run's summary
    blamed --protocol all. Each class of 2 outside the left-out group gives validation none; of 3, one."""
    groups = ["a", "b", "c", "a", "b", "c"]  # classes alternate: each group holds an anger and a neutral utterance
    corpus = _corpus(groups, groups)
    with pytest.raises(DataError, match=rf"^toy: --protocol {protocol} leaves fold 'a' no validation utterance: "
                                        rf"validation takes 25% of each class outside the left-out {protocol}, which "
                                        r"needs 3 or more utterances of the class, and no class has that many there "
                                        r"\(4 utterances in all\)\. Add utterances \(a larger --subset\) or use "
                                        "--protocol random$"):
        train_module.make_splits(corpus, TrainConfig(protocol=protocol))
    splits = train_module.make_splits(_corpus(groups * 2, groups * 2), TrainConfig(protocol=protocol))
    assert all(len(split.val) == 2 for split in splits)


def _manifest(folder: Path, **columns: str) -> Path:
    """``folder/mine.csv`` listing 8 short noise clips, written as label folders (``folder/anger/0.wav``,
    ``folder/neutral/1.wav``, ...: ``folder`` is a folder corpus too), every row with the same value for
    each extra column of ``columns`` (e.g. ``speaker="x"``)."""
    import soundfile

    rng = np.random.default_rng(0)
    rows = [",".join(["path", "label", *columns])]
    for i in range(8):
        label = ("anger", "neutral")[i % 2]
        (folder / label).mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / label / f"{i}.wav", 0.1 * rng.standard_normal(1600), 16000)
        rows.append(",".join([f"{label}/{i}.wav", label, *columns.values()]))
    path = folder / "mine.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _refused_run(tmp_path: Path) -> list[str]:
    """Output options of a run that should be refused: were it not, it stays short and inside ``tmp_path``."""
    return ["--epochs", "1", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]


@pytest.mark.parametrize("protocol", ["speaker", "session"])
def test_leave_one_group_out_of_a_single_group_says_so_in_the_users_terms(protocol: str, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    manifest = _manifest(tmp_path, **{protocol: "x"})
    assert cli(["--model", "cnn", "--data", str(manifest), "--protocol", protocol, *_refused_run(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: mine: the corpus has only one {protocol}, 'x'; --protocol {protocol} (leave-one-{protocol}-out) "
        f"needs at least two, one to test on and others to train on; use --protocol random\n")


@pytest.mark.parametrize("kind", ["manifest", "folder"])
def test_speaker_norm_needs_a_corpus_that_names_its_speakers(kind: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """A manifest without a speaker column or a folder corpus would make everybody one speaker."""
    manifest = _manifest(tmp_path / "calls")
    data, name = (manifest, "mine") if kind == "manifest" else (tmp_path / "calls", "calls")
    assert cli(["--model", "cnn", "--data", str(data), "--speaker-norm", *_refused_run(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {name}: --speaker-norm needs the speaker of every utterance, and this corpus names none: a CSV "
        "manifest needs a speaker column (path,label,speaker), and a folder of label folders has no speakers; add "
        "the column or drop --speaker-norm\n")
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


def test_noise_for_a_silent_file_names_it(tmp_path: Path) -> None:
    """A feature cache of an older version may hold a silent file (it did not check for silence); the noise
    copy, whose level is relative to the signal's, then names the file instead of an anonymous array."""
    import soundfile

    from minser.errors import AudioError
    from minser.features import FrontEnd

    sounding, silent = tmp_path / "sounding.wav", tmp_path / "silent.wav"
    soundfile.write(sounding, 0.1 * np.random.default_rng(0).standard_normal(1600), 16000)
    soundfile.write(silent, np.zeros(1600), 16000)
    corpus = Corpus("toy", ("anger", "neutral"), [Utterance(sounding, "anger", "a"), Utterance(silent, "neutral", "a")])
    with pytest.raises(AudioError) as refused:
        train_module.noisy_features(corpus, FrontEnd(), 30.0, seed=0)
    assert str(refused.value) == (f"{silent}: holds no sound (every sample is zero), likely a failed recording or "
                                  "export; record or export it again, or remove it from corpus 'toy'")


def test_a_silent_file_served_from_an_older_cache_is_named_by_the_cli(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    import soundfile

    from minser.data import load_corpus
    from minser.data.cache import cache_path
    from minser.features import FrontEnd

    manifest = _manifest(tmp_path / "calls", speaker="x")
    silent = tmp_path / "calls" / "neutral" / "3.wav"
    soundfile.write(silent, np.zeros(1600), 16000)
    corpus, frontend = load_corpus(manifest), FrontEnd()
    (tmp_path / "cache").mkdir()
    # What a version that did not check for silence cached: features for every file, the silent one too.
    np.savez(cache_path(corpus, frontend, tmp_path / "cache"),
             features=np.zeros((len(corpus), frontend.n_mels, frontend.n_frames), np.float32),
             lengths=np.full(len(corpus), 5, np.int64))
    assert cli(["--model", "cnn", "--data", str(manifest), *_refused_run(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {silent}: holds no sound (every sample is zero), likely a failed "
                                       "recording or export; record or export it again, or remove it from corpus "
                                       "'mine'\n")


def test_cosine_run_cannot_be_extended(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    """Nor shortened: to fewer --epochs than a cosine run was given (stopped before its end), the message said it
    "cannot be extended"."""
    run = tmp_path / "run"
    common = ["--model", "cnn", *TINY_CNN, "--lr-schedule", "cosine", *quick(run, cache)]
    main([*common, "--epochs", "1"])
    refusal = (rf"^--resume: --epochs {{}} but the run in {re.escape(str(run))} used {{}}; the cosine schedule is laid "
               r"out over --epochs, so --epochs must stay {}$")
    with pytest.raises(ConfigError, match=refusal.format(2, 1, 1)):
        main([*common, "--epochs", "2", "--resume"])
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "epochs": 3}))  # as a run of 3 epochs stopped after 1
    with pytest.raises(ConfigError, match=refusal.format(2, 3, 3)):
        main([*common, "--epochs", "2", "--resume"])


@pytest.mark.parametrize("text, problem", [
    ('{"model": "cnn", ', r"is damaged, not the JSON a run writes \(Expecting property name .*\)"),
    ("[1, 2]", "holds a JSON list, not the object of settings a run writes"),
    (b"\xff\xfe", r"is damaged, not the JSON a run writes \('utf-8' codec can't decode .*\)")])
def test_resume_with_a_damaged_config_json_names_it(text: str | bytes, problem: str, tmp_path: Path) -> None:
    """A traceback before (JSONDecodeError, or a TypeError for JSON that is not an object)."""
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=rf"^--resume: {re.escape(str(path))} {problem}; restore it from a copy, or "
                                          "train again without --resume in another --out$"):
        main(["--model", "cnn", "--resume", "--out", str(tmp_path / "run")])


def test_a_resume_where_fp16_turns_the_loss_scaler_on_continues(emodb_root: Path, cache: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A run saved where the GradScaler is off (CPU, bf16: an empty state) and resumed where --precision auto is fp16
    (a GPU without bf16, simulated here) stopped with torch's RuntimeError "The source state dict is empty"."""
    args = ["--model", "cnn", *TINY_CNN, *quick(tmp_path / "run", cache)]
    main([*args, "--epochs", "1"])
    last = tmp_path / "run" / "fold-1" / "last.pt"
    assert checkpoint.load(last)["scaler"] == {}
    autocast_dtype = train_module.autocast_dtype
    monkeypatch.setattr(train_module, "autocast_dtype", lambda precision, device: (
        torch.float16 if precision == "auto" else autocast_dtype(precision, device)))
    main([*args, "--epochs", "2", "--resume"])
    resumed = checkpoint.load(last)
    assert resumed["epoch"] == 2 and resumed["scaler"]["scale"] > 0  # the scaler ran the second epoch


def test_a_run_whose_last_pt_files_were_deleted_is_not_trained_over(emodb_root: Path, cache: Path,
                                                                    tmp_path: Path) -> None:
    """The README calls last.pt "for --resume": deleted to save room, the folder counted as fresh, and another
    command trained into it, its folds mixed with the first run's."""
    run = tmp_path / "run"
    main(["--model", "cnn", *TINY_CNN, "--epochs", "1", *quick(run, cache)])
    for name in ("last.pt", "best.pt", "metrics.json"):  # results.json stays last
        (run / "fold-1" / name).unlink()
        with pytest.raises(ConfigError, match=rf"^--out {re.escape(str(run))} already holds a run; it has no "
                                              r"fold-\*/last\.pt left to continue from \(--resume would train it "
                                              r"again\), so choose another --out$"):
            main(["--model", "cnn", *TINY_CNN, "--lr", "0.01", "--epochs", "1", *quick(run, cache)])


def test_resume_refuses_different_settings(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    main(["--model", "cnn", *TINY_CNN, "--epochs", "1", *quick(tmp_path / "run", cache)])
    # In the command line's terms (they named the fields: "lr is 0.01", "noise_snr is None", "options").
    for given, refused in ((["--lr", "0.01"], "--lr 0.01 but the run in {} used --lr 0.0001"),
                           (["--no-noise"], "--no-noise but the run in {} used --noise-snr 30.0"),
                           (["--pad-to", "batch"], "--pad-to batch but the run in {} used --pad-to full"),
                           (["--spec-augment"], "--spec-augment but the run in {} used no --spec-augment"),
                           (["--model-opt", "channels=[2,2,4]"],
                            "--model-opt channels=[2, 2, 4] but the run in {} used --model-opt channels=[2, 2, 2]")):
        with pytest.raises(ConfigError, match=rf"^--resume: {re.escape(refused.format(tmp_path / 'run'))}; repeat the "
                                              r"original settings \(only --epochs"):
            main(["--model", "cnn", *TINY_CNN, "--epochs", "2", *given, "--resume", *quick(tmp_path / "run", cache)])
    with pytest.raises(ConfigError, match="already holds a run"):
        main(["--model", "cnn", *TINY_CNN, "--epochs", "1", *quick(tmp_path / "run", cache)])
    # Settings that act alike are alike: a model option at its default, --split-seed equal to --seed; and the
    # kernel path may change, as the device may.
    main(["--model", "cnn", *TINY_CNN, "--model-opt", "pool=mean", "--split-seed", "0", "--epochs", "2", "--resume",
          *quick(tmp_path / "run", cache)])
    main(["--model", "cnn", *TINY_CNN, "--impl", "torch", "--epochs", "3", "--resume", *quick(tmp_path / "run", cache)])


def test_resume_and_evaluate_refuse_another_corpus_under_the_same_name(emodb_root: Path, cache: Path,
                                                                       tmp_path: Path) -> None:
    """--data names a corpus, not its content: resumed on another copy (a partial EmoDB, an edited manifest) a
    run went on without a word, its folds trained on different utterances; evaluate scored a fold's test
    indices on the other copy, picking utterances it was trained on."""
    from minser.evaluate import evaluate

    wavs = sorted((emodb_root / "wav").glob("*.wav"))
    picked = [p for p in wavs if p.stem[5] == "W"][:10] + [p for p in wavs if p.stem[5] == "N"][:10]
    manifest = tmp_path / "corpus.csv"
    write = lambda rows: manifest.write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows))
    write([(p, "anger" if p.stem[5] == "W" else "neutral") for p in picked])
    args = ["--model", "cnn", *TINY_CNN, "--data", str(manifest), "--folds", "1", "--batch-size", "8", "--threads",
            "1", "--out", str(tmp_path / "run"), "--cache-dir", str(cache)]
    main([*args, "--epochs", "1"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["corpus"]
    assert saved["utterances"] == 20 and len(saved["fingerprint"]) == 16
    relabelled = [(p, "neutral" if i == 0 else "anger" if p.stem[5] == "W" else "neutral") for i, p in enumerate(picked)]
    write(relabelled)
    with pytest.raises(ConfigError, match=r"--resume: the corpus read now \(20 utterances, fingerprint \w+\) is not the "
                                          r"one the run in .* trained on \(20, \w+\): .* point --data"):
        main([*args, "--epochs", "2", "--resume"])
    with pytest.raises(DataError, match=r"best\.pt: the corpus read now \(20 utterances\) is not the one it was "
                                        r"trained on \(20\).* or pass --all"):
        evaluate([tmp_path / "run"], cache_dir=str(cache))
    assert evaluate([tmp_path / "run"], everything=True, cache_dir=str(cache))["folds"][0]["n"] == 20  # as advised
    write([(p, "anger" if p.stem[5] == "W" else "neutral") for p in picked])  # the same corpus again
    main([*args, "--epochs", "2", "--resume"])


def test_resume_refuses_another_number_of_processes(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    """Each process normalises its own slice: a run of 2 torchrun processes resumed alone would go on as
    another run (it was accepted silently)."""
    main(["--model", "cnn", *TINY_CNN, "--epochs", "1", *quick(tmp_path / "run", cache)])
    last = tmp_path / "run" / "fold-1" / "last.pt"
    saved = checkpoint.load(last)
    assert saved["world"] == 1
    checkpoint.save(last, **{**saved, "world": 2})  # as a 2-process run writes it
    with pytest.raises(ConfigError, match=r"last\.pt was trained by 2 process\(es\) and this run has 1; resume with "
                                          r"the same torchrun --nproc_per_node"):
        main(["--model", "cnn", *TINY_CNN, "--epochs", "2", "--resume", *quick(tmp_path / "run", cache)])


def test_resume_refuses_fewer_folds_or_epochs_than_the_run_trained(emodb_root: Path, cache: Path,
                                                                    tmp_path: Path) -> None:
    """Before, --resume --folds 1 rewrote results.json with one fold while fold-2/ stayed, and fewer --epochs
    reported the epochs beyond them."""
    run = tmp_path / "run"
    args = ["--model", "cnn", *TINY_CNN, *quick(run, cache)]  # --folds 1 there; a later --folds wins
    main([*args, "--epochs", "2", "--folds", "2"])
    results = (run / "results.json").read_text()
    with pytest.raises(ConfigError, match=rf"^--resume: the run in {re.escape(str(run))} has trained 2 folds but this "
                                          r"command runs 1; --folds may grow, not shrink: give --folds 2 or more, or "
                                          "leave it out to run them all$"):
        main([*args, "--epochs", "2", "--resume"])
    with pytest.raises(ConfigError, match=rf"^--resume: fold 1 of the run in {re.escape(str(run))} has trained 2 "
                                          r"epochs, more than --epochs 1; --epochs may grow, not shrink: give --epochs "
                                          "2 or more$"):
        main([*args, "--epochs", "1", "--folds", "2", "--resume"])
    assert (run / "results.json").read_text() == results


@pytest.mark.parametrize("pad_to", ["full", "batch"])
def test_batches_cover_every_utterance_once(pad_to: str) -> None:
    lengths = torch.randint(50, 750, (203,))
    batches = batch_indices(lengths, 10, torch.Generator().manual_seed(0), pad_to)
    assert sorted(torch.cat(batches).tolist()) == list(range(203))
    again = batch_indices(lengths, 10, torch.Generator().manual_seed(0), pad_to)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    if pad_to == "batch":
        # Sorting within buckets leaves much less padding than random batches.
        padded = sum(len(b) * int(lengths[b].max()) for b in batches)
        random_padded = sum(len(b) * int(lengths[b].max()) for b in torch.randperm(203).split(10))
        assert padded < 0.8 * random_padded
        assert BUCKET_BATCHES > 1


def test_a_last_batch_too_small_to_slice_is_refused_before_features(tmp_path: Path, emodb_root: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """It was checked when the fold was reached: after the features, and under --folds 5 perhaps at fold 5."""
    # 12 training utterances per fold and their noise copies: batches of 11, 11 and 2, cut into 3 slices.
    args = ["--model", "cnn", *quick(tmp_path / "run", tmp_path / "cache"), "--batch-size", "11",
            "--micro-batches", "3", "--epochs", "1"]
    assert cli(args) == 2
    assert ("error: fold random-0: the last batch holds 2 utterances, fewer than the 3 slices (1 rank x 3 "
            "micro-batches); change --batch-size") in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_run_restores_torch_settings(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    main(["--model", "cnn", *TINY_CNN, "--epochs", "1", *quick(tmp_path / "run", cache)])  # --threads 1
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()


def test_model_options_reach_the_config() -> None:
    config = parse_args(["--model", "cat", "--branches", "c2l", "--no-pe", "--model-opt", "channels=[4,8,8]",
                         "--model-opt", "pool=attention", "--no-noise"])
    assert config.options == {"channels": [4, 8, 8], "pool": "attention", "pe": False, "branches": "c2l"}
    assert config.noise_snr is None


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid models: .*cat.*ilt"):
        parse_args(["--model", "resnet"])


def test_missing_emodb_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MINSER_DATA", str(tmp_path))
    assert cli(["--model", "cnn", "--out", str(tmp_path / "run")]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: EmoDB not found") and "--download" in stderr
    assert "python -m minser.data download emodb" in stderr


def test_corrupt_audio_in_a_manifest_names_the_file(emodb_root: Path, cache: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    good = sorted((emodb_root / "wav").glob("*.wav"))[:8]  # 4 per class: enough for the random protocol
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rows = [f"{p},{'anger' if i % 2 else 'neutral'},s{i % 2}" for i, p in enumerate(good)] + [f"{broken},anger,s0"]
    manifest = tmp_path / "corpus.csv"
    manifest.write_text("path,label,speaker\n" + "\n".join(rows) + "\n")
    args = ["--model", "cnn", "--data", str(manifest), "--epochs", "1", "--out", str(tmp_path / "run"),
            "--cache-dir", str(cache)]
    assert cli(args) == 2
    stderr = capsys.readouterr().err
    assert f"error: {broken}" in stderr and "corrupt" in stderr
    # Nothing was trained, so the folder counts as fresh: the rerun meets the audio again, not "already holds a run".
    assert cli(args) == 2
    assert capsys.readouterr().err == stderr


def test_a_relative_data_path_is_recorded_absolute(emodb_root: Path, cache: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """--data corpus.csv is recorded as the manifest's absolute path, so evaluate finds it from any folder;
    a run that recorded the relative path (older versions) still resumes from the folder it ran in."""
    from minser.evaluate import evaluate

    wavs = [*sorted((emodb_root / "wav").glob("*Wa.wav"))[:5], *sorted((emodb_root / "wav").glob("*Na.wav"))[:5]]
    (tmp_path / "corpus.csv").write_text("path,label\n" + "".join(f"{p},{'anger' if p.stem[5] == 'W' else 'neutral'}\n"
                                                                    for p in wavs))
    monkeypatch.chdir(tmp_path)
    common = ["--model", "cnn", *TINY_CNN, "--data", "corpus.csv", "--folds", "1", "--batch-size", "8", "--threads", "1",
              "--out", "run", "--cache-dir", str(cache)]
    main([*common, "--epochs", "1"])
    manifest = str(tmp_path / "corpus.csv")
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["data"] == manifest and checkpoint.load(tmp_path / "run/fold-1/best.pt")["data"]["spec"] == manifest
    # A manifest takes its classes from its labels: --classes's default of 4 was recorded as its classes.
    assert config["classes"] is None and checkpoint.load(tmp_path / "run/fold-1/best.pt")["data"]["classes"] is None
    (tmp_path / "run/config.json").write_text(json.dumps({**config, "data": "corpus.csv", "classes": 4}))  # as before
    results = main([*common, "--epochs", "2", "--resume"])
    assert results["data"] == manifest and results["classes"] is None
    # The relative path names the recorded corpus: scored on the fold's test split, as results.json was.
    assert evaluate("run", data="corpus.csv", cache_dir=str(cache))["folds"][0]["n"] == results["folds"][0]["n_test"]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    scored = evaluate(tmp_path / "run", cache_dir=str(cache))
    assert scored["folds"][0]["confusion"] == results["folds"][0]["confusion"]


def test_the_python_api_takes_paths_and_records_them_as_strings(tmp_path: Path) -> None:
    """TrainConfig(data=..., out=..., cache_dir=...) of pathlib.Path values (as a notebook holds them) crashed: no
    .lower() on a Path, and config.json could not hold one."""
    manifest = _manifest(tmp_path / "corpus")
    config = TrainConfig(model="cnn", options={"d_model": 8, "channels": [2, 2, 2]}, data=manifest, folds=1, epochs=1,
                         batch_size=8, threads=1, out=tmp_path / "run", cache_dir=tmp_path / "cache")
    results = train_module.train(config)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"] == results["data"] == str(manifest) and saved["out"] == str(tmp_path / "run")
    assert saved["cache_dir"] == str(tmp_path / "cache") and any((tmp_path / "cache").iterdir())
    assert checkpoint.load(tmp_path / "run" / "fold-1" / "best.pt")["data"]["spec"] == str(manifest)


def test_a_corpus_of_one_emotion_is_a_data_error_for_training_only(emodb_root: Path, ilt_run: Path, cache: Path,
                                                                    tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """Training refuses it before any features are computed; minser.evaluate scores a model on it (it refused
    it too, for training's reason, though the README promises it scores any corpus with the model's labels)."""
    from minser.evaluate import main as evaluate_main

    manifest = tmp_path / "neutral.csv"
    files = sorted((emodb_root / "wav").glob("*N?.wav"))[:3]  # EmoDB's 6th letter N: neutral
    manifest.write_text("path,label\n" + "".join(f"{p},neutral\n" for p in files))
    with pytest.raises(DataError, match=r"neutral\.csv: the utterances carry 1 emotion label \('neutral'\); a "
                                        "classifier needs utterances of two emotions or more$"):
        main(["--model", "cnn", "--data", str(manifest), "--out", str(tmp_path / "run"),
              "--cache-dir", str(tmp_path / "features")])
    assert not (tmp_path / "features").exists()
    assert evaluate_main([str(ilt_run), "--data", str(manifest), "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.startswith(f"{ilt_run / 'fold-1' / 'best.pt'}: 3 utterances  WA")


def test_random_protocol_refuses_a_class_too_small_to_split(emodb_root: Path, tmp_path: Path) -> None:
    wavs = sorted((emodb_root / "wav").glob("*.wav"))
    manifest = tmp_path / "typo.csv"  # a mistyped label makes a class of one utterance
    manifest.write_text("path,label\n" + "".join(f"{p},{'anger' if i % 2 else 'sadness'}\n" for i, p in enumerate(wavs[:12]))
                        + f"{wavs[12]},sadnes\n")
    with pytest.raises(DataError, match=r"at least 4 utterances per class.*'sadnes' \(1\).*typos"):
        main(["--model", "cnn", "--data", str(manifest), "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("device, message", [("tpu", "not a device"), ("meta", "cpu or cuda only"),
                                             *([] if torch.cuda.is_available() else [("cuda", "not available")])])
def test_bad_device_is_a_config_error(device: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        checked_device(device)


def test_out_naming_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile is a file; give a folder"):
        main(["--model", "cnn", "--data", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "afile")])


def test_missing_manifest_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.csv"):
        main(["--model", "cnn", "--data", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()  # the run folder it made to lock is gone with nothing in it


def test_a_run_folder_in_use_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    """Two runs in one --out both passed the 'already holds a run' check until one had trained an epoch,
    then overwrote each other's checkpoints; a --resume of a running run deleted its writes in progress."""
    for extra in ([], ["--resume"]):
        with files.only_writer(tmp_path / "run", "x"):
            with pytest.raises(ConfigError, match=r"run is in use by process \d+; wait for that run to end or give "
                                                  "another --out"):
                main(["--model", "cnn", "--data", str(tmp_path / "nowhere.csv"), "--out", str(tmp_path / "run"),
                      *extra])


def _tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _svm_baseline():
    return _tool("svm_baseline")


def test_svm_band_statistics_ignore_the_padding() -> None:
    tool = _svm_baseline()
    x = np.random.default_rng(0).normal(size=(2, 3, 10)).astype(np.float32)
    lengths = np.array([4, 10])
    stats = tool.band_statistics(x, lengths)
    assert stats.shape == (2, 6 * 3)
    np.testing.assert_allclose(stats[0, :3], x[0, :, :4].mean(1), rtol=1e-6)
    np.testing.assert_allclose(stats[0, 9:12], x[0, :, :4].max(1), rtol=1e-6)
    x[0, :, 4:] = -100.0  # padding is silence: it must not move the first utterance's statistics
    np.testing.assert_array_equal(tool.band_statistics(x, lengths)[0], stats[0])


def test_svm_baseline_refuses_a_corpus_it_cannot_split_before_any_features(emodb_root: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    manifest = tmp_path / "neutral.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},neutral\n" for p in sorted((emodb_root / "wav").glob("*N?.wav"))[:6]))
    assert _svm_baseline().main(["--data", str(manifest), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "carry 1 emotion label ('neutral'); a classifier needs utterances of two emotions" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("speaker_norm", [False, True], ids=["raw", "speaker-norm"])
def test_svm_baseline_scores_the_seeded_folds_of_the_networks(emodb_root: Path, cache: Path, tmp_path: Path,
                                                              speaker_norm: bool) -> None:
    """The reference uses python -m minser.train's splits (--seed, --folds) and, with --speaker-norm, its
    per-split speaker statistics; it learns: well above the 25% of guessing on 4 classes, on every fold."""
    pytest.importorskip("sklearn")
    from minser.data import cached_features
    from minser.speakers import normalise_by_speaker, split_statistics

    tool, out, scored = _svm_baseline(), tmp_path / "svm.json", []
    fit_and_score = tool.fit_and_score
    tool.fit_and_score = lambda stats, targets, split, n: scored.append((stats, split)) or fit_and_score(
        stats, targets, split, n)
    assert tool.main(["--classes", "4", "--seed", "1", "--folds", "2", "--cache-dir", str(cache), "--out", str(out),
                      *(["--speaker-norm"] if speaker_norm else [])]) == 0
    results = json.loads(out.read_text())
    splits = {seed: train_module.make_splits(train_module.load_data(config), config)
              for seed in (0, 1) for config in [TrainConfig(classes=4, seed=seed, folds=2)]}
    assert all(np.array_equal(mine.test, theirs.test) for (_, mine), theirs in zip(scored, splits[1], strict=True))
    corpus = train_module.load_data(TrainConfig(classes=4))
    x, lengths = cached_features(corpus, cache_dir=cache, progress=False)
    for stats, split in scored:
        seen = (normalise_by_speaker(x, corpus.speakers(), split_statistics(x, lengths, corpus.speakers(), split))
                if speaker_norm else x)
        np.testing.assert_array_equal(stats, tool.band_statistics(seen, lengths))
    assert not np.array_equal(splits[0][0].test, splits[1][0].test)
    assert [f["name"] for f in results["folds"]] == [s.name for s in splits[1]]
    assert [f["n_test"] for f in results["folds"]] == [len(s.test) for s in splits[1]] == [67, 67]
    assert results["seed"] == 1 and all(f["ua"] > 60 for f in results["folds"])
    assert results["ua"] == pytest.approx(np.mean([f["ua"] for f in results["folds"]]))


def test_svm_baseline_says_to_install_scikit_learn(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    assert _svm_baseline().main(["--classes", "4"]) == 2
    assert "pip install scikit-learn" in capsys.readouterr().err


def test_ema_run_selects_and_saves_the_average(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    """With --ema, best.pt holds the averaged weights (not the last step's) and last.pt carries the average."""
    main(["--model", "cnn", *TINY_CNN, "--epochs", "1", "--ema", "0.5", "--lr", "0.01", *quick(tmp_path / "run", cache)])
    last, best = checkpoint.load(tmp_path / "run/fold-1/last.pt"), checkpoint.load(tmp_path / "run/fold-1/best.pt")
    assert last["ema"]["updates"] == 3  # 1 epoch of 3 batches of 8 out of 24 utterances
    averaged, live = last["ema"]["state_dict"], last["state_dict"]
    assert not torch.equal(averaged["classifier.net.3.weight"], live["classifier.net.3.weight"])
    assert best["epoch"] == 1 and best["state_dict"].keys() == averaged.keys()
    assert all(torch.equal(best["state_dict"][k], averaged[k]) for k in averaged)


def test_n_mels_sets_the_front_end_and_evaluate_follows_it(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    """--n-mels 24 computes 24-band features, builds a 24-band network, records both in the checkpoint,
    and re-scoring the run from its checkpoints alone reproduces its test metrics."""
    from minser.evaluate import evaluate

    results = main(["--model", "cnn", *TINY_CNN, "--n-mels", "24", "--epochs", "1", *quick(tmp_path / "run", cache)])
    saved = checkpoint.load(tmp_path / "run/fold-1/best.pt")
    assert saved["frontend"]["n_mels"] == 24 and saved["spec"]["options"]["n_mels"] == 24
    assert results["options"]["n_mels"] == 24
    scored = evaluate(tmp_path / "run", cache_dir=str(cache))
    assert scored["folds"][0]["confusion"] == results["folds"][0]["confusion"]


def test_random_crops_are_windows_of_the_valid_frames() -> None:
    lengths = torch.tensor([30, 200, 120])
    x = torch.arange(3 * 2 * 200, dtype=torch.float32).reshape(3, 2, 200)
    starts = set()
    for seed in range(20):
        windows, cut = random_crops(x, lengths, 50, torch.Generator().manual_seed(seed))
        assert cut.tolist() == [30, 50, 50] and windows.shape == (3, 2, 50)
        assert torch.equal(windows[0, :, :30], x[0, :, :30])  # shorter than the window: kept whole
        for b, length in ((1, 200), (2, 120)):
            start = int(windows[b, 0, 0] - x[b, 0, 0])
            assert 0 <= start <= length - 50 and torch.equal(windows[b], x[b, :, start:start + 50])
            starts.add((b, start))
    assert len(starts) > 10  # the windows move
    # Every start is drawn, the last one too: 52 frames hold windows of 50 at 0, 1 and 2.
    last = {int(random_crops(x[:1], torch.tensor([52]), 50, torch.Generator().manual_seed(seed))[0][0, 0, 0])
            for seed in range(40)}
    assert last == {0, 1, 2}


def test_mixup_pairs_are_seeded_permutations_with_beta_weights() -> None:
    partner, weight = mixup_pairs(1000, 0.4, torch.Generator().manual_seed(0))
    again = mixup_pairs(1000, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(partner, again[0]) and torch.equal(weight, again[1])
    assert sorted(partner.tolist()) == list(range(1000)) and weight.dtype == torch.float32
    assert bool(((weight >= 0) & (weight <= 1)).all())
    # Beta(0.4, 0.4) is U-shaped around a mean of 0.5: most weights lie near 0 or 1.
    assert float(weight.mean()) == pytest.approx(0.5, abs=0.05)
    assert float(((weight < 0.1) | (weight > 0.9)).float().mean()) > 0.4


class _Recorder(torch.nn.Module):
    """Logits from the mean of the valid frames; remembers the inputs of its last call."""

    def __init__(self, n_mels: int, n_classes: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(n_mels, n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.seen = (x, lengths)
        valid = (torch.arange(x.shape[-1]) < lengths[:, None]).float()
        return self.linear((x * valid[:, None]).sum(-1) / lengths[:, None])


@pytest.mark.parametrize("micro_batches", [1, 2, 3])
def test_a_step_in_micro_batches_takes_the_gradient_of_the_batch_mean_loss(micro_batches: int) -> None:
    """Slices of 2, 2 and 1 utterances weigh each utterance alike: the accumulated gradient is that of the
    batch's mean cross-entropy (Adam hides a uniform scale, not uneven slices)."""
    torch.manual_seed(0)
    data = Tensors(torch.randn(6, 4, 9), torch.tensor([9, 5, 7, 9, 3, 8]), torch.tensor([0, 1, 2, 0, 1, 2]))
    index = torch.tensor([5, 0, 3, 1, 2])
    model = _Recorder(4, 3)
    reference = copy.deepcopy(model)
    config = TrainConfig(pad_to="batch", micro_batches=micro_batches)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(Learner(model, optimizer, torch.amp.GradScaler("cpu", enabled=False), config), data, index)
    loss = torch.nn.functional.cross_entropy(reference(data.x[index], data.lengths[index]), data.y[index])
    loss.backward()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("micro_batches", [1, 2])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "class-weights"])
def test_mixup_step_mixes_inputs_and_losses_over_the_global_batch(micro_batches: int, weighted: bool) -> None:
    """A mixup step trains on w * x + (1 - w) * x[partner] over the frames valid in both, with the loss
    w * CE(y) + (1 - w) * CE(y[partner]) (each CE weighted by its class with class weights); partners come
    from the whole batch, whatever the slices."""
    torch.manual_seed(0)
    data = Tensors(torch.randn(6, 4, 9), torch.tensor([9, 5, 7, 9, 3, 8]), torch.tensor([0, 1, 2, 0, 1, 2]))
    index = torch.tensor([5, 0, 3, 1])
    model = _Recorder(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    config = TrainConfig(mixup=0.4, pad_to="batch", micro_batches=micro_batches)
    class_weight = torch.tensor([0.5, 2.0, 1.0]) if weighted else None
    learner = Learner(model, optimizer, torch.amp.GradScaler("cpu", enabled=False), config, class_weight=class_weight)
    loss = train_step(learner, data, index, mixes=torch.Generator().manual_seed(3))
    partner, w = mixup_pairs(4, 0.4, torch.Generator().manual_seed(3))
    a, b = index, index[partner]
    x = w[:, None, None] * data.x[a] + (1 - w[:, None, None]) * data.x[b]
    lengths = torch.minimum(data.lengths[a], data.lengths[b])
    last = slice(4 - 4 // micro_batches, 4)
    torch.testing.assert_close(model.seen[0], x[last])
    assert torch.equal(model.seen[1], lengths[last])
    logits = _Recorder.forward(model, x, lengths)
    ce = lambda y: torch.nn.functional.cross_entropy(logits, y, reduction="none") * (1 if not weighted else class_weight[y])
    expected = (w * ce(data.y[a]) + (1 - w) * ce(data.y[b])).sum()
    torch.testing.assert_close(loss, expected.detach())


def test_unknown_class_weights_name_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="--class-weights 'inverse': valid values are none, balanced"):
        train_module.check_config(TrainConfig(model="cnn", class_weights="inverse"))


def test_balanced_class_weights_make_every_class_count_alike() -> None:
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    weights = balanced_class_weights(y, 4)
    torch.testing.assert_close(weights, torch.tensor([6 / 12, 6 / 4, 6 / 8, 0.0]))
    assert [float(weights[y][y == c].sum()) for c in range(3)] == [1.5, 1.5, 1.5]  # each present class sums alike
    torch.testing.assert_close(balanced_class_weights(torch.tensor([0, 1, 2]), 3), torch.ones(3))


def test_crop_needs_length_aware_batches() -> None:
    with pytest.raises(ConfigError, match="--crop needs --pad-to batch"):
        parse_args(["--model", "cnn", "--crop", "2"])


def test_reproduce_refuses_protocol_all_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--protocol all trained the row, then the table crashed on its WA of None (TypeError)."""
    with pytest.raises(SystemExit) as exit_info:
        _tool("reproduce").main(["--protocol", "all", "--out", str(tmp_path / "rep")])
    assert exit_info.value.code == 2 and "invalid choice: 'all'" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("train_args, option, advice", [
    (["--train-arg=--protocol=all"], "--protocol", "give this tool's --protocol instead"),
    (["--train-arg=--epoch", "--train-arg=1"], "--epochs", "give this tool's --epochs instead"),  # abbreviated
    (["--train-arg=--seed=3"], "--seed", "give this tool's --seed instead"),
    (["--train-arg=--classes=7"], "--classes", "give this tool's --classes instead"),  # not given to the tool
    (["--train-arg=--out={tmp}/elsewhere"], "--out", "give this tool's --out instead"),
    (["--train-arg=--model=cnn"], "--model", "each row sets its network and its options: pick other rows with "
                                             "--rows"),
    (["--rows=t1-ilt-concat", "--train-arg=--model-opt=fusion=plus"], "--model-opt fusion",
     "each row sets its network and its options"),
    (["--rows=t1-cnn-transformer-nope", "--train-arg=--pe"], "--pe", "each row sets its network and its options"),
    (["--train-arg=--split-seed=1"], "--split-seed", "give --seed and --members instead"),
    (["--train-arg=--resume"], "--resume", "leave it out: rerunning this command resumes an interrupted row"),
])
def test_reproduce_refuses_train_args_that_override_its_own(train_args: list[str], option: str, advice: str,
                                                             cache: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """--train-arg came last and won: --train-arg=--protocol=all got past the --protocol choices (then the table
    crashed, on every rerun too), --train-arg=--epochs=1 ran 1 epoch under a table saying 100."""
    # A tiny row, so that a tool that lets the override through trains for seconds, not hours.
    tiny = ["--rows", "t1-cnn-transformer", "--epochs", "2", "--folds", "1",
            *(f"--train-arg={a}" for a in ("--subset=5", "--batch-size=8", "--threads=1", f"--cache-dir={cache}",
                                           "--model-opt=d_model=8", "--model-opt=channels=[2,2,2]",
                                           "--model-opt=ff_dim=8", "--model-opt=layers=1", "--model-opt=heads=2"))]
    argv = [*tiny, *(a.format(tmp=tmp_path) for a in train_args), "--out", str(tmp_path / "rep")]
    assert _tool("reproduce").main(argv) == 2
    assert re.fullmatch(f"error: --train-arg gives minser.train's {re.escape(option)}, which this tool sets itself "
                        f"for the rows run; {advice}.*\n", capsys.readouterr().err)
    assert not (tmp_path / "rep").exists() and not (tmp_path / "elsewhere").exists()


def test_reproduce_takes_a_model_option_the_rows_run_do_not_set() -> None:
    """Only t1-cnn-transformer-nope sets pe: CAT without positional encoding was refused as a setting the tool
    gave "every run"."""
    reproduce = _tool("reproduce")
    rows = {row.id: row for row in reproduce.ROWS}
    args = argparse.Namespace(data="emodb", classes=None, protocol="random", epochs=1, seed=0, folds=None,
                              out="runs/x", train_arg=["--model-opt=pe=false"])
    assert reproduce.overridden_setting(args, [rows["t2-cat-both"]]) is None
    assert "--model-opt pe" in reproduce.overridden_setting(args, [rows["t1-cnn-transformer-nope"]])


def test_reproduce_tabulates_rows_and_skips_finished_ones(emodb_root: Path, cache: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    reproduce = _tool("reproduce")
    tiny = [f"--train-arg={a}" for a in ("--subset=5", "--batch-size=8", "--threads=1", f"--cache-dir={cache}",
                                         "--model-opt=d_model=8", "--model-opt=channels=[2,2,2]", "--model-opt=ff_dim=8",
                                         "--model-opt=layers=1", "--model-opt=heads=2")]
    args = ["--rows", "t1-cnn-transformer,t1-ilt-plus,t2-cnn-transformer", "--epochs", "1", "--folds", "1",
            "--out", str(tmp_path / "rep"), *tiny]
    assert reproduce.main(args) == 0
    table = (tmp_path / "rep" / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| t1-")]
    rows += [line for line in table.splitlines() if line.startswith("| t2-")]
    assert [r.split(" | ")[0] for r in rows] == ["| t1-cnn-transformer", "| t1-ilt-plus", "| t2-cnn-transformer"]
    # Table 2's CNN-Transformer is Table 1's baseline 1 with PE: one run, the same figures in both rows.
    assert rows[0].split(" | ")[3:] == rows[2].split(" | ")[3:] and not (tmp_path / "rep" / "t2-cnn-transformer").exists()
    assert "1 epochs per fold" in table and "--subset=5" in table
    results = json.loads((tmp_path / "rep" / "t1-ilt-plus" / "results.json").read_text())
    assert results["options"]["fusion"] == "plus" and results["options"]["alpha"] == 0.5
    assert f"{results['ua']:.2f} ± {results['ua_std']:.2f}" in rows[1]
    capsys.readouterr()
    assert reproduce.main(args) == 0  # both rows finished: nothing is trained again
    assert capsys.readouterr().out.count("finished earlier, skipped") == 2  # the third row shares the first's
    assert reproduce.main(["--rows", "t9-nothing"]) == 2
    # Other settings are not these results: before, every row was "finished earlier" under --classes 7 too.
    assert reproduce.main([*args, "--classes", "7"]) == 2
    assert re.search(r"--classes 7 but the run in .*t1-cnn-transformer used --classes 4; give another --out",
                     capsys.readouterr().err)
    # All of the protocol's folds (no --folds): the 1-fold run is resumed, not reused.
    assert reproduce.main(["--rows", "t1-cnn-transformer", "--epochs", "1", "--out", str(tmp_path / "rep"), *tiny]) == 0
    assert len(json.loads((tmp_path / "rep" / "t1-cnn-transformer" / "results.json").read_text())["folds"]) == 5


def test_reproduce_members_score_each_row_as_an_ensemble(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    """--members 2: the row's run plus a --seed 1 --split-seed 0 run, scored together by minser.evaluate."""
    from minser.evaluate import evaluate

    reproduce = _tool("reproduce")
    tiny = [f"--train-arg={a}" for a in ("--subset=5", "--batch-size=8", "--threads=1", f"--cache-dir={cache}",
                                         "--model-opt=d_model=8", "--model-opt=channels=[2,2,2]")]
    out = tmp_path / "rep"
    args = ["--rows", "t2-cnn-plus-lstm", "--epochs", "1", "--folds", "2", "--members", "2", "--out", str(out), *tiny]
    assert reproduce.main(args) == 0
    first, second = (json.loads((out / name / "config.json").read_text())
                     for name in ("t2-cnn-plus-lstm", "t2-cnn-plus-lstm.seed-1"))
    assert (first["seed"], first["split_seed"], second["seed"], second["split_seed"]) == (0, None, 1, 0)
    ensemble = evaluate([out / "t2-cnn-plus-lstm", out / "t2-cnn-plus-lstm.seed-1"], cache_dir=str(cache))
    members = [json.loads((out / name / "results.json").read_text())["ua"]
               for name in ("t2-cnn-plus-lstm", "t2-cnn-plus-lstm.seed-1")]
    row = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| t2-"))
    assert row.endswith(f"| {ensemble['ua']:.2f} ± {ensemble['ua_std']:.2f} | {members[0]:.2f} / {members[1]:.2f} |")
    assert "ensembles of 2 runs (seeds 0 to 1, splits of seed 0)" in (out / "results.md").read_text()
    assert reproduce.main([*args[:-len(tiny)], "--members", "0"]) == 2


def test_utterances_shorter_than_the_network_are_trained_and_scored_as_if_padded(tmp_path: Path) -> None:
    """Clips of 0.1 s (11 frames) are shorter than the CNN's 15-frame stride; the run sees them padded with
    silence to 15 frames, as the Recognizer serves them, instead of failing once training has started."""
    from minser.evaluate import evaluate_checkpoint

    manifest = _manifest(tmp_path / "calls", speaker="x")
    out = tmp_path / "run"
    main(["--model", "cnn", *TINY_CNN, "--data", str(manifest), "--epochs", "1", "--folds", "1",
          "--pad-to", "batch", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    results = json.loads((out / "results.json").read_text())
    rescored = evaluate_checkpoint(out / "fold-1" / "best.pt", cache_dir=str(tmp_path / "cache"))
    assert rescored["n"] == 2 and rescored["wa"] == results["folds"][0]["wa"]


def test_weights_that_diverge_stop_the_run(emodb_root: Path, cache: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN in the weights used to train on for every remaining epoch, and be scored as a result."""
    original = train_module.train_epoch

    def diverging(learner: Learner, *args: object) -> float:
        loss = original(learner, *args)
        with torch.no_grad():
            next(learner.model.parameters()).fill_(float("nan"))
        return loss

    monkeypatch.setattr(train_module, "train_epoch", diverging)
    with pytest.raises(ConfigError, match=r"^fold 1 epoch 1: the weights hold NaN or Inf, so training diverged at "
                                          r"--lr 0\.0001; train again with a lower --lr"):
        main(["--model", "cnn", *TINY_CNN, "--epochs", "2", *quick(tmp_path / "run", cache)])


def test_session_protocol_on_emodb_names_the_speaker_protocol(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    # EmoDB is loaded by name: the advice to give a session column in the manifest could not apply
    with pytest.raises(DataError, match=r"has no session for 20 utterances .*group by speaker instead \(--protocol "
                                        r"speaker\)$"):
        main(["--model", "cnn", "--protocol", "session", *quick(tmp_path / "run", cache)])


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton (the gpu extra)")
def test_triton_kernels_on_the_cpu_are_refused_before_any_data_is_read(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ConfigError, match="impl='triton' got tensors on cpu: the Triton kernels need a CUDA device"):
        main(["--model", "ilt", "--impl", "triton", "--data", str(tmp_path / "nowhere.csv"), "--device", "cpu",
              "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_crop_shorter_than_the_network_is_refused_before_training(emodb_root: Path, cache: Path,
                                                                     tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        main(["--model", "cnn", *TINY_CNN, "--pad-to", "batch", "--crop", "0.1", "--epochs", "1",
              *quick(tmp_path / "run", cache)])
    assert str(refused.value) == ("--crop 0.1 (10 frames): cnn needs windows of at least 15 frames; "
                                  "give --crop 0.15 or more")
    assert not (tmp_path / "run" / "fold-1").exists()


def test_a_subset_larger_than_a_class_says_that_class_is_used_whole(tmp_path: Path) -> None:
    import warnings

    manifest = _manifest(tmp_path / "calls")  # 4 utterances of each class
    run = ["--model", "cnn", *TINY_CNN, "--data", str(manifest), "--folds", "1", "--epochs", "1",
           "--cache-dir", str(tmp_path / "cache")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        main([*run, "--subset", "4", "--out", str(tmp_path / "all")])
    with pytest.warns(UserWarning) as warned:
        main([*run, "--subset", "5", "--out", str(tmp_path / "more")])
    assert [str(w.message) for w in warned] == [
        "--subset 5: these classes have fewer utterances, and every one of them is used: anger 4, neutral 4"]


def test_the_summary_table_lines_up_the_mean_with_the_folds() -> None:
    results = {"wa": 31.25, "wa_std": 6.25, "ua": 100.0, "ua_std": 10.5,
               "folds": [{"name": "random-0", "wa": 25.0, "ua": 100.0, "best_epoch": 3},
                         {"name": "random-1", "wa": 37.5, "ua": 31.2, "best_epoch": 12}]}
    lines = train_module.summary_table(results).splitlines()
    assert lines[-1] == f"{'mean ± std':<24} {'31.25 ± 6.25':>14} {'100.00 ± 10.50':>14}"
    # Every line's WA and UA columns end where the header's do (before, the mean row ran 3 characters short).
    wa_end, ua_end = lines[0].index("WA %") + 3, lines[0].index("UA %") + 3
    assert all(line[wa_end].isdigit() and line[wa_end + 1] == " " and line[ua_end].isdigit() for line in lines[1:])


def test_mixed_precision_with_length_aware_batches_trains(emodb_root: Path, cache: Path, tmp_path: Path) -> None:
    """--precision bf16 --pad-to batch (CUDA's default precision with the recommended padding) stopped at its first
    step: the masked BatchNorm mixed bfloat16 statistics into its float32 running ones."""
    results = main(["--model", "cnn", *TINY_CNN, "--precision", "bf16", "--pad-to", "batch", "--epochs", "1",
                    *quick(tmp_path / "run", cache)])
    assert results["folds"][0]["wa"] is not None
    weights = checkpoint.load(tmp_path / "run" / "fold-1" / "best.pt")["state_dict"]
    assert weights["cnn.blocks.0.norm.running_mean"].dtype == torch.float32


def test_confusion_without_matplotlib_writes_the_csv_and_names_the_extra(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as when the plot extra is absent
    with pytest.warns(UserWarning, match=r"confusion\.png not written: .* pip install 'minser\[plot\]'"):
        written = train_module.write_confusion(tmp_path, np.array([[2, 1], [0, 3]]), ["a", "b"])
    assert written == [tmp_path / "confusion.csv"] and sorted(p.name for p in tmp_path.iterdir()) == ["confusion.csv"]
    assert (tmp_path / "confusion.csv").read_text() == "true\\predicted,a,b\na,2,1\nb,0,3\n"


def test_the_confusion_plot_leaves_the_callers_matplotlib_backend_alone(tmp_path: Path) -> None:
    """train() promises a caller (a notebook) keeps its settings: write_confusion switched the backend to Agg for
    good (matplotlib.use), and drew through pyplot."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        train_module.write_confusion(tmp_path, np.array([[2, 1], [0, 3]]), ["a", "b"])
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "confusion.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_confusion_csv_quotes_labels_and_is_utf_8(tmp_path: Path) -> None:
    """A manifest label may hold a comma or a quote (the manifest reader takes it quoted) and any letter: the
    rows were joined unquoted, of uneven width, and written in the locale's encoding."""
    import csv

    labels = ["anger, hot", 'say "hi"', "Ärger"]
    train_module.write_confusion(tmp_path, np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]]), labels)
    with open(tmp_path / "confusion.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["true\\predicted", *labels], [labels[0], "1", "2", "3"], [labels[1], "4", "5", "6"],
                    [labels[2], "7", "8", "9"]]


@pytest.mark.parametrize("pad_to", ["full", "batch"])
def test_class_logits_come_back_in_the_utterances_order(pad_to: str) -> None:
    """--pad-to batch scores batches sorted by length; the logits must still line up with the utterances
    (before this test only a speaker-normalisation test noticed rows put back out of order)."""
    from minser.models import build

    torch.manual_seed(0)
    model = build("cnn", 3, d_model=8, channels=[2, 2, 2])
    lengths = torch.tensor([80, 20, 60, 30, 75, 40, 50])
    data = Tensors(torch.randn(7, 40, 80), lengths, torch.zeros(7, dtype=torch.long))
    logits = train_module.class_logits(model, data, batch_size=3, pad_to=pad_to)
    one_by_one = torch.cat([train_module.class_logits(model, data.take([i]), pad_to=pad_to) for i in range(7)])
    torch.testing.assert_close(logits, one_by_one, rtol=1e-5, atol=1e-6)
    assert len({tuple(row.tolist()) for row in logits}) == 7  # rows differ, so an order mix-up shows


def test_the_subset_pick_follows_its_seed() -> None:
    """Per class, `per_class` utterances (all of a smaller class), in corpus order, the same for one seed and
    another for another (a pick that ignored its seed passed every test)."""
    targets = np.array([0, 1, 0, 0, 1, 2, 0, 0, 1, 1, 0, 2])
    picks = {seed: train_module.subset_indices(targets, 3, seed) for seed in range(6)}
    for pick in picks.values():
        assert np.all(np.diff(pick) > 0) and np.bincount(targets[pick]).tolist() == [3, 3, 2]
    assert np.array_equal(train_module.subset_indices(targets, 3, 4), picks[4])
    assert len({tuple(pick) for pick in picks.values()}) > 3


def test_a_tie_in_validation_wa_keeps_the_earlier_epoch(emodb_root: Path, cache: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's rule: of epochs with equal validation WA the first is selected (fewer epochs, no peeking)."""
    monkeypatch.setattr(train_module, "predict", lambda model, data, **kwargs: torch.zeros(len(data.y), dtype=torch.long))
    results = main(["--model", "cnn", *TINY_CNN, "--epochs", "3", *quick(tmp_path / "run", cache)])
    assert results["folds"][0]["best_epoch"] == 1
    assert checkpoint.load(tmp_path / "run/fold-1/best.pt")["epoch"] == 1


@pytest.mark.parametrize("rank, order", [(0, ["work", "barrier"]), (1, ["barrier", "work"])])
def test_under_torchrun_rank_0_fills_the_cache_before_the_others_read_it(rank: int, order: list[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank computed and wrote the whole feature cache (and --download fetched EmoDB once per rank)."""
    calls: list[str] = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda: calls.append("barrier"))
    result = train_module._rank_0_first(train_module.Dist(rank, 2), lambda: calls.append("work") or 7)
    assert result == 7 and calls == order
    calls.clear()
    assert train_module._rank_0_first(train_module.Dist(), lambda: calls.append("work") or 8) == 8
    assert calls == ["work"]


def test_checking_the_options_leaves_the_callers_random_stream_alone() -> None:
    # The check builds the network, whose weight initialisation draws from torch's global generator.
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    parse_args(["--model", "ilt"])
    assert torch.equal(torch.rand(3), want)


# tools/train_default.py, tools/svm_baseline.py and tools/enrolment_curve.py: how they refuse bad input and
# continue an interrupted run.

# A recipe of seconds for tools/train_default.py: a tiny CNN on 3 utterances per class, batches of 8.
TINY_RECIPE = ["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]", "--data", "emodb",
               "--classes", "7", "--subset", "3", "--batch-size", "8", "--pad-to", "batch", "--seed", "0",
               "--threads", "1"]


def _train_default(monkeypatch: pytest.MonkeyPatch, cache: Path, epochs: int):
    """tools/train_default.py with its recipe made tiny (``epochs`` epochs)."""
    tool = _tool("train_default")
    monkeypatch.setattr(tool, "RECIPE", [*TINY_RECIPE, "--epochs", str(epochs), "--cache-dir", str(cache)])
    return tool


def test_train_default_continues_an_interrupted_run_and_ships_it(emodb_root: Path, cache: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Ctrl-C was a traceback advising a --resume the tool lacked, and every rerun then failed on the run
    folder it had left ("already holds a run"): the documented command never worked again."""
    tool = _train_default(monkeypatch, cache, epochs=2)
    out, shipped = tmp_path / "run", tmp_path / "default.pt"
    argv = ["--out", str(out), "--ship", str(shipped)]
    train_epoch = train_module.train_epoch

    def interrupted_in_epoch_2(learner, fold, epoch, crop_frames):
        if epoch == 1:
            raise KeyboardInterrupt
        return train_epoch(learner, fold, epoch, crop_frames)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "train_epoch", interrupted_in_epoch_2)
        try:
            status = tool.main(argv)
        except KeyboardInterrupt as exc:  # else it would end the whole test session
            pytest.fail(f"Ctrl-C escaped tools/train_default.py: {exc!r}")
    assert status == train_module.INTERRUPTED_STATUS
    assert capsys.readouterr().err.endswith(f"\ninterrupted: {out} holds the run up to its last completed epoch; to "
                                            f"continue from there, rerun with the same options and --resume --out "
                                            f"{out}\n")  # after the feature cache's progress lines
    assert not shipped.exists()
    assert tool.main(argv) == 2  # the same command again: the one line names the way on
    assert capsys.readouterr().err == (f"error: --out {out} already holds a run; pass --resume to continue it or "
                                       "choose another --out\n")
    assert tool.main([*argv, "--resume"]) == 0
    assert f"wrote {shipped} (epoch 2)" in capsys.readouterr().out
    first = checkpoint.load(shipped)
    assert first["epoch"] == 2 and first["recipe"] == "tools/train_default.py"
    shipped.unlink()
    assert tool.main([*argv, "--resume"]) == 0  # a finished run: nothing to train, shipped again
    assert f"wrote {shipped} (epoch 2)" in capsys.readouterr().out
    assert all(value.equal(first["state_dict"][key]) for key, value in checkpoint.load(shipped)["state_dict"].items())


def test_train_default_passes_resume_to_the_cross_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    tool, calls = _tool("train_default"), []
    monkeypatch.setattr(train_module, "cli", lambda argv: calls.append(argv) or 0)
    assert tool.main(["--cv", "--resume", "--out", "cv"]) == 0
    assert calls == [[*tool.RECIPE, "--resume", "--protocol", "random", "--out", "cv"]]


def test_train_default_without_emodb_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """A missing corpus was a DataError traceback advising a --download the tool did not accept."""
    monkeypatch.setenv("MINSER_DATA", str(tmp_path / "data"))
    tool = _tool("train_default")
    argv = ["--out", str(tmp_path / "run"), "--ship", str(tmp_path / "default.pt")]
    assert tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "run `python -m minser.data download emodb`" in err and err.endswith("; or pass --download to fetch "
                                                                                  "EmoDB into the data folder\n")

    def offline() -> Path:
        raise DataError("offline")

    monkeypatch.setattr(minser.data, "download_emodb", offline)  # what --download calls, without the network
    assert tool.main([*argv, "--download"]) == 2
    assert capsys.readouterr().err == "error: offline\n"
    assert not (tmp_path / "default.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1", "--folds", "1"], "--seed -1: give an integer >= 0"),  # was a NumPy ValueError traceback
    (["--folds", "0"], "--folds 0: give an integer >= 1"),  # was "0 folds: WA nan", exit 0
    (["--folds", "-2"], "--folds -2: give an integer >= 1"),  # was 3 of the 5 folds, silently
])
def test_svm_baseline_checks_its_options_as_minser_train(argv: list[str], message: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "svm.json"
    assert _tool("svm_baseline").main([*argv, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_svm_baseline_refuses_classes_with_a_manifest(emodb_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """A manifest takes its classes from its labels: --classes 7 was ignored without a word."""
    pytest.importorskip("sklearn")
    manifest = tmp_path / "two.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{'neutral' if p.stem[5] == 'N' else 'anger'}\n"
                                                 for p in sorted((emodb_root / "wav").glob("*[NW]?.wav"))[:20]))
    assert _tool("svm_baseline").main(["--data", str(manifest), "--classes", "7",
                                       "--cache-dir", str(tmp_path / "cache")]) == 2
    assert capsys.readouterr().err == (f"error: --classes 7 with --data {manifest}: a CSV manifest or a folder takes "
                                       "its classes from its labels; drop --classes (it picks EmoDB's 4- or 7-class "
                                       "set)\n")
    assert not (tmp_path / "cache").exists()


def test_svm_baseline_records_the_default_classes(emodb_root: Path, cache: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--classes is now None when not given (so that a manifest can refuse it): EmoDB still takes 4."""
    pytest.importorskip("sklearn")
    tool, out = _tool("svm_baseline"), tmp_path / "svm.json"
    monkeypatch.setattr(tool, "C_GRID", (1.0,))
    monkeypatch.setattr(tool, "GAMMA_GRID", ("scale",))
    assert tool.main(["--folds", "1", "--cache-dir", str(cache), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["classes"] == 4 and len(results["folds"]) == 1 and results["folds"][0]["n_test"] == 67


def test_enrolment_curve_refuses_a_negative_seed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A negative --seed was NumPy's traceback once the first checkpoint was loaded; now refused first."""
    assert _tool("enrolment_curve").main([str(tmp_path / "run"), "--seed", "-1"]) == 2
    assert capsys.readouterr().err == "error: --seed -1: give an integer >= 0\n"


def test_train_default_refuses_an_installed_minser_whose_commit_it_would_record(
        emodb_root: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    """`python tools/train_default.py` imports an installed copy before the checkout's (its folder, tools/, is
    first on sys.path); the shipped checkpoint then recorded the checkout's commit, marked clean."""
    tool = _train_default(monkeypatch, cache, epochs=1)
    monkeypatch.setattr(minser, "__file__", str(tmp_path / "site-packages" / "minser" / "__init__.py"))
    assert tool.main(["--out", str(tmp_path / "run"), "--ship", str(tmp_path / "default.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: minser is imported from {tmp_path / 'site-packages' / 'minser'}, not from this "
                          "checkout's") and "pip install -e" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "default.pt").exists()


def test_train_default_records_no_commit_outside_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without git (or in an unpacked sdist) the code entry said commit '' and no uncommitted change."""
    tool = _tool("train_default")

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(tool.subprocess, "run", no_git)
    assert tool.code_version()["commit"] is None and tool.code_version()["uncommitted"] is None


# tools/model_table.py, tools/reproduce.py and tools/train_default.py: a reader that stops early, --folds, --ship.

@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_model_table_to_a_reader_that_stopped_early_ends_quietly(unbuffered: str) -> None:
    """`python tools/model_table.py | head -1`: the closed pipe gave a BrokenPipeError traceback (stdout unbuffered),
    or "Exception ignored ... BrokenPipeError" and exit status 120 from the flush at exit."""
    import os

    repo = Path(__file__).resolve().parents[1]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run([sys.executable, str(repo / "tools" / "model_table.py"), "--models", "cnn", "--repeats",
                               "1", "--batch", "1", "--frames", "100", "--threads", "1"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=repo,
                              env={**os.environ, "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize("folds", ["0", "-1"])
def test_reproduce_refuses_folds_below_1_before_training(folds: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """--folds 0 was taken for no --folds: every fold of every row ran (and -1 reached minser.train in the first row)."""
    reproduce = _tool("reproduce")
    monkeypatch.setattr(reproduce, "train", lambda argv: pytest.fail(f"trained: {argv}"))
    assert reproduce.main(["--folds", folds, "--out", str(tmp_path / "rep")]) == 2
    assert capsys.readouterr().err == f"error: --folds {folds}: give an integer >= 1 (leave it out to run every fold)\n"
    assert not (tmp_path / "rep").exists()


def test_train_default_checks_ship_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    """A --ship that cannot be written was found once training had ended (6 to 9 minutes), as a traceback; with --cv,
    which ships nothing, it was ignored without a word."""
    import os

    tool, calls = _tool("train_default"), []
    monkeypatch.setattr(train_module, "cli", lambda argv: calls.append(argv) or 0)
    (tmp_path / "file").write_text("x")
    in_file = tmp_path / "file" / "default.pt"
    for ship, message in ((tmp_path, f"--ship {tmp_path}: is a folder; name a file to write"),
                          (in_file, f"--ship {in_file}: {tmp_path / 'file'} is a file, not a folder; choose another "
                                    "folder")):
        assert tool.main(["--out", str(tmp_path / "run"), "--ship", str(ship)]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    new = tmp_path / "new" / "default.pt"  # a missing folder is made when the checkpoint is written
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert tool.main(["--out", str(tmp_path / "run"), "--ship", str(new)]) == 2
    assert capsys.readouterr().err == (f"error: --ship {new}: cannot write in {tmp_path}; choose a folder you can "
                                       "write to\n")
    assert tool.main(["--cv", "--ship", str(new)]) == 2
    assert capsys.readouterr().err == (f"error: --ship {new} with --cv: the cross-validation estimates the recipe's "
                                       "accuracy and ships no checkpoint; drop --ship, or --cv to train the model to "
                                       "ship\n")
    assert calls == []


def test_train_default_reports_a_ship_that_fails_after_training(emodb_root: Path, cache: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    """Writing the shipped checkpoint was outside any try: its error (here a folder made meanwhile where --ship
    points) was a traceback after the minutes of training."""
    tool = _train_default(monkeypatch, cache, epochs=1)
    shipped, train_cli = tmp_path / "default.pt", train_module.cli

    def train_then_block(argv: list[str]) -> int:
        status = train_cli(argv)
        shipped.mkdir()
        return status

    monkeypatch.setattr(train_module, "cli", train_then_block)
    assert tool.main(["--out", str(tmp_path / "run"), "--ship", str(shipped)]) == 2
    # After the feature cache's progress lines, where it is computed here.
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {shipped} is a folder; name a file to write"


# tools/reproduce.py --rows, tools/svm_baseline.py --out and classes, tools/enrolment_curve.py counts above a speaker's.

@pytest.mark.parametrize("rows", ["", "t1-ilt-concat,", ",t2-cat-both"])
def test_reproduce_refuses_empty_row_ids_before_training(rows: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """--rows "" (an unset shell variable) was taken for no --rows: all 12 rows ran, hours of them."""
    reproduce = _tool("reproduce")
    monkeypatch.setattr(reproduce, "train", lambda argv: pytest.fail(f"trained: {argv}"))
    assert reproduce.main(["--rows", rows, "--out", str(tmp_path / "rep")]) == 2
    assert capsys.readouterr().err == (f"error: --rows {rows!r}: an empty row id; give comma-separated row ids from "
                                       f"{', '.join(row.id for row in reproduce.ROWS)}, or leave --rows out to run "
                                       "them all\n")
    assert not (tmp_path / "rep").exists()


def _two_label_manifest(emodb_root: Path, path: Path) -> Path:
    """A manifest of 20 EmoDB utterances labelled anger or neutral."""
    path.write_text("path,label\n" + "".join(f"{p},{'neutral' if p.stem[5] == 'N' else 'anger'}\n"
                                             for p in sorted((emodb_root / "wav").glob("*[NW]?.wav"))[:20]))
    return path


def test_svm_baseline_checks_out_before_any_features(emodb_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """--out was checked when written, after the minutes of fitting: a folder was a ConfigError traceback, and
    --out naming the --data manifest replaced it with the results."""
    pytest.importorskip("sklearn")
    manifest = _two_label_manifest(emodb_root, tmp_path / "two.csv")
    before = manifest.read_text()
    (tmp_path / "file").write_text("")
    for out, message in ((manifest, f"--out {manifest} is {manifest}, which --data reads: writing it would destroy "
                                    "it; name another file"),
                         (tmp_path, f"--out {tmp_path}: is a folder; name a file to write"),
                         (tmp_path / "file" / "svm.json", f"--out {tmp_path / 'file' / 'svm.json'}: "
                                                          f"{tmp_path / 'file'} is a file, not a folder; choose another "
                                                          "folder")):
        assert _svm_baseline().main(["--data", str(manifest), "--cache-dir", str(tmp_path / "cache"),
                                     "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert manifest.read_text() == before and not (tmp_path / "cache").exists()


def test_svm_baseline_records_no_classes_for_a_manifest_and_reports_a_failed_write(
        emodb_root: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """It recorded "classes": 4 (--classes's default) for a manifest, whose classes are its labels, where
    minser.train records null; and a write that failed after the fitting was a traceback."""
    pytest.importorskip("sklearn")
    tool, out = _svm_baseline(), tmp_path / "svm.json"
    monkeypatch.setattr(tool, "C_GRID", (1.0,))
    monkeypatch.setattr(tool, "GAMMA_GRID", ("scale",))
    argv = ["--data", str(_two_label_manifest(emodb_root, tmp_path / "two.csv")), "--folds", "1",
            "--cache-dir", str(cache), "--out", str(out)]
    assert tool.main(argv) == 0
    assert json.loads(out.read_text())["classes"] is None
    out.unlink()
    fit_and_score = tool.fit_and_score
    monkeypatch.setattr(tool, "fit_and_score", lambda *args: out.mkdir() or fit_and_score(*args))  # made meanwhile
    assert tool.main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {out} is a folder; name a file to write"


def test_enrolment_curve_says_when_a_speaker_has_fewer_recordings_than_k(emodb_root: Path, cache: Path,
                                                                         tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """A speaker with fewer than k test recordings was enrolled with all of them, in a row labelled k."""
    out = tmp_path / "run"
    main(["--model", "cnn", *TINY_CNN, "--speaker-norm", "--pad-to", "batch", "--protocol", "speaker", "--epochs", "1",
          *quick(out, cache)])
    test = checkpoint.load(out / "fold-1" / "best.pt")["fold"]["test"]
    capsys.readouterr()
    counts = f"{len(test)},{len(test) + 1},all"  # as many as the speaker has (no note), one more (a note)
    assert _tool("enrolment_curve").main([str(out), "--counts", counts, "--draws", "2"]) == 0
    printed = capsys.readouterr().out
    assert [line.split(" | ")[0] for line in printed.splitlines() if line.startswith("| ")] == [
        "| k", f"| {len(test)}", f"| {len(test) + 1}", "| all"]
    assert printed.endswith(f"|\n\nk {len(test) + 1}: 1 of 1 test speakers have fewer than {len(test) + 1} "
                            "recordings; they are enrolled with all of theirs (one draw)\n")
