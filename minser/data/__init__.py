"""Corpora, their on-disk feature cache and the EmoDB download.

- :mod:`minser.data.corpora`: :class:`Utterance`, :class:`Corpus` and the loaders.
- :mod:`minser.data.cache`: :func:`cached_features`, log-Mels computed once per corpus and front end.
- :mod:`minser.data.download`: :func:`download_emodb` (also ``python -m minser.data download emodb``).
"""

from minser.data.cache import cached_features
from minser.data.corpora import (
    EMODB_LABELS_7,
    FOUR_CLASS_LABELS,
    IEMOCAP_LABELS,
    Corpus,
    Utterance,
    data_dir,
    load_corpus,
    load_emodb,
    load_folder,
    load_iemocap,
    load_manifest,
)
from minser.data.download import download_emodb

__all__ = [
    "EMODB_LABELS_7",
    "FOUR_CLASS_LABELS",
    "IEMOCAP_LABELS",
    "Corpus",
    "Utterance",
    "cached_features",
    "data_dir",
    "download_emodb",
    "load_corpus",
    "load_emodb",
    "load_folder",
    "load_iemocap",
    "load_manifest",
]
