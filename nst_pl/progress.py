"""What a run shows while it works: a progress line in optimisation steps, and a TensorBoard without noise.

`StepProgressBar` (installed by `make_cli` unless `--trainer.enable_progress_bar false` or another progress bar is
configured) reads

    step 151/300, 128 px, loss 0.4321 |██████████          | 00:03<00:03, 45.2 step/s

- `step k/N` counts optimisation steps (`trainer.global_step` of `trainer.max_steps`): style transfer has no epochs,
  and Lightning's "Epoch 0: 151/?" (an endless dataloader) says nothing. After a resume the line starts at the
  checkpoint's step, and the rate and the time left count only the steps of this run.
- `128 px` is the long side of the view that the loss sees (coarse-to-fine `model.scales`), then the full size.
- `loss` is the total loss of the last step (mean over pairs); no `v_num`.
When stdout is not a terminal (a log file, a pipe, a batch job) there is no bar redrawn with carriage returns: one
plain line `step k/N, 128 px, loss …, 12 s, 40 s left` is printed at every tenth of the run and at the end.

`RunTensorBoardLogger` is Lightning's TensorBoardLogger without the `epoch` scalar (always 0 here) and without the
placeholder `hp_metric`: the scalars are the losses (`loss/…`) and the view's long side
(`stylized/scale_long_side`, beside the images).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn

from nst_pl.errors import OutputError


class StepProgressBar(TQDMProgressBar):
    """Progress in steps `k/N`, with the current scale and loss (see the module doc)."""

    BAR_FORMAT = "step {n_fmt}/{total_fmt}{postfix} |{bar:20}| {elapsed}<{remaining}, {rate_fmt}"

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = True) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self._tty: bool | None = None
        self._start = 0.0
        self._first_step = 0
        self._every = 100
        self._next_line = 0

    # ----------------------------------------------------------------------------------- the text
    @staticmethod
    def total_steps(trainer: pl.Trainer) -> int | None:
        return trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """The bar's postfix: the view's long side and the total loss (no `v_num`, no per-layer terms)."""
        metrics: dict[str, Any] = {}
        schedule = getattr(pl_module, "schedule", None)  # the coarse-to-fine schedule (schedule.py), once fitted
        if schedule is not None and schedule.full is not None:
            metrics["scale"] = f"{schedule.long_side(max(0, trainer.global_step - 1))} px"
        loss = trainer.progress_bar_metrics.get("loss/total")
        if loss is not None:
            metrics["loss"] = f"{float(loss):.4g}"
        return metrics

    def postfix(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        m = self.get_metrics(trainer, pl_module)
        return ", ".join(([m["scale"]] if "scale" in m else []) + ([f"loss {m['loss']}"] if "loss" in m else []))

    def line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """`step 151/300, 128 px, loss 0.4321`: the bar's text, and the start of a plain (non-terminal) line."""
        total = self.total_steps(trainer)
        text = f"step {trainer.global_step}/{total if total else '?'}"
        post = self.postfix(trainer, pl_module)
        return f"{text}, {post}" if post else text

    # -------------------------------------------------------------------------------- the bar
    @property
    def tty(self) -> bool:
        if self._tty is None:
            self._tty = bool(getattr(sys.stdout, "isatty", lambda: False)())
        return self._tty

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        return Tqdm(
            desc="",
            total=self.total_steps(trainer),
            initial=trainer.global_step,
            position=(2 * self.process_position),
            disable=self.is_disabled or not self.tty,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            unit=" step",
            bar_format=self.BAR_FORMAT,
        )

    def on_train_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # One "epoch" is the whole run, so one bar: it counts steps from the (resumed) global step to max_steps, and
        # its rate and time left only count the steps of this run.
        self.train_progress_bar = self.init_train_tqdm()
        self._start = time.perf_counter()
        self._first_step = trainer.global_step
        total = self.total_steps(trainer) or 0
        self._every = max(1, total // 10) if total else 100
        self._next_line = trainer.global_step + self._every

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # no "Epoch N" bar (see on_train_start)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix_str(self.postfix(trainer, pl_module), refresh=False)
            bar.refresh()
        elif self.is_enabled and not self.tty and (step >= self._next_line or step == self.total_steps(trainer)):
            self._print_line(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bar = self.train_progress_bar
        if not bar.disable:
            bar.set_postfix_str(self.postfix(trainer, pl_module), refresh=True)
        bar.close()

    @rank_zero_only
    def _print_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._next_line = trainer.global_step + self._every
        seconds = time.perf_counter() - self._start
        # Time left from the steps of this run only (a resumed run did not take the checkpoint's steps).
        done, total = trainer.global_step - self._first_step, self.total_steps(trainer)
        left = f", {seconds / done * (total - trainer.global_step):.0f} s left" if done > 0 and total else ""
        sys.stdout.write(f"{self.line(trainer, pl_module)}, {seconds:.0f} s{left}\n")
        sys.stdout.flush()


class RunTensorBoardLogger(TensorBoardLogger):
    """TensorBoardLogger without the `epoch` scalar and the `hp_metric` placeholder (see the module doc), and whose
    failed writes do not end the run.

    TensorBoard's event file is written by a background thread; when the disk fills (or a network share goes away),
    its error surfaces at the next `add_scalar`/`flush` in the training loop (Lightning even reports it as "you tried
    to log … which is currently not supported"), and the thread prints its own traceback. Here an event file that
    cannot be created (before the first step) is an `OutputError` (one paragraph, exit 2); a write that fails later
    stops TensorBoard logging with one warning line, and the run goes on: its result is in the PNGs and the
    checkpoints, whose own write errors decide whether the run can continue.
    """

    # Class-level defaults: make_cli turns Lightning's logger into this class without calling __init__.
    _write_error: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        _silence_event_writer_threads()
        try:
            return super().experiment
        except OSError as err:
            raise OutputError(
                f"cannot create TensorBoard's event file in '{self.log_dir}': {err.strerror or err}; free some disk "
                "space or choose a writable location with --trainer.default_root_dir DIR"
            ) from None

    @contextmanager
    def _writing(self) -> Iterator[bool]:
        """Yields False once a write has failed; a failing write stops TensorBoard logging with one warning."""
        if self._write_error is not None:
            yield False
            return
        try:
            yield True
        except (OSError, ValueError) as err:
            # Lightning's log_metrics re-raises any writer error as a ValueError about the value's type.
            cause = err if isinstance(err, OSError) else err.__cause__
            if not isinstance(cause, OSError) or isinstance(cause, OutputError):
                raise
            self._write_error = cause.strerror or str(cause)
            rank_zero_warn(
                f"TensorBoard's files in '{self.log_dir}' could not be written ({self._write_error}): TensorBoard "
                "logging stops for this run; the images and checkpoints are still saved"
            )
            if self._experiment is not None:
                with suppress(Exception):  # the writer's thread is dead; only its file handle is left to close
                    self._experiment.close()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        with self._writing() as ok:
            if ok:
                super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

    @rank_zero_only
    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        with self._writing() as ok:
            if ok:
                super().log_hyperparams(*args, **kwargs)

    @rank_zero_only
    def log_image(self, tag: str, image: Any, step: int) -> None:
        """`add_image` (ImageLogger), then `flush` once all images of a step are in."""
        with self._writing() as ok:
            if ok:
                self.experiment.add_image(tag, image, global_step=step)

    @rank_zero_only
    def flush(self) -> None:
        with self._writing() as ok:
            if ok and self._experiment is not None:
                self._experiment.flush()

    @rank_zero_only
    def save(self) -> None:
        with self._writing() as ok:
            if ok:
                super().save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        with self._writing() as ok:
            if ok:
                super().finalize(status)


def _silence_event_writer_threads() -> None:
    """TensorBoard's writer thread re-raises its error after storing it for the main thread, and Python prints that
    as "Exception in thread …" with a traceback. The main thread reports it (RunTensorBoardLogger): drop the print."""
    global _thread_hook_installed
    if _thread_hook_installed:
        return
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
            previous(args)

    threading.excepthook = hook
    _thread_hook_installed = True


_thread_hook_installed = False
