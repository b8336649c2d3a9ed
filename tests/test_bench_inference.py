"""Smoke test of bench/inference.py: --quick on a small checkpoint, every variant timed, valid JSON."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from minser import checkpoint
from minser.export import quantize_checkpoint
from minser.features import FrontEnd
from minser.models import build
from minser.recognizer import DEFAULT_MODEL

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "inference.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_inference"] = module
    spec.loader.exec_module(module)
    return module


bench = _load()


@pytest.fixture
def model(tmp_path) -> Path:
    torch.manual_seed(0)
    net = build("cnn_plus_lstm", 3, channels=[2, 2, 2])  # linear and LSTM layers wide enough for int8 to shrink
    return checkpoint.save(tmp_path / "small.pt", spec=net.spec, labels=("a", "b", "c"), frontend=FrontEnd().to_dict(),
                           state_dict=net.state_dict(), train={"pad_to": "batch"})


def test_quick_run_writes_every_variant(model, tmp_path, capsys):
    out = tmp_path / "inference.json"
    assert bench.main(["--quick", "--threads", "1", "--model", str(model), "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    variants = [row["variant"] for row in payload["latency"]]
    expected = ["front end only", "float", "int8"]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        expected.append("onnxruntime")
    assert variants == expected
    for row in payload["latency"]:
        assert row["threads"] == 1 and row["median_ms"] > 0
        assert row["rtf"] == pytest.approx(row["median_ms"] / 1e3 / 7.5)
    sizes = {row["what"]: row["kB"] for row in payload["sizes"]}
    assert sizes["int8 weights (linear + LSTM packed int8)"] < sizes["float weights"]
    printed = capsys.readouterr().out
    assert "rtf" in printed and ", 1 torch threads," in printed  # the count the rounds ran with, not torch's now
    assert payload["environment"]["torch_threads"] == "1"


def test_baseline_is_timed_in_the_same_rounds_and_every_row_gets_its_ratio(model, tmp_path):
    torch.manual_seed(1)
    net = build("cnn", 3, channels=[2, 2, 2])
    other = checkpoint.save(tmp_path / "other.pt", spec=net.spec, labels=("a", "b", "c"),
                            frontend=FrontEnd().to_dict(), state_dict=net.state_dict(), train={"pad_to": "batch"})
    out = tmp_path / "inference.json"
    assert bench.main(["--quick", "--threads", "1", "--model", str(model), "--baseline", str(other),
                       "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    rows = {row["variant"]: row for row in payload["latency"]}
    assert payload["baseline"] == str(other) and list(rows)[-1] == bench.BASELINE
    assert rows[bench.BASELINE]["vs_baseline"] == 1
    for row in rows.values():
        assert row["vs_baseline"] == pytest.approx(row["median_ms"] / rows[bench.BASELINE]["median_ms"])


def test_an_int8_checkpoint_is_benched_from_the_float_weights_it_keeps(model, tmp_path, monkeypatch, capsys):
    """minser.export --quantize int8 keeps the float weights plus a flag that quantizes them on load: the float
    rows (--model's and --baseline's) and the ONNX export must be of those weights, not of the int8 network."""
    int8 = quantize_checkpoint(checkpoint.load(model), tmp_path / "small.int8.pt", source=model)
    timed = bench.latency_rows
    baselines = []
    monkeypatch.setattr(bench, "latency_rows", lambda *args: baselines.append(args[-1]) or timed(*args))
    out = tmp_path / "inference.json"
    assert bench.main(["--quick", "--threads", "1", "--model", str(int8), "--baseline", str(int8),
                       "--json", str(out)]) == 0
    sizes = {row["what"]: row["kB"] for row in json.loads(out.read_text())["sizes"]}
    assert sizes["int8 weights (linear + LSTM packed int8)"] < sizes["float weights"]
    assert bench.state_bytes(baselines[0].model) / 1e3 == sizes["float weights"]
    assert "onnx export skipped" not in capsys.readouterr().err


def test_a_speaker_norm_checkpoint_is_refused_before_any_timing(model, tmp_path, capsys):
    saved = checkpoint.load(model)
    normed = checkpoint.save(tmp_path / "normed.pt", **{k: v for k, v in saved.items() if k != "format"},
                             speaker_norm={"03": [[0.0] * 40, [1.0] * 40]})
    assert bench.main(["--quick", "--threads", "1", "--model", str(normed)]) == 2
    captured = capsys.readouterr()
    # Refused as export refuses it, before the environment header of a run that would fail partway.
    assert f"error: {normed}: trained with --speaker-norm" in captured.err and captured.out == ""


def test_signal_is_deterministic_and_7_5_seconds():
    a, b = bench.speech_like_signal(), bench.speech_like_signal()
    assert a.shape == (120000,) and (a == b).all() and abs(a).max() < 1


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    assert "options given explicitly win" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("argv", "counts"), [
    ([], ([1, 2], 3, 50)),
    (["--quick"], ([1], 1, 3)),
    (["--quick", "--repeat", "20", "--threads", "2"], ([2], 1, 20)),  # given options win over --quick's defaults
    (["--repeat", "7"], ([1, 2], 3, 7)),
])
def test_quick_changes_only_the_defaults(argv, counts):
    assert bench.timing_counts(bench.build_parser().parse_args(argv)) == counts


def test_the_default_checkpoint_is_found_as_the_library_finds_it(model, tmp_path, monkeypatch):
    # Where minser.assets is installed is for importlib.resources to say (a wheel, a zip, another folder),
    # not a path next to a source file: point the package's resources elsewhere and the bench must follow.
    assets = tmp_path / "installed" / "minser" / "assets"
    assets.mkdir(parents=True)
    model.rename(assets / DEFAULT_MODEL)
    files = importlib.resources.files
    monkeypatch.setattr(importlib.resources, "files",
                        lambda package: assets if package == "minser.assets" else files(package))
    out = tmp_path / "inference.json"
    assert bench.main(["--quick", "--threads", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"] == str(assets / DEFAULT_MODEL)


def test_a_run_folder_names_its_checkpoint(model, tmp_path):
    run = tmp_path / "run"
    (run / "fold-1").mkdir(parents=True)
    model.rename(run / "fold-1" / "best.pt")
    out = tmp_path / "inference.json"
    assert bench.main(["--quick", "--threads", "1", "--model", str(run), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"] == str(run / "fold-1" / "best.pt")


@pytest.mark.parametrize(("options", "message"), [
    (["--model", "{dir}/missing.pt"], "error: {dir}/missing.pt: no such checkpoint file or run folder"),
    (["--baseline", "{dir}/missing.pt"], "error: {dir}/missing.pt: no such checkpoint file or run folder"),
    (["--model", "{dir}/corrupt.pt"], "error: {dir}/corrupt.pt: cannot be loaded as a minser checkpoint"),
    (["--accuracy", "{dir}"], "error: --accuracy {dir}: holds no fold-<k>/best.pt; give the --out folder"),
    (["--repeat", "0"], "error: --repeat 0: give a positive number"),
    (["--threads", "0"], "error: --threads 0: give a positive number"),
    (["--device", "cuda"], "error: --device cuda: this benchmark runs on the CPU only"),
])
def test_bad_input_is_an_error_before_any_timing(options, message, model, tmp_path, capsys):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    argv = ["--model", str(model), *(o.format(dir=tmp_path) for o in options), "--json", str(tmp_path / "out.json")]
    assert bench.main(argv) == 2
    captured = capsys.readouterr()
    assert message.format(dir=tmp_path) in captured.err and "rtf" not in captured.out
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize(("where", "message"), [
    ("{dir}", "error: --json {dir}: is a folder; name a file to write"),
    ("{dir}/file/out.json", "error: --json {dir}/file/out.json: {dir}/file is a file, not a folder"),
])
def test_a_bad_json_path_is_refused_before_any_timing(where, message, model, tmp_path, capsys):
    """--json was written once every variant had been timed: a bad path lost the results."""
    (tmp_path / "file").write_text("")
    assert bench.main(["--quick", "--threads", "1", "--model", str(model), "--json", where.format(dir=tmp_path)]) == 2
    captured = capsys.readouterr()
    assert message.format(dir=tmp_path) in captured.err and captured.out == ""


def test_accuracy_of_a_folder_of_fold_copies_only_is_refused(model, tmp_path, capsys):
    """A copy beside a run's folds (fold-1.bak) is no fold: scored as one, it was also sorted as text."""
    (tmp_path / "run" / "fold-1.bak").mkdir(parents=True)
    shutil.copy(model, tmp_path / "run" / "fold-1.bak" / "best.pt")
    assert bench.main(["--model", str(model), "--accuracy", str(tmp_path / "run")]) == 2
    assert f"error: --accuracy {tmp_path / 'run'}: holds no fold-<k>/best.pt" in capsys.readouterr().err


def test_accuracy_scores_each_fold_on_its_own_test_split(emodb_root, tmp_path):
    """The float variant reproduces the run's own test scores, for a run whose splits and --subset pick come
    from a --split-seed other than --seed (the fold's test indices refer to that pick)."""
    from minser.train import main as train

    out = tmp_path / "run"
    train(["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]", "--data", "emodb",
           "--subset", "5", "--split-seed", "3", "--folds", "2", "--epochs", "3", "--lr", "1e-2", "--batch-size", "8",
           "--threads", "1", "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    results = json.loads((out / "results.json").read_text())
    rows = [row for row in bench.accuracy_rows(out) if row["variant"] == "float"]
    scored = [score for row in rows for score in (row["wa"], row["ua"])]
    assert scored == pytest.approx([score for fold in results["folds"] for score in (fold["wa"], fold["ua"])])


def _fold(model: Path, run: Path, **fields) -> Path:
    """``run/fold-1/best.pt``: ``model``'s checkpoint with ``fields`` added (a fold record, speaker statistics)."""
    saved = checkpoint.load(model)
    return checkpoint.save(run / "fold-1" / "best.pt", **{k: v for k, v in saved.items() if k != "format"}, **fields)


@pytest.mark.parametrize("written", ["--model", "--baseline", "--accuracy"])
def test_a_json_path_that_is_a_checkpoint_read_is_refused_before_any_timing(written, model, tmp_path, capsys):
    """--json m.pt with --model m.pt replaced the checkpoint with the results once the timing had run."""
    test_part = {"fold": {"index": 0, "name": "fold-1", "test": [0, 1]}}
    read = {"--model": _fold(model, tmp_path / "model-run", **test_part),  # a run folder names its fold: that is read
            "--baseline": _fold(model, tmp_path / "baseline-run", **test_part),
            "--accuracy": _fold(model, tmp_path / "accuracy-run", **test_part)}
    argv = ["--quick", "--threads", "1", "--model", str(tmp_path / "model-run"), "--baseline",
            str(read["--baseline"]), "--accuracy", str(tmp_path / "accuracy-run")]
    before = read[written].read_bytes()
    assert bench.main([*argv, "--json", str(read[written])]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: --json {read[written]} is {read[written]}, which {written} reads: writing it "
                            "would destroy it; name another file\n") and captured.out == ""
    assert read[written].read_bytes() == before


def test_accuracy_of_a_run_without_test_parts_is_refused_before_any_timing(model, tmp_path, capsys):
    """A --protocol all run (tools/train_default.py's runs/default) printed an empty table and exited 0."""
    fold = _fold(model, tmp_path / "run", fold={"index": 0, "name": "all-utterances", "test": []})
    assert bench.main(["--quick", "--threads", "1", "--model", str(model), "--accuracy", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: --accuracy {tmp_path / 'run'}: {fold} has no test part to score (a --protocol all "
                            "run trains on every utterance); give a run of --protocol random, speaker or session\n")
    assert captured.out == ""


def test_accuracy_of_a_speaker_norm_run_is_refused_before_any_timing(model, tmp_path, capsys):
    """It failed once every variant had been timed, with minser.export's advice."""
    fold = _fold(model, tmp_path / "run", fold={"index": 0, "name": "03", "test": [0, 1]},
                 speaker_norm={"03": [[0.0] * 40, [1.0] * 40]})
    assert bench.main(["--quick", "--threads", "1", "--model", str(model), "--accuracy", str(tmp_path / "run")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: --accuracy {tmp_path / 'run'}: {fold} was trained with --speaker-norm, so it "
                            "needs each speaker's statistics, which the variants benchmarked here (float, int8, ONNX) "
                            "take none of; give a run trained without --speaker-norm, or score this one with python -m "
                            "minser.evaluate\n")
    assert captured.out == ""


def test_help_states_this_benchmarks_threads_and_device(capsys):
    """The shared help said torch's choice of threads and CUDA when present: it times 1 and 2 threads, on the CPU."""
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--threads N torch and onnxruntime CPU threads to time (default: 1 and 2, each timed; --quick: 1)" in text
    assert "--device DEVICE only cpu, the default: this benchmark runs on the CPU" in text
    assert "torch's choice" not in text and "cuda when a CUDA device is present" not in text
