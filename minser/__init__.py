"""minser: minimal, fast speech emotion recognition.

Implements He, Minematsu and Saito, "Effective Integration of Transformer for
Network-based Speech Emotion Recognition": a log-Mel front end, CNN / LSTM /
transformer networks (ILT, CAT and the paper's baselines and ablations) and fused
Triton attention kernels with PyTorch fallbacks.
"""

from minser.errors import AudioError, CheckpointError, ConfigError, DataError, MinserError

__version__ = "0.1.0"

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
