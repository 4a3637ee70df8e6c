"""ImageLogger: the run's record — a PNG per pair every N steps, the same images and the losses in TensorBoard."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nst_pl.errors import ConfigError, ImageError, OutputError
from nst_pl.image_io import save_image
from nst_pl.progress import RunTensorBoardLogger
from nst_pl.run_folder import check_writable

# After Ctrl-C or SIGTERM, the images of the step reached are written for at most this long (the checkpoint holds
# them all): the process ends within about a second, however many pairs there are.
SIGNAL_SAVE_SECONDS = 0.5


class ImageLogger(pl.Callback):
    def __init__(self, every_n_steps: int = 1000, tensorboard: bool = True, dirname: str = "images") -> None:
        """Save every pair's image as PNG (and to TensorBoard) at step 0, every `every_n_steps`, and at the end.

        Args:
            every_n_steps: Save period in optimisation steps; 0 saves only the first and the last image.
            tensorboard: Also log the images to TensorBoard (when the logger is a TensorBoardLogger).
            dirname: Folder inside the run's log directory that holds `<pair>/step_001000.png`.
        """
        if every_n_steps < 0:
            raise ConfigError(f"image_logger.every_n_steps must be >= 0, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.tensorboard = tensorboard
        self.dirname = dirname
        self.root: Path | None = None
        self._last_saved: int | None = None
        self._failed: int | None = None  # the step whose images could not be written at the start

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # `trainer.log_dir` is a collective under DDP: resolve it on every rank, here, not in rank-zero code.
        log_dir = trainer.log_dir or trainer.default_root_dir
        self.root = Path(log_dir) / self.dirname
        if trainer.is_global_zero:
            check_writable(self.root)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The first images are written before any step: a disk that cannot take them (it filled after the probe)
        # ends the run now, with nothing to lose, instead of at the first checkpoint an hour later.
        try:
            self.save(trainer, pl_module)
        except OutputError:
            self._failed = trainer.global_step  # on_exception must not try (and warn) again
            raise

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0:
            self._save_or_warn(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The final images are the result: failing to write them is an error (the checkpoint saved on the way
        # out holds them; resuming from it with --ckpt_path writes them again).
        self.save(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning skips the training loop, and with it on_train_start/on_train_end, when a run is resumed from
        # the checkpoint of a finished run. Saving here makes that resume write the final images (e.g. after the
        # disk was full at the end of the run); after a normal run the images of this step are already saved.
        self.save(trainer, pl_module)

    def _save_or_warn(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A periodic snapshot that cannot be written (full disk, a network share that went away) must not end a
        # run that may have hours left: the images also live in the checkpoints, and the next period retries.
        # The previous PNG is untouched (atomic writes). A checkpoint that cannot be written does stop the run.
        try:
            self.save(trainer, pl_module)
        except (ImageError, OutputError) as err:
            rank_zero_warn(
                f"step {trainer.global_step}: could not save the images, the run continues and retries at the next "
                f"save: {err}"
            )

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Ctrl-C, SIGTERM or a diverged loss: keep what was reached (save() refuses non-finite images).
        if self._failed == trainer.global_step:
            return
        # A signal asks to stop now: with many pairs, writing every PNG would take minutes. The images written in
        # SIGNAL_SAVE_SECONDS are kept; every pair's image is in the checkpoint saved next.
        signalled = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        try:
            self.save(trainer, pl_module, deadline=time.monotonic() + SIGNAL_SAVE_SECONDS if signalled else None)
        except Exception as err:  # never mask the original exception
            rank_zero_warn(f"could not save the images after {type(exception).__name__}: {err}")

    @rank_zero_only
    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, deadline: float | None = None) -> None:
        """Every pair's PNG of this step (and the TensorBoard images). A SIGTERM/SIGHUP that arrives meanwhile stops
        the writing between two files (Lightning would notice it only after the next step, whose own save would
        write every pair again): a single process stops at once. `deadline` (time.monotonic()) bounds the writing
        on the way out after a signal."""
        step = trainer.global_step
        if self._last_saved == step or self.root is None or pl_module.image.numel() == 0:
            return
        images = pl_module.output_images()
        if not all(torch.isfinite(img).all() for img in images):
            rank_zero_warn(f"step {step}: the images are not finite, not saving them (the previous PNGs are kept)")
            return
        # Tag `stylized/<pair>`: TensorBoard sorts tag groups by name and opens the first two: `loss`, then these.
        tb = _tensorboard(trainer) if self.tensorboard else None
        names = pl_module.pair_images.names
        for i, (name, img) in enumerate(zip(names, images)):
            if i and deadline is not None and time.monotonic() > deadline:
                rank_zero_warn(
                    f"step {step}: wrote the images of {i} of {len(names)} pairs before stopping; all of them are in "
                    "the checkpoint (resuming from it writes them)"
                )
                return
            if deadline is None and trainer.received_sigterm:
                if trainer.world_size == 1:
                    raise SIGTERMException
                break  # DDP: every rank must stop at the same point, which Lightning syncs at the step's end
            save_image(img, self.root / name / f"step_{step:06d}.png")
            if tb is not None:
                tb.log_image(f"stylized/{name}", img, step)
        if tb is not None:
            tb.flush()
        self._last_saved = step


class LastCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that always leaves `last.ckpt` at the run's final step.

    Lightning 2.6's `ModelCheckpoint.on_train_end` writes `last.ckpt` only if *no* checkpoint was saved during the
    run: with `every_n_train_steps: 1000` and `max_steps: 1500`, `last.ckpt` would stay at step 1000 and a resume
    would silently redo 500 steps. Here the end of training saves it whenever the final step is not saved yet.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs on every rank (saving is a collective under DDP; only rank 0 writes the file).
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Ctrl-C, SIGTERM or an error: Lightning's version writes an extra `epoch=0-step=N.ckpt` beside last.ckpt
        # and prints "An KeyboardInterrupt was raised with message: , saved checkpoint to …". Only last.ckpt
        # (complete and resumable) is written here; `nst-pl` prints its own resume hint (fit.py).
        # A signal before the first step (while the step-0 images were written) also leaves one: the hint stays true.
        signalled = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        first = signalled and self.save_on_exception and self.save_last and not self.last_model_path
        if self._should_save_on_exception(trainer) or first:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _tensorboard(trainer: pl.Trainer) -> RunTensorBoardLogger | _PlainTensorBoard | None:
    """The run's TensorBoard, with `log_image(tag, image, step)` and `flush()`; None without one."""
    for logger in trainer.loggers:
        if isinstance(logger, RunTensorBoardLogger):
            return logger  # a failing event file warns once and stops logging, instead of ending the run
        if isinstance(logger, TensorBoardLogger):
            return _PlainTensorBoard(logger.experiment)
    return None


class _PlainTensorBoard:
    """A user's own TensorBoardLogger subclass, written to as Lightning would."""

    def __init__(self, writer) -> None:
        self.writer = writer

    def log_image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, image, global_step=step)

    def flush(self) -> None:
        self.writer.flush()
