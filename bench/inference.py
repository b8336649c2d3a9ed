"""End-to-end CPU inference time of a minser checkpoint, file in and label out: float, int8 and ONNX.

For one 7.5 s utterance (the networks' full input), file in and label out, front end included:
reading the WAV (:func:`minser.audio.load`), the numpy log-Mel front end, the network and the
softmax, timed as a whole for three variants of the same checkpoint:

- ``float``: :class:`minser.Recognizer` on the float32 PyTorch network;
- ``int8``: the Recognizer on the dynamic-int8 network (``python -m minser.export --quantize int8``);
- ``onnxruntime``: the same front end, then the ONNX export (``--format onnx``) in onnxruntime's
  CPU provider (skipped when onnxruntime or onnx is not installed).

Each runs with 1 and 2 threads (torch's ``set_num_threads``; onnxruntime's ``intra_op_num_threads``).
The front end alone (read + log-Mel) is timed too, so the network's share is visible; its FFT
uses ``scipy.fft`` with every core (minser.features' choice) whatever the thread setting.
The real-time factor is latency over 7.5 s: below 1 is faster than real time. With ``--baseline
CHECKPOINT`` that checkpoint's float pipeline is timed in the same rounds, and every row gets its
median as a ratio to the baseline's (``vs_baseline``): on a shared machine a ratio measured in one
run is far steadier than times compared across runs.

The test signal is a synthetic 7.5 s, 16 kHz WAV (a harmonic tone with a moving pitch and noise):
the cost does not depend on what is said. Sizes: the checkpoint file, the serialized float and
int8 weights, and the ONNX file. With ``--accuracy RUN`` every ``fold-<k>/best.pt`` of a
``python -m minser.train`` run on EmoDB is scored on its own test split by all three variants
(WA/UA in percent), which shows what int8 and ONNX change.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from minser import checkpoint  # noqa: E402
from minser.audio import load  # noqa: E402
from minser.export import (ONNX_TOLERANCE, check_onnx, float_recognizer, onnx_bytes, onnx_logits,  # noqa: E402
                           onnx_metadata, state_bytes)
from minser.features import extract  # noqa: E402
from minser.errors import ConfigError, MinserError  # noqa: E402
from minser.recognizer import (  # noqa: E402
    DEFAULT_MODEL,
    Recognizer,
    default_checkpoint,
    fold_checkpoints,
    quantize_int8,
    resolve_checkpoint,
)

VARIANTS = ("float", "int8", "onnxruntime")
COLUMNS = ("variant", "threads", "median_ms", "spread_pct", "rtf")
BASELINE = "baseline float"


def speech_like_signal(seconds: float = common.SECONDS, sr: int = common.SAMPLE_RATE) -> np.ndarray:
    """A deterministic speech-like stand-in: a harmonic tone with a moving pitch, a syllable-rate envelope, noise."""
    t = np.arange(round(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(150.0 + 50.0 * np.sin(2 * np.pi * 0.5 * t)) / sr
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.15 * envelope * tone + 0.005 * noise).astype(np.float32)


def onnx_session(data: bytes, threads: int):
    """An onnxruntime CPU session of the model ``data`` with ``threads`` intra-op threads, or None."""
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def onnx_probabilities(session, recognizer: Recognizer, features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Softmax of the ONNX model's logits, the input cut as the Recognizer cuts it (a graph of a network
    trained on full inputs takes all frames and no lengths)."""
    logits = onnx_logits(session, recognizer.cut(features, lengths), lengths)
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def end_to_end(variant: str, recognizers: dict[str, Recognizer], sessions: dict, path: Path):
    """The call that labels ``path`` with ``variant``: read, front end, network, softmax, argmax."""
    if variant == "onnxruntime":
        recognizer, session = recognizers["float"], sessions["onnxruntime"]

        def run() -> str:
            features, lengths = extract(load(path, sr=recognizer.frontend.sample_rate), recognizer.frontend)
            return recognizer.labels[int(onnx_probabilities(session, recognizer, features, lengths)[0].argmax())]

        return run
    return lambda: recognizers[variant].predict(path).label


def latency_rows(recognizers: dict[str, Recognizer], onnx_model: bytes | None, path: Path, threads: Sequence[int],
                 warmup: int, repeat: int, clock_name: str = "wall", baseline: Recognizer | None = None) -> list[dict]:
    """One row per variant and thread count, plus the front end alone (and ``baseline``'s float
    pipeline, when given, with every row's ``vs_baseline`` ratio of medians).

    The variants are timed in interleaved rounds (one call of each per round) rather than one after
    the other, so that on a shared machine a burst of load from other jobs hits them all alike.
    """
    now, rows = common.clock(clock_name), []
    frontend = recognizers["float"].frontend
    for n in threads:
        torch.set_num_threads(n)
        sessions = {"onnxruntime": onnx_session(onnx_model, n) if onnx_model is not None else None}
        calls = {"front end only": lambda: extract(load(path, sr=frontend.sample_rate), frontend)}
        for variant in VARIANTS:
            if variant != "onnxruntime" or sessions["onnxruntime"] is not None:
                calls[variant] = end_to_end(variant, recognizers, sessions, path)
        if baseline is not None:
            calls[BASELINE] = lambda: baseline.predict(path).label
        times: dict[str, list[float]] = {name: [] for name in calls}
        for round_index in range(warmup + repeat):
            for name, call in calls.items():
                started = now()
                call()
                if round_index >= warmup:
                    times[name].append(1e3 * (now() - started))
        timed = [_row(name, n, common.summarize(ms)) for name, ms in times.items()]
        if baseline is not None:
            reference = timed[-1]["median_ms"]
            for row in timed:
                row["vs_baseline"] = row["median_ms"] / reference
        rows += timed
    return rows


def _row(variant: str, threads: int, timing: common.Timing) -> dict:
    return {"variant": variant, "threads": threads, "median_ms": timing.median_ms, "spread_pct": timing.spread_pct,
            "rtf": timing.median_ms / 1e3 / common.SECONDS, "timing": timing.to_json()}


def size_rows(source: Path, recognizers: dict[str, Recognizer], onnx_model: bytes | None) -> list[dict]:
    """Sizes in kB: the checkpoint file, the serialized weights of each variant, the ONNX file."""
    rows = [{"what": "checkpoint file", "kB": source.stat().st_size / 1e3},
            {"what": "float weights", "kB": state_bytes(recognizers["float"].model) / 1e3},
            {"what": "int8 weights (linear + LSTM packed int8)", "kB": state_bytes(recognizers["int8"].model) / 1e3}]
    if onnx_model is not None:
        rows.append({"what": "ONNX file", "kB": len(onnx_model) / 1e3})
    return rows


def accuracy_rows(run: Path, batch: int = 64) -> list[dict]:
    """WA/UA (percent) of float, int8 and onnxruntime on each fold's test split of a run on its own corpus."""
    from minser.data import cached_features
    from minser.evaluate import training_corpus
    from minser.features import FrontEnd
    from minser.metrics import unweighted_accuracy, weighted_accuracy

    rows = []
    for path in fold_checkpoints(run):  # in fold order: fold-10 after fold-9
        saved = checkpoint.load(path)
        corpus = training_corpus(saved, path)
        features, lengths = cached_features(corpus, FrontEnd.from_dict(saved["frontend"]), progress=False)
        test = np.asarray(saved["fold"]["test"], dtype=np.int64)
        targets = corpus.targets()[test]
        order = test[np.argsort(lengths[test], kind="stable")]  # similar lengths per batch: less padding
        recognizers = _variants(saved, path)
        session = onnx_session(_onnx(recognizers["float"]), 1)
        predicted = {variant: {} for variant in VARIANTS}
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            for variant in ("float", "int8"):
                logits = recognizers[variant].logits(features[index], lengths[index])
                predicted[variant].update(zip(index.tolist(), logits.argmax(-1).tolist()))
            if session is not None:
                probs = onnx_probabilities(session, recognizers["float"], features[index], lengths[index])
                predicted["onnxruntime"].update(zip(index.tolist(), probs.argmax(-1).tolist()))
        for variant, by_index in predicted.items():
            if by_index:
                p = np.array([by_index[i] for i in test.tolist()])
                rows.append({"fold": saved["fold"]["name"], "variant": variant,
                             "wa": 100 * float(weighted_accuracy(targets, p)),
                             "ua": 100 * float(unweighted_accuracy(targets, p, len(saved["labels"])))})
    return rows


def mean_accuracy(rows: list[dict]) -> list[dict]:
    """Mean WA/UA over folds per variant."""
    out = []
    for variant in VARIANTS:
        picked = [r for r in rows if r["variant"] == variant]
        if picked:
            out.append({"variant": variant, "folds": len(picked), "wa": float(np.mean([r["wa"] for r in picked])),
                        "ua": float(np.mean([r["ua"] for r in picked]))})
    return out


def _variants(saved: dict, source: Path) -> dict[str, Recognizer]:
    # An int8 checkpoint's float row is the float weights it keeps, not the network quantized at load.
    plain = float_recognizer(saved, source)
    int8 = Recognizer(quantize_int8(plain.model), plain.labels, plain.frontend, pass_lengths=plain.pass_lengths,
                      source=str(source))
    return {"float": plain, "int8": int8}


def _onnx(recognizer: Recognizer) -> bytes | None:
    try:
        import onnxruntime  # noqa: F401

        return onnx_bytes(recognizer, onnx_metadata(recognizer))  # with its metadata: the file export writes
    except ImportError:
        return None
    except Exception as exc:  # an unexportable network: bench the others
        print(f"# onnx export skipped: {exc}", file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/inference.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path,
                        help=f"checkpoint (default: the pretrained minser.assets/{DEFAULT_MODEL} that minser ships)")
    parser.add_argument("--accuracy", type=Path, metavar="RUN",
                        help="also score every fold-<k>/best.pt of this minser.train run on its test split")
    parser.add_argument("--baseline", type=Path, metavar="CHECKPOINT",
                        help="also time this checkpoint's float pipeline in the same rounds; report ratios to it")
    parser.add_argument("--repeat", type=int, help="timed rounds, one call per variant each (default: 50; --quick: 3)")
    common.add_common_arguments(parser, device_help="only cpu, the default: this benchmark runs on the CPU",
                                threads_help="torch and onnxruntime CPU threads to time (default: 1 and 2, each timed; "
                                "--quick: 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; bad input (a checkpoint, a run folder, an option) prints ``error: ...`` and returns 2."""
    args = build_parser().parse_args(argv)
    try:
        with checkpoint_file(args.model) as model:
            return _run(_checked(args, model), model)
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def checkpoint_file(model: Path | None) -> Iterator[Path]:
    """The checkpoint file ``--model`` names (a run folder names its only fold); without it the shipped default,
    found as :meth:`Recognizer.load` finds it (:func:`~minser.recognizer.default_checkpoint`)."""
    if model is not None:
        yield resolve_checkpoint(model)
        return
    with default_checkpoint() as default:
        yield default


def _checked(args: argparse.Namespace, model: Path) -> argparse.Namespace:
    """``args`` with ``--baseline`` resolved to a checkpoint file (a run folder names its only fold), checked
    before any timing: the device, the counts, that ``--accuracy`` is a run with folds that can be scored
    (:func:`_check_scorable`), and the --json path, which must not be a checkpoint read (``model`` is --model's)."""
    if args.device not in (None, "cpu"):
        raise ConfigError(f"--device {args.device}: this benchmark runs on the CPU only (edge inference); "
                          "leave --device out or give cpu")
    common.check_counts({"threads": args.threads, "repeat": args.repeat})
    folds = [] if args.accuracy is None else fold_checkpoints(args.accuracy)
    if args.accuracy is not None and not folds:
        raise ConfigError(f"--accuracy {args.accuracy}: holds no fold-<k>/best.pt; give the --out folder of a "
                          "python -m minser.train run")
    for path in folds:
        _check_scorable(checkpoint.load(path), path, args.accuracy)
    baseline = None if args.baseline is None else resolve_checkpoint(args.baseline)
    common.check_json(args.json, inputs=[("--model", model), *([("--baseline", baseline)] if baseline else []),
                                         *(("--accuracy", path) for path in folds)])
    return argparse.Namespace(**{**vars(args), "baseline": baseline})


def _check_scorable(saved: dict, path: Path, run: Path) -> None:
    """ConfigError unless the fold checkpoint ``saved`` (``path`` in ``--accuracy run``) can be scored by every
    variant: it needs a test part (``--protocol all`` keeps none) and no speaker statistics, which none of the
    variants takes (:func:`accuracy_rows` found either only after all the timing)."""
    if not saved.get("fold", {}).get("test"):
        raise ConfigError(f"--accuracy {run}: {path} has no test part to score (a --protocol all run trains on every "
                          "utterance); give a run of --protocol random, speaker or session")
    if saved.get("speaker_norm"):
        raise ConfigError(f"--accuracy {run}: {path} was trained with --speaker-norm, so it needs each speaker's "
                          "statistics, which the variants benchmarked here (float, int8, ONNX) take none of; give a "
                          "run trained without --speaker-norm, or score this one with python -m minser.evaluate")


def timing_counts(args: argparse.Namespace) -> tuple[list[int], int, int]:
    """The thread counts to time, the untimed and the timed rounds: ``--threads`` and ``--repeat`` as given,
    else their defaults (smaller with ``--quick``)."""
    threads = [args.threads] if args.threads else ([1] if args.quick else [1, 2])
    repeat = common.given_or_default(args, {"repeat": 3 if args.quick else 50})["repeat"]
    return threads, 1 if args.quick else 3, repeat


def _run(args: argparse.Namespace, source: Path) -> int:
    """Time and size the checkpoint file ``source`` (and score ``--accuracy``) as ``args`` ask; print and save."""
    threads, warmup, repeat = timing_counts(args)
    saved = checkpoint.load(source)
    recognizers = _variants(saved, source)
    onnx_model = _onnx(recognizers["float"])
    if onnx_model is not None:
        difference = check_onnx(onnx_model, recognizers["float"])
        if difference is None or difference > ONNX_TOLERANCE:
            raise SystemExit(f"the ONNX export disagrees with PyTorch by {difference}; not benchmarking it")
    # Each round sets its own thread count (the tables' threads column), not the count torch has now.
    info = {**common.environment(torch.device("cpu")), "torch_threads": " or ".join(map(str, threads))}
    common.print_header(f"end-to-end CPU inference, 7.5 s utterance: {source}", info)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "utterance.wav"
        soundfile.write(path, speech_like_signal(), common.SAMPLE_RATE, subtype="PCM_16")
        baseline = float_recognizer(checkpoint.load(args.baseline), args.baseline) if args.baseline else None
        latency = latency_rows(recognizers, onnx_model, path, threads, warmup, repeat, args.clock, baseline)
    sizes = size_rows(source, recognizers, onnx_model)
    def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
        return common.format_table(rows, columns, markdown=args.markdown)

    print(table(latency, COLUMNS + (("vs_baseline",) if args.baseline else ())))
    print()
    print(table(sizes, ("what", "kB")))
    payload = {"environment": info, "clock": args.clock, "model": str(source), "spec": saved["spec"], "latency": latency, "sizes": sizes,
               "baseline": None if args.baseline is None else str(args.baseline)}
    if args.accuracy:
        folds = accuracy_rows(args.accuracy)
        payload["accuracy"] = {"run": str(args.accuracy), "folds": folds, "mean": mean_accuracy(folds)}
        print()
        print(table(payload["accuracy"]["mean"], ("variant", "folds", "wa", "ua")))
    if args.json:
        common.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
