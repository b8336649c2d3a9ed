"""Reproduce minser's pretrained default, ``minser/assets/default.pt`` (see docs/MODEL_CARD.md).

    MINSER_DATA=/work/shared/data python tools/train_default.py            # 6 to 9 min on a shared 2-core CPU
    MINSER_DATA=/work/shared/data python tools/train_default.py --cv       # the recipe's 5-fold estimate

The recipe: ``ilt`` (attention fusion, default options), all 535 EmoDB utterances, 7 emotions, the
training protocol of ``python -m minser.train`` (a 30 dB white-noise copy of every utterance,
Adam with betas 0.9/0.99, batches of 40 grouped by length with ``--pad-to batch``) with
learning rate 1e-3 for 200 epochs, and three options of the field (docs/RESULTS.md): an
exponential moving average of the weights (``--ema 0.995``), random 2 s training windows
(``--crop 2``) and mixup (``--mixup 0.4``); seed 0, one torch thread. The averaged weights of the
last epoch are shipped (training on every utterance leaves nothing to select an epoch on).

Training is minser's own training command, ``python -m minser.train <recipe> --protocol all``:
one fold training on every utterance (and its noise copy) that keeps the last epoch as
``fold-1/best.pt``, which is then written, with only the weights and what they were trained on, to
``minser/assets/default.pt`` (atomically). ``--cv`` instead runs the same recipe under the
random protocol (``--protocol random``: 5 seeded 55/25/20 splits, the epoch of best validation
WA scored on the test split), whose WA/UA the model card reports.

A run ended by Ctrl-C continues from its last completed epoch with ``--resume`` (as ``python -m
minser.train --resume``), which also ships a finished run's checkpoint again without training.

On the same machine, torch version and thread count, and the same code (the checkpoint's
``code`` entry records the git commit and any uncommitted change under minser/ or kernels/),
the shipped file is reproduced exactly.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from minser import files
from minser.errors import ConfigError, MinserError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "minser" / "assets" / "default.pt"
RECIPE = ["--model", "ilt", "--fusion", "attention", "--data", "emodb", "--classes", "7", "--epochs", "200", "--lr", "1e-3",
          "--ema", "0.995", "--crop", "2", "--mixup", "0.4", "--pad-to", "batch", "--seed", "0", "--threads", "1"]


def ship(last: dict, path: Path, code: dict) -> Path:
    """Write the shipped checkpoint: the last epoch's weights, what they were trained on and with which
    code (:func:`code_version` taken when this command started: with ``--resume``, the code of the resumed
    part), nothing else."""
    from minser import checkpoint

    config = last["train"]
    return checkpoint.save(
        path, spec=last["spec"], labels=last["labels"], frontend=last["frontend"], state_dict=last["state_dict"],
        data={"spec": "emodb", "classes": 7, "subset": None, "utterances": "all 535"},
        train={key: config[key] for key in ("model", "classes", "epochs", "batch_size", "lr", "betas", "noise_snr",
                                            "ema", "crop", "mixup", "pad_to", "seed", "threads")},
        epoch=last["epoch"], recipe="tools/train_default.py", code=code)


def code_version() -> dict:
    """The git commit the training code came from, the uncommitted changes under minser/ or kernels/ and torch's
    version; both git entries are None outside a git checkout (an unpacked sdist) or without git. ConfigError
    when the minser imported is not this checkout's (an installed copy): its commit would be recorded for
    other code."""
    import minser

    imported = Path(minser.__file__).resolve().parent
    if imported != REPO / "minser":
        raise ConfigError(f"minser is imported from {imported}, not from this checkout's {REPO / 'minser'}, so the "
                          "shipped checkpoint would record this checkout's commit for other code; install the "
                          f"checkout editable (pip install -e {REPO}) or run with PYTHONPATH={REPO}")

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()

    try:
        commit, uncommitted = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "minser", "kernels")
    except (OSError, subprocess.SubprocessError):  # was recorded as commit '' with no uncommitted change
        return {"commit": None, "torch": str(torch.__version__), "uncommitted": None}
    return {"commit": commit, "torch": str(torch.__version__), "uncommitted": uncommitted.splitlines()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv", action="store_true", help="run the recipe's 5-fold random-protocol estimate instead")
    p.add_argument("--out", type=Path, help="run folder (default runs/default or runs/default-cv)")
    p.add_argument("--ship", type=Path,
                   help="where to write the shipped checkpoint (default: minser/assets/default.pt; not with --cv, "
                        "which ships nothing)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last completed epoch, as python -m minser.train --resume")
    p.add_argument("--download", action="store_true",
                   help="download EmoDB into the data folder if it is missing, as python -m minser.train --download")
    args = p.parse_args(argv)
    from minser import checkpoint, train

    # minser.train's command line, not its main: a bad input or a missing corpus is one `error: ...` line
    # (exit 2) and Ctrl-C one line (exit 130), and the --resume, --out and --download they advise are this
    # tool's options too.
    recipe = [*RECIPE, *(["--resume"] if args.resume else []), *(["--download"] if args.download else [])]
    if args.cv:
        if args.ship is not None:  # it was accepted and ignored
            print(f"error: --ship {args.ship} with --cv: the cross-validation estimates the recipe's accuracy and "
                  "ships no checkpoint; drop --ship, or --cv to train the model to ship", file=sys.stderr)
            return 2
        return train.cli([*recipe, "--protocol", "random", "--out", str(args.out or REPO / "runs" / "default-cv")])
    shipped = args.ship or DEFAULT
    try:
        files.check_output(shipped, "--ship")  # before the minutes of training, which found it only once ended
        code = code_version()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or REPO / "runs" / "default"
    status = train.cli([*recipe, "--protocol", "all", "--out", str(out)])
    if status:
        return status
    try:  # the place was checked before training, but it can change in the minutes that took
        last = checkpoint.load(out / "fold-1" / "best.pt")  # the last epoch's (see the docstring)
        print(f"wrote {ship(last, shipped, code)} (epoch {last['epoch']})")
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
