"""python -m minser.export: ONNX round trip for every network, int8 checkpoints, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from minser import checkpoint
from minser.errors import CheckpointError, ConfigError
from minser.export import export_onnx, main, onnx_bytes, onnx_logits, quantize_checkpoint
from minser.features import FrontEnd, extract
from minser.models import MODELS, build
from minser.models.config import option_names
from minser.recognizer import Recognizer

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra: pip install 'minser[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="the round trip needs onnxruntime: pip install 'minser[onnx]'")

LABELS = ("anger", "boredom", "sadness")
TINY = dict(d_model=8, heads=2, ff_dim=8, layers=1, channels=[2, 2, 2])


def tiny_checkpoint(path, name: str, pad_to: str = "batch", labels=LABELS):
    """A small randomly initialised network ``name`` with non-trivial BatchNorm statistics, saved as minser.train does."""
    torch.manual_seed(0)
    options = {key: value for key, value in TINY.items() if key in option_names(MODELS[name].Options)}
    model = build(name, len(labels), **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.uniform_(-50.0, -20.0)
                module.running_var.uniform_(100.0, 400.0)
    return checkpoint.save(path, spec=model.spec, labels=labels, frontend=FrontEnd().to_dict(),
                           state_dict=model.state_dict(), train={"pad_to": pad_to})


def graph_inputs(path) -> dict[str, list]:
    proto = onnx.load(path)
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}


def graph_metadata(path) -> dict:
    return {entry.key: json.loads(entry.value) for entry in onnx.load(path).metadata_props}


def onnx_probabilities(path, wave: np.ndarray, recognizer: Recognizer) -> np.ndarray:
    """Front end in numpy, network in onnxruntime, softmax: label probabilities of one short wave, its
    features cut as ``recognizer`` cuts them."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features, lengths = extract(wave)
    features = recognizer.cut(features, lengths)
    return torch.softmax(torch.from_numpy(onnx_logits(session, features, lengths)), -1)[0].numpy()


def short_wave(seconds: float = 1.5) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_matches_the_recognizer(name, tmp_path):
    path, difference = export_onnx(Recognizer.load(tiny_checkpoint(tmp_path / f"{name}.pt", name)),
                                   tmp_path / f"{name}.onnx")
    # check_onnx runs a batch and a length other than the traced ones, with unequal lengths.
    assert difference is not None and difference < 1e-4
    assert graph_inputs(path) == {"features": ["batch", 40, "frames"], "lengths": ["batch"]}
    metadata = graph_metadata(path)
    assert metadata["minser.labels"] == list(LABELS) and metadata["minser.pad_to"] == "batch"
    assert metadata["minser.spec"]["name"] == name and metadata["minser.frontend"] == FrontEnd().to_dict()
    assert metadata["minser.min_frames"] == Recognizer.load(tmp_path / f"{name}.pt").min_frames
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx", f"{name}.pt"]  # no temporary left


def test_onnx_raises_short_lengths_to_the_networks_minimum_as_the_recognizer_does(tmp_path):
    recognizer = Recognizer.load(tiny_checkpoint(tmp_path / "cat.pt", "cat"))
    path, _ = export_onnx(recognizer, tmp_path / "cat.onnx")
    features = np.random.default_rng(0).normal(-40.0, 10.0, (2, 40, 60)).astype(np.float32)
    lengths = np.array([60, 2], dtype=np.int64)
    assert lengths.min() < recognizer.min_frames  # a row the network cannot take as it is
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"features": features, "lengths": lengths})[0]
    np.testing.assert_allclose(got, recognizer.logits(features, lengths), atol=1e-4)


def session_of(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_logits_checks_its_inputs_as_the_recognizer_does(tmp_path):
    """Lengths past the frames given failed inside the graph ("Out of range value in index tensor"), and a graph
    trained on full inputs fed cut features gave other logits without a word."""
    features = np.random.default_rng(0).normal(-40.0, 10.0, (1, 40, 750)).astype(np.float32)
    for pad_to, x, n, message in (("batch", features[:, :, :15], [40], r"lengths \[40\] outside 1 to 15"),
                                  ("full", features[:, :, :160], [100], r"features of 160 frames, but the network was "
                                                                        r"trained on full inputs")):
        path, _ = export_onnx(Recognizer.load(tiny_checkpoint(tmp_path / f"{pad_to}.pt", "ilt", pad_to=pad_to)),
                              tmp_path / f"{pad_to}.onnx")
        session = session_of(path)
        with pytest.raises(ConfigError, match=rf"^onnx_logits: {message}"):
            onnx_logits(session, x, np.array(n))
        assert onnx_logits(session, features, np.array([100], dtype=np.int32)).shape == (1, len(LABELS))  # int64 fed
    # Metadata of earlier versions (no minser.min_frames) and of other tools (not JSON) is read as it comes.
    proto = onnx.load(tmp_path / "batch.onnx")
    kept = {entry.key: entry.value for entry in proto.metadata_props if entry.key != "minser.min_frames"}
    onnx.helper.set_model_props(proto, {**kept, "author": "not JSON"})
    older = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(onnx_logits(older, features[:, :, :100], np.array([100])),
                               onnx_logits(session_of(tmp_path / "batch.onnx"), features[:, :, :100], np.array([100])))
    with pytest.raises(ConfigError, match=r"^onnx_logits: lengths \[40\] outside 1 to 15"):
        onnx_logits(older, features[:, :, :15], np.array([40]))


@pytest.mark.parametrize("pad_to", ["batch", "full"])
def test_onnx_runs_the_recognizers_front_end_output(pad_to, tmp_path):
    """Front end in numpy, network in onnxruntime: the same probabilities as the Recognizer, for a network
    trained on cut features (which may be cut) and one trained on full 7.5 s inputs (which sees no lengths)."""
    ckpt = tiny_checkpoint(tmp_path / "ilt.pt", "ilt", pad_to=pad_to)
    assert main([str(ckpt), "--format", "onnx"]) == 0
    path, wave = tmp_path / "ilt.onnx", short_wave()
    assert graph_metadata(path)["minser.pad_to"] == pad_to
    assert set(graph_inputs(path)) == ({"features", "lengths"} if pad_to == "batch" else {"features"})
    recognizer = Recognizer.load(ckpt)
    expected = recognizer.predict(wave, sr=16000)
    np.testing.assert_allclose(onnx_probabilities(path, wave, recognizer),
                               [expected.scores[label] for label in LABELS], atol=1e-5)
    # The full-input network scores the padding it was trained with: masking it would change the result.
    masked = Recognizer.load(ckpt)
    masked.pass_lengths = True
    changed = masked.predict(wave, sr=16000).scores
    assert (pad_to == "batch") == np.allclose([changed[k] for k in LABELS], [expected.scores[k] for k in LABELS],
                                              atol=1e-5)


def test_onnx_ensemble_is_the_recognizers_ensemble(tmp_path, capsys):
    """Three networks (one trained on full inputs) in one graph: the probabilities of Recognizer.load([...])."""
    ckpts = [tiny_checkpoint(tmp_path / "ilt.pt", "ilt"), tiny_checkpoint(tmp_path / "cat.pt", "cat"),
             tiny_checkpoint(tmp_path / "cnn.pt", "cnn", pad_to="full")]
    out = tmp_path / "ensemble.onnx"
    assert main([*map(str, ckpts), "--format", "onnx", "--out", str(out)]) == 0
    assert "an ensemble of 3 networks" in capsys.readouterr().out
    metadata = graph_metadata(out)
    assert [spec["name"] for spec in metadata["minser.members"]] == ["ilt", "cat", "cnn"]
    assert metadata["minser.pad_to"] == "full" and "minser.spec" not in metadata
    wave = short_wave()
    ensemble = Recognizer.load(ckpts)
    expected = ensemble.predict(wave, sr=16000)
    got = onnx_probabilities(out, wave, ensemble)
    np.testing.assert_allclose(got, [expected.scores[label] for label in LABELS], atol=1e-5)
    alone = [Recognizer.load(c).predict(wave, sr=16000).scores for c in ckpts]
    np.testing.assert_allclose(got, np.mean([[s[label] for label in LABELS] for s in alone], axis=0), atol=1e-5)


def test_onnx_ensemble_errors(tmp_path, capsys):
    a, b = tiny_checkpoint(tmp_path / "a.pt", "cnn"), tiny_checkpoint(tmp_path / "b.pt", "ilt")
    assert main([str(a), str(b), "--format", "onnx"]) == 2
    assert "name it with --out" in capsys.readouterr().err
    other = tiny_checkpoint(tmp_path / "other.pt", "cnn", labels=("anger", "boredom", "neutral"))
    assert main([str(a), str(other), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert f"{other} differs from {a} in its labels" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_export_failure_is_a_config_error_naming_the_network(monkeypatch, tmp_path):
    recognizer = Recognizer.load(tiny_checkpoint(tmp_path / "cat.pt", "cat"))

    def unsupported(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::foo' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(ConfigError, match=r"network 'cat' cannot be exported to ONNX: RuntimeError: .*aten::foo"):
        onnx_bytes(recognizer)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r"minser\[onnx\]"):
        onnx_bytes(recognizer)


def test_export_leaves_the_callers_random_stream_alone(tmp_path):
    """The traced example was drawn from the global stream: a seeded application saw other random numbers
    after an export."""
    recognizer = Recognizer.load(tiny_checkpoint(tmp_path / "cnn.pt", "cnn"))
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    export_onnx(recognizer, tmp_path / "cnn.onnx")
    onnx_bytes(recognizer)
    assert torch.equal(torch.rand(3), expected)


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("minser.export.export_onnx", interrupted)
    try:
        status = main([str(tiny_checkpoint(tmp_path / "cnn.pt", "cnn")), "--format", "onnx"])
    except KeyboardInterrupt:  # uncaught, it would end the pytest session rather than fail
        pytest.fail("Ctrl-C escaped main")
    assert status == 130
    assert capsys.readouterr().err == "interrupted; no file is left half-written\n"


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
    with pytest.raises(CheckpointError, match="the checkpoint is already quantized"):
        quantize_checkpoint(saved, tmp_path / "twice.pt")


def test_int8_of_a_last_checkpoint_drops_what_only_resume_reads(tmp_path):
    """best and ema, two more copies of the weights, and the history went into the int8 file; the int8 file of
    a --ema run's last.pt kept the raw weights, not the average that training validated."""
    ckpt = tiny_checkpoint(tmp_path / "ilt.pt", "ilt")
    saved = checkpoint.load(ckpt)
    weights = saved["state_dict"]
    average = {k: v + 0.5 if v.is_floating_point() else v for k, v in weights.items()}
    last = checkpoint.save(tmp_path / "last.pt", **{k: v for k, v in saved.items() if k != "format"},
                           optimizer={}, rng=[{}], history=[{"loss": 1.0}], world=1,
                           best={"state_dict": weights, "epoch": 1}, ema={"updates": 7, "state_dict": average})
    assert main([str(last), "--quantize", "int8"]) == 0
    int8 = checkpoint.load(tmp_path / "last.int8.pt")
    assert set(int8) == set(saved) | {"quantize"}
    assert all(torch.equal(int8["state_dict"][k], v) for k, v in average.items())


@pytest.mark.filterwarnings("ignore:for_speaker:UserWarning")  # enrols from fewer than 10 recordings
def test_a_speaker_norm_checkpoint_is_quantized_but_not_exported_to_onnx(tmp_path, capsys):
    """--quantize int8 refused it as "an exported model cannot take" enrolment, but the Recognizer that serves
    an int8 checkpoint enrols speakers."""
    saved = checkpoint.load(tiny_checkpoint(tmp_path / "plain.pt", "ilt"))
    normed = checkpoint.save(tmp_path / "spk.pt", **{k: v for k, v in saved.items() if k != "format"},
                             speaker_norm={"03": [[-40.0] * 40, [10.0] * 40]})
    assert main([str(normed), "--quantize", "int8"]) == 0
    capsys.readouterr()
    int8 = Recognizer.load(tmp_path / "spk.int8.pt")
    assert int8.speaker_norm and checkpoint.load(tmp_path / "spk.int8.pt")["quantize"] == "int8"
    enrolled = int8.for_speaker([short_wave(3.0)], sr=16000)
    assert sum(enrolled.predict(short_wave(), sr=16000).scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert main([str(normed), "--format", "onnx"]) == 2
    assert (f"error: {normed}: trained with --speaker-norm, so its inputs must be standardised with each speaker's "
            "statistics over several recordings, which an exported model cannot take" in capsys.readouterr().err)
    assert not (tmp_path / "spk.onnx").exists()


def test_int8_quantizes_several_checkpoints_one_by_one(tmp_path, capsys):
    a, b = tiny_checkpoint(tmp_path / "a.pt", "cnn"), tiny_checkpoint(tmp_path / "b.pt", "ilt")
    assert main([str(a), str(b), "--quantize", "int8", "--out", str(tmp_path / "both.pt")]) == 2
    assert "quantized one by one" in capsys.readouterr().err and not (tmp_path / "both.pt").exists()
    assert main([str(a), str(b), "--quantize", "int8"]) == 0
    assert [checkpoint.load(tmp_path / f"{n}.int8.pt")["spec"]["name"] for n in "ab"] == ["cnn", "ilt"]
    notes = [line for line in capsys.readouterr().err.splitlines() if "slower in dynamic int8" in line]
    assert len(notes) == 1 and str(b) in notes[0]  # the LSTM network (ilt) gets the note, the cnn does not


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pt"), "--format", "onnx"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x.pt")])  # neither --format nor --quantize
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "a.pt b.pt c.pt --format onnx --out ensemble.onnx" in capsys.readouterr().out  # examples in the help


@pytest.mark.parametrize(("difference", "shown"), [(0.25, "2.50e-01"), (float("nan"), "nan")])
def test_an_onnx_graph_that_disagrees_with_the_recognizer_is_not_written(monkeypatch, tmp_path, capsys, difference,
                                                                         shown):
    """NaN too: compared with `>`, a graph whose logits were NaN passed the check."""
    ckpt = tiny_checkpoint(tmp_path / "cat.pt", "cat")
    monkeypatch.setattr("minser.export.check_onnx", lambda data, recognizer: difference)
    assert main([str(ckpt), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert f"error: {ckpt}: its ONNX graph disagrees with minser.Recognizer by {shown}" in err
    assert f"{tmp_path / 'cat.onnx'} was not written; serve the .pt checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.pt"]


@pytest.mark.parametrize(("options", "message"), [
    (["--format", "onnx", "--out", "{ckpt}"], "--out {ckpt} is the checkpoint being exported: the ONNX model would "
                                              "replace it; name another file"),
    (["--quantize", "int8", "--out", "{dir}/../{dir.name}/ilt.pt"], "is the checkpoint being exported: the int8 "
                                                                    "checkpoint would replace it"),
    (["--format", "onnx", "--out", "{dir}/ilt.onnx.pt"], "an ONNX model named .pt would be taken for a checkpoint; "
                                                         "name it ilt.onnx.onnx"),
    (["--quantize", "int8", "--out", "{dir}/small.onnx"], "an int8 checkpoint named .onnx would be taken for an ONNX "
                                                          "model; name it small.pt"),
    (["--format", "onnx", "--out", "{dir}/small.PT"], "an ONNX model named .pt would be taken for a checkpoint"),
    (["--format", "onnx", "--out", ""], "--out '': name the file to write"),
    (["--format", "onnx", "--out", "{dir}/new/"], "--out {dir}/new/ names a folder; name the file to write in it"),
])
def test_an_out_that_would_destroy_or_mislabel_is_refused_before_anything_is_written(options, message, tmp_path,
                                                                                     capsys):
    ckpt = tiny_checkpoint(tmp_path / "ilt.pt", "ilt")
    before = ckpt.read_bytes()
    assert main([str(ckpt), *(o.format(ckpt=ckpt, dir=tmp_path) for o in options)]) == 2
    assert message.format(ckpt=ckpt, dir=tmp_path) in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ilt.pt"] and ckpt.read_bytes() == before


def test_a_checkpoint_named_twice_is_refused_and_a_quantized_one_is_named(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "run" / "fold-1" / "best.pt", "cnn")
    run = tmp_path / "run"
    assert main([str(run), str(ckpt), "--format", "onnx", "--out", str(tmp_path / "e.onnx")]) == 2
    assert f"error: {run} and {ckpt} name the same checkpoint; name each checkpoint once" in capsys.readouterr().err
    assert not (tmp_path / "e.onnx").exists()
    assert main([str(ckpt), "--quantize", "int8"]) == 0
    assert main([str(run / "fold-1" / "best.int8.pt"), "--quantize", "int8"]) == 2
    assert (f"error: {run / 'fold-1' / 'best.int8.pt'} is already quantized (int8); quantize the float checkpoint"
            in capsys.readouterr().err)


def test_no_checkpoint_exports_the_shipped_default_to_out(tmp_path, capsys):
    """The shipped default lives inside the installed package, whose path a user does not type: with no
    CHECKPOINT it is exported, and --out is required (its own folder is the package)."""
    from minser.recognizer import default_checkpoint

    assert main(["--quantize", "int8"]) == 2
    assert capsys.readouterr().err == ("error: no CHECKPOINT: the pretrained default shipped inside minser is exported, "
                                       "but its folder is the installed package: name the file to write with --out\n")
    assert main(["--format", "onnx", "--out", str(tmp_path / "default.onnx")]) == 0
    with default_checkpoint() as default:
        shipped = checkpoint.load(default)
    exported = graph_metadata(tmp_path / "default.onnx")
    assert exported["minser.labels"] == shipped["labels"] and exported["minser.frontend"] == shipped["frontend"]


def test_the_onnx_check_measures_the_graph_against_the_recognizer(tmp_path):
    """check_onnx returning 0.0 passed every test: it must see a graph of other weights."""
    from minser.export import ONNX_TOLERANCE, check_onnx, onnx_metadata

    rec = Recognizer.load(tiny_checkpoint(tmp_path / "ilt.pt", "ilt"))
    data = onnx_bytes(rec, onnx_metadata(rec))
    assert check_onnx(data, rec) <= ONNX_TOLERANCE
    other = Recognizer.load(tmp_path / "ilt.pt")
    with torch.no_grad():
        other.model.classifier.net[-1].bias.add_(torch.tensor([0.5, -0.5, 0.0]))
    assert check_onnx(data, other) == pytest.approx(0.5, abs=0.01)
