"""Label the emotion of audio files: one JSON line per file on stdout.

    python -m minser.predict examples/clips/anger_03a01Wa.wav          # the pretrained default
    python -m minser.predict a.wav b.flac --model runs/cnn/fold-1/best.pt
    python -m minser.predict a.wav --model a.pt --model b.pt --model c.pt   # an ensemble: mean probabilities

Each line is ``{"file": ..., "label": ..., "scores": {label: probability, ...}}`` (probabilities
rounded to 6 decimals). A file that
cannot be read or scored is reported on stderr as one JSON line ``{"file": ..., "error": ...}``,
and the others are still labelled; the exit status is then 1 (2 when there is no usable model: it
cannot be loaded, or a --speaker-norm one was not enrolled). Ctrl-C stops the run with one line on
stderr, ``interrupted after N of M files`` (the N lines printed stand), and exit status 130.
Audio longer than 7.5 s is scored over sliding windows (see :mod:`minser.recognizer`).

A model trained with ``--speaker-norm`` needs the speaker enrolled: ``--enrol FILE`` (repeated, 10 or
more recordings of the speaker) gives the Mel-band statistics that normalise every FILE, which are all
taken to be that one speaker's.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Sequence

from minser.errors import INTERRUPTED_STATUS, MinserError, broken_pipe_status, plain_warnings

if TYPE_CHECKING:
    from minser.recognizer import Recognizer

__all__ = ["SCORE_DECIMALS", "build_parser", "main"]

# Probabilities are printed to 6 decimals: enough to rank and threshold, short enough to read.
SCORE_DECIMALS = 6


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m minser.predict`` argument parser."""
    p = argparse.ArgumentParser(prog="python -m minser.predict", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (any format soundfile reads)")
    p.add_argument("--model", metavar="CHECKPOINT", action="append",
                   help="a .pt checkpoint of minser.train or minser.export, or a one-fold run folder; repeat it "
                        "to label with an ensemble, the mean probability of the checkpoints (default: the "
                        "pretrained model shipped with minser)")
    p.add_argument("--enrol", action="append", metavar="FILE",
                   help="a recording of the speaker, for a model trained with --speaker-norm (repeat it: "
                        "10 or more recordings; every FILE is taken to be this speaker)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    return p


@plain_warnings()
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 all labelled, 1 some files failed, 2 no usable model, 130 on
    Ctrl-C and 141 when the reader of the output stopped early, as a shell reports SIGINT and SIGPIPE)."""
    args = build_parser().parse_args(argv)
    import torch

    from minser.recognizer import Recognizer

    if args.threads is not None:
        if args.threads < 1:
            print(f"error: --threads {args.threads}: give a positive number of threads", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    try:
        recognizer = Recognizer.load(args.model)
        if args.enrol:
            recognizer = recognizer.for_speaker(args.enrol)
        recognizer.check_enrolled()  # before any file, so that a missing --enrol is one error, not one per file
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(0, len(args.files))
    try:
        return _label_files(recognizer, args.files)
    except BrokenPipeError:  # each line is flushed as printed: the reader stopped early (`| head`)
        return broken_pipe_status()


def _label_files(recognizer: Recognizer, files: Sequence[str]) -> int:
    """Print each file's JSON line (stdout) or error line (stderr); 1 when any failed, else 0; on Ctrl-C
    :func:`_interrupted`'s status."""
    failed = 0
    for done, file in enumerate(files):
        try:
            prediction = recognizer.predict(file)
        except MinserError as exc:
            failed += 1
            print(json.dumps({"file": file, "error": str(exc)}), file=sys.stderr, flush=True)
            continue
        except KeyboardInterrupt:
            return _interrupted(done, len(files))
        scores = {label: round(value, SCORE_DECIMALS) for label, value in prediction.scores.items()}
        print(json.dumps({"file": file, "label": prediction.label, "scores": scores}), flush=True)
    return 1 if failed else 0


def _interrupted(done: int, total: int) -> int:
    """Say on stderr how far a run stopped by Ctrl-C got (the lines printed stand) and return 130, the status
    a shell gives a command ended by SIGINT, instead of a traceback through torch."""
    print(f"interrupted after {done} of {total} files", file=sys.stderr)
    return INTERRUPTED_STATUS


if __name__ == "__main__":
    sys.exit(main())
