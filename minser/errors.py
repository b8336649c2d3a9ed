"""Exceptions raised by minser.

Every error that bad input can cause is a :class:`MinserError` whose message names the
object at fault (a file, a folder, an option), says what was wrong and what to do.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import warnings
from collections.abc import Iterator


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


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Within it (or the function it decorates), a warning prints as one line ``warning: <message>``, as the
    command lines print errors: Python's format adds the file and source line that raised it, which is
    minser's code and of no use to whoever runs the command."""
    original = warnings.formatwarning
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = original


# Exit status of a command ended by Ctrl-C: 128 + SIGINT, as a shell reports it.
INTERRUPTED_STATUS = 128 + signal.SIGINT


def broken_pipe_status() -> int:
    """What a command line does on BrokenPipeError from its output: the reader stopped early (``| head -1``),
    so it stops quietly, as Unix tools do, and returns 141 (128 + SIGPIPE, as a shell reports it).

    Catch the error around the prints and a ``sys.stdout.flush()`` after them: output to a pipe is buffered,
    and a flush left to the interpreter's exit fails there, printing ``Exception ignored ...`` and exiting
    120. Pointing stdout at /dev/null keeps that final flush of what is still buffered from raising again."""
    try:
        stdout = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # a stream of its own (pytest's, a notebook's)
        return 128 + signal.SIGPIPE
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stdout)
    os.close(devnull)
    return 128 + signal.SIGPIPE
