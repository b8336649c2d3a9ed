"""Shared helpers of minser's benchmark scripts: timing, environment, tables, JSON, lengths.

Every script in ``bench/`` imports this file as a sibling (``bench/`` is put on ``sys.path``
by the script itself), so the scripts run from a plain checkout: ``python bench/NAME.py``; so does
``tools/kernel_report.py``, for :func:`option_errors` and :func:`check_json`.

Timing protocol (:func:`measure`): ``warmup`` untimed calls, then ``repeat`` timed calls; on a
CUDA device each call is bracketed by CUDA events (GPU time, after a synchronise), on CPU by a
clock: ``wall`` (``time.perf_counter``, the default) or ``cpu`` (``time.process_time``, the CPU
time of every thread of the process: on a shared machine where other jobs take the cores it
leaves out the time this process waits for a core; with ``--threads 1`` it is the compute
time). We report the median and the spread, ``(p75 - p25) / median`` in percent: on a shared,
noisy machine the median is the robust figure and the spread says how far to trust it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from minser.files import atomic_write, check_output
from minser.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
HOP_LENGTH = 160
MAX_FRAMES = 750  # 7.5 s at a 10 ms hop: the paper's fixed input length
SECONDS = 7.5


@dataclass(frozen=True)
class Timing:
    """Summary of repeated timings, in milliseconds."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    n: int

    @property
    def spread_pct(self) -> float:
        """Inter-quartile range over the median, in percent."""
        return 100.0 * (self.p75_ms - self.p25_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "spread_pct": self.spread_pct}


def summarize(times_ms: Sequence[float]) -> Timing:
    """Median, quartiles and minimum of a non-empty list of times in milliseconds."""
    if not times_ms:
        raise ValueError("summarize needs at least one time")
    ordered = sorted(times_ms)
    if len(ordered) == 1:
        p25 = p75 = ordered[0]
    else:
        p25, _, p75 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Timing(statistics.median(ordered), p25, p75, ordered[0], len(ordered))


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def clock(name: str) -> Callable[[], float]:
    """The CPU-side clock ``name`` (``"wall"`` or ``"cpu"``), in seconds."""
    if name not in CLOCKS:
        raise ValueError(f"clock {name!r} is not one of {tuple(CLOCKS)}")
    return CLOCKS[name]


def measure(
    fn: Callable[[], object], device: torch.device, *, warmup: int = 3, repeat: int = 10, clock_name: str = "wall"
) -> Timing:
    """Time ``fn()`` (see the module docstring for the protocol; ``clock_name`` applies on CPU)."""
    now = clock(clock_name)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = now()
            fn()
            times.append(1e3 * (now() - t0))
    return summarize(times)


def peak_memory_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Extra device memory that one call of ``fn`` peaks at, above what was allocated before.

    CUDA only (from the caching allocator's statistics); ``None`` on CPU, where torch keeps
    no such counter.
    """
    if device.type != "cuda":
        return None
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def _git_commit() -> str | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def environment(device: torch.device) -> dict:
    """What a result depends on: device, library versions, commit, CPU and thread count."""
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "numpy": np.__version__,
        "git_commit": _git_commit(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return info


def format_environment(info: dict) -> str:
    """One line naming the machine and versions, for the head of a printed report."""
    return (
        f"# {info['device_name']} ({info['device']}), {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
        f"torch {info['torch']}, triton {info['triton']}, numpy {info['numpy']}, commit {info['git_commit']}"
    )


def format_table(rows: Sequence[dict], columns: Sequence[str], *, markdown: bool = False) -> str:
    """A plain-text (or Markdown) table with right-aligned cells; floats get 3 significant digits, None shows as '-'."""

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if math.isfinite(value) else str(value)
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    if markdown:
        def line(values):
            return "| " + " | ".join(v.rjust(w) for v, w in zip(values, widths)) + " |"

        rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
        return "\n".join([line(columns), rule] + [line(r) for r in cells])
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` as indented JSON, atomically (temporary file in the same folder, then rename)."""
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=2, allow_nan=False) + "\n"), mode="w")


def check_json(path: str | os.PathLike | None, inputs: Iterable[tuple[str, str | os.PathLike]] = ()) -> None:
    """``--json path`` checked as :func:`minser.files.check_output` checks an output (``inputs``: what the script
    reads): every script checks it with its other options, as the file is written only once the benchmark has run."""
    check_output(path, "--json", inputs)


# How every script's --quick treats the options given with it (see given_or_default).
QUICK_HELP = "it changes only the defaults: options given explicitly win"


def given_or_default(args: argparse.Namespace, defaults: Mapping[str, object]) -> dict[str, object]:
    """Each option named in ``defaults`` as given on the command line, else its entry in ``defaults``.

    Such options default to None in the parser, so that a value given explicitly, 0 included, is told
    from one left unset: ``--quick`` then picks other defaults and overrides nothing that was given
    (``--quick --repeat 50`` times 50 runs).
    """
    return {name: default if getattr(args, name) is None else getattr(args, name) for name, default in defaults.items()}


THREADS_HELP = "torch CPU threads (default: torch's choice)"
DEVICE_HELP = "'cpu' or 'cuda' (default: cuda when a CUDA device is present, else cpu)"


def add_common_arguments(parser: argparse.ArgumentParser, *, threads_help: str = THREADS_HELP,
                         device_help: str = DEVICE_HELP) -> None:
    """The options every bench script shares: ``--quick``, ``--json``, ``--markdown``, ``--threads``, ``--clock``,
    ``--device``. A script whose ``--threads`` or ``--device`` default differs from torch's choice and from
    :func:`resolve_device`'s gives its own help text for it."""
    parser.add_argument("--quick", action="store_true",
                        help=f"a small subset that runs in seconds (smoke test); {QUICK_HELP}")
    parser.add_argument("--json", metavar="PATH", help="also write the results and the environment to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for docs/BENCHMARKS.md)")
    parser.add_argument("--threads", type=int, metavar="N", help=threads_help)
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                        help="CPU timing clock: wall (default) or cpu (process CPU time; robust on a busy machine)")
    parser.add_argument("--device", default=None, help=device_help)


@contextlib.contextmanager
def option_errors(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Report a ConfigError raised in the block (a bad option value) as argparse reports its own errors: the
    usage line, ``PROG: error: ...`` on stderr and exit status 2, as minser's command lines exit on bad input."""
    try:
        yield
    except ConfigError as exc:
        parser.error(str(exc))


def resolve_device(name: str | None) -> torch.device:
    """The device named on the command line, defaulting to CUDA when present; ConfigError if unusable."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists every device type it knows, most of which we do not run
        raise ConfigError(f"--device {name}: only 'cpu' and 'cuda' are supported") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this machine has no CUDA device (torch.cuda.is_available() is False); "
                          "leave --device out or give cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: only 'cpu' and 'cuda' are supported")
    return device


def check_count(option: str, value: int, minimum: int = 1) -> int:
    """``value``, the count given as ``option``; ConfigError naming both when it is below ``minimum``."""
    if value < minimum:
        raise ConfigError(f"{option} {value}: give {'a positive number' if minimum == 1 else f'{minimum} or more'}")
    return value


def check_counts(counts: Mapping[str, int | None], minimum: int = 1) -> None:
    """:func:`check_count` of each count, named as its option (``train_steps``: ``--train-steps``), in order;
    None is an option left unset and passes."""
    for name, value in counts.items():
        if value is not None:
            check_count(f"--{name.replace('_', '-')}", value, minimum)


def network_names(text: str) -> tuple[str, ...]:
    """The networks a ``--models`` value names (comma-separated registry names, in that order); ConfigError
    for an empty value or name (``''``, ``cat,``) or a name the registry lacks."""
    from minser.models import MODELS  # here, not at the top: the other helpers need no model code

    names = tuple(name.strip() for name in text.split(","))
    if "" in names:
        raise ConfigError(f"--models {text!r}: an empty network name; give comma-separated names from "
                          f"{', '.join(MODELS)}")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise ConfigError(f"--models: unknown network(s) {unknown}; valid: {', '.join(MODELS)}")
    return names


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count when asked to; ConfigError if not positive."""
    if threads is not None:
        torch.set_num_threads(check_count("--threads", threads))


# EmoDB's real duration range and spread (the corpus' 535 files): 1.23 s to 8.98 s, 2.78 s on average.
SYNTHETIC_MEDIAN_S = 2.6
SYNTHETIC_SIGMA = 0.38
SYNTHETIC_RANGE_S = (1.23, 8.98)


def frames_of_samples(samples: np.ndarray) -> np.ndarray:
    """Valid frames of utterances of ``samples`` samples, the front end's ``min(750, 1 + samples // 160)``."""
    return np.minimum(MAX_FRAMES, 1 + np.asarray(samples, dtype=np.int64) // HOP_LENGTH)


def emodb_files() -> tuple[list[Path], str]:
    """EmoDB's WAV files (all 535, sorted by name) and where they lie, found as ``--data emodb`` finds them
    (:func:`minser.data.load_corpus`: under ``$MINSER_DATA``, else the per-user cache folder, ``.wav`` in any
    case); without the corpus, no files and the library's reason (which says how to get it)."""
    from minser.data import load_corpus  # here, not at the top: the timing helpers need no corpus code
    from minser.errors import MinserError

    try:
        corpus = load_corpus("emodb", classes=7)
    except MinserError as exc:
        return [], str(exc)
    paths = [utterance.path for utterance in corpus.utterances]
    return paths, f"{len(paths)} files under {paths[0].parent}"


def emodb_durations() -> tuple[np.ndarray, str]:
    """Utterance durations in seconds and where they came from.

    Reads the WAV header of every EmoDB file :func:`emodb_files` finds (``soundfile.info``: no audio
    is decoded). Without the corpus, a synthetic stand-in: 535 durations from a log-normal with
    median 2.6 s and sigma 0.38, clipped to EmoDB's range 1.23-8.98 s (mean about 2.8 s, as
    EmoDB's 24.8 min over 535 files), drawn with a fixed seed.
    """
    paths, where = emodb_files()
    if paths:
        import soundfile

        durations = np.array([soundfile.info(str(p)).duration for p in paths])
        return durations, f"EmoDB wav headers ({where})"
    rng = np.random.default_rng(0)
    durations = np.clip(rng.lognormal(math.log(SYNTHETIC_MEDIAN_S), SYNTHETIC_SIGMA, 535), *SYNTHETIC_RANGE_S)
    return durations, f"synthetic log-normal EmoDB stand-in ({where})"


def sample_frame_lengths(durations: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` valid-frame counts of utterances drawn (with replacement) from ``durations`` in seconds."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(np.asarray(durations), size=count, replace=True)
    return frames_of_samples(np.round(picked * SAMPLE_RATE).astype(np.int64))


def print_header(title: str, info: dict) -> None:
    """Print a script's title and the environment line."""
    print(f"## {title}")
    print(format_environment(info))
    sys.stdout.flush()
