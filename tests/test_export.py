"""python -m minser.export: ONNX round trip for every network, int8 checkpoints, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from minser import checkpoint
from minser.errors import CheckpointError, ConfigError
from minser.export import export_onnx, main, onnx_bytes, quantize_checkpoint
from minser.features import FrontEnd
from minser.models import MODELS, build
from minser.models.config import option_names
from minser.recognizer import Recognizer

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra: pip install 'minser[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="the round trip needs onnxruntime: pip install 'minser[onnx]'")

LABELS = ("anger", "boredom", "sadness")
TINY = dict(d_model=8, heads=2, ff_dim=8, layers=1, channels=[2, 2, 2])


def tiny_checkpoint(path, name: str, pad_to: str = "batch"):
    """A small randomly initialised network ``name`` with non-trivial BatchNorm statistics, saved as minser.train does."""
    torch.manual_seed(0)
    options = {key: value for key, value in TINY.items() if key in option_names(MODELS[name].Options)}
    model = build(name, len(LABELS), **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-50.0, -20.0)
                module.running_var.uniform_(100.0, 400.0)
    return checkpoint.save(path, spec=model.spec, labels=LABELS, frontend=FrontEnd().to_dict(),
                           state_dict=model.state_dict(), train={"pad_to": pad_to})


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_matches_pytorch(name, tmp_path):
    saved = checkpoint.load(tiny_checkpoint(tmp_path / f"{name}.pt", name))
    path, difference = export_onnx(saved, tmp_path / f"{name}.onnx")
    # check_onnx runs a batch and a length other than the traced ones, with unequal lengths.
    assert difference is not None and difference < 1e-4
    proto = onnx.load(path)
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert inputs == {"features": ["batch", 40, "frames"], "lengths": ["batch"]}
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(metadata["minser.labels"]) == list(LABELS)
    assert json.loads(metadata["minser.spec"])["name"] == name
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx", f"{name}.pt"]  # no temporary left


def test_onnx_runs_the_recognizers_front_end_output(tmp_path):
    """Front end in numpy, network in onnxruntime: the same probabilities as the Recognizer."""
    from minser.features import extract

    ckpt = tiny_checkpoint(tmp_path / "cnn.pt", "cnn")
    assert main([str(ckpt), "--format", "onnx"]) == 0
    session = onnxruntime.InferenceSession(str(tmp_path / "cnn.onnx"), providers=["CPUExecutionProvider"])
    wave = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    features, lengths = extract(wave)
    logits = session.run(["logits"], {"features": features[:, :, : lengths[0]], "lengths": lengths})[0]
    expected = Recognizer.load(ckpt).predict(wave, sr=16000)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), -1)[0].numpy(),
                               [expected.scores[label] for label in LABELS], atol=1e-5)


def test_export_failure_is_a_config_error_naming_the_network(monkeypatch, tmp_path):
    model = checkpoint.load_model(checkpoint.load(tiny_checkpoint(tmp_path / "cat.pt", "cat")))

    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::foo' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(ConfigError, match=r"network 'cat' cannot be exported to ONNX: RuntimeError: .*aten::foo"):
        onnx_bytes(model)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r"minser\[onnx\]"):
        onnx_bytes(model)


def test_int8_checkpoint_cli(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ilt.pt", "ilt")
    assert main([str(ckpt), "--quantize", "int8"]) == 0
    out = tmp_path / "ilt.int8.pt"
    assert "int8" in capsys.readouterr().out
    saved = checkpoint.load(out)  # weights_only loading works
    assert saved["quantize"] == "int8"
    quantized = Recognizer.load(out).model
    assert isinstance(quantized.classifier.net[0], torch.ao.nn.quantized.dynamic.Linear)
    assert isinstance(quantized.lstm.lstm.forwards[0], torch.ao.nn.quantized.dynamic.LSTM)
    with pytest.raises(CheckpointError, match="already quantized"):
        quantize_checkpoint(saved, tmp_path / "twice.pt")


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pt"), "--format", "onnx"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x.pt")])  # neither --format nor --quantize
