"""Quiet by default: a run prints what is about the user's run, and nothing else.

Hidden while `quiet_run()` is active (`--verbose` or `NST_PL_DEBUG=1` bring everything back):
- the libraries' info lines (Lightning's "GPU available: False …", "TPU available …", "Seed set to 0", the litlogger
  tip, "`Trainer.fit` stopped: `max_steps=3` reached.");
- deprecation warnings of the libraries (e.g. Lightning's "`isinstance(treespec, LeafSpec)` is deprecated").
Every other warning (ours, such as a shrunk coarse-to-fine schedule, and Lightning's about the run) is printed once
per process — also across the experiments of `nst-pl compare` — as one line, `nst-pl: warning: <message>`, without
the file name and source line that Python adds.

`safe_console()` keeps a run alive when its console goes away: stdout on a full device (`> /dev/full`), a closed
pipe (`| head`), a terminal that was closed (EIO). The first failed write drops that stream's output for the rest of
the run (one warning on the other stream, if it still works); the run goes on and writes its files as usual.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from nst_pl.errors import debug

VERBOSE_FLAG = "--verbose"

# Warnings already shown in this process (by message).
_shown: set[str] = set()


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    if text in _shown:
        return
    _shown.add(text)
    (file or sys.stderr).write(f"nst-pl: warning: {text}\n")


@contextmanager
def quiet_run(verbose: bool = False) -> Iterator[None]:
    """Hide the libraries' chatter and print the remaining warnings as one line each (see the module doc)."""
    if verbose or debug():
        yield
        return
    # Every library's INFO lines, as one switch: a per-logger level would be undone by Lightning, which sets its loggers
    # to INFO when it is imported (here that happens inside this block, after the checks that need no torch).
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.INFO))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # every warning reaches _show, which keeps the first of each
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*\bis deprecated\b")
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            # Every resume writes into a new version folder; Lightning's note that the checkpoint folder "has changed"
            # says nothing to the user (nst-pl keeps only last.ckpt, never a best model).
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
            warnings.showwarning = _show
            yield
    finally:
        logging.disable(disabled)


class SafeStream:
    """A console stream whose write errors drop the output instead of raising (see the module doc)."""

    def __init__(self, stream: Any, name: str) -> None:
        self._stream = stream
        self._name = name
        # Why the stream stopped working. Python sets sys.stdout to None when the process started with it closed
        # (`>&-`): its output is dropped without a word.
        self.error: str | None = None if stream is not None else "closed"

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                return self._stream.write(text)
            except (OSError, ValueError) as err:  # ValueError: the file was closed
                self._fail(err)
        return len(text)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._stream.flush()
            except (OSError, ValueError) as err:
                self._fail(err)

    def isatty(self) -> bool:
        try:
            return self.error is None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)

    def _fail(self, err: Exception) -> None:
        self.error = getattr(err, "strerror", None) or str(err)
        # Text already buffered for the broken file, and the interpreter's own flush at exit, would raise again
        # (Python then prints "Exception ignored … BrokenPipeError" and exits 120): point the descriptor at devnull.
        with suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        if self._name != "stdout":
            return  # stdout may be data someone reads: a broken stderr is not reported there
        with suppress(Exception):
            sys.stderr.write(
                f"nst-pl: warning: cannot write to {self._name} ({self.error}): the rest of its output is dropped; a "
                "run goes on and writes its files\n"
            )
            sys.stderr.flush()


@contextmanager
def safe_console() -> Iterator[None]:
    """sys.stdout and sys.stderr as `SafeStream`s while the block runs (see the module doc)."""
    for fd in (0, 1, 2):
        # A descriptor the process started without (`>&-`) would be reused by the next file opened (a PNG, a
        # checkpoint), and anything written to "stdout" at the C level or by a child process would land in it.
        try:
            os.fstat(fd)
        except OSError:
            with suppress(OSError):
                devnull = os.open(os.devnull, os.O_RDWR)
                if devnull != fd:
                    os.dup2(devnull, fd)
                    os.close(devnull)
    saved = sys.stdout, sys.stderr
    safe = SafeStream(saved[0], "stdout"), SafeStream(saved[1], "stderr")
    sys.stdout, sys.stderr = safe
    try:
        yield
    finally:
        for stream in safe:
            stream.flush()
        sys.stdout, sys.stderr = saved
