"""Re-score trained checkpoints, from the checkpoint alone.

    python -m minser.evaluate runs/ilt-20260101-120000            # every fold's best.pt, its test split
    python -m minser.evaluate runs/ilt-.../fold-1/best.pt --data my_corpus.csv   # a whole other corpus
    python -m minser.evaluate runs/a runs/b runs/c     # an ensemble of runs trained with the same --split-seed

A checkpoint carries its model spec, class names, front-end settings and the data and test
split it was trained with, so no other input is needed. Without ``--data`` (or with the
training corpus, in any of its class sets, or a copy of it elsewhere: the same files, labels and
speakers, as a moved corpus has) each checkpoint is scored on its own fold's test
utterances under the run's ``--precision``, which reproduces ``results.json`` on the device type it
was trained on (``auto`` is bf16 autocast on CUDA but float32 on the CPU, so a GPU run rescored on the
CPU can move an utterance or two; an ``--impl triton`` network is scored there through the PyTorch path, an int8
checkpoint quantized, on the CPU, as ``Recognizer`` serves it); with another corpus (or ``--all``) on every
utterance whose label the model knows. WA and UA are in percent. Several runs or files are scored
as an ensemble: fold by fold, the class of highest mean softmax probability over the members.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from minser import checkpoint
from minser.errors import (INTERRUPTED_STATUS, CheckpointError, ConfigError, DataError, MinserError, broken_pipe_status,
                           plain_warnings)
from minser.recognizer import fold_checkpoints, log_mean_softmax, refuse_repeated_checkpoints

if TYPE_CHECKING:
    from minser.data import Corpus
    from minser.train import TrainConfig

__all__ = ["checkpoints_of", "evaluate", "evaluate_checkpoint", "main", "training_corpus"]


def checkpoints_of(path: str | Path) -> list[Path]:
    """The checkpoints ``path`` names: itself if a file, else every ``fold-<k>/best.pt`` of a run folder, in fold
    order (:func:`~minser.recognizer.fold_checkpoints`)."""
    path = Path(path)
    if path.is_file():
        return [path]
    found = fold_checkpoints(path) if path.is_dir() else []
    if not found:
        raise CheckpointError(f"{path}: neither a checkpoint file nor a run folder holding fold-<k>/best.pt; "
                              "give the --out folder of a python -m minser.train run or one of its .pt files")
    return found


def _scored_items(saved: dict[str, Any], corpus: Corpus, test: np.ndarray | None,
                  everything: bool) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``corpus`` to score and their targets in the checkpoint's class order: the fold's
    ``test`` indices (see :func:`_scored_corpus`), or with ``everything`` or on another corpus (``test``
    None) every utterance of a class the checkpoint knows."""
    labels = list(saved["labels"])
    unknown = sorted(set(corpus.labels) - set(labels))
    if unknown:
        # A warning, so that it shows once, not once per fold and ensemble member (Python's default filter).
        warnings.warn(f"skipping utterances labelled {unknown}: the model knows only {labels}", UserWarning,
                      stacklevel=2)
    known = np.array([u.label in labels for u in corpus.utterances])
    index = np.flatnonzero(known)
    if test is not None and not everything:
        if test.size == 0:
            raise DataError("the checkpoint was trained on every utterance of its corpus (--protocol all), so it has "
                            "no held-out test split; pass --data with another corpus, or --all to score the training "
                            "utterances (which says nothing about accuracy on unseen speech)")
        index = test[known[test]]
    if index.size == 0:
        raise DataError(f"corpus {corpus.name!r} has no utterance labelled with one of {labels}")
    targets = np.array([labels.index(corpus.utterances[i].label) for i in index], dtype=np.int64)
    return index, targets


def _test_split(saved: dict[str, Any], corpus: Corpus) -> np.ndarray:
    """The fold's test indices into its training ``corpus``; empty for a checkpoint trained on every utterance
    (``--protocol all``, or no fold record, as the shipped default made by tools/train_default.py)."""
    test = np.asarray(saved.get("fold", {}).get("test", []), dtype=np.int64)
    if test.size and test.max() >= len(corpus):
        raise DataError(f"the corpus has {len(corpus)} utterances but the checkpoint's test split indexes "
                        f"utterance {int(test.max())}; the data changed since training: pass --all")
    return test


def training_corpus(saved: dict[str, Any], name: str | Path, named: bool = False) -> Corpus:
    """The corpus a loaded checkpoint (called ``name`` in errors) was trained on, as its fold indices see
    it: the recorded data, classes and ``--subset`` pick (of ``--split-seed``, else ``--seed``).

    ``named``: the user named this corpus (evaluate's ``--data``), so a corpus that cannot be loaded is
    reported as it is, not as the recorded corpus with advice to pass ``--data``."""
    from minser.data.corpora import CORPUS_NAMES
    from minser.train import corpus_spec, load_data

    trained = saved.get("data", {})
    if "spec" not in trained:
        raise CheckpointError(f"{name}: records no training data; pass --data to score it on a corpus")
    try:
        return load_data(_as_trained(saved, trained["spec"]))
    except DataError as exc:
        if named:
            raise
        # The fix is the inner error's (get the corpus); --data is the way out for a copy elsewhere or another corpus.
        # A named corpus is found through the data folder, not by a path given to --data.
        moved = ("set MINSER_DATA to the folder that now holds it" if corpus_spec(str(trained["spec"])) in CORPUS_NAMES
                 else "pass --data with its new place")
        raise DataError(f"{name} was trained on --data {trained['spec']}, which cannot be loaded here: {exc}. If it "
                        f"has moved, {moved} (scored on the fold's test split); to score on another corpus instead, "
                        "pass --data with that (scored on every utterance)") from exc


def _as_trained(saved: dict[str, Any], data: str) -> TrainConfig:
    """The settings that read corpus ``data`` as checkpoint ``saved`` read its training corpus: the recorded
    classes and ``--subset`` pick (of ``--split-seed``, else ``--seed``)."""
    from minser.train import TrainConfig

    trained, train = saved["data"], saved["train"]
    return TrainConfig(data=data, classes=trained["classes"], subset=trained.get("subset"), seed=train["seed"],
                       split_seed=train.get("split_seed"))


def _copy_of_training_corpus(saved: dict[str, Any], data: str) -> Corpus | None:
    """Corpus ``data`` (``--data``, a path other than the recorded one) as checkpoint ``saved`` was trained on
    it when it is its training corpus in another place (moved, copied: the :func:`~minser.train.corpus_print` the
    checkpoint records, which a moved corpus keeps), else None: another corpus."""
    from minser.train import corpus_print, load_data

    recorded = saved.get("train", {}).get("corpus")
    if recorded is None or "classes" not in saved.get("data", {}):  # older checkpoints: no print to compare
        return None
    try:
        corpus = load_data(_as_trained(saved, data))
    except MinserError:  # not readable with the training classes or pick: reading it as asked reports it if need be
        return None
    return corpus if corpus_print(corpus) == recorded else None


def _scored_corpus(saved: dict[str, Any], path: str | Path, data: str | None, classes: int | None,
                   everything: bool) -> tuple[Corpus, np.ndarray | None]:
    """The corpus checkpoint ``path`` (loaded as ``saved``) is scored on, and the indices into it of the fold's
    test split when it is the training corpus (in any class set, at its recorded path or, by its print, at
    ``data``; none with ``everything``), else None; ConfigError or DataError, before any features are computed,
    for options the checkpoint cannot be scored with."""
    from minser.train import TrainConfig, corpus_print, corpus_spec, known_speakers, load_data

    trained = saved.get("data", {})
    if data is None and classes not in (None, trained.get("classes")):
        from minser.data.corpora import EMODB_LABELS_7, FOUR_CLASS_LABELS

        labels = list(saved["labels"])
        # EmoDB's other class set scores its utterances of the model's classes: of use only where the model
        # knows every class of it (a 7-class model on the 4); a 4-class model would score its own 4 again.
        wanted = FOUR_CLASS_LABELS if classes == 4 else EMODB_LABELS_7
        advice = (f"to score it on EmoDB's {classes} classes pass --data emodb --classes {classes}"
                  if set(wanted) <= set(labels) else
                  f"it knows only these {len(labels)} classes and cannot tell EmoDB's {classes} apart: drop --classes")
        raise ConfigError(f"--classes {classes} without --data: {path} is then scored on its fold's test split, with "
                          f"the classes it was trained on ({', '.join(labels)}); {advice}")
    if data is not None and ("spec" not in trained or corpus_spec(str(data)) != corpus_spec(trained["spec"])):
        # Another path may hold the training corpus (moved, copied): its utterances outside the fold's test
        # split were trained on, so it is scored as the training corpus.
        corpus = _copy_of_training_corpus(saved, str(data))
    else:
        corpus = training_corpus(saved, path, named=data is not None)
    if corpus is None:
        corpus, test = load_data(TrainConfig(data=str(data), classes=4 if classes is None else classes)), None
    else:
        # --all scores every utterance: the fold's split is not looked for, so a corpus that changed is no bar.
        test = np.empty(0, dtype=np.int64) if everything else _test_split(saved, corpus)
        recorded, now = saved.get("train", {}).get("corpus"), corpus_print(corpus)
        if test.size and recorded is not None and recorded != now:
            # The fold's indices would pick other utterances, some of them trained on.
            raise DataError(f"{path}: the corpus read now ({now['utterances']} utterances) is not "
                            f"the one it was trained on ({recorded['utterances']}): its files, labels or speakers "
                            "differ, so the fold's test split cannot be found in it; point --data (or MINSER_DATA) at "
                            "the copy it was trained on, or pass --all to score every utterance")
        if classes not in (None, trained.get("classes")):
            # Another class set of the training corpus: every utterance of it outside the fold's test split
            # was trained on (or chose the epoch), so only the test split's are scored.
            tested = {corpus.utterances[i].path for i in test}
            corpus = load_data(TrainConfig(data=str(data), classes=classes))
            test = np.array([i for i, u in enumerate(corpus.utterances) if u.path in tested], dtype=np.int64)
    if saved.get("speaker_norm"):
        known_speakers(corpus, f"{path} (trained with --speaker-norm)", "score a checkpoint trained without it")
    return corpus, test


def _member_logits(path: str | Path, data: str | None, classes: int | None, everything: bool, device: str,
                   batch_size: int, cache_dir: str | None) -> tuple[dict[str, Any], list[Path], np.ndarray, torch.Tensor]:
    """One checkpoint on the utterances it is scored on: (checkpoint, their audio files, targets, logits)."""
    from minser.data import cached_features
    from minser.features import FrontEnd
    from minser.speakers import normalise_by_speaker, statistics_for
    from minser.train import Tensors, class_logits

    saved = checkpoint.load(path)
    quantize = _check_quantization(saved, path, device)  # before the features, which may take minutes
    model = _scoring_model(saved, path, quantize, device)  # likewise: weights that do not fit are refused first
    corpus, test = _scored_corpus(saved, path, data, classes, everything)
    index, targets = _scored_items(saved, corpus, test, everything)
    with checkpoint.built_from(saved, path):
        frontend = FrontEnd.from_dict(saved["frontend"])
    features, lengths = cached_features(corpus, frontend, cache_dir, progress=False)
    if saved.get("speaker_norm"):
        # On the training corpus, the training statistics for the speakers they cover; everywhere else a
        # speaker's own utterances (another corpus may reuse a speaker id for somebody else).
        speakers = corpus.speakers()
        known = saved["speaker_norm"] if test is not None else {}
        features = normalise_by_speaker(features, speakers, statistics_for(features, lengths, speakers, known))
    pick = torch.as_tensor(index)
    # As in training: an utterance shorter than the network takes is read on into its padding.
    items = Tensors(torch.from_numpy(features)[pick], torch.from_numpy(lengths)[pick],
                    torch.from_numpy(targets)).at_least(model.min_frames)
    trained = saved.get("train", {})
    files = [corpus.utterances[i].path for i in index]
    # Scored as training scored its validation and test splits: under the run's autocast (bf16 by default
    # on CUDA), which can move an argmax that float32 would not.
    # An int8 network runs in float32, as Recognizer serves it.
    precision = "fp32" if quantize else trained.get("precision", "fp32")
    return saved, files, targets, class_logits(model, items, batch_size=batch_size,
                                               pad_to=trained.get("pad_to", "full"), device=device,
                                               precision=precision)


def _scoring_model(saved: dict[str, Any], path: str | Path, quantize: str | None, device: str) -> torch.nn.Module:
    """The network of checkpoint ``saved`` as it is scored on ``device``: quantized as :class:`~minser.Recognizer`
    serves it when ``quantize`` (:func:`_check_quantization`'s) is ``"int8"``, and a ``--impl triton`` network on
    the kernel path ``auto`` where the Triton kernels cannot run (a GPU run re-scored on the CPU). CheckpointError
    naming ``path`` when its model spec cannot be built or its weights do not fit it, as Recognizer says it."""
    from minser.kernels import check_impl
    from minser.recognizer import quantize_int8

    with checkpoint.built_from(saved, path):
        model = checkpoint.load_model(saved)
    try:
        check_impl(model.options.impl, device)
    except ConfigError:  # the kernel path does not change the weights; "auto" takes the one the device has
        model.set_impl("auto")
    if quantize == "int8":
        model = quantize_int8(model)
    return model.to(device)


def _check_quantization(saved: dict[str, Any], path: str | Path, device: str) -> str | None:
    """The ``"quantize"`` entry of checkpoint ``saved`` (:func:`~minser.checkpoint.quantization`); ConfigError
    for an int8 checkpoint on a device other than the CPU."""
    quantize = checkpoint.quantization(saved, str(path))
    if quantize == "int8" and torch.device(device).type != "cpu":
        raise ConfigError(f"{path}: an int8 checkpoint (python -m minser.export --quantize int8) runs on the "
                          f"CPU only (dynamic quantization); drop --device {device}")
    return quantize


def evaluate_checkpoint(path: str | Path | Sequence[str | Path], data: str | None = None, classes: int | None = None,
                        *, everything: bool = False, device: str = "cpu", batch_size: int = 64,
                        cache_dir: str | None = None) -> dict[str, Any]:
    """Score one checkpoint, or an ensemble of them: ``{"checkpoint", "fold", "n", "wa", "ua", "confusion"}``
    (WA/UA in percent; ``checkpoint`` joins an ensemble's paths with " + ").

    An ensemble (a sequence of paths) predicts the class of highest mean softmax probability over
    its members. They must know the same classes in the same order and, on their training corpus,
    share the test split: train them with the same ``--split-seed`` (see ``minser.train``).
    ``classes`` picks EmoDB's 4- or 7-class set; given with a manifest or folder ``data``, which takes
    its classes from its labels, it raises ConfigError, as ``python -m minser.train`` does.
    """
    from minser.data.corpora import check_classes_option
    from minser.train import score

    if data is not None:
        check_classes_option(classes, data)
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        raise CheckpointError("no checkpoint to score")
    refuse_repeated_checkpoints(paths, [Path(p) for p in paths])
    kwargs = dict(everything=everything, device=device, batch_size=batch_size, cache_dir=cache_dir)
    first, files, targets, logits = _member_logits(paths[0], data, classes, **kwargs)
    members = [logits]
    for other in paths[1:]:
        saved, other_files, _, other_logits = _member_logits(other, data, classes, **kwargs)
        if list(saved["labels"]) != list(first["labels"]):
            raise CheckpointError(f"{other} knows the classes {saved['labels']} but {paths[0]} knows "
                                  f"{first['labels']}; ensemble models trained on the same classes")
        if other_files != files:
            raise CheckpointError(f"{other} and {paths[0]} were tested on different utterances (different splits); "
                                  "ensemble runs trained with the same --split-seed and --subset, or pass --data "
                                  "with another corpus (or --all, where the runs share their --subset)")
        members.append(other_logits)
    logits = log_mean_softmax(members)  # the Recognizer's ensemble rule; one member's argmax is unchanged
    fold = first.get("fold", {}).get("name")
    return {"checkpoint": " + ".join(str(p) for p in paths), "fold": fold, "n": len(files),
            **score(targets, logits.argmax(-1), len(first["labels"]))}


def evaluate(path: str | Path | Sequence[str | Path], data: str | None = None, classes: int | None = None,
             **kwargs: Any) -> dict[str, Any]:
    """Score every checkpoint of ``path`` (see :func:`checkpoints_of`); mean and std (ddof=0) of WA and UA.

    Several runs (a sequence of run folders or files) are scored as an ensemble: the k-th
    checkpoints of every run form fold k's ensemble (see :func:`evaluate_checkpoint`).
    """
    from minser.train import summarise

    runs = [path] if isinstance(path, (str, Path)) else list(path)
    members = [checkpoints_of(run) for run in runs]
    refuse_repeated_checkpoints(runs, [found[0] for found in members])  # one run twice: the same first fold
    if len({len(found) for found in members}) > 1:
        counts = ", ".join(f"{run}: {len(found)}" for run, found in zip(runs, members))
        raise CheckpointError(f"an ensemble needs the same number of folds in every run ({counts}); "
                              "train them with the same --folds")
    folds = [evaluate_checkpoint(group[0] if len(group) == 1 else group, data, classes, **kwargs)
             for group in zip(*members)]
    return {**summarise(folds), "folds": folds}


@plain_warnings()
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m minser.evaluate``: prints one line per checkpoint and the mean; bad input exits 2, Ctrl-C 130 and a
    reader of the output that stopped early 141 (as a shell reports SIGINT and SIGPIPE)."""
    from minser.train import HelpFormatter, checked_device

    p = argparse.ArgumentParser(prog="python -m minser.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("paths", nargs="+", metavar="RUN_OR_CHECKPOINT",
                   help="a run folder (scores fold-<k>/best.pt) or a .pt file; several are scored as an ensemble "
                        "(mean softmax probability; the k-th checkpoints of every run form fold k's ensemble, "
                        "so train the runs with the same --split-seed)")
    p.add_argument("--data", help="corpus to score on: 'emodb', 'iemocap', a CSV manifest or a folder "
                                  "(default: the checkpoint's training data, on its fold's test split); the "
                                  "training corpus in another place (moved, copied: the same files, labels and "
                                  "speakers) is scored on the fold's test split too, another corpus on every "
                                  "utterance")
    p.add_argument("--classes", type=int, choices=(4, 7),
                   help="EmoDB classes, 4 or 7 (default: as trained; without --data only those); a manifest or "
                        "folder takes its classes from its labels")
    p.add_argument("--all", action="store_true",
                   help="score every utterance, not only the fold's test split (on the training corpus as trained, "
                        "every one the run drew: a --subset run's pick)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=64, help="utterances per forward pass")
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/minser/features)")
    args = p.parse_args(argv)
    try:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size {args.batch_size}: give an integer >= 1")
        checked_device(args.device)
        result = evaluate(args.paths, args.data, args.classes, everything=args.all, device=args.device,
                          batch_size=args.batch_size, cache_dir=args.cache_dir)
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Scores are printed at the end, and the feature cache, the one file written, is written atomically.
        print("interrupted before the scores were printed; rerun the same command", file=sys.stderr)
        return INTERRUPTED_STATUS
    try:
        for fold in result["folds"]:
            print(f"{fold['checkpoint']}: {fold['n']} utterances  WA {fold['wa']:6.2f}  UA {fold['ua']:6.2f}")
        print(f"mean: WA {result['wa']:.2f} ± {result['wa_std']:.2f}  UA {result['ua']:.2f} ± {result['ua_std']:.2f}")
        sys.stdout.flush()  # here, not at exit, so that a reader gone is caught below
    except BrokenPipeError:
        return broken_pipe_status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
