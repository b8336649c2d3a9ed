"""minser: minimal, fast speech emotion recognition.

Implements He, Minematsu and Saito, "Effective Integration of Transformer for
Network-based Speech Emotion Recognition": a log-Mel front end, CNN / LSTM /
transformer networks (ILT, CAT and the paper's baselines and ablations) and fused
Triton attention kernels with PyTorch fallbacks.
"""

from pathlib import Path

from minser.errors import AudioError, CheckpointError, ConfigError, DataError, MinserError

__version__ = "0.1.0"

# In a source checkout the kernels sit beside this package, in kernels/, and installs map them to
# minser.kernels. When this package is imported from the checkout itself rather than through an
# install's mapping (a plain `pip install .` run from inside the checkout, or PYTHONPATH=.), the
# checkout joins the package's search path so that minser.kernels is found there too.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "kernels" / "__init__.py").is_file():
    __path__.append(str(_checkout))

# Imported on first use, so that `import minser` stays light (no torch import).
_LAZY = {"Recognizer": "minser.recognizer", "Prediction": "minser.recognizer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'minser' has no attribute {name!r}")


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
