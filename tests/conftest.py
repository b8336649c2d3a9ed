"""Shared test set-up.

Without a CUDA device the Triton kernels run in Triton's CPU interpreter; the variable must
be set before triton is first imported, hence here, at collection time.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Modules of the dev extra that test modules import outright (the front end's oracle, the property tests,
# the confusion-matrix PNG); the optional ones (triton, onnx, scikit-learn) skip the tests that need them.
DEV_MODULES = ("librosa", "hypothesis", "matplotlib")


def pytest_configure(config: pytest.Config) -> None:
    missing = [name for name in DEV_MODULES if importlib.util.find_spec(name) is None]
    if missing:  # else: a collection error per test module, or a test failing on a missing PNG
        raise pytest.UsageError(f"the test suite needs the dev extra (missing: {', '.join(missing)}): "
                                "pip install -e '.[dev]' (see the README's Set-up)")


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session", autouse=True)
def _private_feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point ``XDG_CACHE_HOME`` (so the default feature cache, also in the subprocesses tests start) at a
    folder of this session: a test run neither fills the user's cache nor passes or fails on a stale entry
    left there by other code."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def _shared_data() -> Path:
    """The data folder as minser reads it (``MINSER_DATA``, ``~`` expanded), made absolute because tests
    change the working folder; unset, ``../shared/data`` beside the checkout."""
    root = os.environ.get("MINSER_DATA")
    if not root:
        return Path(__file__).resolve().parents[2] / "shared" / "data"
    from minser.data import data_dir  # not at the top: minser may import triton, after TRITON_INTERPRET is set

    return data_dir().resolve()


@pytest.fixture(scope="session")
def emodb_root() -> Iterator[Path]:
    """The real EmoDB folder (``$MINSER_DATA/emodb``, else ``../shared/data/emodb``). CI must have it; elsewhere
    the test skips. Found beside the checkout, it is also what ``--data emodb`` reads, through MINSER_DATA
    (the tests of the command lines name the corpus, not the folder)."""
    root = _shared_data()
    if not (root / "emodb" / "wav").is_dir():
        missing = f"EmoDB not found in {root / 'emodb' / 'wav'}: set MINSER_DATA to the shared data folder"
        if os.environ.get("CI"):
            pytest.fail(f"{missing} (holding emodb/wav)")
        pytest.skip(missing)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINSER_DATA", str(root))
        yield root / "emodb"
