"""Benchmark minser's networks: ``python bench/models.py --help``.

Per registry network (``minser.models.MODELS``, default options, 4 classes), on CPU and, when
present, on the CUDA device:

- parameters;
- inference latency (eval mode, no grad) for one 7.5 s utterance ``(1, 40, 750)`` and for a
  batch of 40 ``(40, 40, 750)``, the median over repeated runs after warm-up;
- real-time factor: latency over the audio it covers (7.5 s for one utterance, 40 x 7.5 s for
  the batch); below 1 is faster than real time;
- training throughput in utterances per second (forward, cross-entropy, backward and an Adam
  step, as ``minser.train`` does), with ``--pad-to full`` (every utterance 750 frames, no
  lengths: the paper's setting) and ``--pad-to batch`` (``minser.train``'s length-bucketed
  batches, cut to the batch's longest utterance, with ``lengths``). The utterance lengths follow
  EmoDB: read from the real WAV headers where ``--data emodb`` finds the corpus (``$MINSER_DATA``,
  else the per-user cache folder), else a documented synthetic distribution (see
  ``_common.emodb_durations``).

The machine these run on may be shared and noisy, so each table also gives ratios measured in the
same run: latency relative to the plain ``cnn`` and the speed-up of ``--pad-to batch`` over
``--pad-to full``. On CUDA, training and inference use ``minser.train``'s default precision
(bf16 autocast, else fp16) and the networks' default kernel path (Triton).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from minser import models  # noqa: E402
from minser.errors import ConfigError  # noqa: E402
from minser.train import autocast_dtype, batch_indices  # noqa: E402

N_CLASSES = 4
N_MELS = 40
PAD_TO = ("full", "batch")
REFERENCE_MODEL = "cnn"


@dataclass(frozen=True)
class Settings:
    """What a run depends on, resolved from the command line."""

    devices: tuple[torch.device, ...]
    models: tuple[str, ...]
    pad_to: tuple[str, ...]
    batch: int
    train_steps: int
    warmup: int
    repeat: int
    seed: int
    markdown: bool = False
    clock: str = "wall"

    @property
    def latency_batches(self) -> tuple[int, ...]:
        """The batch sizes whose inference latency is timed: 1 and ``batch`` (once, when ``--batch 1``)."""
        return tuple(dict.fromkeys((1, self.batch)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/models.py",
        description="Parameters, inference latency, real-time factor and training throughput of every minser "
        "network on CPU (and CUDA when present).",
        epilog="--quick: --models cnn,cat --batch 4 --train-steps 2 --warmup 1 --repeat 3; "
        f"{common.QUICK_HELP}.",
    )
    common.add_common_arguments(parser, device_help="'cpu' or 'cuda': time that device only (default: the CPU, then "
                                "the CUDA device when present)")
    parser.add_argument("--models", help=f"comma-separated networks (default: all of {', '.join(models.MODELS)})")
    parser.add_argument("--pad-to", choices=(*PAD_TO, "both"), default="both",
                        help="training input padding: full (750 frames), batch (the batch's longest) or both")
    parser.add_argument("--batch", type=int, help="batch size of the batched latency and training (default: 40)")
    parser.add_argument("--train-steps", type=int, help="timed training steps per mode (default: 5)")
    parser.add_argument("--warmup", type=int, help="untimed runs before each measurement (default: 2)")
    parser.add_argument("--repeat", type=int, help="timed inference runs (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and lengths (default: 0)")
    return parser


def defaults(quick: bool) -> dict[str, object]:
    """The values of the options left unset, the smaller ones with ``--quick`` (see the parser's epilog)."""
    if quick:
        return {"models": "cnn,cat", "batch": 4, "train_steps": 2, "warmup": 1, "repeat": 3}
    return {"models": ",".join(models.MODELS), "batch": 40, "train_steps": 5, "warmup": 2, "repeat": 10}


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Devices, networks and counts: the options given, else the :func:`defaults`; ConfigError on a bad value."""
    if args.device is None:
        devices = (torch.device("cpu"),) + ((torch.device("cuda"),) if torch.cuda.is_available() else ())
    else:
        devices = (common.resolve_device(args.device),)
    v = common.given_or_default(args, defaults(args.quick))
    names = common.network_names(v["models"])
    common.check_counts({option: v[option] for option in ("batch", "train_steps", "repeat")})
    common.check_counts({"warmup": v["warmup"]}, minimum=0)
    return Settings(
        devices=devices,
        models=names,
        pad_to=PAD_TO if args.pad_to == "both" else (args.pad_to,),
        batch=v["batch"],
        train_steps=v["train_steps"],
        warmup=v["warmup"],
        repeat=v["repeat"],
        seed=args.seed,
        markdown=args.markdown,
        clock=args.clock,
    )


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def real_time_factor(latency_ms: float, utterances: int, seconds: float = common.SECONDS) -> float:
    """Processing time over the duration of the audio processed."""
    return latency_ms * 1e-3 / (utterances * seconds)


def training_batches(frame_lengths: torch.Tensor, batch: int, steps: int, pad_to: str, seed: int) -> list[torch.Tensor]:
    """The lengths of ``steps`` training batches, formed as ``minser.train`` forms them (cycled if too few)."""
    generator = torch.Generator().manual_seed(seed)
    indices = [i for i in batch_indices(frame_lengths, batch, generator, pad_to) if len(i) == batch]
    if not indices:
        raise ConfigError(f"--batch {batch}: larger than the {len(frame_lengths)} utterances to draw from; "
                          "give a smaller --batch")
    return [frame_lengths[indices[i % len(indices)]] for i in range(steps)]


def latency(model: torch.nn.Module, batch: int, device: torch.device, settings: Settings) -> common.Timing:
    """Inference time of ``batch`` full-length utterances (no lengths, as for 7.5 s inputs)."""
    x = torch.randn(batch, N_MELS, common.MAX_FRAMES, generator=torch.Generator().manual_seed(settings.seed)).to(device)
    dtype = autocast_dtype("auto", device)

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return model(x)

    return common.measure(forward, device, warmup=settings.warmup, repeat=settings.repeat, clock_name=settings.clock)


def training_throughput(
    model: torch.nn.Module, batches: Sequence[torch.Tensor], pad_to: str, device: torch.device, settings: Settings
) -> dict:
    """Utterances per second of full training steps over ``batches`` (lengths per batch), after warm-up steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = autocast_dtype("auto", device)
    generator = torch.Generator().manual_seed(settings.seed)
    # Inputs are made before timing: the figure is the model's, not a data loader's.
    inputs = []
    for lengths in batches:
        frames = common.MAX_FRAMES if pad_to == "full" else int(lengths.max())
        x = torch.randn(len(lengths), N_MELS, frames, generator=generator).to(device)
        y = torch.randint(N_CLASSES, (len(lengths),), generator=generator).to(device)
        inputs.append((x, None if pad_to == "full" else lengths.to(device), y))

    def step(x: torch.Tensor, lengths: torch.Tensor | None, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x, lengths=lengths)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    for i in range(settings.warmup):
        step(*inputs[i % len(inputs)])
    common.synchronize(device)
    now = common.clock(settings.clock if device.type == "cpu" else "wall")
    times = []
    for batch_inputs in inputs:
        started = now()
        step(*batch_inputs)
        common.synchronize(device)
        times.append(1e3 * (now() - started))
    utterances = sum(len(b) for b in batches)
    return {
        "utterances_per_s": utterances / (sum(times) * 1e-3),
        "step": common.summarize(times).to_json(),
        "padded_frames_mean": sum(common.MAX_FRAMES if pad_to == "full" else int(b.max()) for b in batches)
        / len(batches),
        "valid_frames_mean": float(torch.cat(list(batches)).float().mean()),
    }


def bench_model(name: str, device: torch.device, batches: dict[str, list[torch.Tensor]], settings: Settings) -> dict:
    """Every measurement of network ``name`` on ``device``; ``batches``: the training batches' lengths per
    ``--pad-to``."""
    torch.manual_seed(settings.seed)
    model = models.build(name, N_CLASSES).to(device).eval()
    row = {"model": name, "device": device.type, "params": count_parameters(model)}
    for batch in settings.latency_batches:
        timing = latency(model, batch, device, settings)
        row[f"b{batch}_ms"] = timing.median_ms
        row[f"b{batch}_spread_pct"] = timing.spread_pct
        row[f"b{batch}_rtf"] = real_time_factor(timing.median_ms, batch)
    for pad_to in settings.pad_to:
        result = training_throughput(model, batches[pad_to], pad_to, device, settings)
        row[f"train_{pad_to}"] = result
        row[f"train_{pad_to}_utt_s"] = result["utterances_per_s"]
    if len(settings.pad_to) == 2:
        row["batch_vs_full"] = row["train_batch_utt_s"] / row["train_full_utt_s"]
    return row


def add_reference_ratios(rows: list[dict], batch: int) -> None:
    """Batched latency of each network over the plain CNN's on the same device (when the CNN ran)."""
    reference = {r["device"]: r[f"b{batch}_ms"] for r in rows if r["model"] == REFERENCE_MODEL}
    for row in rows:
        ref = reference.get(row["device"])
        row[f"b{batch}_vs_cnn"] = row[f"b{batch}_ms"] / ref if ref else None


def run(settings: Settings) -> dict:
    """Measure every network on every device, print the table and return the JSON payload."""
    info = common.environment(settings.devices[-1])
    common.print_header("minser network benchmark", info)
    durations, source = common.emodb_durations()
    frame_lengths = torch.from_numpy(common.frames_of_samples((durations * common.SAMPLE_RATE).round()))
    # Formed before any timing, so that a --batch larger than the utterances fails at once.
    batches = {pad_to: training_batches(frame_lengths, settings.batch, settings.train_steps, pad_to, settings.seed)
               for pad_to in settings.pad_to}
    notes = [f"utterance lengths for --pad-to batch: {source}"]
    if not torch.cuda.is_available():
        notes.append("No CUDA device: GPU latency and throughput need a CUDA run.")
    for note in notes:
        print(f"note: {note}")
    rows = [
        bench_model(name, device, batches, settings) for device in settings.devices for name in settings.models
    ]
    add_reference_ratios(rows, settings.batch)
    b = settings.batch
    columns = ["model", "device", "params"]
    columns += [f"b{n}_{figure}" for n in settings.latency_batches for figure in ("ms", "spread_pct", "rtf")]
    columns += [f"b{b}_vs_cnn"] + [f"train_{p}_utt_s" for p in settings.pad_to]
    columns += ["batch_vs_full"] if len(settings.pad_to) == 2 else []
    print(f"\n### latency in ms (median of {settings.repeat}, {settings.clock} clock on CPU), "
          "RTF = latency / audio duration, "
          f"training in utterances/s (batch {b}, {settings.train_steps} steps)")
    print(common.format_table(rows, columns, markdown=settings.markdown))
    return {
        "benchmark": "models",
        "environment": info,
        "settings": {
            "devices": [str(d) for d in settings.devices], "models": settings.models, "pad_to": settings.pad_to,
            "batch": settings.batch, "train_steps": settings.train_steps, "warmup": settings.warmup,
            "repeat": settings.repeat, "seed": settings.seed, "clock": settings.clock,
        },
        "notes": notes,
        "results": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; a bad option value exits with the usage line and status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with common.option_errors(parser):  # run() too: --batch is checked against the utterances it draws from
        common.check_json(args.json)
        common.apply_threads(args.threads)
        payload = run(resolve_settings(args))
    if args.json:
        common.write_json(args.json, payload)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
