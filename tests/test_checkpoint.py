"""Checkpoints: round trips, data-only loading, clear errors for bad files."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import pytest
import torch

from minser import checkpoint
from minser.errors import CheckpointError
from minser.models import build


def _save(path: Path, **extra) -> torch.nn.Module:
    model = build("cnn", 4, d_model=8, channels=[2, 2, 2])
    checkpoint.save(path, spec=model.spec, labels=["a", "b", "c", "d"], frontend={"n_mels": 40},
                    state_dict=model.state_dict(), **extra)
    return model


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    model = _save(tmp_path / "c.pt", epoch=3, history=[{"loss": 1.5}], best=None)
    saved = checkpoint.load(tmp_path / "c.pt")
    assert saved["format"] == checkpoint.FORMAT and saved["labels"] == ["a", "b", "c", "d"]
    assert saved["epoch"] == 3 and saved["history"] == [{"loss": 1.5}] and saved["best"] is None
    rebuilt = checkpoint.load_model(saved)
    assert not rebuilt.training
    x = torch.randn(2, 40, 750)
    assert torch.equal(rebuilt(x), model.eval()(x))


class _NotData:
    pass


def test_code_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "spec": {}, "labels": [], "frontend": {}, "state_dict": {},
                "payload": _NotData()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: .*more than tensors and plain values: Unsupported global") as error:
        checkpoint.load(path)
    # torch's own message advises weights_only=False or allowlisting the class; minser never passes that on.
    assert "weights_only" not in str(error.value) and "safe_globals" not in str(error.value)


def test_a_reference_to_code_names_what_it_would_run(tmp_path: Path) -> None:
    """A pickled os.system call: torch 2.13 says 'unsupported GLOBAL', and the message said only 'load failed'."""

    class Evil:
        def __reduce__(self) -> tuple:
            return os.system, ("true",)

    torch.save({"format": checkpoint.FORMAT, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"more than tensors and plain values: a reference to (posix|nt)\.system"):
        checkpoint.load(tmp_path / "evil.pt")


def test_a_folder_a_newer_format_and_a_broken_spec_are_named_as_such(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r": a folder, not a checkpoint file; pass one of its fold-<k>/best\.pt"):
        checkpoint.load(tmp_path)
    _save(tmp_path / "c.pt")
    saved = checkpoint.load(tmp_path / "c.pt")
    torch.save({**saved, "format": "minser/2"}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match=r"format 'minser/2', written by another version of minser \(this one "
                                              r"reads 'minser/1'\)"):
        checkpoint.load(tmp_path / "newer.pt")
    torch.save({**saved, "spec": "cnn"}, tmp_path / "spec.pt")  # was "the network's None classes"
    with pytest.raises(CheckpointError, match=r"spec\.pt: its model spec \('cnn'\) is not a dict of name, n_classes"):
        checkpoint.load(tmp_path / "spec.pt")


@pytest.mark.parametrize("name, content, message", [("bad.pt", b"not a zip file", "corrupt"),
                                                     ("bad.pt", None, "no such checkpoint"),
                                                     ("model.onnx", b"\x08\x07", "an ONNX model, which runs in onnxruntime")])
def test_bad_files_name_the_file(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as error:
        checkpoint.load(path)
    assert str(path) in str(error.value)


def test_a_text_file_or_a_cut_checkpoint_is_called_no_checkpoint(tmp_path: Path) -> None:
    model = build("cnn", 2, d_model=8, channels=[2, 2, 2])
    whole = checkpoint.save(tmp_path / "whole.pt", spec=model.spec, labels=["a", "b"], frontend={},
                            state_dict=model.state_dict()).read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "notes.pt").write_text("notes, not weights\n")
    for name in ("cut.pt", "notes.pt"):
        with pytest.raises(CheckpointError) as error:
            checkpoint.load(tmp_path / name)
        # Before, a text file read as a legacy pickle: "Unsupported operand 110".
        assert str(error.value).startswith(f"{tmp_path / name}: cannot be loaded as a minser checkpoint (it is no zip "
                                           "archive, which is what torch.save writes); the file is truncated")


def test_incomplete_checkpoint_says_what_is_missing(tmp_path: Path) -> None:
    torch.save({"format": checkpoint.FORMAT, "spec": {}, "labels": []}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="frontend, state_dict"):
        checkpoint.load(tmp_path / "part.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not written by minser"):
        checkpoint.load(tmp_path / "other.pt")


def test_labels_that_do_not_match_the_network_are_refused(tmp_path: Path) -> None:
    model = build("cnn", 3, d_model=8, channels=[2, 2, 2])
    for labels in (["x"], [1, 2, 3]):
        path = checkpoint.save(tmp_path / "bad.pt", spec=model.spec, labels=labels, frontend={},
                               state_dict=model.state_dict())
        with pytest.raises(CheckpointError, match=r"bad\.pt: its labels .* network's 3 classes"):
            checkpoint.load(path)
    path = checkpoint.save(tmp_path / "twice.pt", spec=model.spec, labels=["x", "y", "x"], frontend={},
                           state_dict=model.state_dict())
    with pytest.raises(CheckpointError, match=r"twice\.pt: its labels \(\['x', 'y', 'x'\]\) name a class twice"):
        checkpoint.load(path)


def test_damaged_weights_are_refused_not_served(tmp_path: Path) -> None:
    """Bit flips in a stored tensor loaded as changed weights (torch.load checks no CRC); NaN weights scored
    NaN for every input, printed by minser.predict as valid JSON scores."""
    model = _save(tmp_path / "sound.pt")
    raw = bytearray((tmp_path / "sound.pt").read_bytes())
    with zipfile.ZipFile(tmp_path / "sound.pt") as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size >= 16)
    # A stored member's bytes follow its local header: 30 bytes, the name and the extra field.
    start = member.header_offset + 30 + len(member.filename.encode()) + int.from_bytes(
        raw[member.header_offset + 28:member.header_offset + 30], "little")
    raw[start + 5] ^= 0x40
    (tmp_path / "flipped.pt").write_bytes(raw)
    with pytest.raises(CheckpointError, match=rf"flipped\.pt: is damaged: {re.escape(member.filename)} of its "
                                              "archive fails its checksum"):
        checkpoint.load(tmp_path / "flipped.pt")
    weights = model.state_dict()
    weights["classifier.net.0.weight"][0, 0] = float("nan")
    checkpoint.save(tmp_path / "nan.pt", spec=model.spec, labels=["a", "b", "c", "d"], frontend={},
                    state_dict=weights)
    with pytest.raises(CheckpointError, match=r"nan\.pt: weight classifier\.net\.0\.weight holds NaN or Inf"):
        checkpoint.load(tmp_path / "nan.pt")
    # A last.pt serves its weight average (served_state): a NaN there passed the check and scored NaN.
    finite = {name: tensor.clone() for name, tensor in weights.items()}
    finite["classifier.net.0.weight"][0, 0] = 0.0
    checkpoint.save(tmp_path / "ema.pt", spec=model.spec, labels=["a", "b", "c", "d"], frontend={},
                    state_dict=finite, ema={"updates": 3, "state_dict": weights})
    with pytest.raises(CheckpointError, match=r"ema\.pt: averaged weight classifier\.net\.0\.weight holds NaN"):
        checkpoint.load(tmp_path / "ema.pt")


def test_a_zip_that_torch_did_not_write_says_what_torch_found(tmp_path: Path) -> None:
    """The reason was cut at its first ". ", leaving "(RuntimeError: [enforce fail at inline_container.cc:180] )"."""
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("a.txt", "notes")
    with pytest.raises(CheckpointError, match=r"plain\.zip: cannot be loaded as a minser checkpoint \(RuntimeError: "
                                              r"file in archive is not in a subdirectory: a\.txt\); the file is "
                                              "corrupt, truncated or not a checkpoint"):
        checkpoint.load(tmp_path / "plain.zip")


def test_the_last_checkpoint_of_an_ema_run_serves_the_weight_average(tmp_path: Path) -> None:
    """A --ema run's last.pt keeps the raw weights for --resume and the average that training validated and saved
    as best.pt; load_model (Recognizer.load, minser.evaluate, minser.export) served the raw ones."""
    torch.manual_seed(0)
    raw = build("cnn", 4, d_model=8, channels=[2, 2, 2]).eval()
    average = build("cnn", 4, d_model=8, channels=[2, 2, 2]).eval()
    checkpoint.save(tmp_path / "last.pt", spec=raw.spec, labels=["a", "b", "c", "d"], frontend={},
                    state_dict=raw.state_dict(), ema={"updates": 7, "state_dict": average.state_dict()})
    saved = checkpoint.load(tmp_path / "last.pt")
    # The raw weights stay in the dict, for --resume.
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in raw.state_dict().items())
    x = torch.randn(2, 40, 750)
    served = checkpoint.load_model(saved)(x)
    assert torch.equal(served, average(x)) and not torch.allclose(served, raw(x))
