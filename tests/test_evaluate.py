"""Re-scoring checkpoints: reproduces the run's results from the checkpoint alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minser.errors import CheckpointError
from minser.evaluate import checkpoints_of, evaluate, main
from minser.train import main as train


@pytest.fixture(scope="module")
def run(emodb_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-fold, 1-epoch tiny CNN run on 5 EmoDB utterances per class: (run folder, feature cache)."""
    out, cache = tmp_path_factory.mktemp("run") / "cnn", tmp_path_factory.mktemp("cache")
    train(["--model", "cnn", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]", "--data", "emodb",
           "--subset", "5", "--folds", "2", "--epochs", "1", "--batch-size", "8", "--threads", "1",
           "--out", str(out), "--cache-dir", str(cache)])
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
    manifest = tmp_path / "other.csv"
    manifest.write_text("path,label\n" + "".join(f"{p},{'anger' if p.stem[5] == 'W' else 'neutral'}\n" for p in files))
    assert main([str(out / "fold-1" / "best.pt"), "--data", str(manifest), "--cache-dir", str(cache)]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(f"{out / 'fold-1' / 'best.pt'}: 6 utterances  WA")


def test_bad_paths_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(CheckpointError, match="fold-\\*/best.pt"):
        checkpoints_of(tmp_path)
    assert main([str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
