"""python -m minser.predict: JSON lines, bad files reported by name, exit codes, --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from minser import checkpoint
from minser.features import FrontEnd
from minser.models import build
from minser.predict import main

SR = 16000
LABELS = ("anger", "neutral")


def save_cnn(path: Path, seed: int = 0) -> Path:
    """A randomly initialised small cnn checkpoint (the CLI only needs a loadable one)."""
    torch.manual_seed(seed)
    net = build("cnn", len(LABELS), d_model=8, channels=[4, 4, 4])
    return checkpoint.save(path, spec=net.spec, labels=LABELS, frontend=FrontEnd().to_dict(),
                           state_dict=net.state_dict(), train={"pad_to": "batch"})


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_cnn(tmp_path_factory.mktemp("model") / "cnn.pt")


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.wav"
    rng = np.random.default_rng(0)
    soundfile.write(path, (0.1 * rng.standard_normal(SR)).astype(np.float32), SR)
    return path


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_prints_one_json_line_per_file(model, clip, capsys):
    assert main([str(clip), str(clip), "--model", str(model), "--threads", "1"]) == 0
    out = lines(capsys.readouterr().out)
    assert [o["file"] for o in out] == [str(clip), str(clip)]
    for o in out:
        assert set(o) == {"file", "label", "scores"}
        assert list(o["scores"]) == list(LABELS)
        assert o["label"] == max(o["scores"], key=o["scores"].get)
        assert sum(o["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_bad_files_are_named_on_stderr_and_the_others_still_labelled(model, clip, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    missing = tmp_path / "missing.wav"
    assert main([str(corrupt), str(clip), str(missing), "--model", str(model)]) == 1
    captured = capsys.readouterr()
    assert [o["file"] for o in lines(captured.out)] == [str(clip)]
    errors = lines(captured.err)
    assert [e["file"] for e in errors] == [str(corrupt), str(missing)]
    assert "cannot be read as audio" in errors[0]["error"] and str(corrupt) in errors[0]["error"]
    assert errors[1]["error"] == f"{missing}: does not exist; check the path"


def test_a_directory_and_a_truncated_file_are_named_for_what_they_are(model, clip, tmp_path, capsys):
    folder = tmp_path / "x.wav"
    folder.mkdir()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(clip.read_bytes()[:20000])  # 1 s of 16-bit samples cut to 0.6 s
    assert main([str(folder), str(truncated), str(clip), "--model", str(model)]) == 1
    captured = capsys.readouterr()
    assert [o["file"] for o in lines(captured.out)] == [str(clip)]
    errors = [e["error"] for e in lines(captured.err)]
    assert errors[0] == f"{folder}: is a directory; pass the path of an audio file"
    assert errors[1].startswith(f"{truncated}: is truncated: its data chunk declares 32000 bytes of samples but "
                                "the file holds 19956;")


def test_repeated_model_labels_with_the_ensemble(model, clip, tmp_path, capsys):
    from minser.recognizer import Recognizer

    other = save_cnn(tmp_path / "other.pt", seed=1)
    assert main([str(clip), "--model", str(model), "--model", str(other)]) == 0
    scores = lines(capsys.readouterr().out)[0]["scores"]
    expected = Recognizer.load([model, other]).predict(clip).scores
    assert scores == pytest.approx(expected, abs=1e-6)
    alone = [Recognizer.load(path).predict(clip).scores["anger"] for path in (model, other)]
    assert scores["anger"] == pytest.approx(sum(alone) / 2, abs=1e-5) and alone[0] != pytest.approx(alone[1])


def test_unloadable_model_exits_2(clip, tmp_path, capsys):
    assert main([str(clip), "--model", str(tmp_path / "nope.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert main([str(clip), "--threads", "0"]) == 2


def test_a_reader_that_stops_early_ends_the_run_quietly(model, clip, monkeypatch, capsys):
    """`predict ... | head -1`: the closed pipe gave a BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    with os.fdopen(write, "w") as pipe:
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main([str(clip), str(clip), "--model", str(model)]) == 141
        print("after", file=pipe, flush=True)  # stdout now leads nowhere, without another error
    assert capsys.readouterr().err == ""


def test_a_reader_that_stops_early_is_quiet_on_a_stdout_without_a_file_descriptor(model, clip, monkeypatch, capsys):
    """A stream of its own (pytest's capture, a notebook's) has no fileno: broken_pipe_status raised
    io.UnsupportedOperation in place of the quiet 141."""
    import io

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    monkeypatch.setattr(sys, "stdout", Gone())
    assert main([str(clip), "--model", str(model)]) == 141
    assert capsys.readouterr().err == ""


def test_ctrl_c_keeps_the_lines_printed_and_exits_130(model, clip, monkeypatch, capsys):
    """Ctrl-C printed a KeyboardInterrupt traceback through torch and died by SIGINT."""
    from minser.recognizer import Recognizer

    label = Recognizer.predict
    calls = []

    def interrupted_at_the_second_file(self, x, sr=None):
        calls.append(x)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return label(self, x, sr)

    monkeypatch.setattr(Recognizer, "predict", interrupted_at_the_second_file)
    try:
        status = main([str(clip), str(clip), str(clip), "--model", str(model)])
    except KeyboardInterrupt:  # uncaught, it would end the pytest session rather than fail
        pytest.fail("Ctrl-C escaped main")
    assert status == 130
    captured = capsys.readouterr()
    assert [o["file"] for o in lines(captured.out)] == [str(clip)]
    assert captured.err == "interrupted after 1 of 3 files\n"
    assert len(calls) == 2


def test_help_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "minser.predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "--model" in result.stdout and "JSON line" in result.stdout
    assert "--model a.pt --model b.pt --model c.pt" in result.stdout  # the examples are part of the help


def test_default_model_on_the_example_clips(capsys):
    clips = sorted((Path(__file__).resolve().parents[1] / "examples" / "clips").glob("*.wav"))
    assert len(clips) == 7
    assert main([str(clip) for clip in clips]) == 0
    out = lines(capsys.readouterr().out)
    assert [o["label"] for o in out] == [clip.name.split("_")[0] for clip in clips]
