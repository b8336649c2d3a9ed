"""Print a markdown table of every minser network: parameters and CPU time at the paper's input.

For each network (default options) it times, on CPU with a fixed torch thread count, the
forward pass in eval mode at batch 1 and batch 40, and one training step's forward +
backward at batch 40, on random log-Mel features of 40 bands x 750 frames (7.5 s), and
prints the median of the repeats in milliseconds of wall time. The last column is the
training step's CPU time summed over threads: on a shared machine it is inflated less
than wall time by other processes.

    python tools/model_table.py                   # all networks, 2 threads, 5 repeats
    python tools/model_table.py --models cat ilt --repeats 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from minser.errors import ConfigError, MinserError, broken_pipe_status
from minser.models import MODELS, build


def median_ms(step: Callable[[], None], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``step`` in milliseconds by ``clock``, after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = clock()
        step()
        times.append(clock() - start)
    return 1e3 * statistics.median(times)


def measure(name: str, args: argparse.Namespace) -> dict[str, float]:
    """Parameters and median times (ms) of network ``name`` at default options."""
    model = build(name, args.n_classes, n_mels=args.n_mels, impl="torch")
    if args.frames < model.min_frames:  # the network's own message advises lengths.clamp, no option of this tool
        raise ConfigError(f"--frames {args.frames}: {name} needs utterances of at least {model.min_frames} frames; "
                          f"give --frames {model.min_frames} or more")
    features = torch.randn(args.batch, args.n_mels, args.frames)
    lengths = torch.full((args.batch,), args.frames)

    def forward(batch: int) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad():
                model(features[:batch], lengths[:batch])

        return step

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(features, lengths).logsumexp(dim=1).mean().backward()

    model.eval()
    row = {"params": sum(p.numel() for p in model.parameters())}
    row["forward_1"] = median_ms(forward(1), args.repeats)
    row["forward_batch"] = median_ms(forward(args.batch), args.repeats)
    model.train()
    row["train_batch"] = median_ms(train_step, args.repeats)
    row["train_batch_cpu"] = median_ms(train_step, args.repeats, clock=time.process_time)
    return row


def main() -> int:
    """Print the table; returns the exit status (141 when the reader of the output stopped early, ``| head``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="networks (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (default: 5)")
    parser.add_argument("--batch", type=int, default=40, help="the large batch size (default: 40, the paper's)")
    parser.add_argument("--frames", type=int, default=750, help="frames per utterance (default: 750 = 7.5 s)")
    parser.add_argument("--n-mels", type=int, default=40, help="Mel bands (default: 40)")
    parser.add_argument("--n-classes", type=int, default=4, help="classes (default: 4)")
    args = parser.parse_args()
    for option in ("threads", "repeats", "batch", "frames", "n_mels", "n_classes"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} {getattr(args, option)}: give a positive number")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    b = args.batch
    try:
        print(
            f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, input {args.n_mels} x {args.frames}, "
            f"default options, median of {args.repeats} (ms); load average at start "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n"
        )
        print(
            f"| model | parameters | forward, batch 1 | forward, batch {b} | forward + backward, batch {b} "
            f"| same, CPU time of all threads |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name in args.models:
            try:
                row = measure(name, args)
            except MinserError as exc:  # e.g. --frames below the network's minimum
                parser.error(str(exc))
            print(
                f"| `{name}` | {row['params']:,} | {row['forward_1']:.1f} | {row['forward_batch']:.1f} "
                f"| {row['train_batch']:.1f} | {row['train_batch_cpu']:.1f} |",
                flush=True,  # a row per network as it is measured, and a reader gone is caught here
            )
    except BrokenPipeError:
        return broken_pipe_status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
