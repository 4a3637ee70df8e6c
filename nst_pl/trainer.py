"""The Lightning Trainer of an nst-pl run: its defaults, its precision on a CPU, the parts nst-pl puts in place of
Lightning's, the checks of its output folders before any work, and where the run's files are at the end.

    trainer = Trainer(**{**TRAINER_DEFAULTS, ...})
    adapt_trainer(trainer)          # atomic checkpoints, a TensorBoard without noise, progress in steps
    precision = cpu_precision(precision, accelerator)  # before the Trainer: 32-true where half precision crawls
    check_outputs(trainer)          # before any work: steps to run, writable folders
    claim_run_folder(trainer)       # rank 0: version_<k>, atomically
    ...
    print(result_line(trainer))     # "nst-pl: step 300: images in …; checkpoint …; TensorBoard: …"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn

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


# The option that keeps a half precision on a CPU where it would crawl (`cpu_precision`).
FORCE_PRECISION = "force_precision"


def cpu_precision(precision: Any, accelerator: Any, force: bool = False) -> Any:
    """The precision to run: `precision`, except half precision on a CPU without fast half-precision maths
    (`fast_cpu_maths`), where it becomes 32-true with one warning (unless `force`). Lightning also turns 16-mixed into
    bf16-mixed on a CPU. GPUs are never touched."""
    name = {"16": "16-mixed", "bf16": "bf16-mixed"}.get(str(precision), str(precision))
    if name not in ("16-mixed", "bf16-mixed", "bf16-true", "16-true") or force or not _on_cpu(accelerator):
        return precision
    kind = "float16" if name == "16-true" else "bfloat16"
    if fast_cpu_maths(kind):
        return precision
    shown = f"{name} (bfloat16 on a CPU)" if name == "16-mixed" else name
    rank_zero_warn(
        f"trainer.precision {shown} would run 10-100x slower than 32-true on this CPU, which has no fast {kind} maths "
        f"(AVX-512 or AMX): this run uses 32-true; pass --{FORCE_PRECISION} true to keep {name}"
    )
    return "32-true"


def fast_cpu_maths(kind: str) -> bool:
    """Whether this CPU runs `kind` ("bfloat16" or "float16") convolutions fast, as oneDNN tells from the CPU's
    features (bfloat16: AVX-512 BW/VL/DQ, AVX-512 BF16 or AMX; float16: AVX-512 FP16 or AMX). Without them oneDNN
    falls back to a reference path: measured on an AVX2 AMD EPYC, a bf16-mixed step took 9-20x the 32-true one and
    one conv 111x; on an AMD EPYC with AVX-512 BF16, 0.6x (README, "Mixed precision"). A torch without the query
    answers True: the choice is then left alone."""
    mkldnn = torch.ops.mkldnn
    try:
        return bool(mkldnn._is_mkldnn_fp16_supported() if kind == "float16" else mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _on_cpu(accelerator: Any) -> bool:
    """Whether the Trainer's `accelerator` option runs on the CPU ("auto" does when there is no GPU)."""
    if accelerator == "cpu":
        return True
    mps = getattr(torch.backends, "mps", None)
    return accelerator == "auto" and not torch.cuda.is_available() and not (mps is not None and mps.is_available())


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
