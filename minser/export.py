"""Export trained checkpoints for deployment: an ONNX model (of one network or an ensemble), or a
dynamic-int8 checkpoint.

    python -m minser.export runs/cat/fold-1/best.pt --format onnx            # -> runs/cat/fold-1/best.onnx
    python -m minser.export a.pt b.pt c.pt --format onnx --out ensemble.onnx  # one graph, three networks
    python -m minser.export --quantize int8 --out default.int8.pt   # the shipped default (no CHECKPOINT)

ONNX: the network alone, from log-Mel features to logits, as :class:`minser.Recognizer` runs it.
Inputs ``features`` float32 ``(batch, 40, frames)``, the output of :func:`minser.features.extract`,
and ``lengths`` int64 ``(batch,)`` (its valid frames); output ``logits`` float32 ``(batch, n_classes)``;
batch and frames are dynamic. A network trained with ``--pad-to batch`` masks the frames past
``lengths``, so the features may be cut to the longest valid length (faster); one trained with
``--pad-to full`` saw every utterance padded to 7.5 s and takes all 750 frames as ``extract`` gives
them, and no ``lengths`` input. Several checkpoints become one graph that runs every member on the
same input and outputs ``log(mean_k softmax(logits_k))``, the rule of ``Recognizer.load([...])`` and
``python -m minser.evaluate a b c``: its softmax is the mean of the members' probabilities. The
members must share labels and front end.
The front end (numpy/scipy) runs before the graph, and the softmax after it. The model's metadata
holds, as JSON, the class names (``minser.labels``), front-end settings (``minser.frontend``), the
model spec (``minser.spec``; for an ensemble ``minser.members``, one spec per member) and
``minser.pad_to`` (``"batch"``: features may be cut; ``"full"``: pass all 750 frames) and
``minser.min_frames`` (the fewest frames the features may be cut to; shorter ``lengths`` are raised to
it in the graph). The graph labels one window of at most 7.5 s, as ``extract`` cuts it: label longer
audio as :class:`minser.Recognizer` does, window by window (:func:`minser.recognizer.window_starts`,
7.5 s windows evenly spaced with a hop of at most 3.75 s), averaging the windows' softmax. Exported with
PyTorch's TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17) through the PyTorch
attention path (``impl="torch"``); when onnxruntime is installed the export is checked against
:class:`minser.Recognizer` on random features, and a graph whose logits differ by more than 1e-4 is not written.
``--out`` may not name a checkpoint being exported, nor give an ONNX model the suffix ``.pt`` (or an int8
checkpoint ``.onnx``). Needs the ``onnx`` extra: ``pip install 'minser[onnx]'``.

int8: dynamic quantization of the linear and LSTM layers (``torch.ao.quantization.quantize_dynamic``,
int8 weights, activations quantized per batch at run time, CPU only). The checkpoint keeps the float
weights and adds ``"quantize": "int8"``: weights-only loading cannot read packed int8 LSTM weights,
so :class:`minser.Recognizer` quantizes when it loads the file (deterministically). The ``last.pt`` of a
``--ema`` run gives the weight average, the weights every loader serves (:func:`minser.checkpoint.served_state`).
A ``--speaker-norm`` checkpoint is quantized too: the Recognizer that serves it enrols speakers
(``.for_speaker(...)``), which an ONNX graph cannot. Several checkpoints are quantized one by one, each next to
its source.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from minser import checkpoint, files
from minser.errors import INTERRUPTED_STATUS, CheckpointError, ConfigError, MinserError, plain_warnings
from minser.features import FrontEnd
from minser.recognizer import (Recognizer, ServedNetwork, checked_features, default_checkpoint, log_mean_softmax,
                               refuse_repeated_checkpoints, resolve_checkpoint)
from minser.speakers import refuse_single_recordings

__all__ = ["ONNX_OPSET", "ONNX_TOLERANCE", "MeanProbability", "ServedNetwork", "check_onnx", "export_onnx",
           "float_recognizer", "main", "onnx_bytes", "onnx_logits", "onnx_metadata", "quantize_checkpoint", "served",
           "state_bytes"]

ONNX_OPSET = 17
# Largest |onnxruntime - Recognizer| logit difference an export may show; float32 graphs of every network
# agree to about 1e-6, so more means the graph computes something else and it is not written.
ONNX_TOLERANCE = 1e-4
# Shape of the example input the exporter traces; batch and frames are then declared dynamic.
_TRACE_BATCH, _TRACE_FRAMES = 2, 300


class MeanProbability(torch.nn.Module):
    """Networks as one ensemble: ``log(mean_k softmax(logits_k))`` ``(batch, n_classes)`` of the members'
    logits on the same ``(features, lengths)`` (:func:`~minser.recognizer.log_mean_softmax`, the rule of
    :class:`minser.recognizer.Ensemble`)."""

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return log_mean_softmax([m(features, lengths) for m in self.members])


def _members(recognizer: Recognizer) -> tuple[Recognizer, ...]:
    return getattr(recognizer, "members", (recognizer,))


def served(recognizer: Recognizer) -> torch.nn.Module:
    """The network(s) of ``recognizer`` (one, or an :class:`~minser.recognizer.Ensemble`) as one module
    ``(features, lengths) -> logits`` that computes what :meth:`Recognizer.logits` computes, in torch only."""
    if recognizer.speaker_norm:
        raise ConfigError(f"{recognizer.source or 'the recognizer'}: a --speaker-norm network needs each "
                          "speaker's statistics, which an exported graph cannot take; train without --speaker-norm")
    networks = [ServedNetwork(m.model, m.pass_lengths, m.min_frames) for m in _members(recognizer)]
    return (networks[0] if len(networks) == 1 else MeanProbability(networks)).eval()


def onnx_metadata(recognizer: Recognizer) -> dict[str, str]:
    """The ONNX metadata of ``recognizer``'s graph (module docstring), JSON values."""
    specs = [m.model.spec for m in _members(recognizer)]
    model = {"minser.spec": json.dumps(specs[0])} if len(specs) == 1 else {"minser.members": json.dumps(specs)}
    return {"minser.labels": json.dumps(list(recognizer.labels)),
            "minser.frontend": json.dumps(recognizer.frontend.to_dict()), **model,
            "minser.pad_to": json.dumps("batch" if recognizer.pass_lengths else "full"),
            "minser.min_frames": json.dumps(recognizer.min_frames)}


def onnx_bytes(recognizer: Recognizer, metadata: dict[str, str] | None = None) -> bytes:
    """The ONNX model of a float ``recognizer``'s network(s) (:func:`served`; features, lengths -> logits)
    as bytes; ``metadata`` goes into the model's metadata properties. Raises ConfigError naming the network
    when it cannot be exported."""
    module = served(recognizer)
    name = " + ".join(getattr(m.model, "name", type(m.model).__name__) for m in _members(recognizer))
    try:
        import onnx
    except ImportError as exc:
        raise ConfigError(f"ONNX export of {name!r} needs the onnx package: pip install 'minser[onnx]'") from exc
    # A generator of its own: drawing from the global stream would change the caller's seeded random numbers.
    generator = torch.Generator().manual_seed(0)
    example = (torch.randn(_TRACE_BATCH, recognizer.frontend.n_mels, _TRACE_FRAMES, generator=generator),
               torch.tensor([_TRACE_FRAMES, _TRACE_FRAMES * 2 // 3], dtype=torch.int64))
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), _quiet_tracer():
            torch.onnx.export(
                module, example, buffer, dynamo=False, opset_version=ONNX_OPSET,
                input_names=["features", "lengths"], output_names=["logits"],
                dynamic_axes={"features": {0: "batch", 2: "frames"}, "lengths": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as exc:  # the exporter raises many types for unsupported operators
        raise ConfigError(f"network {name!r} cannot be exported to ONNX: {type(exc).__name__}: {exc}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet_tracer() -> Iterator[None]:
    """Silence the tracer's warnings about the networks' Python-side input checks (shape checks that
    tracing records as constants; they guard the PyTorch path and do not change the exported graph)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def onnx_logits(session: Any, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Logits ``(batch, n_classes)`` of an onnxruntime session of an exported graph, fed the inputs it lists
    (a graph of networks trained on full inputs has no ``lengths``). The inputs are checked as
    :meth:`minser.Recognizer.logits` checks them (ConfigError), by the graph's front end (``minser.frontend``;
    a graph without it is fed unchecked) and inputs: lengths past the frames given failed inside the graph ("Out
    of range value in index tensor"), and a ``--pad-to full`` graph fed cut features gave other logits silently."""
    names = [i.name for i in session.get_inputs()]
    meta = session.get_modelmeta().custom_metadata_map
    if "minser.frontend" in meta:
        try:  # minser.min_frames is newer than the other entries: 1 (no check) in a graph that lacks it
            frontend = FrontEnd.from_dict(json.loads(meta["minser.frontend"]))
            min_frames = json.loads(meta.get("minser.min_frames", "1"))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"onnx_logits: the graph's minser metadata cannot be read ({exc}); export it again "
                              "with python -m minser.export") from exc
        features, lengths = checked_features(features, lengths, frontend, "lengths" in names, min_frames,
                                             "onnx_logits")
    feeds = {"features": features, "lengths": lengths}
    return session.run(["logits"], {name: feeds[name] for name in names})[0]


def check_onnx(data: bytes, recognizer: Recognizer, *, batch: int = 3, seed: int = 0) -> float | None:
    """Largest absolute difference between onnxruntime's logits and :meth:`Recognizer.logits` on random
    features with unequal lengths, of a frame count other than the traced one (all 750 frames when a
    network takes full inputs); ``None`` when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    frames = 517 if recognizer.pass_lengths else recognizer.frontend.n_frames
    generator = torch.Generator().manual_seed(seed)
    features = (10.0 * torch.randn(batch, recognizer.frontend.n_mels, frames, generator=generator) - 40.0).numpy()
    lengths = np.linspace(frames, max(recognizer.min_frames, frames // 5), batch).round().astype(np.int64)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return float(np.abs(onnx_logits(session, features, lengths) - recognizer.logits(features, lengths)).max())


def export_onnx(recognizer: Recognizer, path: str | Path) -> tuple[Path, float | None]:
    """Write the ONNX model of a float ``recognizer`` (one network or an ensemble) to ``path`` atomically,
    with its :func:`onnx_metadata`; return the path and :func:`check_onnx`'s difference (``None`` without
    onnxruntime). Raises ConfigError, writing nothing, when the difference exceeds :data:`ONNX_TOLERANCE`."""
    data = onnx_bytes(recognizer, onnx_metadata(recognizer))
    difference = check_onnx(data, recognizer)
    if difference is not None and not difference <= ONNX_TOLERANCE:  # NaN too: a graph that outputs NaN
        raise ConfigError(f"{recognizer.source or 'the network'}: its ONNX graph disagrees with minser.Recognizer by "
                          f"{difference:.2e} in the logits (more than {ONNX_TOLERANCE:.0e}) on random features, so "
                          f"{path} was not written; serve the .pt checkpoint and report the versions of torch, onnx "
                          "and onnxruntime")
    return files.atomic_write(path, lambda file: file.write(data)), difference


# What a last.pt keeps for --resume alone: an int8 checkpoint serves the weights it names (the ema average, when
# there is one, becomes its state_dict), and best/ema are two more copies of the network (the file tripled).
TRAINING_STATE = ("optimizer", "scaler", "rng", "best", "ema", "history", "world")


def quantize_checkpoint(saved: dict[str, Any], path: str | Path, source: str | Path | None = None) -> Path:
    """Write ``saved`` (read from ``source``, named in errors) with ``"quantize": "int8"`` to ``path``
    atomically, its weights those it serves (:func:`minser.checkpoint.served_state`; see the module docstring)."""
    if saved.get("quantize") is not None:
        raise CheckpointError(f"{source or 'the checkpoint'} is already quantized ({saved['quantize']}); "
                              "quantize the float checkpoint it was made from")
    content = {key: value for key, value in saved.items() if key != "format" and key not in TRAINING_STATE}
    return checkpoint.save(path, **{**content, "state_dict": checkpoint.served_state(saved)}, quantize="int8")


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s serialized weights (``torch.save`` of its state dict): int8 layers count as packed."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m minser.export`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m minser.export", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", metavar="CHECKPOINT",
                   help="a .pt file of minser.train or a one-fold run folder; several make one ONNX ensemble "
                        "(or are quantized one by one); none: the pretrained default shipped inside minser, "
                        "written where --out says")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--format", choices=("onnx",), help="write an ONNX model (features + lengths -> logits)")
    kind.add_argument("--quantize", choices=("int8",), help="write a dynamic-int8 checkpoint for minser.Recognizer")
    p.add_argument("--out", metavar="PATH",
                   help="output file (default: next to CHECKPOINT, as NAME.onnx or NAME.int8.pt; an ONNX ensemble "
                        "needs it; several checkpoints to quantize take none)")
    return p


def float_recognizer(saved: dict[str, Any], source: str | Path) -> Recognizer:
    """The float network of checkpoint ``saved`` (loaded from ``source``) as a recognizer: an int8 one
    (``--quantize int8``) holds the float weights and a flag that quantizes them at load, which is dropped.
    CheckpointError for a ``--speaker-norm`` checkpoint, which needs a speaker's statistics first."""
    refuse_single_recordings(saved, str(source))
    return Recognizer.from_checkpoint({**saved, "quantize": None}, source=str(source))


def _onnx_recognizer(source: Path) -> Recognizer:
    saved = checkpoint.load(source)
    if saved.get("quantize") is not None:
        print(f"note: {source} is an {saved['quantize']} checkpoint, which holds float weights; "
              "the ONNX model is the float network", file=sys.stderr)
    return float_recognizer(saved, source)


def _sources(named: Sequence[str]) -> list[Path]:
    """The checkpoint files ``named`` on the command line name (:func:`resolve_checkpoint`), refused when two
    name one file (an ensemble would count that network twice)."""
    files = [resolve_checkpoint(name) for name in named]
    refuse_repeated_checkpoints(named, files)
    return files


def _output(out: str, sources: list[Path], wrong_suffix: str, writes: str) -> Path:
    """The file ``--out`` names, refused when it is empty, one of ``sources`` (which writing would destroy) or
    ends in ``wrong_suffix`` (what minser would take the file for)."""
    if not out:
        raise ConfigError("--out '': name the file to write")
    path = Path(out)
    if out.endswith(("/", os.sep)):
        raise ConfigError(f"--out {out} names a folder; name the file to write in it")
    if any(path.resolve() == source.resolve() for source in sources):
        raise ConfigError(f"--out {out} is the checkpoint being exported: the {writes} would replace it; "
                          "name another file")
    if path.suffix.lower() == wrong_suffix:  # x.PT is a checkpoint name too
        raise ConfigError(f"--out {out}: an {writes} named {wrong_suffix} would be taken for "
                          f"{'a checkpoint' if wrong_suffix == '.pt' else 'an ONNX model'}; name it "
                          f"{path.with_suffix('.onnx' if wrong_suffix == '.pt' else '.pt').name}")
    return path


def _export_onnx(sources: list[Path], out: str | None) -> None:
    if out is None and len(sources) > 1:
        raise ConfigError(f"--format onnx with {len(sources)} checkpoints writes one ensemble: name it with --out")
    path = sources[0].with_suffix(".onnx") if out is None else _output(out, sources, ".pt", "ONNX model")
    recognizer = Recognizer.ensemble([_onnx_recognizer(s) for s in sources])
    written, difference = export_onnx(recognizer, path)
    check = ("not checked (onnxruntime is not installed)" if difference is None
             else f"max |onnxruntime - Recognizer| = {difference:.2e} on random features")
    what = f"an ensemble of {len(sources)} networks, " if len(sources) > 1 else ""
    print(f"wrote {written} ({what}{written.stat().st_size / 1e3:.1f} kB); {check}")


def _quantize(source: Path, out: str | None) -> None:
    path = source.with_name(f"{source.stem}.int8.pt") if out is None else _output(out, [source], ".onnx",
                                                                                  "int8 checkpoint")
    saved = checkpoint.load(source)
    written = quantize_checkpoint(saved, path, source=source)
    float_model, int8_model = Recognizer.from_checkpoint(saved).model, Recognizer.load(written).model
    print(f"wrote {written} ({written.stat().st_size / 1e3:.1f} kB on disk, float weights + quantize flag); "
          f"weights in memory: float {state_bytes(float_model) / 1e3:.1f} kB, "
          f"int8 {state_bytes(int8_model) / 1e3:.1f} kB")
    if any(isinstance(m, torch.nn.LSTM) for m in float_model.modules()):
        # Measured, not assumed: dynamic-int8 LSTMs made the shipped ILT 1.5x slower than float on CPU.
        print(f"note: {source}'s network has LSTM layers, which run slower in dynamic int8 than in float on "
              "CPU (the shipped ILT: 1.5x slower end to end, docs/BENCHMARKS.md); int8 saves memory here, not "
              "time: for speed serve the float checkpoint or its ONNX export", file=sys.stderr)


@plain_warnings()
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; bad input prints ``error: ...`` and returns 2; Ctrl-C prints one line and returns 130."""
    args = build_parser().parse_args(argv)
    try:
        named = contextlib.nullcontext(_sources(args.checkpoints)) if args.checkpoints else _shipped(args.out)
        with named as sources:
            _export(sources, args)
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Files are written atomically (minser.files.atomic_write): a stopped write leaves the old file, if any.
        print("interrupted; no file is left half-written", file=sys.stderr)
        return INTERRUPTED_STATUS
    return 0


@contextlib.contextmanager
def _shipped(out: str | None) -> Iterator[list[Path]]:
    """The shipped default as the checkpoints to export; ``--out`` is needed: its folder is the installed package."""
    if out is None:
        raise ConfigError("no CHECKPOINT: the pretrained default shipped inside minser is exported, but its folder "
                          "is the installed package: name the file to write with --out")
    with default_checkpoint() as default:
        yield [default]


def _export(sources: list[Path], args: argparse.Namespace) -> None:
    """Write ``sources`` (checkpoint files) as ``args`` say: one ONNX model, or an int8 checkpoint each."""
    if args.format == "onnx":
        _export_onnx(sources, args.out)
    elif args.out is not None and len(sources) > 1:
        raise ConfigError(f"--out names one file, but {len(sources)} checkpoints are quantized one by one; "
                          "drop --out (each goes next to its source as NAME.int8.pt) or quantize them singly")
    else:
        for source in sources:
            _quantize(source, args.out)


if __name__ == "__main__":
    sys.exit(main())
