"""Quiet by default: a run prints what is about the user's run, and nothing else.

Hidden while `quiet_run()` is active (`--verbose` or `NST_PL_DEBUG=1` bring everything back):
- Lightning's and Fabric's info lines ("GPU available: False …", "TPU available …", "Seed set to 0", the litlogger
  tip, "`Trainer.fit` stopped: `max_steps=3` reached.");
- deprecation warnings of the libraries (e.g. Lightning's "`isinstance(treespec, LeafSpec)` is deprecated").
Every other warning (ours, such as a shrunk coarse-to-fine schedule, and Lightning's about the run) is printed once
per process — also across the experiments of `nst-pl compare` — as one line, `nst-pl: warning: <message>`, without
the file name and source line that Python adds.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from nst_pl.fit import debug

VERBOSE_FLAG = "--verbose"

# The library loggers whose INFO lines are not about the user's run.
_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning", "lightning.pytorch", "lightning.fabric")

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
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # every warning reaches _show, which keeps the first of each
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*\bis deprecated\b")
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            warnings.showwarning = _show
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
