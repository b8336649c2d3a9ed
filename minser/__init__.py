"""minser: minimal, fast speech emotion recognition.

Implements He, Minematsu and Saito, "Effective Integration of Transformer for
Network-based Speech Emotion Recognition": a log-Mel front end, CNN / LSTM /
transformer networks (ILT, CAT and the paper's baselines and ablations) and fused
Triton attention kernels with PyTorch fallbacks.
"""

import sys
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from pathlib import Path

from minser.errors import AudioError, CheckpointError, ConfigError, DataError, MinserError

__version__ = "0.1.0"


class _CheckoutKernels:  # a meta path finder (importlib.abc.MetaPathFinder's protocol; that module is slow to import)
    """In a source checkout the kernels sit beside this package, in kernels/, and installs map them to
    minser.kernels. When the package is imported from the checkout itself rather than through an install's
    mapping (a plain `pip install .` run from inside the checkout, or PYTHONPATH=.), this finds that one
    name there. (Adding the checkout to the package's path did too, but also made its tests, bench and a
    second copy of the package importable as minser.tests, minser.minser, ...)"""

    def __init__(self, kernels: Path) -> None:
        self.kernels = kernels

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name != "minser.kernels":
            return None
        return spec_from_file_location(name, self.kernels / "__init__.py",
                                       submodule_search_locations=[str(self.kernels)])


_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "kernels" / "__init__.py").is_file() \
        and not any(isinstance(finder, _CheckoutKernels) for finder in sys.meta_path):
    sys.meta_path.append(_CheckoutKernels(_checkout / "kernels"))  # last: an install's own mapping comes first
del _checkout

# Imported on first use, so that `import minser` stays light (no torch import).
_LAZY = {"Recognizer": "minser.recognizer", "Prediction": "minser.recognizer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'minser' has no attribute {name!r}")


def __dir__() -> list[str]:  # the lazy names too, for tab completion and help()
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MinserError",
    "Prediction",
    "Recognizer",
    "__version__",
]
