"""The errors a user can fix. `nst-pl` prints any `NSTError` as one paragraph and exits 2; everything else is a bug
and keeps its traceback (always with `NST_PL_DEBUG=1`: `debug()`).

Each class also derives from the built-in type that fits it, so `except ValueError` / `except OSError` callers keep
working.
"""

from __future__ import annotations

import os

DEBUG_ENV = "NST_PL_DEBUG"


def debug() -> bool:
    """True when NST_PL_DEBUG asks for full tracebacks (and every library message) instead of one-paragraph errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_paragraph(message: str, command: str) -> str:
    """The one paragraph a command-line error ends with, on stderr (exit code 2)."""
    return f"nst-pl: error: {message.strip()}\nRun `nst-pl {command} --help` for the options.\n"


class NSTError(Exception):
    """A problem with the input, the options or the environment; the message says what is wrong and how to fix it."""


class ConfigError(NSTError, ValueError):
    """An option, or a combination of options, that cannot work."""


class ImageError(NSTError, ValueError):
    """An input image that cannot be found, read or used."""


class WeightsError(NSTError, RuntimeError):
    """Extractor weights that cannot be downloaded or read, or that do not fit the architecture."""


class OutputError(NSTError, OSError):
    """A file or folder that cannot be written (full disk, permissions); any previous version is left untouched."""


class DivergedError(NSTError, RuntimeError):
    """The loss or its gradient became NaN or inf: the run stops and keeps the last finite images."""
