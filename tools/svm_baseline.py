"""A simple reference for the networks: an RBF-SVM on per-band statistics of the same log-Mels.

    MINSER_DATA=/work/shared/data python tools/svm_baseline.py --classes 4 --protocol random
    MINSER_DATA=/work/shared/data python tools/svm_baseline.py --classes 7 --protocol speaker

Same corpus, cached 40-band log-Mel features (``minser.data.cached_features``) and splits
(``minser.train.make_splits``: the seeded random 55/25/20 splits or leave-one-speaker-out) as
``python -m minser.train``. Each utterance becomes 240 numbers: per Mel band, over its valid
frames only, the mean, standard deviation, minimum and maximum of the dB values and the mean and
standard deviation of the frame-to-frame difference. Features are standardised with the training
part's statistics; ``C`` and ``gamma`` are chosen on the validation part (best validation WA,
as the networks choose their epoch), the SVM is fitted on the training part and scored once on
the test part. Clean utterances only (no noise copies). Seconds per protocol on one CPU core.
``--speaker-norm`` first standardises the log-Mels per speaker with each split's statistics, as
``python -m minser.train --speaker-norm`` does (``minser.speakers.split_statistics``).

scikit-learn is not a dependency of minser: this tool needs it (``pip install scikit-learn``; the ``dev``
extra, which the test suite uses, installs it).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from minser import files
from minser.errors import MinserError
from minser.train import HelpFormatter

C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
GAMMA_GRID = ("scale", 0.03, 0.1, 0.3, 1.0, 3.0)  # numbers: multiples of 1 / n_features ("scale" uses the data's variance too)


def band_statistics(features: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``(N, n_mels, frames)`` log-Mels and valid lengths ``(N,)`` -> ``(N, 6 * n_mels)`` statistics per band
    over the valid frames: mean, std, min, max, and mean and std of the frame-to-frame difference."""
    rows = []
    for x, length in zip(features, lengths):
        valid = x[:, :max(int(length), 2)]
        delta = np.diff(valid, axis=1)
        rows.append(np.concatenate([valid.mean(1), valid.std(1), valid.min(1), valid.max(1),
                                    delta.mean(1), delta.std(1)]))
    return np.asarray(rows, dtype=np.float64)


def fit_and_score(stats: np.ndarray, targets: np.ndarray, split, n_classes: int) -> dict:
    """Standardise on ``split.train``, pick (C, gamma) by validation WA, score the test part."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from minser.train import score

    scaler = StandardScaler().fit(stats[split.train])
    x = scaler.transform(stats)
    best = None
    for c, gamma in itertools.product(C_GRID, GAMMA_GRID):
        g = gamma if gamma == "scale" else gamma / x.shape[1]
        svm = SVC(C=c, gamma=g, kernel="rbf").fit(x[split.train], targets[split.train])
        val_wa = float((svm.predict(x[split.val]) == targets[split.val]).mean())
        if best is None or val_wa > best[0]:
            best = (val_wa, c, gamma, svm)
    val_wa, c, gamma, svm = best
    result = score(targets[split.test], svm.predict(x[split.test]), n_classes)
    return {"name": split.name, "wa": result["wa"], "ua": result["ua"], "C": c, "gamma": gamma,
            "val_wa": 100 * val_wa, "n_test": len(split.test)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/svm_baseline.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=HelpFormatter)
    p.add_argument("--data", default="emodb", help="corpus, as python -m minser.train --data")
    p.add_argument("--classes", type=int, choices=(4, 7), help="EmoDB: 4 or 7 (default: 4)")
    p.add_argument("--protocol", default="random", choices=("random", "speaker", "session"), help="splits")
    p.add_argument("--seed", type=int, default=0, help="seed of the random splits")
    p.add_argument("--folds", type=int, help="only the first N folds, as python -m minser.train --folds")
    p.add_argument("--speaker-norm", action="store_true",
                   help="standardise the log-Mels per speaker first, per split, as python -m minser.train --speaker-norm")
    p.add_argument("--cache-dir", help="feature cache folder (default ~/.cache/minser/features)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("error: tools/svm_baseline.py needs scikit-learn, which minser does not depend on; "
              "install it with `pip install scikit-learn`", file=sys.stderr)
        return 2
    from minser.data import cached_features
    from minser.data.corpora import CORPUS_NAMES, check_classes_option
    from minser.features import FrontEnd
    from minser.speakers import normalise_by_speaker, split_statistics
    from minser.train import TrainConfig, check_config, corpus_spec, load_data, make_splits, summarise

    named = corpus_spec(args.data) in CORPUS_NAMES  # else a manifest or folder, which takes its classes from its labels
    try:
        # Before the minutes of fitting: an --out that cannot be written, or that is the manifest read.
        files.check_output(args.out, "--out", [] if named else [("--data", args.data)])
        # minser.train's checks: --classes with a manifest or folder, --seed and --folds out of range.
        check_classes_option(args.classes, args.data)
        config = TrainConfig(data=args.data, classes=TrainConfig.classes if args.classes is None else args.classes,
                             protocol=args.protocol, seed=args.seed, folds=args.folds, cache_dir=args.cache_dir)
        check_config(config)
        corpus = load_data(config)
        splits = make_splits(corpus, config)  # before the features: a corpus that cannot be split costs nothing
        features, lengths = cached_features(corpus, FrontEnd(), config.cache_dir)
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    targets, speakers = corpus.targets(), corpus.speakers()
    # Raw features have one set of statistics for every split; normalised ones depend on the split.
    raw = None if args.speaker_norm else band_statistics(features, lengths)
    folds = []
    for split in splits:
        stats = raw if raw is not None else band_statistics(
            normalise_by_speaker(features, speakers, split_statistics(features, lengths, speakers, split)), lengths)
        folds.append(fit_and_score(stats, targets, split, len(corpus.labels)))
    # As minser.train records them: classes only where --classes picks them (EmoDB or IEMOCAP by name).
    results = {"reference": "RBF-SVM on per-band log-Mel statistics", "data": args.data,
               "classes": config.classes if named else None,
               "protocol": args.protocol, "seed": args.seed, "speaker_norm": args.speaker_norm, **summarise(folds),
               "folds": folds}
    for fold in folds:
        print(f"{fold['name']:<24} WA {fold['wa']:6.2f} UA {fold['ua']:6.2f} (C {fold['C']}, gamma {fold['gamma']})")
    print(f"RBF-SVM{', speaker-normalised' if args.speaker_norm else ''}, {corpus.name}, {args.protocol}, {len(folds)} folds: WA {results['wa']:.2f} ± {results['wa_std']:.2f}, "
          f"UA {results['ua']:.2f} ± {results['ua_std']:.2f}")
    if args.out:
        try:
            files.write_json(args.out, results)
        except MinserError as exc:  # what changed while it ran: a folder made where --out points, a full disk
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
