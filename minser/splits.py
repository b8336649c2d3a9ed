"""Evaluation protocols: which utterances train, validate and test a model.

- :func:`random_splits`: the paper's random train / validation / test split (55% / 25% / 20%),
  repeated with different seeds, stratified by label.
- :func:`leave_one_group_out`: each speaker (EmoDB) or session (IEMOCAP) in turn is the test
  set; validation is a stratified random fraction of the other groups' utterances.

Every split is a :class:`Split` of sorted int64 index arrays into the corpus, disjoint and
together covering every utterance; the same seed always gives the same splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from minser.errors import ConfigError


@dataclass(frozen=True)
class Split:
    """One evaluation fold: sorted int64 indices ``(n_part,)`` of the train, validation and test utterances."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def _as_targets(targets: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(targets)
    if array.ndim != 1 or array.size == 0 or array.dtype.kind not in "iu":
        raise ConfigError(
            "targets: expected a non-empty 1-D array of int class indices, got "
            f"shape {array.shape}, dtype {array.dtype}"
        )
    return array


def _part_sizes(n: int, fractions: np.ndarray) -> np.ndarray:
    """Split ``n`` items into parts proportional to ``fractions`` (largest remainder; sums to ``n``)."""
    exact = n * fractions
    sizes = np.floor(exact).astype(np.int64)
    # Ties in the remainder go to the earlier part (stable sort), so train gets them first.
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: n - sizes.sum()]] += 1
    return sizes


def min_class_size(fractions: Sequence[float]) -> int:
    """The fewest utterances a class needs for every part of a split by ``fractions`` to get one."""
    shares = np.asarray(fractions, dtype=np.float64)
    n = 1
    while np.any(_part_sizes(n, shares) == 0):
        n += 1
    return n


def _stratified_parts(
    indices: np.ndarray, targets: np.ndarray, fractions: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle ``indices`` within each class and cut every class by ``fractions``: one sorted array per part."""
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(targets[indices]):
        members = rng.permutation(indices[targets[indices] == label])
        bounds = np.cumsum(_part_sizes(members.size, fractions))[:-1]
        for part, chunk in zip(parts, np.split(members, bounds)):
            part.append(chunk)
    return [np.sort(np.concatenate(part)).astype(np.int64) for part in parts]


def _fold_rngs(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seed`` (a fold's splits do not depend on ``n``); ConfigError
    for a seed that is not an integer >= 0 (None drew fresh entropy: other splits on every call)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed={seed!r}: give an integer >= 0 (the same seed gives the same splits)")
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n)]


def random_splits(
    targets: Sequence[int] | np.ndarray,
    n_splits: int = 5,
    fractions: tuple[float, float, float] = (0.55, 0.25, 0.2),
    seed: int = 0,
) -> list[Split]:
    """``n_splits`` random train / validation / test splits, stratified by label (the paper's protocol).

    Within each class the utterances are shuffled and cut by ``fractions`` (train, val, test;
    largest-remainder rounding per class), so every part keeps the class proportions. Split ``i``
    (named ``random-i``) uses the ``i``-th generator spawned from ``seed``.
    """
    targets = _as_targets(targets)
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or np.any(shares <= 0) or not np.isclose(shares.sum(), 1.0):
        raise ConfigError(f"fractions={fractions!r}: give three positive shares (train, val, test) summing to 1")
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ConfigError(f"n_splits={n_splits!r} must be a positive integer")
    everything = np.arange(targets.size)
    return [
        Split(f"random-{i}", *_stratified_parts(everything, targets, shares, rng))
        for i, rng in enumerate(_fold_rngs(seed, n_splits))
    ]


def leave_one_group_out(
    groups: Sequence[object] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    val_fraction: float = 0.25,
    seed: int = 0,
) -> list[Split]:
    """One split per group (speaker or session, in sorted order): that group's utterances are the test set.

    Validation is a stratified random ``val_fraction`` of the remaining groups' utterances and the
    rest trains. We draw validation from all remaining speakers rather than holding out a second
    speaker: every fold then trains on the same speakers it validates on, early stopping sees the
    class balance of the training data, and with only 10 EmoDB speakers no fold loses a whole
    speaker's data. (The test speaker is always unseen.) Splits are named after their group.
    """
    targets = _as_targets(targets)
    groups = np.asarray(groups)
    if groups.shape != targets.shape:
        raise ConfigError(
            f"groups has shape {groups.shape} but targets has shape {targets.shape}; "
            "give one group per utterance"
        )
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r} must lie strictly between 0 and 1")
    names = np.unique(groups)
    if names.size < 2:
        raise ConfigError(f"leave-one-group-out needs at least 2 groups, got {names.size} ({names.tolist()})")
    shares = np.array([1.0 - val_fraction, val_fraction])
    splits = []
    for name, rng in zip(names, _fold_rngs(seed, names.size)):
        test = np.flatnonzero(groups == name).astype(np.int64)
        train, val = _stratified_parts(np.flatnonzero(groups != name), targets, shares, rng)
        splits.append(Split(str(name), train, val, test))
    return splits
