"""The command lines of tools/: how they refuse bad input and continue an interrupted run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import minser.data
from minser import checkpoint
from minser import train as train_module
from minser.errors import DataError

# A recipe of seconds for tools/train_default.py: a tiny CNN on 3 utterances per class, batches of 8.
TINY_RECIPE = ["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]", "--data", "emodb",
               "--classes", "7", "--subset", "3", "--batch-size", "8", "--pad-to", "batch", "--seed", "0",
               "--threads", "1"]


def _tool(name: str):
    """tools/<name>.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")


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
