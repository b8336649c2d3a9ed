"""Export a trained checkpoint for deployment: an ONNX model, or a dynamic-int8 checkpoint.

    python -m minser.export runs/cat/fold-1/best.pt --format onnx            # -> runs/cat/fold-1/best.onnx
    python -m minser.export minser/assets/default.pt --quantize int8 --out default.int8.pt

ONNX: the network alone, from log-Mel features to logits. Inputs ``features`` float32
``(batch, 40, frames)`` and ``lengths`` int64 ``(batch,)`` (valid frames; pass ``frames`` for
unpadded input), output ``logits`` float32 ``(batch, n_classes)``; batch and frames are dynamic.
The front end (:func:`minser.features.extract`, numpy/scipy) runs before it, and the softmax after
it; the model's metadata holds the class names (``minser.labels``), front-end settings
(``minser.frontend``) and model spec (``minser.spec``) as JSON. Exported with PyTorch's TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``, opset 17) through the PyTorch attention path
(``impl="torch"``); when onnxruntime is installed the export is checked against PyTorch on random
features. Needs the ``onnx`` extra: ``pip install 'minser[onnx]'``.

int8: dynamic quantization of the linear and LSTM layers (``torch.ao.quantization.quantize_dynamic``,
int8 weights, activations quantized per batch at run time, CPU only). The checkpoint keeps the float
weights and adds ``"quantize": "int8"``: weights-only loading cannot read packed int8 LSTM weights,
so :class:`minser.Recognizer` quantizes when it loads the file (deterministically).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from minser import checkpoint
from minser.errors import CheckpointError, ConfigError, MinserError

__all__ = ["ONNX_OPSET", "check_onnx", "export_onnx", "main", "onnx_bytes", "quantize_checkpoint", "state_bytes"]

ONNX_OPSET = 17
# Shape of the example input the exporter traces; batch and frames are then declared dynamic.
_TRACE_BATCH, _TRACE_FRAMES = 2, 300


def _model(saved: dict[str, Any]) -> torch.nn.Module:
    """The float network of a loaded checkpoint, on the PyTorch attention path, in eval mode."""
    model = checkpoint.load_model(saved)
    model.set_impl("torch")  # the Triton kernels are CUDA launches that no exporter can trace
    return model.eval()


def onnx_bytes(model: torch.nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The ONNX model of ``model`` (features, lengths -> logits) as bytes; ``metadata`` goes into
    the model's metadata properties. Raises ConfigError naming the network when it cannot be exported."""
    name = getattr(model, "name", type(model).__name__)
    try:
        import onnx
    except ImportError as exc:
        raise ConfigError(f"ONNX export of {name!r} needs the onnx package: pip install 'minser[onnx]'") from exc
    n_mels = model.options.n_mels
    example = (torch.randn(_TRACE_BATCH, n_mels, _TRACE_FRAMES),
               torch.tensor([_TRACE_FRAMES, _TRACE_FRAMES * 2 // 3], dtype=torch.int64))
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), _quiet_tracer():
            torch.onnx.export(
                model.eval(), example, buffer, dynamo=False, opset_version=ONNX_OPSET,
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


def check_onnx(data: bytes, model: torch.nn.Module, *, batch: int = 3, frames: int = 517, seed: int = 0) -> float | None:
    """Largest absolute difference between onnxruntime's and PyTorch's logits on random features of a
    shape other than the traced one, with unequal lengths; ``None`` when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    generator = torch.Generator().manual_seed(seed)
    features = 10.0 * torch.randn(batch, model.options.n_mels, frames, generator=generator) - 40.0
    lengths = torch.linspace(frames, max(model.min_frames, frames // 5), batch).round().to(torch.int64)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"features": features.numpy(), "lengths": lengths.numpy()})[0]
    with torch.no_grad():
        expected = model(features, lengths).numpy()
    return float(np.abs(got - expected).max())


def export_onnx(saved: dict[str, Any], path: str | Path) -> tuple[Path, float | None]:
    """Write the ONNX model of a loaded checkpoint to ``path`` atomically; return the path and
    :func:`check_onnx`'s difference (``None`` without onnxruntime)."""
    model = _model(saved)
    metadata = {"minser.labels": json.dumps(list(saved["labels"])), "minser.frontend": json.dumps(saved["frontend"]),
                "minser.spec": json.dumps(saved["spec"])}
    data = onnx_bytes(model, metadata)
    written = checkpoint.atomic_write(path, lambda file: file.write(data))
    return written, check_onnx(data, model)


def quantize_checkpoint(saved: dict[str, Any], path: str | Path) -> Path:
    """Write ``saved`` with ``"quantize": "int8"`` to ``path`` atomically (see the module docstring)."""
    if saved.get("quantize") is not None:
        raise CheckpointError(f"the checkpoint is already quantized ({saved['quantize']}); quantize the float one")
    content = {key: value for key, value in saved.items() if key not in ("format", "optimizer", "scaler", "rng")}
    return checkpoint.save(path, **content, quantize="int8")


def state_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s serialized weights (``torch.save`` of its state dict): int8 layers count as packed."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m minser.export`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m minser.export", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt file of minser.train or a one-fold run folder")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--format", choices=("onnx",), help="write an ONNX model (features + lengths -> logits)")
    kind.add_argument("--quantize", choices=("int8",), help="write a dynamic-int8 checkpoint for minser.Recognizer")
    p.add_argument("--out", metavar="PATH",
                   help="output file (default: next to CHECKPOINT, as NAME.onnx or NAME.int8.pt)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; bad input prints ``error: ...`` and returns 2."""
    from minser.recognizer import Recognizer, resolve_checkpoint
    from minser.speakers import refuse_single_recordings

    args = build_parser().parse_args(argv)
    try:
        source = resolve_checkpoint(args.checkpoint)
        saved = checkpoint.load(source)
        refuse_single_recordings(saved, str(source))
        if args.format == "onnx":
            out = Path(args.out) if args.out else source.with_suffix(".onnx")
            if saved.get("quantize") is not None:
                print(f"note: {source} is a {saved['quantize']} checkpoint, which holds float weights; "
                      "the ONNX model is the float network", file=sys.stderr)
            written, difference = export_onnx(saved, out)
            check = ("not checked (onnxruntime is not installed)" if difference is None
                     else f"max |onnxruntime - torch| = {difference:.2e} on random features")
            print(f"wrote {written} ({written.stat().st_size / 1e3:.1f} kB); {check}")
        else:
            out = Path(args.out) if args.out else source.with_name(f"{source.stem}.int8.pt")
            written = quantize_checkpoint(saved, out)
            float_model, int8_model = _model(saved), Recognizer.load(written).model
            print(f"wrote {written} ({written.stat().st_size / 1e3:.1f} kB on disk, float weights + quantize flag); "
                  f"weights in memory: float {state_bytes(float_model) / 1e3:.1f} kB, "
                  f"int8 {state_bytes(int8_model) / 1e3:.1f} kB")
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
