"""How many recordings a speaker-normalised model needs: UA against the number of enrolment recordings.

    python tools/enrolment_curve.py runs/spk-4-sn                 # a --protocol speaker --speaker-norm run
    python tools/enrolment_curve.py runs/spk-4-sn --counts 1,3,10 --draws 10

A model trained with ``--speaker-norm`` labels a new speaker's audio after enrolment
(``Recognizer.for_speaker``), whose Mel-band statistics come from a few of their recordings. For every
fold of a leave-one-speaker-out run (the test speaker never heard in training), this enrols the test
speaker with k of their test recordings drawn at random (seeded; no labels used), labels all of their
test recordings with ``minser.Recognizer``, and prints UA in percent (mean over folds and draws) per k
as a markdown table. ``all`` enrols with every test recording, which is what ``minser.evaluate`` does
for a speaker it has no statistics of, and gives its UA. A speaker with fewer than k test recordings is
enrolled with all of them; a note under the table says for how many speakers that was so.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from minser import Recognizer, checkpoint
from minser.audio import load
from minser.errors import MinserError
from minser.evaluate import checkpoints_of, training_corpus
from minser.metrics import unweighted_accuracy
from minser.train import HelpFormatter


def fold_curve(path: Path, counts: Sequence[int | None], draws: int, seed: int
               ) -> tuple[int, dict[int | None, list[float]]]:
    """The number of test recordings of one fold's speaker, and UA (percent) of the fold's checkpoint per enrolment
    count (``None`` = all test recordings), per draw; a count of that number or more enrols with all of them, once."""
    saved = checkpoint.load(path)
    if not saved.get("speaker_norm"):
        raise MinserError(f"{path}: trained without --speaker-norm; give a run trained with --speaker-norm")
    corpus = training_corpus(saved, path)
    test = np.asarray(saved["fold"]["test"], dtype=np.int64)
    if len({corpus.utterances[i].speaker for i in test}) != 1:
        raise MinserError(f"{path}: its test part holds several speakers; give a --protocol speaker run")
    labels = list(saved["labels"])
    targets = np.array([labels.index(corpus.utterances[i].label) for i in test])
    rec = Recognizer.from_checkpoint(saved, source=str(path))
    waves = [load(corpus.utterances[i].path, sr=rec.frontend.sample_rate) for i in test]
    rng = np.random.default_rng(seed)
    curve: dict[int | None, list[float]] = {}
    for k in counts:
        curve[k] = []
        for _ in range(1 if k is None or k >= len(waves) else draws):
            pick = range(len(waves)) if k is None or k >= len(waves) else rng.choice(len(waves), k, replace=False)
            with warnings.catch_warnings():  # enrolling from few recordings is what this curve measures
                warnings.filterwarnings("ignore", message="for_speaker: ", category=UserWarning)
                enrolled = rec.for_speaker([waves[i] for i in pick], sr=rec.frontend.sample_rate)
            predicted = enrolled.probabilities(waves)
            curve[k].append(100.0 * float(unweighted_accuracy(targets, predicted.argmax(-1), len(labels))))
    return len(waves), curve


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/enrolment_curve.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder of python -m minser.train --protocol speaker --speaker-norm")
    p.add_argument("--counts", default="1,2,3,5,10,all", help="enrolment recordings per speaker, comma-separated")
    p.add_argument("--draws", type=int, default=5, help="random enrolment sets per fold and count")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    args = p.parse_args(argv)
    try:
        counts = [None if c.strip() == "all" else int(c) for c in args.counts.split(",")]
    except ValueError:
        print(f"error: --counts {args.counts!r}: give positive integers or 'all', e.g. 1,5,10,all", file=sys.stderr)
        return 2
    if any(c is not None and c < 1 for c in counts) or args.draws < 1:
        print("error: --counts and --draws must be positive", file=sys.stderr)
        return 2
    if args.seed < 0:  # NumPy's SeedSequence refuses negative seeds, once the first checkpoint is loaded
        print(f"error: --seed {args.seed}: give an integer >= 0", file=sys.stderr)
        return 2
    try:
        folds = [fold_curve(path, counts, args.draws, args.seed) for path in checkpoints_of(args.run)]
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"UA (%) of {args.run} with the test speaker enrolled from k of their recordings "
          f"({len(folds)} folds, {args.draws} draws per fold)\n\n| k | UA |\n|---|---|")
    for k in counts:
        print(f"| {'all' if k is None else k} | {np.mean([np.mean(curve[k]) for _, curve in folds]):.2f} |")
    # A speaker with fewer than k recordings is enrolled with all of them: such a row is not k's alone.
    short = {k: sum(k > n for n, _ in folds) for k in counts if k is not None}
    notes = [f"k {k}: {count} of {len(folds)} test speakers have fewer than {k} recordings; they are enrolled with "
             "all of theirs (one draw)" for k, count in short.items() if count]
    if notes:
        print("\n" + "\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
