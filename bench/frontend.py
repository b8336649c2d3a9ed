"""Benchmark minser's log-Mel front end against librosa: ``python bench/frontend.py --help``.

Speed. Three ways of turning the same utterances into the paper's log-Mel features, timed in turn
(in a rotating order) within each of ``--repeat`` rounds after one untimed warm-up round, so load
from other processes hits all three alike:

- ``librosa per utterance``: ``librosa.feature.melspectrogram`` (same settings: n_fft 400, hop 160,
  periodic Hann, centred frames with zero padding, 40 Slaney bands) and ``librosa.power_to_db(ref=1,
  amin=1e-10, top_db=None)`` on each utterance, already zero-padded or cut to 7.5 s;
- ``minser extract, batch``: one ``minser.features.extract`` call on the list of raw utterances
  (it pads/cuts and validates them itself, so it does strictly more work);
- ``minser extract, per utterance``: ``extract`` called once per raw utterance.

Each runs on two versions of the data: the utterances ``as recorded`` (mostly shorter than 7.5 s,
so zero-padded; minser skips the frames that lie wholly in that padding, whose power is exactly 0),
and ``tiled to 7.5 s`` (each utterance repeated to fill 7.5 s: no padding, every frame computed).

The speed ratio is librosa's median time over minser's batched median time. Wall-clock time is the
headline; process CPU time is reported too, since it is less sensitive to other processes on a
shared machine (it counts all of minser's FFT threads, so it favours neither side).

Agreement, on every utterance used (unpadded): the filterbank against ``librosa.filters.mel``, and
the Mel power against ``librosa.feature.melspectrogram`` as ``max |ours - ref| / max |ref|`` per
utterance (worst over utterances); the element-wise figure is the smallest ``atol / max |ref|`` for
which ``|ours - ref| <= 1e-5 |ref| + atol`` holds everywhere; and the log-Mel's largest difference in dB.

Data: EmoDB where ``--data emodb`` finds it (``$MINSER_DATA/emodb``, else the per-user cache folder's);
without it, synthetic noise bursts with EmoDB-like durations (the script says so).

librosa is not a dependency of minser: this benchmark needs it (``pip install librosa``; the ``dev``
extra installs it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

import scipy  # noqa: E402
import soundfile  # noqa: E402

from minser.audio import fit_length, load  # noqa: E402
from minser.features import FrontEnd, extract, log_mel, mel_filterbank, mel_power  # noqa: E402

FRONTEND = FrontEnd()
RTOL = 1e-5


def load_utterances(count: int | None, seed: int) -> tuple[list[np.ndarray], str]:
    """``count`` utterances (all when None), evenly spread over EmoDB's sorted files, or synthetic ones."""
    paths, where = common.emodb_files()
    if paths:
        wav_dir = paths[0].parent
        if count is not None and count < len(paths):
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, count).round().astype(int)]
        return [load(path, FRONTEND.sample_rate) for path in paths], f"EmoDB, {len(paths)} files from {wav_dir}"
    durations, _ = common.emodb_durations()
    rng = np.random.default_rng(seed)
    durations = durations[: count or len(durations)]
    waves = []
    for seconds in durations:
        samples = round(seconds * FRONTEND.sample_rate)
        envelope = np.abs(np.sin(np.linspace(0, 3 * np.pi, samples)))  # syllable-like bursts
        waves.append((0.1 * envelope * rng.standard_normal(samples)).astype(np.float32))
    return waves, f"SYNTHETIC noise bursts, {len(waves)} EmoDB-like durations ({where})"


def _librosa_mel(wave: np.ndarray) -> np.ndarray:
    import librosa

    fe = FRONTEND
    return librosa.feature.melspectrogram(
        y=wave, sr=fe.sample_rate, n_fft=fe.n_fft, hop_length=fe.hop_length, win_length=fe.win_length,
        window="hann", center=True, pad_mode="constant", power=2.0, n_mels=fe.n_mels, fmin=fe.fmin,
        fmax=fe.fmax, htk=fe.htk, norm=fe.norm,
    )


def _librosa_log_mel(wave: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.power_to_db(_librosa_mel(wave), ref=1.0, amin=FRONTEND.amin, top_db=None)


def time_methods(methods: dict[str, Callable[[], object]], repeat: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each method, one call per method per round, after a warm-up round.

    The order rotates from round to round: a method that runs right after librosa pays for the BLAS
    threads librosa leaves spinning, and rotation spreads that cost over all methods.
    """
    for fn in methods.values():
        fn()
    names = list(methods)
    times = {name: {"wall": [], "cpu": []} for name in names}
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            fn = methods[name]
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
    return times


def agreement(waves: Sequence[np.ndarray]) -> dict[str, float]:
    """Worst-case differences from librosa over ``waves`` (see the module docstring)."""
    import librosa

    fe = FRONTEND
    bank = mel_filterbank(fe.sample_rate, fe.n_fft, fe.n_mels, fe.fmin, fe.fmax, fe.htk, fe.norm)
    bank_ref = librosa.filters.mel(
        sr=fe.sample_rate, n_fft=fe.n_fft, n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax, htk=fe.htk, norm=fe.norm
    )
    normwise = elementwise = db = 0.0
    for wave in waves:
        ref = _librosa_mel(wave)
        ours = mel_power(wave, fe.sample_rate, n_fft=fe.n_fft, hop_length=fe.hop_length, win_length=fe.win_length,
                         n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax, htk=fe.htk, norm=fe.norm)
        error, peak = np.abs(ours - ref), np.abs(ref).max()
        normwise = max(normwise, float(error.max() / peak))
        elementwise = max(elementwise, float(((error - RTOL * np.abs(ref)) / peak).max()))
        ref_db = librosa.power_to_db(ref, ref=1.0, amin=fe.amin, top_db=None)
        ours_db = log_mel(wave, fe.sample_rate, n_fft=fe.n_fft, hop_length=fe.hop_length, win_length=fe.win_length,
                          n_mels=fe.n_mels, fmin=fe.fmin, fmax=fe.fmax, htk=fe.htk, norm=fe.norm, amin=fe.amin)
        db = max(db, float(np.abs(ours_db - ref_db).max()))
    return {
        "filterbank_max_rel_error": float(np.abs(bank - bank_ref).max() / np.abs(bank_ref).max()),
        "mel_power_max_rel_error": normwise,
        "mel_power_elementwise_atol_of_peak": max(elementwise, 0.0),
        "log_mel_max_abs_error_db": db,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time minser's log-Mel front end against librosa per utterance and check their agreement.",
        epilog="Reads EmoDB where --data emodb finds it ($MINSER_DATA/emodb, else the per-user cache folder's; "
        "synthetic signals if missing). Needs librosa (pip install librosa, or the dev extra).",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"8 utterances, 2 rounds: runs in a few seconds; {common.QUICK_HELP}")
    parser.add_argument("--json", metavar="PATH", help="also write the results and the environment to this JSON file")
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables as markdown (as in docs/BENCHMARKS.md)"
    )
    parser.add_argument("--utterances", type=int, metavar="N", help="utterances to use (default: all; --quick: 8)")
    parser.add_argument("--repeat", type=int, metavar="R", help="timed rounds (default: 7; --quick: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic fallback signals (default: 0)")
    return parser


def resolve_counts(args: argparse.Namespace) -> tuple[int | None, int]:
    """``--utterances`` (None: all) and ``--repeat`` as given, else their defaults (smaller with ``--quick``)."""
    v = common.given_or_default(args, {"utterances": 8 if args.quick else None, "repeat": 2 if args.quick else 7})
    return v["utterances"], v["repeat"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; a bad option value exits with the usage line and status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    count, repeat = resolve_counts(args)
    with common.option_errors(parser):
        common.check_counts({"repeat": repeat, "utterances": count})
        common.check_counts({"seed": args.seed}, minimum=0)
        common.check_json(args.json)
    try:
        import librosa
    except ImportError:
        print("error: bench/frontend.py needs librosa (pip install librosa, or the dev extra)", file=sys.stderr)
        return 2

    info = common.environment(torch.device("cpu"))
    info.update(librosa=librosa.__version__, scipy=scipy.__version__, soundfile=soundfile.__version__)
    common.print_header("log-Mel front end: minser vs librosa", info)
    waves, source = load_utterances(count, args.seed)
    print(f"# data: {source}; {FRONTEND.n_mels} x {FRONTEND.n_frames} features of {FRONTEND.seconds} s; "
          f"librosa {librosa.__version__}, scipy {scipy.__version__}")
    # Tiling each utterance (repeating it) to fill 7.5 s leaves no padding whose frames minser skips.
    scenarios = {
        "as recorded": waves,
        "tiled to 7.5 s": [np.resize(wave, max(len(wave), FRONTEND.n_samples)) for wave in waves],
    }
    rows, ratios, per_utt, times = [], {}, {}, {}
    for scenario, raw in scenarios.items():
        fixed = [fit_length(wave, FRONTEND.seconds, FRONTEND.sample_rate) for wave in raw]
        methods = {
            "librosa per utterance": lambda fixed=fixed: [_librosa_log_mel(wave) for wave in fixed],
            "minser extract, batch": lambda raw=raw: extract(raw, FRONTEND),
            "minser extract, per utterance": lambda raw=raw: [extract(wave, FRONTEND) for wave in raw],
        }
        times[scenario] = time_methods(methods, repeat)
        per_utt[scenario] = {
            name: {kind: float(np.median(values)) / len(raw) * 1e3 for kind, values in t.items()}
            for name, t in times[scenario].items()
        }
        reference = per_utt[scenario]["librosa per utterance"]
        for name, t in per_utt[scenario].items():
            rows.append({"data": scenario, "method": name, "wall ms/utt": t["wall"], "cpu ms/utt": t["cpu"],
                         "wall speed-up": reference["wall"] / t["wall"], "cpu speed-up": reference["cpu"] / t["cpu"]})
        batch = per_utt[scenario]["minser extract, batch"]
        ratios[scenario] = {"wall": reference["wall"] / batch["wall"], "cpu": reference["cpu"] / batch["cpu"]}
    print(f"\n### speed: {len(waves)} utterances, median of {repeat} rounds")
    columns = ["data", "method", "wall ms/utt", "cpu ms/utt", "wall speed-up", "cpu speed-up"]
    print(common.format_table(rows, columns, markdown=args.markdown))
    print()
    for scenario, ratio in ratios.items():
        print(f"speed ratio, {scenario} (librosa per utterance / minser batch): "
              f"{ratio['wall']:.2f}x wall, {ratio['cpu']:.2f}x CPU")

    agree = agreement(waves)
    print(f"\n### agreement with librosa ({source.split(',')[0]}, {len(waves)} utterances, worst case)")
    agree_rows = [{"figure": k, "value": v} for k, v in agree.items()]
    print(common.format_table(agree_rows, ["figure", "value"], markdown=args.markdown))

    if args.json:
        payload = {
            "benchmark": "frontend",
            "environment": info | {
                "fft_workers": os.cpu_count(),
                "blas_threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
            },
            "data": source,
            "frontend": FRONTEND.to_dict(),
            "settings": {"utterances": len(waves), "repeat": repeat, "quick": args.quick, "seed": args.seed},
            "per_utterance_ms": per_utt,
            "times_s": times,
            "speed_ratio": ratios,
            "agreement": agree,
        }
        common.write_json(args.json, payload)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
