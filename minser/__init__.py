"""minser: minimal, fast speech emotion recognition.

Implements He, Minematsu and Saito, "Effective Integration of Transformer for
Network-based Speech Emotion Recognition": a log-Mel front end, CNN / LSTM /
transformer networks (ILT, CAT and the paper's baselines and ablations) and fused
Triton attention kernels with PyTorch fallbacks.
"""

from minser.errors import AudioError, CheckpointError, ConfigError, DataError, MinserError

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "MinserError",
    "__version__",
]
