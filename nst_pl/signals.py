"""A run stopped by a signal ends like a shell's killed process, with its work saved and a resume hint.

    with stopped_by_signals(trainer):
        trainer.fit(model, datamodule=data)

Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal or the ssh session closed) during `trainer.fit`: the callbacks save
the current images and last.ckpt (their `on_exception`), one line says where they are and how to resume, and the
exit code is 130 / 143 / 129 (128 + the signal number). Without this, Lightning ends a SIGTERM with exit status 0 and
SIGHUP's default action ends the process at once, losing every step since the last checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from pytorch_lightning.utilities.exceptions import SIGTERMException

from nst_pl.trainer import saved_files


@contextmanager
def stopped_by_signals(trainer) -> Iterator[None]:
    """Turn a stop by SIGINT / SIGTERM / SIGHUP inside the block into exit code 130 / 143 / 129 (see the module doc)."""
    hangup: list[bool] = []
    try:
        with _hangup_stops_like_sigterm(trainer, hangup):
            yield
    except SIGTERMException:
        # Lightning raises it (a SystemExit with code None, i.e. exit status 0!) at the end of the step during
        # which SIGTERM arrived, after the callbacks' on_exception saved the images and a checkpoint.
        if hangup:
            _stopped(trainer, "SIGHUP (the terminal was closed)", 129)
        _stopped(trainer, "SIGTERM", 143)
    except SystemExit as exc:
        # Lightning turns Ctrl-C into sys.exit(1) after the same saving; keep the shell's convention.
        if isinstance(exc.__context__, KeyboardInterrupt):
            _stopped(trainer, "Ctrl-C (SIGINT)", 130)
        raise


def _stopped(trainer, how: str, code: int) -> NoReturn:
    if trainer.is_global_zero:
        images, ckpt = saved_files(trainer)
        saved = f"the images of step {trainer.global_step} are in '{images}'" if images else "no images were saved"
        resume = (
            f"checkpoint '{ckpt}'; resume with the same arguments plus --ckpt_path '{ckpt}'"
            if ckpt and Path(ckpt).exists()
            else "no checkpoint was written (no step had finished)"
        )
        sys.stderr.write(f"nst-pl: stopped by {how} at step {trainer.global_step}: {saved}; {resume}\n")
    raise SystemExit(code)


@contextmanager
def _hangup_stops_like_sigterm(trainer, received: list[bool]) -> Iterator[None]:
    """SIGHUP stops the run like SIGTERM (images and last.ckpt saved, then exit 129). Left alone when SIGHUP is
    already handled or ignored (`nohup`), or outside the main thread."""
    hup = getattr(signal, "SIGHUP", None)
    main_thread = threading.current_thread() is threading.main_thread()
    if hup is None or not main_thread or signal.getsignal(hup) != signal.SIG_DFL:
        yield
        return

    def handler(signum, frame) -> None:
        connector = trainer._signal_connector
        if not getattr(connector, "_original_handlers", True):
            # Outside the training loop (loading images, building the model): nothing to save, so the default
            # action, as SIGTERM's there. Lightning would reset the flag when the loop starts anyway.
            signal.signal(hup, signal.SIG_DFL)
            os.kill(os.getpid(), hup)
            return
        received.append(True)
        try:  # Lightning's own SIGTERM handler: also forwards the signal to the other DDP processes
            connector._sigterm_notifier_fn(signum, frame)
        except Exception:
            connector.received_sigterm = True

    signal.signal(hup, handler)
    try:
        yield
    finally:
        signal.signal(hup, signal.SIG_DFL)
