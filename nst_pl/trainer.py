"""The Lightning Trainer of an nst-pl run: its defaults, the parts nst-pl puts in place of Lightning's, the checks of
its output folders before any work, and where the run's files are at the end.

    trainer = Trainer(**{**TRAINER_DEFAULTS, ...})
    adapt_trainer(trainer)          # atomic checkpoints, a TensorBoard without noise, progress in steps
    check_outputs(trainer)          # before any work: steps to run, writable folders
    claim_run_folder(trainer)       # rank 0: version_<k>, atomically
    ...
    print(result_line(trainer))     # "nst-pl: step 300: images in …; checkpoint …; TensorBoard: …"
"""

from __future__ import annotations

from pathlib import Path

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from nst_pl.callbacks import ImageLogger
from nst_pl.checkpoint_io import AtomicCheckpointIO
from nst_pl.errors import ConfigError
from nst_pl.progress import RunTensorBoardLogger, StepProgressBar
from nst_pl.run_folder import check_writable, claim_version

TRAINER_DEFAULTS = {
    "max_steps": 500,
    "log_every_n_steps": 10,
    # We shard pairs over ranks ourselves (see data.py); Lightning's sampler would reshuffle and pad.
    "use_distributed_sampler": False,
    # Style transfer has no validation set and no epochs: one "epoch" is endless.
    "limit_val_batches": 0,
    "num_sanity_val_steps": 0,
    "enable_model_summary": False,
}


def adapt_trainer(trainer) -> None:
    """Lightning's defaults replaced by nst-pl's parts; whatever the user configured is kept."""
    # Checkpoints are written atomically and durably (checkpoint_io.py).
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    # TensorBoard opens on the losses: no placeholder `hp_metric` (-1) scalar from the hyperparameters, and no
    # `epoch` scalar (always 0). Lightning's own TensorBoardLogger (its default, or one configured by name) becomes
    # a RunTensorBoardLogger: the same object and state, with a `log_metrics` that drops `epoch` (progress.py).
    for logger in trainer.loggers:
        if type(logger) is TensorBoardLogger:
            logger.__class__ = RunTensorBoardLogger
        if isinstance(logger, TensorBoardLogger):
            logger._default_hp_metric = False
    # Progress in steps `k/N` with the scale and the loss (progress.py) instead of Lightning's "Epoch 0: 151/?".
    # `enable_progress_bar: false` has no bar, and a configured one stays.
    bar = trainer.progress_bar_callback
    if type(bar) is TQDMProgressBar:
        i = trainer.callbacks.index(bar)
        trainer.callbacks[i] = StepProgressBar(refresh_rate=bar.refresh_rate, process_position=bar.process_position)


def check_outputs(trainer) -> None:
    """Fail before any work, not after an hour: a run without steps, or an output folder that cannot be written.

    Lightning's logger creates its folder before any callback's `setup`, so an unwritable `default_root_dir` would
    otherwise end in a bare NotADirectoryError. The logger's folder holds the run (images, checkpoints); without a
    logger, default_root_dir does."""
    if trainer.max_steps == 0:  # Lightning would run no step and exit 0 having written only the photo
        raise ConfigError("trainer.max_steps is 0: no step would run; give the number of steps, e.g. 500")
    loggers = trainer.loggers
    folders = [getattr(lg, "root_dir", None) or getattr(lg, "save_dir", None) for lg in loggers]
    folders = folders if loggers else [trainer.default_root_dir]
    folders += [getattr(cb, "dirpath", None) for cb in trainer.checkpoint_callbacks]
    for folder in dict.fromkeys(f for f in folders if f):
        if "://" not in str(folder):  # remote storage: nothing to probe here
            check_writable(Path(folder))


def claim_run_folder(trainer) -> None:
    """Rank 0 claims the run's folder, under DDP before Lightning starts the other ranks (its launcher starts them
    in trainer.fit); they never use a folder of their own: trainer.log_dir and the checkpoint folder are broadcast
    from rank 0. (torchrun/srun ranks start together; the same holds.)"""
    if trainer.global_rank == 0:
        for logger in trainer.loggers:
            claim_version(logger)


def saved_files(trainer) -> tuple[Path | None, str]:
    """(the folder of the run's images, its last checkpoint): None and "" for what it does not write."""
    images = next((cb.root for cb in trainer.callbacks if isinstance(cb, ImageLogger)), None)
    ckpt = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    return images, ckpt


def result_line(trainer) -> str:
    """The last line of `nst-pl fit`: where the run's images and its last checkpoint are."""
    images, ckpt = saved_files(trainer)
    parts = [f"images in {images}"] if images else []
    if ckpt:
        parts.append(f"checkpoint {ckpt}")
    # The logger's own folder: `trainer.log_dir` is a collective under DDP, and only rank 0 gets here.
    log_dir = getattr(trainer.logger, "log_dir", None)
    if log_dir:
        parts.append(f"TensorBoard: tensorboard --logdir {log_dir}")
    return f"nst-pl: step {trainer.global_step}: " + "; ".join(parts) if parts else ""
