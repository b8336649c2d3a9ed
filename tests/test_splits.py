"""Evaluation protocols: partitions without leaks, stratification, determinism, bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minser.data import load_emodb
from minser.errors import ConfigError
from minser.splits import Split, leave_one_group_out, min_class_size, random_splits

targets_strategy = st.lists(st.integers(0, 4), min_size=1, max_size=120).map(lambda xs: np.array(xs, dtype=np.int64))


def assert_partition(split: Split, n: int) -> None:
    """The three parts are sorted int64, disjoint, and together hold every index exactly once."""
    for part in (split.train, split.val, split.test):
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    joined = np.concatenate([split.train, split.val, split.test])
    assert np.array_equal(np.sort(joined), np.arange(n))


@settings(max_examples=60, deadline=None)
@given(targets_strategy, st.integers(0, 2**32 - 1))
def test_random_splits_partition_and_stratify(targets: np.ndarray, seed: int) -> None:
    splits = random_splits(targets, n_splits=2, seed=seed)
    assert [s.name for s in splits] == ["random-0", "random-1"]
    for split in splits:
        assert_partition(split, targets.size)
        for label in np.unique(targets):
            n = np.sum(targets == label)
            got = [np.sum(targets[part] == label) for part in (split.train, split.val, split.test)]
            # Per class, each part is within one utterance of its exact share.
            assert np.all(np.abs(np.array(got) - n * np.array([0.55, 0.25, 0.2])) < 1)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=2, max_size=100),
    st.floats(0.05, 0.95),
)
def test_leave_one_group_out_partition(pairs: list[tuple[int, int]], val_fraction: float) -> None:
    groups = np.array([f"g{g}" for g, _ in pairs])
    targets = np.array([t for _, t in pairs], dtype=np.int64)
    if np.unique(groups).size < 2:
        with pytest.raises(ConfigError, match="at least 2 groups"):
            leave_one_group_out(groups, targets)
        return
    splits = leave_one_group_out(groups, targets, val_fraction=val_fraction, seed=3)
    assert [s.name for s in splits] == sorted(set(groups.tolist()))
    tested = np.concatenate([s.test for s in splits])
    assert np.array_equal(np.sort(tested), np.arange(targets.size))  # every utterance is tested once
    for split in splits:
        assert_partition(split, targets.size)
        assert set(groups[split.test]) == {split.name}
        assert split.name not in set(groups[split.train]) | set(groups[split.val])


def test_deterministic_and_seed_dependent() -> None:
    targets = np.repeat(np.arange(4), [127, 71, 62, 79])
    a, b = random_splits(targets, seed=7), random_splits(targets, seed=7)
    for x, y in zip(a, b):
        assert all(np.array_equal(getattr(x, f), getattr(y, f)) for f in ("train", "val", "test"))
    assert not np.array_equal(a[0].test, a[1].test)  # the five splits differ
    assert not np.array_equal(a[0].test, random_splits(targets, seed=8)[0].test)
    # Split i does not depend on how many splits are asked for.
    assert np.array_equal(random_splits(targets, n_splits=2, seed=7)[1].val, a[1].val)
    sizes = {(s.train.size, s.val.size, s.test.size) for s in a}
    assert sizes == {(186, 86, 67)}  # per-class largest remainders of 55/25/20 %


def test_emodb_leave_one_speaker_out(emodb_root: Path) -> None:
    corpus = load_emodb(emodb_root)
    targets, speakers = corpus.targets(), corpus.speakers()
    splits = leave_one_group_out(speakers, targets, seed=0)
    assert [s.name for s in splits] == ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    for split in splits:
        assert_partition(split, len(corpus))
        assert np.sum(speakers == split.name) == split.test.size
        rest = np.concatenate([split.train, split.val])
        expected_val = np.bincount(targets[rest], minlength=4) * 0.25
        assert np.all(np.abs(np.bincount(targets[split.val], minlength=4) - expected_val) < 1)
    again = leave_one_group_out(speakers, targets, seed=0)
    assert all(np.array_equal(x.val, y.val) for x, y in zip(splits, again))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: random_splits([]), "non-empty 1-D array of int"),
        (lambda: random_splits([0.5, 1.0]), "dtype float64"),
        (lambda: random_splits([[0, 1]]), r"shape \(1, 2\)"),
        (lambda: random_splits([0, 1], fractions=(0.5, 0.5, 0.5)), "summing to 1"),
        (lambda: random_splits([0, 1], fractions=(0.5, 0.5)), "three positive shares"),
        (lambda: random_splits([0, 1], fractions=(1.0, 0.0, 0.0)), "three positive shares"),
        (lambda: random_splits([0, 1], n_splits=0), "n_splits=0"),
        (lambda: leave_one_group_out(["a", "b"], [0, 1, 1]), "one group per utterance"),
        (lambda: leave_one_group_out(["a", "b"], [0, 1], val_fraction=1.0), "val_fraction=1.0"),
        (lambda: leave_one_group_out(["a", "a"], [0, 1]), r"at least 2 groups, got 1 \(\['a'\]\)"),
        # None drew fresh entropy (other splits on every call); the others were raw numpy errors
        (lambda: random_splits([0, 1], seed=None), r"^seed=None: give an integer >= 0 \(the same seed gives"),
        (lambda: random_splits([0, 1], seed=-1), r"^seed=-1: give an integer >= 0"),
        (lambda: leave_one_group_out(["a", "b"], [0, 1], seed=1.5), r"^seed=1.5: give an integer >= 0"),
    ],
)
def test_bad_inputs(call, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()


def test_min_class_size_is_the_fewest_members_that_fill_every_part() -> None:
    fractions = (0.55, 0.25, 0.2)
    n = min_class_size(fractions)
    assert n == 4
    for size, fills in ((n, True), (n - 1, False)):
        split = random_splits(np.zeros(size, dtype=np.int64), n_splits=1, fractions=fractions)[0]
        assert all(len(part) > 0 for part in (split.train, split.val, split.test)) is fills
