"""Exceptions raised by minser.

Every error that bad input can cause is a :class:`MinserError` whose message names the
object at fault (a file, a folder, an option), says what was wrong and what to do.
"""


class MinserError(Exception):
    """Base class of every error minser raises on purpose."""


class AudioError(MinserError, ValueError):
    """An audio file or array that cannot be used (missing, corrupt, empty, non-finite, too short)."""


class DataError(MinserError):
    """A corpus, manifest or feature cache that is missing or malformed."""


class ConfigError(MinserError, ValueError):
    """An unknown name or an invalid option (model, fusion, protocol, ...)."""


class CheckpointError(MinserError):
    """A checkpoint or run folder that cannot be loaded."""
