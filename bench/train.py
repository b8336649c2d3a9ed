"""Time a few epochs of the paper's training protocol, with full and length-bucketed padding, and extrapolate
them to the whole protocol (its folds x 100 epochs).

Runs ``minser.train`` for real (default: CAT, EmoDB 4 classes, random protocol, default widths,
batch 40, noise copies) for ``--epochs`` epochs of the first fold, once with ``--pad-to full``
(every utterance 7.5 s: the paper) and once with ``--pad-to batch`` (length-bucketed batches),
in one process, one after the other. From the per-epoch times in each run's ``metrics.json`` it
reports the median epoch time, the ratio full / batch, and an extrapolation to the full
protocol, ``setup + folds * 100 * median epoch``, where folds is the protocol's fold count as
``minser.train`` forms its splits (random: 5; EmoDB's speaker protocol: 10; all: 1) and setup is the
measured one-off cost (features from the cache, the noisy copies, model building). The extrapolation is
printed as such: it assumes every epoch costs what the measured ones did. A second estimate
uses each epoch's CPU seconds (all threads) divided by ``--threads``: what the epoch would take
on an unshared machine, robust to other processes competing for the cores.

The machine may be shared; the ratio measured in one run is the robust figure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from minser.errors import INTERRUPTED_STATUS, ConfigError, MinserError  # noqa: E402
from minser.train import HelpFormatter, TrainConfig, given_settings, load_data, make_splits  # noqa: E402
from minser.train import main as train  # noqa: E402
from minser.train import parse_args as parse_train_args  # noqa: E402

FULL_EPOCHS = 100
# The minser.train settings (dests) this script sets itself: given again through --train-arg, the last one would
# win and both rows would silently run alike (two --pad-to batch rows labelled full and batch).
OWN_TRAIN_SETTINGS = ("model", "pad_to", "epochs", "folds", "threads", "device", "out", "resume")


def protocol_folds(config: TrainConfig) -> int:
    """The folds of the whole protocol ``config`` runs, as minser.train forms them (its corpus listing and
    splits; no features are computed)."""
    return len(make_splits(load_data(config), config))


def time_run(model: str, pad_to: str, epochs: int, threads: int, device: str, extra: list[str], folds: int) -> dict:
    """Train fold 1 for ``epochs`` epochs; per-epoch seconds, the one-off setup seconds and the extrapolation to
    ``folds`` folds of :data:`FULL_EPOCHS` epochs."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        started = time.perf_counter()
        train(["--model", model, "--pad-to", pad_to, "--epochs", str(epochs), "--folds", "1",
               "--threads", str(threads), "--device", device, "--out", str(out), *extra])
        total = time.perf_counter() - started
        history = json.loads((out / "fold-1" / "metrics.json").read_text())["history"]
    epoch_seconds = [h["seconds"] for h in history]
    # The first epoch carries warm-up (allocator, kernel caches): time it, but take the median.
    median = statistics.median(epoch_seconds[1:] or epoch_seconds)
    median_cpu = statistics.median([h["cpu_seconds"] for h in history][1:] or [history[0]["cpu_seconds"]])
    setup = total - sum(epoch_seconds)
    return {"pad_to": pad_to, "epochs": epochs, "epoch_seconds": epoch_seconds, "median_epoch_s": median,
            "median_epoch_cpu_s": median_cpu, "setup_s": setup,
            "extrapolated_protocol_min": (setup + folds * FULL_EPOCHS * median) / 60,
            # On an unshared machine an epoch takes about its CPU seconds over the threads that ran it.
            "extrapolated_unshared_min": (setup + folds * FULL_EPOCHS * median_cpu / threads) / 60}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/train.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--model", default="cat", help="network to train")
    parser.add_argument("--epochs", type=int, help="epochs timed per padding mode, >= 2 (default: 3; --quick: 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the training default)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--json", metavar="PATH", help="also write the results and the environment to this JSON file")
    parser.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                        help="extra argument passed to minser.train (repeatable), e.g. --train-arg=--subset=20")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 epochs on 6 utterances per class (its extrapolation means nothing); "
                        f"{common.QUICK_HELP}")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with --epochs filled in and, with --quick, ``--subset=6`` put before the --train-arg options
    (minser.train takes the last of a repeated option, so a --subset given there wins)."""
    epochs = common.given_or_default(args, {"epochs": 2 if args.quick else 3})["epochs"]
    train_arg = ["--subset=6", *args.train_arg] if args.quick else args.train_arg
    return argparse.Namespace(**{**vars(args), "epochs": epochs, "train_arg": train_arg})


def _check_train_args(train_arg: list[str]) -> None:
    """Raise ConfigError for --train-arg values that give a setting of :data:`OWN_TRAIN_SETTINGS`, read as
    minser.train reads them (``--pad=batch`` is ``--pad-to batch``)."""
    for dest, flag in given_settings(train_arg):
        if dest in OWN_TRAIN_SETTINGS:
            raise ConfigError(f"--train-arg gives minser.train's {flag}, which bench/train.py sets itself (it runs "
                              "fold 1 of each padding mode in a temporary folder, with its own --model, --epochs, "
                              "--threads and --device); drop it")


def main(argv: list[str] | None = None) -> int:
    """Time both padding modes and print the table; a bad option exits 2 with the usage line, bad input that
    minser.train reports (missing EmoDB, a corrupt file) prints ``error: ...`` and returns 2, and Ctrl-C says
    to rerun the benchmark and returns :data:`~minser.errors.INTERRUPTED_STATUS`."""
    parser = build_parser()
    args = resolve(parser.parse_args(argv))
    with common.option_errors(parser):
        # The first epoch carries the warm-up, so a median needs a second one.
        common.check_count("--epochs", args.epochs, minimum=2)
        _check_train_args(args.train_arg)
        common.check_json(args.json)
        common.apply_threads(args.threads)
        device = common.resolve_device(None if args.device == "auto" else args.device)
    info = common.environment(device)
    try:
        return _run(args, info)
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # minser.train's RunInterrupted too: its advice names a temporary folder, now gone
        command = shlex.join(["python", "bench/train.py", *(sys.argv[1:] if argv is None else argv)])
        print(f"interrupted: the benchmark stopped before it finished and kept nothing; rerun it: {command}",
              file=sys.stderr)
        return INTERRUPTED_STATUS


def _run(args: argparse.Namespace, info: dict) -> int:
    """Time both padding modes as ``args`` ask, print the table and the extrapolation, and save them."""
    run = parse_train_args(["--model", args.model, *args.train_arg])
    folds = protocol_folds(run)
    classes = f" {run.classes} classes," if run.data.lower() == "emodb" else ""
    common.print_header(f"training: {args.model}, {run.data}{classes} {run.protocol} protocol ({folds} folds), "
                        f"{args.epochs} epochs of fold 1 per padding mode", info)
    rows = [time_run(args.model, pad_to, args.epochs, args.threads, args.device, args.train_arg, folds)
            for pad_to in ("full", "batch")]
    speedup = rows[0]["median_epoch_s"] / rows[1]["median_epoch_s"]
    cpu_speedup = rows[0]["median_epoch_cpu_s"] / rows[1]["median_epoch_cpu_s"]
    print(common.format_table(rows, ["pad_to", "epochs", "median_epoch_s", "median_epoch_cpu_s", "setup_s",
                                     "extrapolated_protocol_min", "extrapolated_unshared_min"]))
    print(f"--pad-to batch is {speedup:.2f}x faster per epoch than --pad-to full in wall-clock time and "
          f"{cpu_speedup:.2f}x in CPU time (same run, same machine; CPU time is robust to other processes)")
    print(f"EXTRAPOLATION (not a full run): {folds} folds x {FULL_EPOCHS} epochs = "
          f"{rows[0]['extrapolated_protocol_min']:.1f} min with --pad-to full, "
          f"{rows[1]['extrapolated_protocol_min']:.1f} min with --pad-to batch (wall clock as measured); "
          f"{rows[0]['extrapolated_unshared_min']:.1f} / {rows[1]['extrapolated_unshared_min']:.1f} min from CPU "
          f"seconds / {args.threads} threads (an unshared machine)")
    if args.quick:
        print("--quick: 6 utterances per class, 2 epochs; these figures only show that the script runs")
    if args.json:
        common.write_json(args.json, {"environment": info, "model": args.model, "protocol_folds": folds, "runs": rows,
                                      "batch_over_full_speedup": speedup, "batch_over_full_cpu_speedup": cpu_speedup})
    return 0


if __name__ == "__main__":
    sys.exit(main())
