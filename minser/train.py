"""Train and evaluate a network with the paper's protocol, from one command.

    python -m minser.train --model ilt --fusion attention            # EmoDB, 4 classes, 5 random splits
    python -m minser.train --model cat --protocol speaker --folds 2  # leave-one-speaker-out, 2 folds
    torchrun --nproc_per_node 2 -m minser.train --model cat --out runs/cat-ddp   # DistributedDataParallel
    python -m minser.train --model cnn_transformer --protocol all --epochs 30 # every utterance, last epoch

The protocol (He, Minematsu, Saito): log-Mel features of 7.5 s (40 x 750), a white-noise copy
of every training and validation utterance (30 dB SNR over the whole file by default), Adam (lr 1e-4,
betas 0.9/0.99), cross-entropy, batches of 40, 100 epochs, and per fold the epoch with the best validation
WA is scored on the test set. The run folder gets ``config.json``, ``fold-<k>/{best.pt,last.pt,metrics.json}``,
``results.json`` (WA and UA in percent, mean and standard deviation over folds) and the confusion
matrix summed over folds as ``confusion.csv`` (and ``confusion.png`` when matplotlib is present).

Everything that draws random numbers is seeded from ``--seed``: model initialisation per fold,
the noise, batch order per epoch (a generator seeded by (seed, fold, epoch)) and dropout (the
global torch RNG, whose state ``last.pt`` saves), so ``--resume`` continues bit for bit. The splits
(and the ``--subset`` pick) come from ``--split-seed`` when given: runs that differ only in ``--seed``
then share their test folds, and ``python -m minser.evaluate RUN RUN ...`` scores them as an ensemble.

``--protocol all`` trains one fold on every utterance (and its noise copy) and keeps the last
epoch (as ``best.pt``): there is no validation or test part, so no epoch is selected and ``results.json`` has no
test metrics (``wa``/``ua`` are null, with a note). This is how a model to ship is trained.

Off by default, what the field adds to the paper's recipe: ``--spec-augment`` (SpecAugment-style
time and frequency masks on training batches), ``--crop`` (random windows of the training
utterances), ``--mixup`` (mixed pairs of training utterances and of their losses),
``--class-weights balanced``, ``--label-smoothing``, ``--lr-schedule cosine`` with ``--warmup-epochs``,
``--weight-decay`` (AdamW), ``--ema`` (validate and keep a moving average of the weights) and
``--speaker-norm`` (standardise the Mel bands per speaker, :mod:`minser.speakers`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minser import checkpoint, files
from minser.augment import (FREQ_MASK_SHARE, FREQ_MASKS, TIME_MASK_FRAMES, TIME_MASK_SHARE, TIME_MASKS,
                            masked_with_mean, mixup_pairs, random_crops, spec_augment_masks)
from minser.data.corpora import CORPUS_NAMES, check_classes_option
from minser.ema import WeightEMA
from minser.speakers import normalise_by_speaker, split_statistics
from minser.errors import INTERRUPTED_STATUS, ConfigError, DataError, MinserError, broken_pipe_status, plain_warnings

if TYPE_CHECKING:
    from minser.data import Corpus
    from minser.features import FrontEnd
    from minser.models import Network
    from minser.splits import Split

PROTOCOLS = ("random", "speaker", "session", "all")
FOLDS_OF = {"random": "its seeded splits", "speaker": "one per speaker", "session": "one per session",
            "all": "one, on every utterance"}  # what a protocol's folds are, for the --folds error
RANDOM_FRACTIONS = (0.55, 0.25, 0.2)  # the paper's train / validation / test shares
LOGO_VAL_FRACTION = 0.25  # leave-one-speaker/session-out: the share of the other groups' utterances that validates
LR_SCHEDULES = ("constant", "cosine")
PAD_TO = ("full", "batch")
CLASS_WEIGHTS = ("none", "balanced")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Batches of similar length are formed inside buckets of this many batches (pad_to="batch"):
# large enough to group lengths well, small enough to keep the batch order random.
BUCKET_BATCHES = 8
NO_TEST_NOTE = ("--protocol all trains on every utterance and keeps the last epoch: there is no test part, "
                "so no WA/UA; estimate the recipe's accuracy with --protocol random")
# What a run writes, atomically, into its folder and into each fold-<k>/.
RUN_FILES = ("config.json", "results.json", "confusion.csv", "confusion.png")
FOLD_FILES = ("best.pt", "last.pt", "metrics.json")
# Config fields that determine the result: a resumed run must agree on all of them.
RESULT_FIELDS = ("model", "options", "data", "classes", "subset", "protocol", "batch_size", "micro_batches", "lr",
                 "noise_snr", "pad_to", "seed", "precision", "spec_augment", "label_smoothing", "lr_schedule",
                 "warmup_epochs", "ema", "weight_decay", "crop", "mixup", "class_weights", "speaker_norm", "split_seed")

__all__ = ["TrainConfig", "class_logits", "main", "parse_args", "predict", "score", "train"]


@dataclass
class TrainConfig:
    """Every setting of a run; the defaults are the paper's protocol. Stored as ``config.json``."""

    model: str = "ilt"
    options: dict[str, Any] = field(default_factory=dict)  # model options (fusion, alpha, pe, branches, ...)
    data: str | os.PathLike[str] = "emodb"  # "emodb", "iemocap", a CSV manifest or a folder of label folders
    classes: int | None = 4          # EmoDB: 4 (anger, happiness, sadness, neutral) or 7; None for a manifest or folder
    subset: int | None = None        # keep this many utterances per class (seeded pick); None = all
    protocol: str = "random"         # random | speaker | session | all (train on everything, keep the last epoch)
    folds: int | None = None         # run only the first N folds
    epochs: int = 100
    batch_size: int = 40             # global batch; split across ranks under torchrun
    micro_batches: int = 1           # slices per rank, run one after another (gradient accumulation)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    lr_schedule: str = "constant"    # constant | cosine (to 0 at the last epoch), after the warm-up
    warmup_epochs: float = 0.0       # linear warm-up from 0 to lr over this many epochs
    label_smoothing: float = 0.0     # cross-entropy label smoothing in [0, 1)
    class_weights: str = "none"      # none | balanced (cross-entropy weights inverse to the training counts)
    spec_augment: bool = False       # time and frequency masks on the training batches
    crop: float | None = None        # seconds: train on a random window of at most this long per utterance
    mixup: float = 0.0               # Beta(mixup, mixup) weights of mixed training pairs; 0 = off
    ema: float = 0.0                 # decay per step of the weight average that is validated and kept; 0 = off
    weight_decay: float = 0.0        # decoupled weight decay (AdamW); 0 = the paper's plain Adam
    noise_snr: float | None = 30.0   # dB of the white-noise copies; None = no augmentation
    speaker_norm: bool = False       # standardise the Mel bands per speaker (statistics of the training part)
    pad_to: str = "full"             # full: every utterance 7.5 s; batch: pad to the batch's longest
    seed: int = 0
    split_seed: int | None = None    # seed of the splits and the --subset pick; None = seed
    device: str = "auto"             # auto = cuda if available else cpu
    precision: str = "auto"          # auto = bf16 (else fp16) autocast on CUDA, fp32 on CPU
    threads: int = 2                 # torch CPU threads
    out: str | os.PathLike[str] | None = None  # default runs/<model>-<timestamp>
    cache_dir: str | os.PathLike[str] | None = None  # feature cache; default ~/.cache/minser/features
    download: bool = False
    resume: bool = False


# ----------------------------------------------------------------------------------------------
# Command line


def _option_value(text: str) -> Any:
    """A ``--model-opt`` value: JSON when it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows an option's default unless there is none to show (``None``, a ``store_true`` flag, an empty list
    of a repeatable option) or its help already says it in words ("(default: as trained)"); the raw
    description keeps the docstring's layout."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        shown = action.default is not None and action.default is not False and action.default != []
        if not shown or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m minser.train`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m minser.train", description="\n\n".join(__doc__.split("\n\n")[:3]),
                                formatter_class=HelpFormatter)
    d = TrainConfig()
    p.add_argument("--model", default=d.model, help="network name (see minser.models.MODELS), e.g. ilt, cat, cnn")
    model = p.add_argument_group("model options (only passed when given; the model's defaults apply otherwise)")
    model.add_argument("--fusion", choices=("concat", "plus", "attention"), help="ILT: how the two branches are fused")
    model.add_argument("--alpha", type=float, help="ILT with --fusion plus (only): the LSTM branch's weight in [0, 1]")
    model.add_argument("--pe", action=argparse.BooleanOptionalAction, default=None,
                       help="add the sinusoidal positional encoding to the transformer input")
    model.add_argument("--branches", choices=("both", "c2l", "l2c"), help="CAT: which cross-attention branches")
    model.add_argument("--impl", choices=("auto", "torch", "triton"), help="attention kernel path")
    model.add_argument("--n-mels", type=int, help="Mel bands of the front end and the network's input (the "
                       "paper: 40; at most 149, the most bands the 400-point FFT gives a bin each); the run's "
                       "checkpoints record the front end, so evaluate and predict follow")
    model.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE",
                       help="any other model option, value parsed as JSON if possible (e.g. d_model=16, "
                            "channels=[4,4,4]); repeatable")
    p.add_argument("--data", default=d.data, help="'emodb', 'iemocap' (looked up in $MINSER_DATA, else "
                   "~/.cache/minser), a CSV manifest (path,label[,speaker[,session]]) or a folder of label folders; "
                   "a path is recorded absolute, so minser.evaluate finds the corpus from any folder")
    # No default here: given with a manifest or folder (whose labels are the classes) it is refused.
    p.add_argument("--classes", type=int, choices=(4, 7), help=f"EmoDB: 4 (anger, happiness, sadness, neutral) or 7 (default: "
                   f"{d.classes}); a manifest or folder takes its classes from its labels")
    p.add_argument("--subset", type=int, help="use only this many utterances per class (seeded pick; all of a class "
                                                  "that has fewer; quick runs)")
    p.add_argument("--download", action="store_true", help="download EmoDB into the data folder if it is missing")
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/minser/features)")
    p.add_argument("--protocol", choices=PROTOCOLS, default=d.protocol,
                   help="random: the paper's 5 seeded 0.55/0.25/0.2 train/val/test splits; speaker: "
                        "leave-one-speaker-out (a manifest needs a speaker column); session: "
                        "leave-one-session-out (IEMOCAP); all: one fold training on every utterance, keeping the "
                        "last epoch (no validation or test part, so no WA/UA)")
    p.add_argument("--folds", type=int, help="run only the first N of the protocol's folds (default: all)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs per fold")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size (split across ranks)")
    p.add_argument("--micro-batches", type=int, default=d.micro_batches,
                   help="cut each rank's share of a batch into this many slices run one after another "
                        "(gradient accumulation: less memory, same batch size; BatchNorm sees each slice)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (betas 0.9, 0.99)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                   help="constant, or cosine decay to 0 at the last epoch; both after --warmup-epochs "
                        "(set per optimiser step)")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="linear learning-rate warm-up from 0 over this many epochs")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                   help="cross-entropy label smoothing in [0, 1)")
    p.add_argument("--class-weights", choices=CLASS_WEIGHTS, default=d.class_weights,
                   help="none: plain cross-entropy (the paper); balanced: weight each class by N / (classes x its "
                        "count) in the fold's training part, so every class counts alike, as UA does")
    p.add_argument("--spec-augment", action="store_true",
                   help=f"SpecAugment-style masks on every training utterance (seeded; within its valid frames): "
                        f"{FREQ_MASKS} frequency masks of up to {100 * FREQ_MASK_SHARE:.0f}%% of the Mel bands and "
                        f"{TIME_MASKS} time masks of up to {TIME_MASK_FRAMES} frames (at most "
                        f"{100 * TIME_MASK_SHARE:.0f}%% of the utterance), filled with the utterance's mean")
    p.add_argument("--crop", type=float, default=d.crop, metavar="SECONDS",
                   help="train on a random window of at most this many seconds of each utterance, drawn anew every "
                        "epoch (seeded); validation and test see whole utterances. Needs --pad-to batch")
    p.add_argument("--mixup", type=float, default=d.mixup, metavar="ALPHA",
                   help="mixup: train on weighted sums of two utterances of a batch and of their losses, the weight "
                        "drawn from Beta(ALPHA, ALPHA) per utterance (seeded; e.g. 0.4); with --pad-to batch a pair "
                        "keeps the shorter one's valid frames; 0 = off (the paper)")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY",
                   help="validate, select and save an exponential moving average of the weights with this decay "
                        "per optimiser step (e.g. 0.995), warmed up as min(DECAY, (1 + t) / (10 + t)) at step t, "
                        "so DECAY = 0.995 takes effect after 1790 steps; 0 = off, the weights of the last step "
                        "(the paper)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="decoupled weight decay (AdamW); 0 = plain Adam (the paper)")
    noise = p.add_mutually_exclusive_group()  # both given, one would be dropped without a word
    noise.add_argument("--noise-snr", type=float, default=d.noise_snr,
                       help="SNR in dB of the white-noise copy added for every train and validation utterance")
    noise.add_argument("--no-noise", action="store_true", help="no noise augmentation")
    p.add_argument("--speaker-norm", action="store_true",
                   help="standardise every Mel band per speaker with the mean and std of that speaker's clean "
                        "training utterances (a speaker absent from them: their own utterances, label-free; a "
                        "manifest needs a speaker column); "
                        "minser.evaluate scores such checkpoints as it scores any; minser.predict and Recognizer "
                        "need the speaker enrolled first (--enrol FILE..., Recognizer.for_speaker; see minser.speakers)")
    p.add_argument("--pad-to", choices=PAD_TO, default=d.pad_to,
                   help="full: pad every utterance to 7.5 s (the paper); batch: batch utterances of similar "
                        "length, pad to the batch's longest and pass lengths to the model (faster)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of splits, initialisation, noise and batch order")
    p.add_argument("--split-seed", type=int,
                   help="seed of the splits (and the --subset pick) alone, so that runs with different --seed "
                        "share their test folds, e.g. to ensemble them with minser.evaluate (default: --seed)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto: bf16 autocast on CUDA (fp16 + GradScaler where bf16 is missing), fp32 on CPU")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--out", help="run folder (default runs/<model>-<timestamp>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch (same settings required; "
                        "--epochs and --folds may grow)")
    return p


def given_options(argv: Sequence[str]) -> dict[str, Any]:
    """The options ``argv`` gives, by dest (``{"pad_to": "batch"}``), read by :func:`build_parser` itself, so
    that ``--opt value``, ``--opt=value`` and abbreviations (``--pad=batch``) count as they do in a run; for
    scripts that run minser.train with arguments of their own and must not let a user's override them.
    Arguments the parser does not know are left out, for the run to refuse."""
    parser = build_parser()
    blank = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([])), None))  # None: not given
    return {dest: value for dest, value in vars(parser.parse_known_args(list(argv), namespace=blank)[0]).items()
            if value is not None}


def given_settings(argv: Sequence[str]) -> list[tuple[str, str]]:
    """The settings ``argv`` gives (:func:`given_options`), as ``(name, flag)``: an option's dest and flag
    (``("epochs", "--epochs")``), and for each ``--model-opt KEY=VALUE`` its KEY (``("fusion", "--model-opt
    fusion")``), which is also the dest of the model flag of that name (``--fusion``)."""
    settings = []
    for dest, value in given_options(argv).items():
        if dest == "model_opt":
            settings += [(key, f"--model-opt {key}") for key in (item.partition("=")[0].strip() for item in value)]
        else:
            settings.append((dest, f"--{dest.replace('_', '-')}"))
    return settings


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line into a :class:`TrainConfig`; bad option values raise ConfigError."""
    args = build_parser().parse_args(argv)
    options: dict[str, Any] = {}
    for item in args.model_opt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-opt {item!r}: expected KEY=VALUE, e.g. --model-opt d_model=32")
        options[key.strip()] = _option_value(value.strip())
    for key in ("fusion", "alpha", "pe", "branches", "impl", "n_mels"):
        if getattr(args, key) is not None:
            if key in options:  # one silently won (the flag), and errors named the one that lost
                raise ConfigError(f"--{key.replace('_', '-')} and --model-opt {key}=... both set {key}; give it once")
            options[key] = getattr(args, key)
    check_classes_option(args.classes, args.data)
    config = TrainConfig(
        model=args.model, options=options, data=args.data,
        classes=TrainConfig.classes if args.classes is None else args.classes, subset=args.subset,
        protocol=args.protocol, folds=args.folds, epochs=args.epochs, batch_size=args.batch_size,
        micro_batches=args.micro_batches, lr=args.lr, lr_schedule=args.lr_schedule,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        class_weights=args.class_weights, spec_augment=args.spec_augment,
        crop=args.crop, mixup=args.mixup, ema=args.ema, weight_decay=args.weight_decay,
        noise_snr=None if args.no_noise else args.noise_snr, speaker_norm=args.speaker_norm, pad_to=args.pad_to,
        seed=args.seed, split_seed=args.split_seed, device=args.device, precision=args.precision, threads=args.threads, out=args.out,
        cache_dir=args.cache_dir, download=args.download, resume=args.resume)
    check_config(config)
    return config


def check_config(config: TrainConfig) -> None:
    """Raise ConfigError naming the first invalid setting (unknown model lists the valid ones)."""
    from minser.models import MODELS

    if config.model not in MODELS:
        raise ConfigError(f"--model {config.model!r} is unknown; valid models: {', '.join(sorted(MODELS))}")
    # Seeds >= 0: NumPy's SeedSequence refuses negative ones, which ended the run in a traceback at the splits.
    for name, minimum in (("epochs", 1), ("batch_size", 1), ("micro_batches", 1), ("threads", 1), ("folds", 1),
                          ("subset", 1), ("seed", 0), ("split_seed", 0)):
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: give an integer >= {minimum}")
    if config.batch_size < config.micro_batches:  # a batch cut into more slices than utterances leaves one empty
        raise ConfigError(f"--micro-batches {config.micro_batches} is more than --batch-size {config.batch_size}; "
                          "give at least one utterance per slice")
    for name in ("lr", "weight_decay", "mixup", "crop", "warmup_epochs"):
        value = getattr(config, name)
        if value is not None and not math.isfinite(value):  # inf passes every range check below
            raise ConfigError(f"--{name.replace('_', '-')} {value}: give a finite number")
    if not config.lr > 0:
        raise ConfigError(f"--lr {config.lr}: give a positive learning rate")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"--lr-schedule {config.lr_schedule!r}: valid values are {', '.join(LR_SCHEDULES)}")
    if not 0 <= config.warmup_epochs <= config.epochs:
        raise ConfigError(f"--warmup-epochs {config.warmup_epochs}: give a number of epochs in [0, --epochs]")
    if not 0 <= config.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing {config.label_smoothing}: give a value in [0, 1)")
    if config.class_weights not in CLASS_WEIGHTS:
        raise ConfigError(f"--class-weights {config.class_weights!r}: valid values are {', '.join(CLASS_WEIGHTS)}")
    if config.crop is not None and not config.crop > 0:
        raise ConfigError(f"--crop {config.crop}: give a positive window length in seconds, e.g. 2")
    if config.crop is not None and config.pad_to != "batch":
        raise ConfigError("--crop needs --pad-to batch: the windows have their own lengths, which the model must mask")
    if not config.mixup >= 0:
        raise ConfigError(f"--mixup {config.mixup}: give a Beta parameter > 0, e.g. 0.4 (0 turns mixup off)")
    if not 0 <= config.ema < 1:
        raise ConfigError(f"--ema {config.ema}: give a decay in [0, 1), e.g. 0.995 (0 turns averaging off)")
    if config.noise_snr is not None and not np.isfinite(config.noise_snr):
        raise ConfigError(f"--noise-snr {config.noise_snr}: give a finite SNR in dB, e.g. 30 (or --no-noise)")
    if not config.weight_decay >= 0:
        raise ConfigError(f"--weight-decay {config.weight_decay}: give a value >= 0")
    if config.protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {config.protocol!r}: valid protocols are {', '.join(PROTOCOLS)}")
    if config.pad_to not in PAD_TO:
        raise ConfigError(f"--pad-to {config.pad_to!r}: valid values are {', '.join(PAD_TO)}")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"--precision {config.precision!r}: valid values are {', '.join(PRECISIONS)}")
    if config.resume and not config.out:
        raise ConfigError("--resume needs --out RUN_FOLDER: the run to continue")
    _check_model_options(config)


def _check_model_options(config: TrainConfig) -> None:
    """Refuse model options that the run would ignore, that the front end cannot compute, or that the
    network refuses (``minser.models.build``), before any data is looked for."""
    from minser.features import FrontEnd, most_mel_bands
    from minser.models import MODELS, build

    # build(name, n_classes, **options) takes these two itself: as options they were a TypeError traceback.
    if "name" in config.options:
        raise ConfigError(f"--model-opt name={config.options['name']}: the network is not a model option; choose it "
                          f"with --model (e.g. --model {config.options['name']})")
    if "n_classes" in config.options:
        raise ConfigError(f"--model-opt n_classes={config.options['n_classes']}: the number of classes is not a model "
                          "option, it is the corpus's number of labels (EmoDB: --classes 4 or 7; a manifest or folder: "
                          "its labels); drop it")
    defaults = {f.name: f.default for f in dataclasses.fields(MODELS[config.model].Options)}
    if "alpha" in config.options and "fusion" in defaults:
        fusion = config.options.get("fusion", defaults["fusion"])
        if fusion != "plus":  # the only fusion with a fixed weight (minser.models.blocks.Fusion)
            given = "" if "fusion" in config.options else " (the default)"
            raise ConfigError(f"--alpha {config.options['alpha']}: only --fusion plus (alpha * L + (1 - alpha) * T) "
                              f"uses alpha, and the fusion is {fusion!r}{given}; add --fusion plus or drop --alpha")
    # The front end warns of this (features._check_bands: checkpoints of earlier versions must load), and only once
    # the corpus is read: a run refuses it here, in the command's option names (it has no --n-fft to offer).
    n_mels = config.options.get("n_mels")
    if isinstance(n_mels, int) and n_mels > (most := most_mel_bands(FrontEnd.sample_rate, FrontEnd.n_fft)):
        raise ConfigError(f"--n-mels {n_mels}: the front end's {FrontEnd.n_fft}-point FFT gives a frequency bin to "
                          f"every Mel band only up to {most} bands (more leave the narrow low bands without one: "
                          f"features at the dB floor whatever the audio); give --n-mels {most} or fewer "
                          "(the paper: 40)")
    # The network's own checks, before any data is looked for; its class count does not change them. On the
    # meta device building allocates no weights (whatever --model-opt d_model=... asks) and draws no random
    # numbers, so the caller's random stream stays as it was.
    with torch.device("meta"):
        network = build(config.model, 2, **config.options)
    frontend = FrontEnd(n_mels=network.options.n_mels)
    if network.min_frames > frontend.n_frames:
        hop = frontend.hop_length / frontend.sample_rate
        raise ConfigError(f"--model {config.model} with these options shortens time by more than the front end's "
                          f"{frontend.n_frames} frames ({frontend.seconds:g} s): it needs at least "
                          f"{network.min_frames} ({network.min_frames * hop:g} s); take smaller time strides or "
                          "pools (--model-opt time_pools=..., time_strides=..., lstm_stride=...)")


# ----------------------------------------------------------------------------------------------
# Data


def load_data(config: TrainConfig, *, offer_download: bool = False) -> Corpus:
    """The corpus of ``config`` (``--data``, ``--classes``, ``--subset``), downloading EmoDB if asked.

    ``offer_download``: the calling command has ``--download`` (``python -m minser.train``), so the error
    for a missing EmoDB suggests it; other commands (``minser.evaluate``) must not name a flag they lack.
    """
    from minser.data import download_emodb, load_corpus

    try:
        corpus = load_corpus(config.data, classes=config.classes)
    except DataError as exc:
        if str(config.data).lower() != "emodb":
            raise
        if not config.download:
            if not offer_download:
                raise
            raise DataError(f"{exc}; or pass --download to fetch EmoDB into the data folder") from exc
        download_emodb()
        corpus = load_corpus(config.data, classes=config.classes)
    if config.subset is not None:
        corpus = corpus.subset(subset_indices(corpus.targets(), config.subset, split_seed(config)))
    return corpus


def _warn_whole_classes(corpus: Corpus, subset: int | None) -> None:
    """``--subset N`` takes every utterance of a class that has fewer than N; say which, as they stay fewer."""
    if subset is None:
        return
    counts = np.bincount(corpus.targets(), minlength=len(corpus.labels))
    short = [f"{label} {n}" for label, n in zip(corpus.labels, counts) if n < subset]
    if short:
        warnings.warn(f"--subset {subset}: these classes have fewer utterances, and every one of them is used: "
                      f"{', '.join(short)}", UserWarning, stacklevel=2)


def corpus_spec(data: str | os.PathLike[str]) -> str:
    """``--data`` as a run records it: a corpus name in lower case, a manifest or folder as an absolute
    path (a string), so that the run can be evaluated from any folder."""
    data = os.fspath(data)
    return data.lower() if data.lower() in CORPUS_NAMES else os.path.abspath(data)


def split_seed(config: TrainConfig) -> int:
    """The seed of the splits and the subset pick: ``--split-seed``, else ``--seed``."""
    return config.seed if config.split_seed is None else config.split_seed


def subset_indices(targets: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` utterances of each class (all where fewer), seeded, in corpus order."""
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(targets == c))[:per_class] for c in np.unique(targets)]
    return np.sort(np.concatenate(picked))


def make_splits(corpus: Corpus, config: TrainConfig) -> list[Split]:
    """The folds of ``config.protocol`` over ``corpus``, limited to ``config.folds``.

    ``all`` is one fold training on every utterance, with empty validation and test parts. A corpus of
    fewer than two labels is refused (DataError) here, not in :func:`load_data`: it cannot train a classifier,
    but minser.evaluate scores a model on it.
    """
    from minser.splits import Split, leave_one_group_out, random_splits

    if len(corpus.labels) < 2:
        found = ", ".join(repr(label) for label in corpus.labels) or "none"
        raise DataError(f"{config.data}: the utterances carry {len(corpus.labels)} emotion label ({found}); a "
                        "classifier needs utterances of two emotions or more")
    targets, seed = corpus.targets(), split_seed(config)
    if config.protocol == "all":
        none = np.empty(0, dtype=np.int64)
        splits = [Split("all-utterances", np.arange(len(targets), dtype=np.int64), none, none)]
    elif config.protocol == "random":
        _check_class_sizes(corpus, targets, config.subset)
        splits = random_splits(targets, n_splits=5, fractions=RANDOM_FRACTIONS, seed=seed)
    else:
        splits = leave_one_group_out(_groups(corpus, config.protocol), targets, val_fraction=LOGO_VAL_FRACTION,
                                     seed=seed)
    if config.folds is not None and config.folds > len(splits):
        raise ConfigError(f"--folds {config.folds}: --protocol {config.protocol} has {len(splits)} fold(s) on "
                          f"{corpus.name} ({FOLDS_OF[config.protocol]}); give --folds {len(splits)} or fewer, or "
                          "leave it out to run them all")
    splits = list(splits)[: config.folds]
    if config.protocol in ("speaker", "session"):
        _check_validation_parts(corpus, config.protocol, splits)
    return splits


def _groups(corpus: Corpus, protocol: str) -> np.ndarray:
    """The speaker or session ids ``(len(corpus),)`` that ``--protocol speaker`` or ``session`` leaves out in
    turn; DataError, in the command's terms, when there is only one: no fold would have data to train on."""
    if protocol == "speaker":
        groups = known_speakers(corpus, "--protocol speaker", "use --protocol random")
    else:
        groups = corpus.sessions()
        _refuse_speakers_in_two_sessions(corpus, groups)
    names = np.unique(groups)
    if names.size == 1:
        raise DataError(f"{corpus.name}: the corpus has only one {protocol}, {str(names[0])!r}; --protocol {protocol} "
                        f"(leave-one-{protocol}-out) needs at least two, one to test on and others to train on; "
                        "use --protocol random")
    return groups


def _refuse_speakers_in_two_sessions(corpus: Corpus, sessions: np.ndarray) -> None:
    """DataError naming a speaker recorded in two sessions (a manifest's columns; IEMOCAP's loader refuses
    it): leave-one-session-out would test on a speaker it trained on. Unknown speakers are not compared."""
    from minser.data.corpora import UNKNOWN_SPEAKER

    first: dict[str, int] = {}
    for index, speaker in enumerate(corpus.speakers()):
        if speaker == UNKNOWN_SPEAKER:
            continue
        seen = first.setdefault(speaker, index)
        if sessions[seen] != sessions[index]:
            raise DataError(f"{corpus.name}: speaker {str(speaker)!r} is in sessions {str(sessions[seen])!r} "
                            f"({corpus.utterances[seen].path}) and {str(sessions[index])!r} "
                            f"({corpus.utterances[index].path}), so leave-one-session-out would test on a voice it "
                            "trained on; use --protocol speaker, or fix the session column")


def known_speakers(corpus: Corpus, option: str, instead: str) -> np.ndarray:
    """The speaker ids ``(len(corpus),)`` for ``option`` (``--protocol speaker``, ``--speaker-norm``, a checkpoint
    trained with it); DataError ending with the way out ``instead`` when some are unknown (a manifest without a
    speaker column or with empty cells, a folder corpus), which would otherwise make one "speaker" of everybody
    unnamed."""
    from minser.data.corpora import UNKNOWN_SPEAKER

    speakers = corpus.speakers()
    unknown = np.flatnonzero(speakers == UNKNOWN_SPEAKER)
    if unknown.size == len(speakers):
        raise DataError(f"{corpus.name}: {option} needs the speaker of every utterance, and this corpus names none: "
                        "a CSV manifest needs a speaker column (path,label,speaker), and a folder of label folders has "
                        f"no speakers; add the column or {instead}")
    if unknown.size:
        raise DataError(f"{corpus.name}: {option} needs the speaker of every utterance, but {unknown.size} of "
                        f"{len(speakers)} have none (first: {corpus.utterances[unknown[0]].path}); fill in the "
                        f"manifest's speaker column or {instead}")
    return speakers


def _check_class_sizes(corpus: Corpus, targets: np.ndarray, subset: int | None) -> None:
    """Refuse a class too small for the random protocol's 55/25/20 split to give it training, validation
    and test utterances: a ``--subset`` below that (ConfigError), else often a mistyped label, which would
    otherwise become a class of its own (DataError)."""
    from minser.splits import min_class_size

    needed, counts = min_class_size(RANDOM_FRACTIONS), np.bincount(targets, minlength=len(corpus.labels))
    rule = (f"--protocol random needs at least {needed} utterances per class (some for training, validation and "
            "test each)")
    if subset is not None and subset < needed:  # every class is then too small: the fix is --subset, not a label
        raise ConfigError(f"--subset {subset}: {rule}; give --subset {needed} or more")
    small = [f"{label!r} ({count})" for label, count in zip(corpus.labels, counts) if count < needed]
    if small:
        raise DataError(f"{corpus.name}: {rule}; too few for {', '.join(small)}. Check the labels for typos, add "
                        "utterances, or drop the class")


def _check_validation_parts(corpus: Corpus, protocol: str, splits: Sequence[Split]) -> None:
    """Refuse a leave-one-group-out fold without validation utterances: it would select no epoch and score no
    test part, as ``--protocol all`` does (a small corpus or ``--subset`` leaves a class too few utterances)."""
    from minser.splits import min_class_size

    empty = next((split for split in splits if len(split.val) == 0), None)
    if empty is not None:
        needed = min_class_size((1 - LOGO_VAL_FRACTION, LOGO_VAL_FRACTION))
        raise DataError(f"{corpus.name}: --protocol {protocol} leaves fold {empty.name!r} no validation utterance: "
                        f"validation takes {LOGO_VAL_FRACTION:.0%} of each class outside the left-out {protocol}, "
                        f"which needs {needed} or more utterances of the class, and no class has that many there "
                        f"({len(empty.train)} utterances in all). Add utterances (a larger --subset) or use "
                        "--protocol random")


def _warn_untrained_classes(corpus: Corpus, protocol: str, splits: Sequence[Split]) -> None:
    """Warn of each leave-one-group-out fold whose training part holds no utterance of a label its test part
    holds (in a corpus where only the left-out speaker or session has it): the network cannot predict that
    label there, and the fold's UA counts it at 0 recall. The random protocol stratifies every class."""
    targets = corpus.targets()
    for split in splits:
        missing = sorted(set(targets[split.test].tolist()) - set(targets[split.train].tolist()))
        if missing:
            names = ", ".join(corpus.labels[k] for k in missing)
            warnings.warn(f"--protocol {protocol}: fold {split.name!r} trains on no utterance of {names}, which its "
                          f"test part holds (only that {protocol} has them): the network cannot predict them there, "
                          "and the fold's UA counts them at 0 recall", stacklevel=2)


def noisy_features(corpus: Corpus, frontend: FrontEnd, snr_db: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of a white-noise copy of every utterance at ``snr_db`` dB: ``((N, n_mels, frames), (N,))``.

    Made once per run (not per epoch) from a generator seeded by ``seed``, so every fold and
    every epoch sees the same noisy copies. A silent file raises AudioError naming it: the noise level
    is relative to the signal's, and a feature cache of an older version may hold such a file unchecked.
    """
    from minser.audio import add_white_noise
    from minser.data.cache import load_sounding
    from minser.features import extract

    rng = np.random.default_rng([seed, 1])
    features = np.empty((len(corpus), frontend.n_mels, frontend.n_frames), dtype=np.float32)
    lengths = np.empty(len(corpus), dtype=np.int64)
    step = 32
    for start in range(0, len(corpus), step):
        chunk = corpus.utterances[start:start + step]
        waves = [add_white_noise(load_sounding(u.path, corpus, frontend.sample_rate, frontend.win_length), snr_db, rng)
                 for u in chunk]
        features[start:start + len(chunk)], lengths[start:start + len(chunk)] = extract(waves, frontend)
    return features, lengths


@dataclass
class Tensors:
    """Model inputs kept in memory: ``x (N, n_mels, frames)`` float32, ``lengths (N,)``, ``y (N,)`` int64."""

    x: torch.Tensor
    lengths: torch.Tensor
    y: torch.Tensor

    def take(self, index: np.ndarray | torch.Tensor) -> Tensors:
        i = torch.as_tensor(index, dtype=torch.long)
        return Tensors(self.x[i], self.lengths[i], self.y[i])

    def at_least(self, frames: int) -> Tensors:
        """These utterances with every length raised to ``frames``: a shorter one is read on into its padding,
        as if padded with silence to ``frames`` (the features past an utterance's end are its padding)."""
        return Tensors(self.x, self.lengths.clamp(min=frames), self.y)

    @staticmethod
    def cat(*parts: Tensors) -> Tensors:
        return Tensors(*(torch.cat(items) for items in zip(*((p.x, p.lengths, p.y) for p in parts))))


# ----------------------------------------------------------------------------------------------
# Batches, steps, scoring


def batch_indices(lengths: torch.Tensor, batch_size: int, generator: torch.Generator, pad_to: str) -> list[torch.Tensor]:
    """Shuffled batches of indices into ``lengths``.

    ``full``: a random permutation cut into batches. ``batch``: the permutation is cut into
    buckets of :data:`BUCKET_BATCHES` batches, each bucket sorted by length and cut into batches,
    and the batch order shuffled, so that batches hold utterances of similar length.
    """
    order = torch.randperm(len(lengths), generator=generator)
    if pad_to == "full":
        return list(order.split(batch_size))
    batches = []
    for bucket in order.split(batch_size * BUCKET_BATCHES):
        by_length = bucket[torch.argsort(lengths[bucket], stable=True)]
        batches.extend(by_length.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def model_input(data: Tensors, index: torch.Tensor, pad_to: str, device: torch.device,
                frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, lengths)`` of the utterances at ``index`` on ``device``: full 7.5 s without lengths
    (the paper), or cut to ``frames`` (default: the longest at ``index``) with lengths (``pad_to="batch"``)."""
    if pad_to == "full":
        return data.x[index].to(device, non_blocking=True), None
    lengths = data.lengths[index]
    frames = int(lengths.max()) if frames is None else frames
    return data.x[index, :, :frames].to(device, non_blocking=True), lengths.to(device, non_blocking=True)


def learning_rate(config: TrainConfig, epoch: float) -> float:
    """The learning rate at ``epoch`` (fractional: ``epoch + step / steps``): a linear warm-up over
    ``warmup_epochs``, then ``lr`` (constant) or a cosine from ``lr`` down to 0 at ``epochs``."""
    if epoch < config.warmup_epochs:
        return config.lr * epoch / config.warmup_epochs
    if config.lr_schedule == "constant":
        return config.lr
    progress = (epoch - config.warmup_epochs) / max(config.epochs - config.warmup_epochs, 1e-12)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``, None for fp32."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@torch.no_grad()
def class_logits(model: torch.nn.Module, data: Tensors, *, batch_size: int = 64, pad_to: str = "full",
                 device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """Logits ``(N, classes)`` (float32, on the CPU) of the ``N >= 1`` utterances of ``data``, in eval
    mode and without gradients (batches sorted by length for ``batch``)."""
    device = torch.device(device)
    dtype = autocast_dtype(precision, device)
    was_training = model.training
    model.eval()
    order = torch.argsort(data.lengths, stable=True) if pad_to == "batch" else torch.arange(len(data.y))
    batches = order.split(batch_size)
    outputs = []
    for index in batches:
        x, lengths = model_input(data, index, pad_to, device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs.append(model(x, lengths=lengths).float().cpu())
    model.train(was_training)
    logits = torch.empty(len(data.y), outputs[0].shape[-1])
    logits[torch.cat(batches)] = torch.cat(outputs)
    return logits


def predict(model: torch.nn.Module, data: Tensors, **kwargs: Any) -> torch.Tensor:
    """Predicted class indices ``(N,)`` of ``data``: the argmax of :func:`class_logits` (same keywords)."""
    return class_logits(model, data, **kwargs).argmax(-1)


def score(targets: torch.Tensor | np.ndarray, predictions: torch.Tensor | np.ndarray, n_classes: int) -> dict[str, Any]:
    """``{"wa", "ua"}`` in percent and ``"confusion"`` (rows true class, columns predicted) as lists."""
    from minser.metrics import confusion_matrix, unweighted_accuracy, weighted_accuracy

    y, p = np.asarray(targets), np.asarray(predictions)
    return {"wa": 100.0 * float(weighted_accuracy(y, p)), "ua": 100.0 * float(unweighted_accuracy(y, p, n_classes)),
            "confusion": np.asarray(confusion_matrix(y, p, n_classes)).astype(int).tolist()}


# ----------------------------------------------------------------------------------------------
# Distributed data parallel


@dataclass(frozen=True)
class Dist:
    """This process's place under torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); 0/1/0 alone."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_dist() -> Dist:
    """This process's place as torchrun's environment variables describe it; ``Dist()`` when run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def end_with_parent() -> None:
    """Have Linux end this process (SIGTERM) when its parent dies. torchrun starts its workers in sessions
    of their own, so a torchrun killed with SIGKILL left them training, and writing into the run folder that
    a --resume of the user would write into too. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the call: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def init_distributed(config: TrainConfig) -> Dist:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU); no-op when run alone."""
    dist = torchrun_dist()
    if dist.world == 1:
        return dist
    end_with_parent()
    if config.batch_size < dist.world * config.micro_batches:
        raise ConfigError(f"--batch-size {config.batch_size} is smaller than {dist.world} ranks x "
                          f"{config.micro_batches} micro-batches; give at least one utterance per slice")
    if not torch.distributed.is_initialized():
        device = resolve_device(config, dist)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL collectives (barrier) run on this rank's GPU
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist


def checked_device(name: str) -> torch.device:
    """The device ``--device name`` names (``cpu``, ``cuda`` or ``cuda:N``); ConfigError if torch does not
    know it or this machine lacks it."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device; give cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: minser runs on cpu or cuda only")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def resolve_device(config: TrainConfig, dist: Dist) -> torch.device:
    """``--device``; ``auto`` is CUDA (``cuda:LOCAL_RANK`` under torchrun) when present, else CPU."""
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = checked_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", dist.local_rank)
    return device


# ----------------------------------------------------------------------------------------------
# One fold


def _seed_of(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (seed, fold, epoch, ...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _stream(on: Any, *keys: int) -> torch.Generator | None:
    """An augmentation's own generator, seeded from ``keys``, or None when ``on`` is falsy. Each
    augmentation draws from its own stream, so turning one on leaves the batch order and the other
    augmentations' draws as they were."""
    return torch.Generator().manual_seed(_seed_of(*keys)) if on else None


def _rng_states(device: torch.device) -> dict[str, Any]:
    """torch's global random states, which dropout draws from. Not numpy's or Python's: minser draws from
    neither (its other streams are seeded generators), and saving them, never seeded, made the checkpoints
    of two identical runs differ."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _rank_rng_states(learner: Learner) -> list[dict[str, Any]]:
    """:func:`_rng_states` of every rank, in rank order (gathered under torchrun). Each rank draws its own
    dropout masks, and slices of unequal size leave the ranks' streams apart: resuming every rank from
    rank 0's made the run differ from an uninterrupted one."""
    mine, world = _rng_states(learner.device), learner.dist.world
    if world == 1:
        return [mine]
    home = learner.device if learner.device.type == "cuda" else torch.device("cpu")  # NCCL gathers CUDA tensors
    gathered: dict[str, list[torch.Tensor]] = {}
    for key, state in mine.items():
        parts = [torch.empty_like(state, device=home) for _ in range(world)]
        torch.distributed.all_gather(parts, state.to(home))
        gathered[key] = [part.cpu() for part in parts]
    return [{key: parts[rank] for key, parts in gathered.items()} for rank in range(world)]


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], device)


@dataclass
class Fold:
    """What one fold needs: its index and name, train/val/test tensors and test indices into the corpus."""

    index: int
    name: str
    train: Tensors
    val: Tensors
    test: Tensors
    test_indices: list[int]
    speaker_norm: dict[str, list[list[float]]] | None = None  # the statistics the inputs were standardised with


def make_fold(index: int, split: Split, clean: Tensors, noisy: Tensors | None, speakers: np.ndarray | None,
              min_frames: int = 1) -> Fold:
    """Fold ``index`` of ``split``: training and validation parts with their noise copies, the clean test part.

    An utterance shorter than ``min_frames`` (the network's :attr:`~minser.models.Network.min_frames`)
    is given that many frames, as :class:`~minser.Recognizer` serves it.

    With ``speakers`` (``--speaker-norm``, see :mod:`minser.speakers`) every part is standardised per
    speaker with the statistics of the fold's clean training utterances; a speaker absent from them
    (the test speaker of leave-one-speaker-out) gets those of their own utterances, label-free.
    """
    stats = None
    if speakers is not None:
        stats = split_statistics(clean.x.numpy(), clean.lengths.numpy(), speakers, split)

        def normalised(part: Tensors) -> Tensors:
            return Tensors(torch.from_numpy(normalise_by_speaker(part.x.numpy(), speakers, stats)), part.lengths, part.y)

        clean, noisy = normalised(clean), None if noisy is None else normalised(noisy)
    clean, noisy = clean.at_least(min_frames), None if noisy is None else noisy.at_least(min_frames)

    def augmented(rows: np.ndarray) -> Tensors:
        return clean.take(rows) if noisy is None else Tensors.cat(clean.take(rows), noisy.take(rows))

    return Fold(index, split.name, augmented(split.train), augmented(split.val), clean.take(split.test),
                [int(i) for i in split.test], stats)


@dataclass
class Learner:
    """One fold's training state and what a step needs to run.

    ``model`` is the network being trained and ``ddp`` the same network as this rank runs it
    (wrapped in DistributedDataParallel under torchrun, else ``model`` itself); ``ema`` (``--ema``)
    holds the moving average that is validated, selected and saved instead of ``model``.
    ``dtype`` is the autocast dtype (None: float32) and ``class_weight`` ``(n_classes,)`` the
    cross-entropy weights of ``--class-weights balanced``.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    config: TrainConfig
    dist: Dist = field(default_factory=Dist)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype | None = None
    class_weight: torch.Tensor | None = None
    ema: WeightEMA | None = None
    ddp: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if self.ddp is None:
            self.ddp = self.model

    @property
    def kept(self) -> torch.nn.Module:
        """The weights a fold validates, selects and tests: the moving average with ``--ema``, else the model."""
        return self.model if self.ema is None else self.ema.model

    def distribute(self) -> None:
        """Wrap the model for DistributedDataParallel when running under torchrun (after any resume)."""
        if self.dist.world == 1:
            return
        model = self.model
        if self.device.type == "cuda":
            # One BatchNorm over the global batch, as in a single-process run (CPU/gloo has no
            # SyncBatchNorm: there each rank normalises with its own slice's statistics).
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)


def make_learner(config: TrainConfig, n_classes: int, train_targets: torch.Tensor, dist: Dist,
                 device: torch.device) -> Learner:
    """A fresh network of ``config`` on ``device`` (drawing its initial weights from the global torch RNG)
    with its optimiser, loss scaler, weight average and class weights (from the training labels)."""
    from minser.models import build

    model = build(config.model, n_classes, **config.options).to(device)
    dtype = autocast_dtype(config.precision, device)
    return Learner(
        model, make_optimizer(model, config), torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        config, dist, device, dtype,
        class_weight=(balanced_class_weights(train_targets, n_classes).to(device)
                      if config.class_weights == "balanced" else None),
        ema=WeightEMA(model, config.ema) if config.ema else None)


@dataclass
class FoldProgress:
    """What a fold has done so far, as ``last.pt`` saves it: ``history`` (one entry per epoch: loss,
    validation WA/UA, seconds), the best epoch so far (``best``: val_wa, epoch, state_dict) and the
    number of completed epochs."""

    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_wa": -1.0, "epoch": 0, "state_dict": None})
    epochs: int = 0


def resume_from(learner: Learner, path: Path) -> FoldProgress:
    """Restore ``learner``, the RNG states and the fold's progress from its ``last.pt`` at ``path``."""
    last = checkpoint.load(path)
    world = last.get("world", 1)  # written since runs under torchrun record it
    if world != learner.dist.world:  # each process normalises its own slice: another count is another run
        raise ConfigError(f"--resume: {path} was trained by {world} process(es) and this run has "
                          f"{learner.dist.world}; resume with the same torchrun --nproc_per_node (times --nnodes)")
    learner.model.load_state_dict(last["state_dict"])
    learner.optimizer.load_state_dict(last["optimizer"])
    # Empty when saved by a disabled scaler (fp32, bf16): resumed where fp16 enables it (a GPU without bf16), it
    # starts afresh, as it would have there (torch refuses an empty state; a disabled scaler ignores a state).
    if last["scaler"]:
        learner.scaler.load_state_dict(last["scaler"])
    states = last["rng"]  # one dict per rank; a dict alone in runs of older versions
    _set_rng_states(states[learner.dist.rank] if isinstance(states, list) else states, learner.device)
    if learner.ema is not None:
        learner.ema.load_state_dict(last["ema"])
    return FoldProgress(last["history"], last["best"], last["epoch"])


def check_last_batches(splits: Sequence[Split], config: TrainConfig, dist: Dist) -> None:
    """Every slice of each fold's last, smaller batch must hold an utterance: raise ConfigError naming the
    first fold where one would not. Checked before features are computed, not when that fold is reached."""
    slices = dist.world * config.micro_batches
    copies = 1 if config.noise_snr is None else 2  # every training utterance and its noise copy
    for split in splits:
        tail = len(split.train) * copies % config.batch_size
        if 0 < tail < slices:
            raise ConfigError(f"fold {split.name}: the last batch holds {tail} utterances, fewer than the {slices} "
                              f"slices ({dist.world} {'rank' if dist.world == 1 else 'ranks'} x "
                              f"{config.micro_batches} micro-batch{'' if config.micro_batches == 1 else 'es'}); change "
                              "--batch-size")


def train_fold(fold: Fold, config: TrainConfig, run: dict[str, Any], dist: Dist, device: torch.device,
               clock: Clock) -> dict[str, Any]:
    """Train one fold (resuming from its ``last.pt`` when present) and score its best epoch on the test set.

    Returns the fold's metrics: ``wa``/``ua`` (percent), ``confusion``, ``best_epoch``, ``val_wa``,
    ``history`` (per epoch: loss, val WA/UA, seconds). A fold without validation utterances
    (``--protocol all``) keeps its last epoch and, having no test utterances, has no WA/UA (None).
    """
    folder = Path(run["out"]) / f"fold-{fold.index + 1}"
    torch.manual_seed(_seed_of(config.seed, fold.index))
    learner = make_learner(config, len(run["labels"]), fold.train.y, dist, device)
    progress = FoldProgress()
    if config.resume and (folder / "last.pt").is_file():
        progress = resume_from(learner, folder / "last.pt")
    learner.distribute()
    saved = {"spec": learner.model.spec, "labels": run["labels"], "frontend": run["frontend"],
             "data": {"spec": config.data, "classes": config.classes, "subset": config.subset},
             "train": run["config"], "fold": {"index": fold.index, "name": fold.name, "test": fold.test_indices},
             **({} if fold.speaker_norm is None else {"speaker_norm": fold.speaker_norm})}
    for epoch in range(progress.epochs, config.epochs):
        started, started_cpu = time.perf_counter(), time.process_time()
        loss = train_epoch(learner, fold, epoch, run["crop_frames"])
        if not all(torch.isfinite(p).all() for p in learner.model.parameters()):
            # fp16's loss scaler skips the steps of overflowing gradients; weights that are not finite have diverged.
            raise ConfigError(f"fold {fold.index + 1} epoch {epoch + 1}: the weights hold NaN or Inf, so training "
                              f"diverged at --lr {config.lr:g}; train again with a lower --lr (and another --out)")
        val = (score(fold.val.y, predict(learner.kept, fold.val, batch_size=2 * config.batch_size,
                                         pad_to=config.pad_to, device=device, precision=config.precision),
                     len(run["labels"]))
               if len(fold.val.y) else {"wa": None, "ua": None})
        seconds = time.perf_counter() - started
        # CPU seconds (all threads) say what an epoch costs even when the machine is shared.
        progress.history.append({"epoch": epoch + 1, "loss": loss, "val_wa": val["wa"], "val_ua": val["ua"],
                                 "seconds": seconds, "cpu_seconds": time.process_time() - started_cpu})
        progress.epochs = epoch + 1
        # Without a validation part (--protocol all) every epoch is kept, so best.pt ends as the last one.
        if val["wa"] is None or val["wa"] > progress.best["val_wa"]:
            progress.best = {"val_wa": -1.0 if val["wa"] is None else val["wa"], "epoch": epoch + 1,
                             "state_dict": {k: v.detach().cpu().clone() for k, v in learner.kept.state_dict().items()}}
        rng = _rank_rng_states(learner)  # a collective under torchrun: every rank takes part
        if dist.main:
            save_epoch(learner, progress, folder, saved, val["wa"], rng)
            report(clock.line(fold, epoch + 1, progress.history[-1]))
        clock.tick(seconds)
    if dist.main and not len(fold.val.y):
        # No validation part (--protocol all): best.pt is the last epoch, written when the fold ends, so also when
        # a resume finds every epoch trained (a run stopped before writing it, or at a smaller --epochs before).
        checkpoint.save(folder / "best.pt", state_dict=progress.best["state_dict"], epoch=progress.epochs,
                        val_wa=None, **saved)
    metrics = fold_metrics(learner, fold, progress, len(run["labels"]))
    if dist.main:
        files.write_json(folder / "metrics.json", metrics)
    return metrics


def train_epoch(learner: Learner, fold: Fold, epoch: int, crop_frames: int | None) -> float:
    """One epoch over ``fold.train`` in seeded batches (with the augmentations ``learner.config`` turns on);
    returns the mean training loss per utterance over all ranks."""
    config, model, ema = learner.config, learner.model, learner.ema
    generator = torch.Generator().manual_seed(_seed_of(config.seed, fold.index, epoch))
    learner.ddp.train()
    keys = (config.seed, fold.index, epoch)
    masks, crops, mixes = (_stream(config.spec_augment, *keys, 1), _stream(config.crop, *keys, 2),
                           _stream(config.mixup, *keys, 3))
    total, count = torch.zeros((), device=learner.device), 0
    batches = batch_indices(fold.train.lengths, config.batch_size, generator, config.pad_to)
    for step, index in enumerate(batches):
        for group in learner.optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch + (step + 0.5) / len(batches))
        batch, rows = fold.train, index
        if crops is not None:
            taken = fold.train.take(index)
            batch = Tensors(*random_crops(taken.x, taken.lengths, crop_frames, crops), taken.y)
            rows = torch.arange(len(index))
        total += train_step(learner, batch, rows, masks, mixes)
        count += len(index)
        if ema is not None:
            ema.update(model)
    if learner.dist.world > 1:
        torch.distributed.all_reduce(total)
        # Ranks updated BatchNorm running statistics from their own slices: take rank 0's
        # everywhere, so every rank validates the same model and picks the same best epoch.
        for buffer in (*model.buffers(), *(() if ema is None else ema.model.buffers())):
            torch.distributed.broadcast(buffer, 0)
    return float(total) / count


def save_epoch(learner: Learner, progress: FoldProgress, folder: Path, saved: dict[str, Any],
               val_wa: float | None, rng: list[dict[str, Any]]) -> None:
    """Write the fold's ``last.pt`` (everything ``--resume`` needs, ``rng`` every rank's random states) and,
    when this epoch is the best so far by validation WA, ``best.pt`` (without a validation part, ``val_wa``
    None, :func:`train_fold` writes it when the fold ends); ``saved`` is what both checkpoints carry besides
    the weights (spec, labels, front end, ...)."""
    epoch, best = progress.epochs, progress.best
    if best["epoch"] == epoch and val_wa is not None:
        checkpoint.save(folder / "best.pt", state_dict=best["state_dict"], epoch=epoch, val_wa=val_wa, **saved)
    checkpoint.save(folder / "last.pt", state_dict=learner.model.state_dict(), epoch=epoch,
                    optimizer=learner.optimizer.state_dict(), scaler=learner.scaler.state_dict(),
                    rng=rng, history=progress.history, best=best, world=learner.dist.world,
                    **({} if learner.ema is None else {"ema": learner.ema.state_dict()}), **saved)


def fold_metrics(learner: Learner, fold: Fold, progress: FoldProgress, n_classes: int) -> dict[str, Any]:
    """The fold's ``metrics.json``: the best epoch's test WA/UA and confusion (None without a validation
    part, ``--protocol all``), the part sizes, the history and ILT's fusion weights."""
    config, kept = learner.config, learner.kept
    if not len(fold.val.y):  # no validation part: the last epoch is the fold's model
        metrics = {"name": fold.name, "wa": None, "ua": None, "confusion": None, "best_epoch": None,
                   "val_wa": None, "note": NO_TEST_NOTE}
    else:
        kept.load_state_dict(progress.best["state_dict"])
        predictions = predict(kept, fold.test, batch_size=2 * config.batch_size, pad_to=config.pad_to,
                              device=learner.device, precision=config.precision)
        metrics = {"name": fold.name, **score(fold.test.y, predictions, n_classes),
                   "best_epoch": progress.best["epoch"], "val_wa": progress.best["val_wa"]}
    metrics.update(n_train=len(fold.train.y), n_val=len(fold.val.y), n_test=len(fold.test.y),
                   history=progress.history)
    if hasattr(kept, "fusion_weights") and kept.spec["options"].get("fusion") != "concat":
        metrics["fusion_weights"] = kept.fusion_weights()  # ILT's a_L, a_T (the paper reports 0.65 / 0.35)
    return metrics


def balanced_class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cross-entropy weights ``(n_classes,)`` float32: ``len(y) / (n_classes * count)`` per class of the
    labels ``y`` (1 for every class when they are balanced); a class absent from ``y`` gets 0."""
    counts = torch.bincount(y, minlength=n_classes).float()
    return torch.where(counts > 0, len(y) / (n_classes * counts.clamp(min=1)), 0.0)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the paper's betas, or AdamW (decoupled decay) with ``--weight-decay``."""
    if config.weight_decay:
        return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)


def train_step(learner: Learner, data: Tensors, index: torch.Tensor, masks: torch.Generator | None = None,
               mixes: torch.Generator | None = None) -> torch.Tensor:
    """One optimiser step on the global batch ``index``; returns this rank's summed loss (a 0-d tensor).

    The global batch is cut into ``world * micro_batches`` equal slices; this rank runs its
    ``micro_batches`` slices one after another, accumulating gradients. Scaling each slice's
    summed cross-entropy by ``world / len(index)`` makes DDP's gradient average (over ranks)
    equal the mean over the global batch, whatever the number of ranks and slices. BatchNorm
    normalises each slice with its own statistics (SyncBatchNorm on CUDA spans the ranks), and the
    running statistics end as one process's would (:func:`merge_rank_statistics`).
    With ``masks`` (a generator), SpecAugment masks are drawn for the whole global batch, so every
    rank and slice count sees the same masks; with ``mixes`` (a generator), so are the mixup
    partners and weights (``config.mixup``): each utterance is mixed, after its masks, with a partner
    from anywhere in the global batch, on the frames valid in both (``pad_to="batch"``).
    ``learner.class_weight (n_classes,)`` weighs each utterance's cross-entropy by its class.
    """
    config, dist, device, ddp = learner.config, learner.dist, learner.device, learner.ddp
    slices = torch.arange(len(index)).tensor_split(dist.world * config.micro_batches)
    frames = int(data.lengths[index].max()) if config.pad_to == "batch" else data.x.shape[-1]
    mask = None if masks is None else spec_augment_masks(data.lengths[index], data.x.shape[1], frames, masks)
    partner, weight = (None, None) if mixes is None else mixup_pairs(len(index), config.mixup, mixes)
    learner.optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    mine = slices[dist.rank * config.micro_batches:(dist.rank + 1) * config.micro_batches]
    norms = per_rank_norms(learner)
    before = [torch.cat([n.running_mean, n.running_var]) for n in norms] if norms else None
    for i, rows in enumerate(mine):
        x, lengths, y = _slice_input(data, index, rows, config.pad_to, device, frames, mask)
        if partner is not None:
            x2, lengths2, y2 = _slice_input(data, index, partner[rows], config.pad_to, device, frames, mask)
            w = weight[rows].to(device)
            x = w[:, None, None] * x + (1 - w[:, None, None]) * x2
            lengths = None if lengths is None else torch.minimum(lengths, lengths2)
        # DDP all-reduces gradients on the last slice's backward only.
        sync = i == len(mine) - 1 or not hasattr(ddp, "no_sync")
        with (contextlib.nullcontext() if sync else ddp.no_sync()):
            with torch.autocast(device.type, dtype=learner.dtype, enabled=learner.dtype is not None):
                logits = ddp(x, lengths=lengths)
            ce = functools.partial(F.cross_entropy, logits.float(), weight=learner.class_weight,
                                   label_smoothing=config.label_smoothing)
            if partner is None:
                loss = ce(y, reduction="sum")
            else:
                loss = (w * ce(y, reduction="none") + (1 - w) * ce(y2, reduction="none")).sum()
            learner.scaler.scale(loss * (dist.world / len(index))).backward()
        total += loss.detach()
    learner.scaler.step(learner.optimizer)
    learner.scaler.update()
    if before is not None:
        merge_rank_statistics(norms, before, dist.world, config.micro_batches)
    return total


def per_rank_norms(learner: Learner) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers whose running statistics each rank updates from its own slices alone: all of them
    under torchrun, except where SyncBatchNorm computes them over the global batch (CUDA, full padding: the
    masked BatchNorm of ``--pad-to batch`` takes each rank's valid frames itself). Empty in one process."""
    config, dist = learner.config, learner.dist
    if dist.world == 1 or (learner.device.type == "cuda" and config.pad_to == "full"):
        return []
    return [m for m in learner.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def merge_rank_statistics(norms: Sequence[nn.modules.batchnorm._BatchNorm], before: list[torch.Tensor], world: int,
                          slices: int) -> None:
    """Give every rank the running statistics one process would have after the step's ``world * slices`` slices.

    One process updates them slice after slice, ``r <- r + m (s_k - r)``; each rank saw only its own
    ``slices`` of them (rank order is slice order), from the same start ``before`` (running mean and
    variance of each layer). With ``d = (1 - m) ** slices``, rank ``k`` ends at ``d r0 + u_k``, and the
    sequential result is ``d ** world r0 + sum_k d ** (world - 1 - k) u_k``. DDP would instead broadcast
    rank 0's buffers, dropping the other ranks' slices from the statistics that evaluation uses.
    """
    if any(n.momentum is None for n in norms):  # a cumulative average has no fixed decay to merge with
        raise ConfigError("under torchrun every BatchNorm needs a momentum; a cumulative one (None) is not merged")
    state = torch.cat([torch.cat([n.running_mean, n.running_var]) for n in norms])
    start = torch.cat(before)
    gathered = [torch.empty_like(state) for _ in range(world)]
    torch.distributed.all_gather(gathered, state)
    decay = torch.cat([torch.full((2 * len(n.running_mean),), (1.0 - n.momentum) ** slices,
                                  dtype=state.dtype, device=state.device) for n in norms])
    merged = decay ** world * start + sum(decay ** (world - 1 - k) * (g - decay * start)
                                          for k, g in enumerate(gathered))
    offset = 0
    for n in norms:
        for buffer in (n.running_mean, n.running_var):
            buffer.copy_(merged[offset:offset + len(buffer)])
            offset += len(buffer)
        n.num_batches_tracked += (world - 1) * slices  # this rank counted its own slices


def _slice_input(data: Tensors, index: torch.Tensor, rows: torch.Tensor, pad_to: str, device: torch.device,
                 frames: int, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(x, lengths, y)`` on ``device`` of the batch positions ``rows`` of the global batch ``index``,
    with their SpecAugment ``mask`` rows (``(len(index), n_mels, frames)``) applied when given."""
    local = index[rows]
    x, lengths = model_input(data, local, pad_to, device, frames)
    if mask is not None:
        x = masked_with_mean(x, data.lengths[local], mask[rows])
    return x, lengths, data.y[local].to(device, non_blocking=True)


class Clock:
    """Epoch timing for the progress lines: elapsed seconds and an ETA over the epochs still to run."""

    def __init__(self, epochs_to_run: int, n_folds: int, epochs: int) -> None:
        self.remaining, self.done, self.seconds = epochs_to_run, 0, 0.0
        self.n_folds, self.epochs = n_folds, epochs

    def tick(self, seconds: float) -> None:
        self.remaining, self.done, self.seconds = self.remaining - 1, self.done + 1, self.seconds + seconds

    def line(self, fold: Fold, epoch: int, entry: dict[str, float]) -> str:
        eta = (self.seconds + entry["seconds"]) / (self.done + 1) * (self.remaining - 1)
        val = ("no validation" if entry["val_wa"] is None
               else f"val WA {entry['val_wa']:5.1f} UA {entry['val_ua']:5.1f}")
        return (f"fold {fold.index + 1}/{self.n_folds} epoch {epoch:3d}/{self.epochs} loss {entry['loss']:.4f} "
                f"{val} {entry['seconds']:6.1f}s ETA {_hms(eta)}")


def _hms(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ----------------------------------------------------------------------------------------------
# The run


def _run_folder(config: TrainConfig) -> Path:
    if config.out:
        return Path(config.out)
    return Path("runs") / f"{config.model}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _holds_progress(out: Path) -> bool:
    """Whether the run folder ``out`` holds a trained epoch: a fold's ``last.pt``, ``best.pt`` or ``metrics.json``, or
    ``results.json`` (they stay when the ``last.pt`` files, read by ``--resume`` only, are deleted). A run that
    failed before its first epoch (unreadable audio, say) leaves only ``config.json``: nothing to protect."""
    return (out / "results.json").is_file() or any(any(out.glob(f"fold-*/{name}")) for name in FOLD_FILES)


def _remove_temporaries(out: Path) -> None:
    """Delete what a run killed mid-write (SIGKILL) left of the files it writes atomically, each as large as
    the file it was to replace, which would otherwise pile up with every kill."""
    files.remove_temporaries(out, RUN_FILES)
    for folder in out.glob("fold-*"):
        files.remove_temporaries(folder, FOLD_FILES)


def _check_resume(config: TrainConfig, out: Path) -> dict[str, Any]:
    """A resumed run must have the settings that shaped the saved one; raise ConfigError naming the first that
    differs, else return the run's ``config.json``."""
    path = out / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume: {path} not found; give --out the folder of the run to continue")
    # Without the run's settings there is nothing to compare with or to continue.
    lost = "restore it from a copy, or train again without --resume in another --out"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for a file that is not text
        raise ConfigError(f"--resume: {path} is damaged, not the JSON a run writes ({exc}); {lost}") from exc
    if not isinstance(saved, dict):
        raise ConfigError(f"--resume: {path} holds a JSON {type(saved).__name__}, not the object of settings a run "
                          f"writes; {lost}")
    difference = settings_difference(config, saved, f"the run in {out}")
    if difference is not None:
        raise ConfigError(f"--resume: {difference}; repeat the original settings "
                          "(only --epochs, --folds, --device, --threads, --impl may change)")
    if config.lr_schedule == "cosine" and saved.get("epochs") != config.epochs:
        raise ConfigError(f"--resume: --epochs {config.epochs} but the run in {out} used {saved.get('epochs')}; "
                          f"the cosine schedule is laid out over --epochs, so --epochs must stay {saved.get('epochs')}")
    return saved


def corpus_print(corpus: Corpus) -> dict[str, Any]:
    """``{"utterances", "fingerprint"}`` of the corpus a run trains on (:meth:`Corpus.fingerprint`), recorded in
    ``config.json`` and in every checkpoint's ``train`` entry."""
    return {"utterances": len(corpus), "fingerprint": corpus.fingerprint()}


def _check_same_corpus(now: dict[str, Any], saved: dict[str, Any] | None, out: Path) -> None:
    """Refuse to resume the run in ``out`` on another corpus than it trained on (another copy of EmoDB, a
    partial one, an edited manifest): ``now`` is :func:`corpus_print` of the corpus read, ``saved`` the print
    its ``config.json`` holds (None in runs of older versions)."""
    if saved is not None and saved != now:
        raise ConfigError(f"--resume: the corpus read now ({now['utterances']} utterances, fingerprint "
                          f"{now['fingerprint']}) is not the one the run in {out} trained on ({saved['utterances']}, "
                          f"{saved['fingerprint']}): its files, labels or speakers differ; point --data (or "
                          "MINSER_DATA) at the copy the run used")


def settings_difference(config: TrainConfig, saved: dict[str, Any], run: str) -> str | None:
    """The first of :data:`RESULT_FIELDS` (the settings that shape a run's results) in which ``config`` and a
    run's ``config.json`` (``saved``, the run called ``run``) differ, in the command line's terms (``"--lr 0.01 but
    <run> used --lr 0.0001"``, a model option as ``--model-opt KEY=VALUE``), or None. Compared as they act: model
    options with their defaults filled in, the splits' seed as ``--split-seed`` or else ``--seed``, the model options
    less ``impl``, and no classes for a manifest or folder (runs of older versions recorded ``--classes``'s default)."""
    from minser.models import resolve_options
    from minser.models.config import options_to_json

    current = json.loads(json.dumps(dataclasses.asdict(config)))
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    saved = {name: saved.get(name, defaults[name]) for name in RESULT_FIELDS}  # older runs: a later field's default
    # Runs of older versions recorded --data as typed: a relative path is relative to the folder they ran in.
    saved["data"] = corpus_spec(saved["data"])

    def acting(values: dict[str, Any], name: str) -> Any:
        if name == "split_seed":
            return values["seed"] if values["split_seed"] is None else values["split_seed"]
        if name == "options" and values["model"] == current["model"]:
            # Less the kernel path: like --device, it changes how the network computes, not what it is.
            resolved = options_to_json(resolve_options(values["model"], **values["options"]))
            return {key: value for key, value in resolved.items() if key != "impl"}
        if name == "classes" and str(values["data"]).lower() not in CORPUS_NAMES:
            return None  # a manifest or folder takes its classes from its labels
        return values[name]

    name = next((n for n in RESULT_FIELDS if acting(saved, n) != acting(current, n)), None)
    if name is None:
        return None
    if name == "options":  # the first model option that differs, with its default filled in
        now, then = acting(current, name), acting(saved, name)
        key = next(key for key in {**then, **now} if now.get(key) != then.get(key))
        option = lambda value: f"--model-opt {key}={value if isinstance(value, str) else json.dumps(value)}"
        return f"{option(now.get(key))} but {run} used {option(then.get(key))}"
    return f"{_as_option(name, current[name])} but {run} used {_as_option(name, saved[name])}"


def _as_option(name: str, value: Any) -> str:
    """Setting ``name`` of a run at ``value`` (as ``config.json`` holds it) as the command line gives it: ``--lr
    0.01``, ``--spec-augment``, ``no --crop`` (not given), ``--no-noise``."""
    if name == "noise_snr" and value is None:
        return "--no-noise"
    flag = f"--{name.replace('_', '-')}"
    if value is None or value is False:
        return f"no {flag}"
    return flag if value is True else f"{flag} {value}"


def _crop_frames(config: TrainConfig, network: Network, frontend: FrontEnd) -> int | None:
    """The frames of ``--crop`` (None without it), refused when fewer than the network takes."""
    if config.crop is None:
        return None
    frames = max(1, round(config.crop * frontend.sample_rate / frontend.hop_length))
    if frames < network.min_frames:
        seconds = network.min_frames * frontend.hop_length / frontend.sample_rate
        raise ConfigError(f"--crop {config.crop:g} ({frames} frames): {network.name} needs windows of at least "
                          f"{network.min_frames} frames; give --crop {seconds:g} or more")
    return frames


def trained_epochs(out: Path) -> dict[int, int]:
    """``{fold number: epochs trained}`` of the run in ``out``, from each fold's ``last.pt`` (written after every
    epoch, where ``metrics.json`` is written when the fold ends)."""
    folds = ((last.parent.name.removeprefix("fold-"), last) for last in out.glob("fold-*/last.pt"))
    return {int(number): checkpoint.load(last)["epoch"] for number, last in folds if number.isdigit()}


def _refuse_shrinking(config: TrainConfig, out: Path, trained: dict[int, int], n_folds: int) -> None:
    """``--epochs`` and ``--folds`` may grow on ``--resume``, not shrink below what the run in ``out`` trained
    (``trained``, :func:`trained_epochs`): its results would leave out folds whose folders stay, or count epochs
    beyond ``--epochs``."""
    if trained and max(trained) > n_folds:
        raise ConfigError(f"--resume: the run in {out} has trained {max(trained)} folds but this command runs "
                          f"{n_folds}; --folds may grow, not shrink: give --folds {max(trained)} or more, or leave it "
                          "out to run them all")
    most = max(trained.values(), default=0)
    if most > config.epochs:
        fold = max(trained, key=trained.get)
        raise ConfigError(f"--resume: fold {fold} of the run in {out} has trained {most} epochs, more than "
                          f"--epochs {config.epochs}; --epochs may grow, not shrink: give --epochs {most} or more")


def summarise(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population standard deviation (ddof=0) over folds of WA and UA, in percent
    (all None, with a note, when the folds have no test part: ``--protocol all``)."""
    if any(f["wa"] is None for f in folds):
        return {"wa": None, "ua": None, "wa_std": None, "ua_std": None, "note": NO_TEST_NOTE}
    wa, ua = np.array([f["wa"] for f in folds]), np.array([f["ua"] for f in folds])
    return {"wa": float(wa.mean()), "ua": float(ua.mean()), "wa_std": float(wa.std()), "ua_std": float(ua.std())}


def write_confusion(out: Path, confusion: np.ndarray, labels: Sequence[str]) -> list[Path]:
    """``confusion.csv`` (UTF-8; rows true, columns predicted) and, when matplotlib imports, ``confusion.png``
    (else a warning names the extra to install)."""
    # Quoted, and UTF-8 whatever the locale: a manifest label may hold a comma, a quote or any letter.
    # atomic_write takes no encoding, hence bytes.
    text = io.StringIO()
    table = csv.writer(text, lineterminator="\n")
    table.writerow(["true\\predicted", *labels])
    table.writerows([label, *(int(v) for v in row)] for label, row in zip(labels, confusion))
    encoded = text.getvalue().encode("utf-8")
    written = [files.atomic_write(out / "confusion.csv", lambda f: f.write(encoded))]
    try:
        # A figure of its own on the Agg canvas, not pyplot: matplotlib.use("Agg") switched a notebook's
        # backend for good.
        import matplotlib.backends.backend_agg
        import matplotlib.figure
    except ImportError:
        warnings.warn(f"{out / 'confusion.png'} not written: the confusion-matrix plot needs matplotlib, "
                      "pip install 'minser[plot]'", UserWarning, stacklevel=2)
        return written
    figure = matplotlib.figure.Figure(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    matplotlib.backends.backend_agg.FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.imshow(confusion, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for i, row in enumerate(confusion):
        for j, value in enumerate(row):
            axes.text(j, i, int(value), ha="center", va="center",
                      color="white" if value > confusion.max() / 2 else "black")
    figure.tight_layout()
    written.append(files.atomic_write(out / "confusion.png", lambda f: figure.savefig(f, format="png", dpi=120)))
    return written


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the protocol of ``config`` and return ``results.json``'s content (also written to ``--out``).

    Torch's thread count and deterministic mode are set for the run and restored afterwards, so
    a caller in the same process (a test, a notebook) keeps its own settings. Ctrl-C raises
    :class:`RunInterrupted` (a KeyboardInterrupt), whose message says how to continue the run.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    check_config(config)
    # As config.json records them: paths as strings (the Python API may give pathlib.Path), and classes only where
    # --classes picks them (a manifest or folder takes its classes from its labels).
    data = corpus_spec(config.data)
    config = dataclasses.replace(config, data=data, classes=config.classes if data in CORPUS_NAMES else None,
                                 out=None if config.out is None else os.fspath(config.out),
                                 cache_dir=None if config.cache_dir is None else os.fspath(config.cache_dir))
    out = _run_folder(config)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the run (it is created if missing)")
    # One writer per run folder: a second run (or --resume) in it would overwrite the first one's checkpoints
    # and delete its writes in progress as stale. Under torchrun the job's rank 0 holds it for all its ranks.
    guard = (files.only_writer(out, "wait for that run to end or give another --out") if torchrun_dist().main
             else contextlib.nullcontext())
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with guard:
            return _train(config, out)
    except KeyboardInterrupt as exc:
        raise RunInterrupted(out) from exc
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _rank_0_first(dist: Dist, work: Callable[[], Any]) -> Any:
    """``work()`` on rank 0, then on the other ranks (under torchrun), for work that fills something on disk
    they then find there: a download, the feature cache. One process: just ``work()``."""
    if dist.world == 1:
        return work()
    if dist.main:
        result = work()
        torch.distributed.barrier()
        return result
    torch.distributed.barrier()  # a rank 0 that fails ends the job: torchrun stops the ranks waiting here
    return work()


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; its message says which folder holds the run and how to continue it."""

    def __init__(self, out: Path) -> None:
        if _holds_progress(out):
            message = (f"interrupted: {out} holds the run up to its last completed epoch; to continue from there, "
                       f"rerun with the same options and --resume --out {out}")
        else:
            message = "interrupted before the first epoch was completed: nothing was trained; rerun the same command"
        super().__init__(message)


def _train(config: TrainConfig, out: Path) -> dict[str, Any]:
    from minser.data import cached_features
    from minser.features import FrontEnd
    from minser.kernels import check_impl
    from minser.models import build

    dist = init_distributed(config)
    device = resolve_device(config, dist)
    check_impl(config.options.get("impl", "auto"), device)  # else the kernels refuse once training has started
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if dist.world > 1 and not config.out:
        raise ConfigError("under torchrun give --out: every rank must write to and resume from the same folder")
    resumed = _check_resume(config, out) if config.resume else None  # the run's config.json
    if resumed is None and _holds_progress(out):
        # Without its last.pt files (deleted to save room, say) --resume would train the run again from epoch 1.
        resume = ("pass --resume to continue it or" if any(out.glob("fold-*/last.pt")) else
                  "it has no fold-*/last.pt left to continue from (--resume would train it again), so")
        raise ConfigError(f"--out {out} already holds a run; {resume} choose another --out")
    if dist.main and out.is_dir():
        _remove_temporaries(out)
    if dist.world > 1:
        torch.distributed.barrier()  # every rank has checked --out before rank 0 writes into it

    corpus = _rank_0_first(dist, lambda: load_data(config, offer_download=True))  # --download: once
    if dist.main:
        _warn_whole_classes(corpus, config.subset)
    splits = make_splits(corpus, config)  # before build, which refuses a corpus of one label as n_classes=1
    if dist.main and config.protocol in ("speaker", "session"):
        _warn_untrained_classes(corpus, config.protocol, splits)
    network = build(config.model, len(corpus.labels), **config.options)
    spec = network.spec
    # The network's input size decides the front end's, so --n-mels (or --model-opt n_mels) sets both.
    frontend = FrontEnd(n_mels=spec["options"]["n_mels"])
    crop_frames = _crop_frames(config, network, frontend)
    check_last_batches(splits, config, dist)
    trained = trained_epochs(out) if config.resume else {}  # read once: the shrink check and the ETA use it
    _refuse_shrinking(config, out, trained, len(splits))
    speakers = known_speakers(corpus, "--speaker-norm", "drop --speaker-norm") if config.speaker_norm else None
    # With the print of the corpus read, which --resume and minser.evaluate compare: --data names a corpus, not
    # its content.
    printed = corpus_print(corpus)
    if resumed is not None:
        _check_same_corpus(printed, resumed.get("corpus"), out)
    config_json = {**json.loads(json.dumps(dataclasses.asdict(config))), "corpus": printed}
    if dist.main:
        files.write_json(out / "config.json", config_json)
    run = {"out": str(out), "labels": list(corpus.labels), "frontend": frontend.to_dict(), "config": config_json,
           "crop_frames": crop_frames}

    # Rank 0 fills the feature cache, the others then read it: each computed and wrote the whole corpus.
    clean_x, clean_lengths = _rank_0_first(
        dist, lambda: cached_features(corpus, frontend, config.cache_dir, progress=dist.main))
    targets = torch.as_tensor(corpus.targets())
    clean = Tensors(torch.from_numpy(clean_x), torch.from_numpy(clean_lengths), targets)
    noisy = None
    if config.noise_snr is not None:
        noisy_x, noisy_lengths = noisy_features(corpus, frontend, config.noise_snr, config.seed)
        noisy = Tensors(torch.from_numpy(noisy_x), torch.from_numpy(noisy_lengths), targets)

    todo = _epochs_to_run(config.epochs, trained, len(splits))
    clock = Clock(todo, len(splits), config.epochs)
    if dist.main:
        report(f"minser: {config.model} on {corpus.name} ({len(corpus)} utterances, {len(corpus.labels)} classes), "
               f"{config.protocol} protocol, {len(splits)} fold{'s' if len(splits) != 1 else ''} x {config.epochs} "
               f"epochs, device {device}, {dist.world} process(es), run folder {out}")
    folds = []
    for index, split in enumerate(splits):
        fold = make_fold(index, split, clean, noisy, speakers, network.min_frames)
        folds.append(train_fold(fold, config, run, dist, device, clock))

    tested = all(f["confusion"] is not None for f in folds)
    confusion = np.sum([np.array(f["confusion"]) for f in folds], axis=0) if tested else None
    results = {"model": config.model, "options": spec["options"],
               "data": config.data, "classes": config.classes, "corpus": corpus.name, "protocol": config.protocol,
               "labels": list(corpus.labels), **summarise(folds), "epochs": config.epochs, "seed": config.seed,
               "split_seed": split_seed(config),
               "folds": [{k: f[k] for k in ("name", "wa", "ua", "confusion", "best_epoch", "val_wa", "n_test",
                                             "fusion_weights", "note") if k in f} for f in folds],
               "confusion": None if confusion is None else confusion.tolist()}
    if dist.main:
        files.write_json(out / "results.json", results)
        if confusion is not None:
            write_confusion(out, confusion, corpus.labels)
        report(summary_table(results))
    return results


def _epochs_to_run(epochs: int, trained: dict[int, int], n_folds: int) -> int:
    """Epochs still to train over all folds (for the ETA), counting those a resumed run already has
    (``trained``, :func:`trained_epochs`), in a fold it finished or one it was interrupted in."""
    return sum(max(0, epochs - trained.get(k + 1, 0)) for k in range(n_folds))


def summary_table(results: dict[str, Any]) -> str:
    """The final table: one row per fold and the mean and standard deviation, WA and UA in percent."""
    if results["wa"] is None:
        return f"no test metrics: {results['note']}"
    # 14 characters: "100.00 ± 10.50", so that the mean row lines up with the folds'.
    lines = [f"{'fold':<24} {'WA %':>14} {'UA %':>14} {'best epoch':>10}"]
    lines += [f"{f['name']:<24} {f['wa']:14.2f} {f['ua']:14.2f} {f['best_epoch']:10d}" for f in results["folds"]]
    wa, ua = (f"{results[m]:.2f} ± {results[f'{m}_std']:.2f}" for m in ("wa", "ua"))
    lines.append(f"{'mean ± std':<24} {wa:>14} {ua:>14}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` and run; returns the results (see :func:`train`)."""
    return train(parse_args(argv))


class OutputClosed(Exception):
    """The reader of the run's report on stdout stopped early (``| head``): :func:`report`'s BrokenPipeError, told
    apart from one of anything else, which must not pass for it."""


def report(text: str) -> None:
    """Print ``text``, a part of the run's report (its header, an epoch line, the summary), on stdout, flushed: a
    reader gone is seen here (raising :class:`OutputClosed`), not at exit as an "Exception ignored"."""
    try:
        print(text, flush=True)
    except BrokenPipeError as exc:
        raise OutputClosed from exc


@plain_warnings()
def cli(argv: Sequence[str] | None = None) -> int:
    """Console entry point: a bad input prints ``error: ...`` (``rank N: error: ...`` on the other ranks under
    torchrun) and exits with status 2; Ctrl-C prints how to
    continue the run (on rank 0 alone under torchrun) and exits with status 130 (128 + SIGINT, as a shell
    reports it); a reader of the output that stopped early (``| head``) ends the run with status 141 (128 +
    SIGPIPE), resumable as after Ctrl-C."""
    try:
        main(argv)
    except MinserError as exc:
        # One write per line: ranks writing the text and the newline apart ran their lines together. The
        # other ranks name themselves (an error of theirs alone, a file only their machine lacks, must show).
        dist = torchrun_dist()
        sys.stderr.write(f"{'' if dist.main else f'rank {dist.rank}: '}error: {exc}\n")
        sys.stderr.flush()
        return 2
    except KeyboardInterrupt as exc:
        # torchrun passes Ctrl-C to every rank, and they all share one run folder: one line says it for all.
        if torchrun_dist().main:
            print(str(exc) or "interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except OutputClosed:  # stop as a Unix tool does
        return broken_pipe_status()
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(cli())
