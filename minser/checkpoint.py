"""Checkpoints: plain dicts of tensors and JSON-able values, written atomically (:mod:`minser.files`), read as data.

A checkpoint is ``{"format": "minser/1", "spec", "labels", "frontend", "state_dict", ...}``:
the model spec (``model.spec``, rebuilt with :func:`minser.models.from_spec`), the class names in
output order, the front-end settings (``FrontEnd.to_dict()``) and the weights, plus whatever
JSON-able extras the trainer adds (data, split, epoch, metrics, optimizer and RNG states).

:func:`load` uses ``torch.load(..., weights_only=True)``, so a checkpoint can never run code:
only tensors, dicts, lists, tuples, str, int, float, bool and None may be stored.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from minser.errors import CheckpointError, ConfigError
from minser.files import atomic_write

FORMAT = "minser/1"
REQUIRED = ("spec", "labels", "frontend", "state_dict")

__all__ = ["FORMAT", "built_from", "load", "load_model", "save", "served_state"]


def save(path: str | os.PathLike, *, spec: dict, labels: list[str] | tuple[str, ...], frontend: dict,
         state_dict: dict[str, torch.Tensor], **extra: Any) -> Path:
    """Atomically save a checkpoint to ``path``; ``extra`` entries must be tensors or JSON-able values."""
    checkpoint = {"format": FORMAT, "spec": spec, "labels": list(labels), "frontend": dict(frontend),
                  "state_dict": {name: tensor.detach().cpu() for name, tensor in state_dict.items()}, **extra}
    # Serialised in memory first: torch.save writing to a full disk raises a RuntimeError that names neither
    # the file nor the cause; atomic_write reports a failed write as it is.
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return atomic_write(path, lambda file: file.write(buffer.getbuffer()))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save` onto the CPU, as data only (``weights_only=True``).

    Raises :class:`CheckpointError` naming ``path`` when it is missing, unreadable, holds
    anything but tensors and plain values, or lacks one of the required entries.
    """
    path = Path(path)
    if path.is_dir():  # the command lines and Recognizer.load take a run folder; this function takes its files
        raise CheckpointError(f"{path}: a folder, not a checkpoint file; pass one of its fold-<k>/best.pt (or give the "
                              "folder to minser.Recognizer.load or python -m minser.evaluate, which find them)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass a .pt file written by minser.train "
                              "(e.g. runs/<run>/fold-1/best.pt) or a run folder")
    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path}: an ONNX model, which runs in onnxruntime (README, Export); minser loads the "
                              ".pt checkpoint it was exported from")
    if not zipfile.is_zipfile(path):
        # torch.load would try the bytes as a legacy pickle and report its first byte as an opcode.
        raise CheckpointError(f"{path}: cannot be loaded as a minser checkpoint (it is no zip archive, which is what "
                              "torch.save writes); the file is truncated, corrupt or not a checkpoint: pass a .pt file "
                              "written by minser.train")
    damaged = _first_damaged_member(path)
    if damaged is not None:  # torch.load does not check the archive's CRCs: flipped bits would load as weights
        raise CheckpointError(f"{path}: is damaged: {damaged} of its archive fails its checksum (a disk or copy "
                              "error); copy the checkpoint again or re-train")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, weights_only) for bad files
        raise CheckpointError(f"{path}: cannot be loaded as a minser checkpoint ({_load_failure(exc)}); the file "
                              "is corrupt, truncated or not a checkpoint (minser reads checkpoints as data only, "
                              "never as code)") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        if isinstance(found, str) and found.startswith("minser/"):
            raise CheckpointError(f"{path}: format {found!r}, written by another version of minser (this one reads "
                                  f"{FORMAT!r}); load it with the minser version that wrote it, or upgrade minser")
        raise CheckpointError(f"{path}: format {found!r} is not {FORMAT!r}; it was not written by minser.train")
    missing = [key for key in REQUIRED if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}; re-train to write a complete one")
    labels, spec = checkpoint["labels"], checkpoint["spec"]
    if not isinstance(spec, dict) or not {"name", "n_classes", "options"} <= set(spec):
        raise CheckpointError(f"{path}: its model spec ({spec!r:.80}) is not a dict of name, n_classes and options; "
                              "the file was edited or is damaged: use the checkpoint minser.train wrote")
    n_classes = spec["n_classes"]
    if not isinstance(labels, (list, tuple)) or not all(isinstance(label, str) for label in labels) \
            or len(labels) != n_classes:
        raise CheckpointError(f"{path}: its labels ({labels!r}) do not name the network's {n_classes} classes one "
                              "string each; the file was edited or is damaged: use the checkpoint minser.train wrote")
    if len(set(labels)) != len(labels):  # scores keyed by label would drop classes
        raise CheckpointError(f"{path}: its labels ({labels!r}) name a class twice; the file was edited or is "
                              "damaged: use the checkpoint minser.train wrote")
    states = {"weight": checkpoint["state_dict"]}
    ema = checkpoint.get("ema")
    if isinstance(ema, dict) and "state_dict" in ema:  # the weight average too: a last.pt serves it (served_state)
        states["averaged weight"] = ema["state_dict"]
    for kind, state in states.items():
        broken = next((name for name, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point()
                       and not torch.isfinite(t).all()), None) if isinstance(state, dict) else None
        if broken is not None:  # training stops before saving such weights: they would score NaN for every input
            raise CheckpointError(f"{path}: {kind} {broken} holds NaN or Inf; the file was edited or is damaged: use "
                                  "the checkpoint minser.train wrote")
    return checkpoint


def _first_damaged_member(path: Path) -> str | None:
    """The first member of the zip archive at ``path`` whose bytes fail their CRC, or None (all sound)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):  # cut or unreadable: torch.load reports it below
        return None


def _load_failure(exc: Exception) -> str:
    """What torch found wrong with a file, without the advice its weights-only errors add (load with
    ``weights_only=False``, or allowlist the class): both would let a file run code."""
    text = str(exc)
    blocked = re.search(r"unsupported GLOBAL (\S+)", text)  # torch's word for a module it will not import
    if blocked:
        return f"it holds more than tensors and plain values: a reference to {blocked[1]}"
    if "WeightsUnpickler error:" in text:
        lines = text.split("WeightsUnpickler error:", 1)[1].splitlines()
        detail = next((line.strip() for line in lines if line.strip()), "").split(" was not an allowed global")[0]
        return f"it holds more than tensors and plain values: {detail}"
    # The first sentence, less the location in torch's C++ sources that prefixes its archive errors
    # ("[enforce fail at inline_container.cc:180] . file in archive is not in a subdirectory: a.txt").
    first = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", text.splitlines()[0]) if text else ""
    return f"{type(exc).__name__}: {first.split('. ')[0] or 'no message'}"


QUANTIZATIONS = ("int8",)
"""Values of a checkpoint's ``"quantize"`` entry (``python -m minser.export --quantize int8``: float weights, quantized
when loaded)."""


def quantization(checkpoint: dict[str, Any], name: str) -> str | None:
    """The checkpoint's ``"quantize"`` entry (None: a float checkpoint); CheckpointError naming ``name`` (its file)
    for a value minser does not write."""
    quantize = checkpoint.get("quantize")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise CheckpointError(f"{name}: quantize={quantize!r} is unknown; minser writes only "
                              f"{' or '.join(map(repr, QUANTIZATIONS))}")
    return quantize


@contextlib.contextmanager
def built_from(checkpoint: dict[str, Any], name: str | os.PathLike) -> Iterator[None]:
    """Within it, rebuilding what the loaded ``checkpoint`` (the file ``name``) records raises CheckpointError naming
    the file: a model spec or front end that cannot be built (their ConfigError names only the setting), or weights
    that do not fit the network (PyTorch's RuntimeError names neither)."""
    try:
        yield
    except ConfigError as exc:
        raise CheckpointError(f"{name}: {exc}; the file was edited or written by another version") from exc
    except (RuntimeError, KeyError, TypeError) as exc:  # TypeError: a state_dict that is no dict
        spec = checkpoint.get("spec")
        raise CheckpointError(f"{name}: weights do not fit the network "
                              f"{spec.get('name') if isinstance(spec, dict) else None!r} ({exc}); the file was edited "
                              "or written by another version") from exc


def served_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a loaded checkpoint serves: the moving average of its ``ema`` entry when it holds one (the
    ``last.pt`` of a ``--ema`` run keeps the raw weights too, for ``--resume``; the average is what training
    validated, selected and saved as ``best.pt``), else its ``state_dict``."""
    ema = checkpoint.get("ema")
    return checkpoint["state_dict"] if ema is None else ema["state_dict"]


def load_model(checkpoint: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model of a loaded checkpoint (``from_spec``) with the weights it serves (:func:`served_state`),
    in eval mode."""
    from minser.models import from_spec

    with torch.random.fork_rng(devices=[]):  # initial weights, replaced below: the caller's random stream stays put
        model = from_spec(checkpoint["spec"])
    model.load_state_dict(served_state(checkpoint))
    return model.eval()
