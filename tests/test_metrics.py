"""WA, UA and confusion matrix: hand-computed cases, invariants and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minser.errors import ConfigError
from minser.metrics import confusion_matrix, unweighted_accuracy, weighted_accuracy

# 10 utterances: class 0 has 6 (5 right), class 1 has 3 (1 right), class 2 has 1 (1 right), class 3 none.
Y_TRUE = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2]
Y_PRED = [0, 0, 0, 0, 0, 1, 1, 0, 3, 2]


def test_hand_computed() -> None:
    assert weighted_accuracy(Y_TRUE, Y_PRED) == pytest.approx(7 / 10)
    # Class 3 is absent from y_true, so UA averages the recalls of classes 0, 1, 2 only.
    assert unweighted_accuracy(Y_TRUE, Y_PRED, 4) == pytest.approx((5 / 6 + 1 / 3 + 1) / 3)
    counts = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert counts.dtype == np.int64
    assert counts.tolist() == [[5, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]]
    rows = confusion_matrix(Y_TRUE, Y_PRED, 4, normalize=True)
    np.testing.assert_allclose(rows, [[5 / 6, 1 / 6, 0, 0], [1 / 3, 1 / 3, 0, 1 / 3], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_accepts_tensors_and_numpy() -> None:
    true, pred = torch.tensor(Y_TRUE), torch.tensor(Y_PRED)
    assert weighted_accuracy(true, pred) == weighted_accuracy(np.array(Y_TRUE, dtype=np.uint8), Y_PRED)
    assert unweighted_accuracy(true, pred, 4) == unweighted_accuracy(Y_TRUE, Y_PRED, 4)


def test_imbalance_separates_wa_from_ua() -> None:
    """Always predicting the majority class scores high WA but UA of 1 / n_classes."""
    y_true = np.array([0] * 90 + [1] * 10)
    y_pred = np.zeros(100, dtype=np.int64)
    assert weighted_accuracy(y_true, y_pred) == pytest.approx(0.9)
    assert unweighted_accuracy(y_true, y_pred, 2) == pytest.approx(0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=200))
def test_invariants(pairs: list[tuple[int, int]]) -> None:
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    counts = confusion_matrix(y_true, y_pred, 6)
    assert counts.sum() == y_true.size
    assert np.array_equal(counts.sum(axis=1), np.bincount(y_true, minlength=6))
    assert np.array_equal(counts.sum(axis=0), np.bincount(y_pred, minlength=6))
    wa = weighted_accuracy(y_true, y_pred)
    assert wa == pytest.approx(np.trace(counts) / y_true.size)
    rows = confusion_matrix(y_true, y_pred, 6, normalize=True)
    present = np.bincount(y_true, minlength=6) > 0
    np.testing.assert_allclose(rows[present].sum(axis=1), 1.0)
    assert np.all(rows[~present] == 0)
    ua = unweighted_accuracy(y_true, y_pred, 6)
    assert ua == pytest.approx(np.mean(np.diag(rows)[present]))
    assert 0.0 <= ua <= 1.0 and 0.0 <= wa <= 1.0
    assert unweighted_accuracy(y_true, y_true, 6) == weighted_accuracy(y_true, y_true) == 1.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: weighted_accuracy([0, 1], [0]), r"same length, got shapes \(2,\) and \(1,\)"),
        (lambda: weighted_accuracy([], []), "y_true is empty"),
        (lambda: weighted_accuracy([[0]], [[0]]), "1-D arrays"),
        (lambda: weighted_accuracy([0.0, 1.0], [0, 1]), "int class indices"),
        (lambda: unweighted_accuracy([0, 2], [0, 1], 2), r"y_true holds class indices outside 0\.\.1: \[0, 2\]"),
        (lambda: confusion_matrix([0, 1], [0, -1], 2), "y_pred holds class indices outside"),
        (lambda: confusion_matrix([0, 1], [0, 1], 0), "n_classes=0"),
    ],
)
def test_bad_inputs(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()
