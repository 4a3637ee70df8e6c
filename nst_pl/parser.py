"""The command line of an `nst-pl fit` run: its parser (the forced callbacks' options and nst-pl's defaults, the
package's options first in `--help`, errors as one paragraph) and the writer of the run's config.yaml."""

from __future__ import annotations

import inspect
import sys
from typing import Any, NoReturn

import torch
from pytorch_lightning.cli import LightningArgumentParser, SaveConfigCallback

from nst_pl.callbacks import ImageLogger, LastCheckpoint
from nst_pl.errors import OutputError, debug, error_paragraph
from nst_pl.extractors import EXTRACTORS
from nst_pl.module import default_optimizer
from nst_pl.trainer import FORCE_PRECISION


def add_run_arguments(parser: LightningArgumentParser) -> None:
    """The forced callbacks (always on, configured under their own keys) and nst-pl's defaults, on the parser of
    `NSTCLI` (`add_arguments_to_parser`), whatever its class."""
    parser.add_lightning_class_args(ImageLogger, "image_logger")
    # LastCheckpoint: a ModelCheckpoint whose last.ckpt is always at the final step (see callbacks.py).
    parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
    parser.add_argument(
        f"--{FORCE_PRECISION}",
        type=bool,
        default=False,
        help="Keep trainer.precision bf16-mixed, 16-mixed or bf16-true on a CPU without fast half-precision maths "
        "(no AVX-512 BF16 or AMX), where it runs 10-100x slower than 32-true; by default such a run uses 32-true and "
        "says so in one warning",
    )
    parser.set_defaults(
        {
            # The default optimiser as a class and its arguments, so that `--model.optimizer.init_args.lr 0.003`
            # (what the divergence message says to lower) works without naming the class first.
            "model.optimizer": default_optimizer_config(),
            "checkpoint.every_n_train_steps": 1000,
            "checkpoint.save_last": True,
            "checkpoint.save_top_k": 0,
            "checkpoint.save_on_exception": True,
        }
    )


class NSTArgumentParser(LightningArgumentParser):
    """The parser of `nst-pl fit`: the package's options first in the help, and command-line/config errors as one
    short paragraph, without the 60-line usage dump."""

    def format_help(self) -> str:
        """The package's options first (model, extractor, data, images, checkpoints), Lightning's trainer last."""
        groups = self._action_groups
        if not any(a.dest.startswith("trainer.") for g in groups for a in g._group_actions):
            return super().format_help()

        def is_trainer(group) -> bool:
            return any(a.dest.startswith("trainer.") for a in group._group_actions)

        usage = self.usage
        self._action_groups = [g for g in groups if not is_trainer(g)] + [g for g in groups if is_trainer(g)]
        self.usage = (
            "nst-pl fit [--config NAME|PATH] [--model.OPTION V] [--data.OPTION V] [--image_logger.OPTION V]\n"
            "                  [--checkpoint.OPTION V] [--trainer.OPTION V] [--ckpt_path PATH] [--print_config]\n\n"
            "  --config takes a bundled recipe (vgg19, alexnet, resnet, ddp) or a YAML file; the options below are\n"
            "  the package's (model, extractor, data, images, checkpoints), then Lightning's Trainer's"
        )
        try:
            return super().format_help()
        finally:
            self._action_groups, self.usage = groups, usage

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        # Nested parsers that jsonargparse uses internally do not exit: they raise, and their caller decides.
        if not self.exit_on_error or debug():
            super().error(message, ex)
        if 'key "model.extractor"' in message and "class_path" in message:
            valid = ", ".join(f"nst_pl.extractors.{cls.__name__}" for cls in EXTRACTORS.values())
            message = f"{message.rstrip()}\n  Valid extractors: {valid}"
        if "expected one argument" in message:  # argparse reads a value that starts with "-" as an option
            message += " (a value that starts with '-' must be attached with '=', e.g. --data.content=-photo.jpg)"
        sys.stderr.write(error_paragraph(message, "fit"))
        self.exit(2)


class RunSaveConfig(SaveConfigCallback):
    """Lightning's config.yaml writer; a write that fails (a full disk before the first step) is one paragraph."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        try:
            super().setup(trainer, pl_module, stage)
        except OSError as err:
            if isinstance(err, OutputError):
                raise
            folder = getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir  # no collective here
            raise OutputError(
                f"cannot write {self.config_filename} in '{folder}': {err.strerror or err}; free some disk space or "
                "choose a writable location with --trainer.default_root_dir DIR"
            ) from None


def default_optimizer_config() -> dict[str, Any]:
    """`StyleTransfer`'s default optimiser (`module.default_optimizer`) as `{class_path, init_args}`: the arguments
    it sets that differ from the class's own defaults (its tuned learning rate)."""
    optimizer = default_optimizer([torch.nn.Parameter(torch.zeros(1))])
    cls = type(optimizer)
    signature = inspect.signature(cls).parameters
    init_args = {k: v for k, v in optimizer.defaults.items() if k in signature and signature[k].default != v}
    module = "torch.optim" if getattr(torch.optim, cls.__name__, None) is cls else cls.__module__
    return {"class_path": f"{module}.{cls.__name__}", "init_args": init_args}
