"""`nst-pl`: the LightningCLI entry point. `nst-pl fit --config configs/vgg19.yaml`; `nst-pl compare …` (compare.py).

What a user sees when something goes wrong (README, "What happens when …"):
- a problem with the input or the config (a missing image, an unknown layer, weights that do not fit, an output
  folder that cannot be written, a diverged loss): one paragraph on stderr, `nst-pl: error: <what and how to fix
  it>`, exit code 2 — no traceback. `NST_PL_DEBUG=1` shows the full traceback. Anything else is a bug and keeps
  its traceback (see `_is_user_error`).
- Ctrl-C / SIGTERM during `fit`: the current images and a checkpoint are saved, a resume hint is printed, and the
  exit code is 130 / 143 (128 + the signal number, as a shell reports a killed process).
"""
from __future__ import annotations

import linecache
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

from nst_pl.callbacks import ImageLogger, LastCheckpoint, _check_writable
from nst_pl.checkpoint_io import AtomicCheckpointIO
from nst_pl.data import PairDataModule
from nst_pl.errors import NSTError
from nst_pl.extractors import EXTRACTORS
from nst_pl.module import StyleTransfer

DEBUG_ENV = "NST_PL_DEBUG"

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


class NSTCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Forced callbacks: always on, configured under their own keys.
        parser.add_lightning_class_args(ImageLogger, "image_logger")
        # LastCheckpoint: a ModelCheckpoint whose last.ckpt is always at the final step (see callbacks.py).
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.every_n_train_steps": 1000,
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 0,
                "checkpoint.save_on_exception": True,
            }
        )

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        # Checkpoints are written atomically and durably (see checkpoint_io.py). Only Lightning's default is
        # replaced: a CheckpointIO plugin the user configured is kept.
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

    def before_fit(self) -> None:
        # Fail before any work, not after an hour: Lightning's logger creates its folder before any callback's
        # `setup`, so an unwritable `trainer.default_root_dir` would otherwise end in a bare NotADirectoryError.
        # The logger's folder holds the run (images, checkpoints); without a logger, default_root_dir does.
        loggers = self.trainer.loggers
        folders = [getattr(lg, "root_dir", None) or getattr(lg, "save_dir", None) for lg in loggers]
        folders = folders if loggers else [self.trainer.default_root_dir]
        folders += [getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]
        for folder in dict.fromkeys(f for f in folders if f):
            if "://" not in str(folder):  # remote storage: nothing to probe here
                _check_writable(Path(folder))

    def fit(self, model, **kwargs: Any) -> None:
        """`trainer.fit`, with a non-zero exit code and a resume hint when the run is stopped by a signal."""
        try:
            self.trainer.fit(model, **kwargs)
        except SIGTERMException:
            # Lightning raises it (a SystemExit with code None, i.e. exit status 0!) at the end of the step during
            # which SIGTERM arrived, after the callbacks' on_exception saved the images and a checkpoint.
            self._stopped("SIGTERM", 143)
        except SystemExit as exc:
            # Lightning turns Ctrl-C into sys.exit(1) after the same saving; keep the shell's convention.
            if isinstance(exc.__context__, KeyboardInterrupt):
                self._stopped("Ctrl-C (SIGINT)", 130)
            raise

    def _stopped(self, how: str, code: int) -> NoReturn:
        trainer = self.trainer
        if trainer.is_global_zero:
            ckpt = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
            images = next((cb.root for cb in trainer.callbacks if isinstance(cb, ImageLogger)), None)
            saved = f"the images of step {trainer.global_step} are in '{images}'" if images else "no images were saved"
            resume = (
                f"checkpoint '{ckpt}'; resume with the same arguments plus --ckpt_path '{ckpt}'"
                if ckpt and Path(ckpt).exists() else "no checkpoint was written (no step had finished)"
            )
            sys.stderr.write(f"nst-pl: stopped by {how} at step {trainer.global_step}: {saved}; {resume}\n")
        raise SystemExit(code)


class NSTArgumentParser(LightningArgumentParser):
    """Command-line/config errors as one short paragraph, without the 60-line usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # Nested parsers that jsonargparse uses internally do not exit: they raise, and their caller decides.
        if not self.exit_on_error or _debug():
            super().error(message, ex)
        if 'key "model.extractor"' in message and "class_path" in message:
            valid = ", ".join(f"nst_pl.extractors.{cls.__name__}" for cls in EXTRACTORS.values())
            message = f"{message.rstrip()}\n  Valid extractors: {valid}"
        if "expected one argument" in message:  # argparse reads a value that starts with "-" as an option
            message += " (a value that starts with '-' must be attached with '=', e.g. --data.content=-photo.jpg)"
        sys.stderr.write(f"nst-pl: error: {message.strip()}\nRun `nst-pl fit --help` for the options.\n")
        self.exit(2)


# Our own exception types: raised only on purpose, with a message written for the user.
_USER_ERRORS = (NSTError, MisconfigurationException)
_PACKAGE = Path(__file__).resolve().parent


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _is_user_error(exc: BaseException) -> bool:
    """True for errors that explain a problem with the input or config; False for bugs (which keep a traceback).

    Besides our own exception types, a ValueError/TypeError/RuntimeError/OSError counts when it comes from an
    explicit `raise` statement in nst_pl's own code (our validation: "model.style_weight must be >= 0 …"). The
    same types raised by Python on a bad line of ours, or by torch, are bugs and show the traceback.
    """
    if isinstance(exc, _USER_ERRORS):
        return True
    if not isinstance(exc, (ValueError, TypeError, RuntimeError, OSError)):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = Path(tb.tb_frame.f_code.co_filename).resolve()
    if not filename.is_relative_to(_PACKAGE):
        return False
    return linecache.getline(str(filename), tb.tb_lineno).lstrip().startswith("raise ")


def main(args=None) -> int | None:
    """The `nst-pl` console script. Exits 2 with a one-paragraph message on input/config errors (see above)."""
    # `nst-pl compare …` is not a LightningCLI subcommand (it runs several fit configs, see nst_pl/compare.py):
    # dispatch it before LightningCLI parses anything; every other subcommand goes to LightningCLI unchanged.
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, (list, tuple)) and argv[:1] == ["compare"]:
        from nst_pl.compare import main as compare_main

        return compare_main(argv[1:])
    try:
        NSTCLI(
            StyleTransfer,
            PairDataModule,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_class=NSTArgumentParser,
            args=args,
        )
    except KeyboardInterrupt:  # Ctrl-C before the training loop started (loading images, weights): nothing to save
        if _debug():
            raise
        sys.stderr.write("nst-pl: interrupted before training started; nothing was saved\n")
        raise SystemExit(130) from None
    except Exception as exc:
        if _debug() or not _is_user_error(exc):
            raise
        sys.stderr.write(f"nst-pl: error: {exc}\n(set {DEBUG_ENV}=1 to see the full traceback)\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
