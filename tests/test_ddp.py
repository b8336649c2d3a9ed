"""torchrun with 2 CPU processes (gloo) trains the same model as one process.

On CPU there is no SyncBatchNorm, so each rank normalises its half of every batch with that
half's statistics. One process with ``--micro-batches 2`` computes exactly that (two slices,
gradients accumulated; four slices for 2 ranks x ``--micro-batches 2``), so the runs must end with
the same parameters, BatchNorm running statistics (merged across the ranks after every step), losses
and scores, up to the float rounding of gloo's collectives. Dropout is 0: ranks draw their own
dropout masks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minser import checkpoint
from minser.train import main


def _args(out: Path, cache: Path) -> list[str]:
    return ["--model", "ilt", "--model-opt", "d_model=8", "--model-opt", "channels=[2,2,2]", "--model-opt",
            "ff_dim=8", "--model-opt", "layers=1", "--model-opt", "heads=2", "--model-opt", "dropout=0",
            "--data", "emodb", "--subset", "5", "--folds", "1", "--epochs", "2", "--batch-size", "8",
            "--pad-to", "batch", "--threads", "1", "--device", "cpu", "--out", str(out), "--cache-dir", str(cache)]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "minser.train", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("micro_batches", [1, 2], ids=["one-slice-per-rank", "two-slices-per-rank"])
def test_two_gloo_ranks_match_one_process(emodb_root: Path, tmp_path: Path, micro_batches: int) -> None:
    cache = tmp_path / "cache"
    single = main([*_args(tmp_path / "single", cache), "--micro-batches", str(2 * micro_batches)])
    done = _torchrun([*_args(tmp_path / "ddp", cache), "--micro-batches", str(micro_batches)])
    errors = [line for line in done.stderr.splitlines() if "error: " in line]
    assert done.returncode == 0, "\n".join(errors) or done.stderr[-3000:]
    assert "2 process(es)" in done.stdout and done.stdout.count("fold 1/1 epoch") == 2  # rank 0 prints alone
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["labels"] == single["labels"] and ddp["folds"][0]["n_test"] == single["folds"][0]["n_test"]
    a = checkpoint.load(tmp_path / "single/fold-1/last.pt")
    b = checkpoint.load(tmp_path / "ddp/fold-1/last.pt")
    # Parameters and BatchNorm's running statistics (which evaluation uses): rank 0's alone missed the other
    # rank's slices, 6 updates instead of 12.
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert ddp["folds"][0]["val_wa"] == single["folds"][0]["val_wa"] and ddp["ua"] == single["ua"]
    for mine, theirs in zip(a["history"], b["history"]):
        assert theirs["loss"] == pytest.approx(mine["loss"], rel=1e-5)


def test_a_resumed_torchrun_run_equals_an_uninterrupted_one_with_dropout_and_unequal_slices(
        emodb_root: Path, tmp_path: Path) -> None:
    """Batches of 7 split 4 + 3 across the ranks, so their dropout streams part; last.pt kept rank 0's alone,
    and a resumed run drew other masks on rank 1 than the uninterrupted one (running_var off by 45)."""
    cache = tmp_path / "cache"
    common = [*_args(tmp_path / "x", cache)[:-4], "--model-opt", "dropout=0.3", "--batch-size", "7",
              "--cache-dir", str(cache)]
    for out, epochs in (("straight", ["--epochs", "3"]), ("resumed", ["--epochs", "1"]),
                        ("resumed", ["--epochs", "3", "--resume"])):
        done = _torchrun([*common, *epochs, "--out", str(tmp_path / out)])
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (checkpoint.load(tmp_path / run / "fold-1/last.pt") for run in ("straight", "resumed"))
    assert len(b["rng"]) == 2 and not torch.equal(b["rng"][0]["torch"], b["rng"][1]["torch"])
    for name, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][name], value), name
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    """torchrun killed with SIGKILL left its workers (sessions of their own) training on, alone."""
    import signal
    import time

    worker = ("from minser.train import end_with_parent; import time; end_with_parent(); print('ready', flush=True); "
              "time.sleep(120)")
    parent = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
              "start_new_session=True, stdout=subprocess.PIPE, text=True); child.stdout.readline(); "
              "print(child.pid, flush=True); time.sleep(120)")
    launcher = subprocess.Popen([sys.executable, "-c", parent, worker], stdout=subprocess.PIPE, text=True)
    child = int(launcher.stdout.readline())
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=30)

    def running() -> bool:
        try:
            return "zombie" not in Path(f"/proc/{child}/status").read_text().lower()
        except FileNotFoundError:  # gone, reaped
            return False

    deadline = time.monotonic() + 30
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = running()
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive
