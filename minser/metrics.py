"""The paper's metrics: weighted accuracy (WA), unweighted accuracy (UA) and the confusion matrix.

All take int class indices ``(n,)`` (numpy arrays, lists or CPU tensors) and return fractions in
[0, 1]; reports multiply by 100 for percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minser.errors import ConfigError

ArrayLike = Sequence[int] | np.ndarray


def _check(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of label arrays: same 1-D shape, non-empty, integer, in ``[0, n_classes)``."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.ndim != 1 or true.shape != pred.shape:
        raise ConfigError(
            "y_true and y_pred must be 1-D arrays of the same length, got "
            f"shapes {true.shape} and {pred.shape}"
        )
    if true.size == 0:
        raise ConfigError("y_true is empty: accuracy of no utterances is undefined")
    if true.dtype.kind not in "iu" or pred.dtype.kind not in "iu":
        raise ConfigError(f"y_true and y_pred must hold int class indices, got dtypes {true.dtype} and {pred.dtype}")
    if n_classes is not None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise ConfigError(f"n_classes={n_classes!r} must be a positive integer")
        for name, values in (("y_true", true), ("y_pred", pred)):
            if values.min() < 0 or values.max() >= n_classes:
                found = np.unique(values).tolist()
                raise ConfigError(f"{name} holds class indices outside 0..{n_classes - 1}: {found}")
    return true.astype(np.int64), pred.astype(np.int64)


def weighted_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """WA: the share of all utterances classified correctly, ``sum_i [pred_i == true_i] / n``.

    "Weighted" because each class counts in proportion to its number of utterances.
    """
    true, pred = _check(y_true, y_pred)
    return float(np.mean(true == pred))


def unweighted_accuracy(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> float:
    """UA: the mean over classes of per-class recall, ``mean_c (correct in c / utterances of c)``.

    Every class weighs the same whatever its size. Classes absent from ``y_true`` (recall
    undefined, e.g. a test speaker who never expresses fear) are left out of the mean.
    """
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int, normalize: bool = False) -> np.ndarray:
    """Confusion matrix ``(n_classes, n_classes)``: entry ``[i, j]`` counts class-``i`` utterances predicted ``j``.

    Counts are int64. With ``normalize=True`` each row is divided by its sum (float64), so row
    ``i`` holds the distribution of predictions for class ``i`` and the diagonal is per-class
    recall; rows of classes absent from ``y_true`` are all zero.
    """
    true, pred = _check(y_true, y_pred, n_classes)
    matrix = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    if not normalize:
        return matrix.astype(np.int64)
    support = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, support, out=np.zeros(matrix.shape, dtype=np.float64), where=support > 0)
