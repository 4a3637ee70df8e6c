"""One `nst-pl fit` run: `NSTCLI`, and `make_cli`, the factory that every subcommand builds its runs with (`nst-pl
fit` in cli.py, `nst-pl stylize` in stylize.py, each experiment of `nst-pl compare` in compare.py), so that every run
gets the same recipe lookup, parser, trainer, checks before any work (`NSTCLI.before_fit`) and signal handling
(`NSTCLI.fit`).

    parse (config_files, parser) -> trainer (trainer.adapt_trainer) -> before_fit: outputs, resume, the model's
    preflight, the run's folder -> fit (signals) -> result line
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any

from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from nst_pl.config_files import check_config_files, resolve_configs
from nst_pl.data import PairDataModule
from nst_pl.module import StyleTransfer
from nst_pl.parser import NSTArgumentParser, RunSaveConfig, add_run_arguments
from nst_pl.resume import check_resume, load_checkpoint
from nst_pl.signals import stopped_by_signals
from nst_pl.trainer import (
    FORCE_PRECISION,
    TRAINER_DEFAULTS,
    adapt_trainer,
    check_outputs,
    claim_run_folder,
    cpu_precision,
    result_line,
)

# make_cli passes the command line explicitly (bundled config names resolved, `stylize` translated), which
# LightningCLI would otherwise warn about on every run.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")


class NSTCLI(LightningCLI):
    # Seconds spent in `trainer.fit` by the last `fit` (compare's wall time: without start-up and image loading).
    fit_seconds: float = float("nan")
    # The checkpoint of `--ckpt_path`, loaded and checked while parsing (resume.py); None for a fresh run.
    resume_checkpoint: dict[str, Any] | None = None

    def _parse_ckpt_path(self) -> None:
        # Replaces LightningCLI's, which lays the checkpoint's hyper-parameters over the command line (so that
        # `--model.style_weight 77` was silently ignored on resume). Here the command line is what runs; the
        # checkpoint is checked now, before anything is built or written, and compared with it in `before_fit`.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self.resume_checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Only `fit`: validate/test/predict mean nothing for style transfer (no data to evaluate on).
        return {"fit": LightningCLI.subcommands()["fit"]}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        add_run_arguments(parser)

    def before_instantiate_classes(self) -> None:
        # Half precision on a CPU without fast half-precision maths runs 32-true (one warning; trainer.py), and the
        # run's config.yaml says what ran.
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config["trainer"]
        trainer["precision"] = cpu_precision(trainer["precision"], trainer["accelerator"], config[FORCE_PRECISION])

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        adapt_trainer(trainer)
        return trainer

    def result_line(self) -> str:
        """The last line of `nst-pl fit`: where the run's images and its last checkpoint are."""
        return result_line(self.trainer)

    def before_fit(self) -> None:
        # Everything that can be checked is checked before the run's folder exists: the output folders, the resume,
        # then the model's preflight (images decoded and sized, schedule, start image, memory).
        check_outputs(self.trainer)
        if self.resume_checkpoint is not None:  # options that cannot change on resume: refused before any write
            ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
            check_resume(self.resume_checkpoint, ckpt_path, self.model, self.datamodule, self.trainer.max_steps)
            self.resume_checkpoint = None  # the trainer loads it again; do not hold two copies
        if isinstance(self.model, StyleTransfer):
            self.model.preflight(self.datamodule, self.trainer)
        claim_run_folder(self.trainer)

    def fit(self, model, **kwargs: Any) -> None:
        """`trainer.fit`, with a non-zero exit code and a resume hint when the run is stopped by a signal."""
        start = time.perf_counter()
        with stopped_by_signals(self.trainer):
            self.trainer.fit(model, **kwargs)
        self.fit_seconds = time.perf_counter() - start


def make_cli(
    args: ArgsType = None,
    *,
    run: bool = True,
    exit_on_error: bool = True,
    cli_class: type[NSTCLI] | None = None,
    **cli_kwargs: Any,
) -> NSTCLI:
    """Build (and with `run`, run) one NSTCLI with the package's trainer defaults, seed, parser and config saving.

    Args:
        args: The command line after `nst-pl`, e.g. `["fit", "--config", "vgg19"]` (None: sys.argv);
            with `run=False`, without the subcommand.
        run: Run the subcommand (`before_fit`'s checks, then `fit` with its signal handling) before returning.
        exit_on_error: False raises parse errors (compare records them per experiment) instead of exiting 2.
        cli_class: An NSTCLI subclass (`nst-pl stylize`: stylize.StylizeCLI); `cli_kwargs` go to its constructor.
    """
    if args is None:
        args = sys.argv[1:]
    if isinstance(args, (list, tuple)):
        args = resolve_configs([str(a) for a in args])
    # A config file that is empty or not YAML: name the file (jsonargparse does not).
    check_config_files(args if isinstance(args, (list, tuple)) else [])
    parser_kwargs: dict[str, Any] = {}
    if not exit_on_error:
        # The main parser and the `fit` subcommand's parser each decide for themselves.
        parser_kwargs = {"exit_on_error": False, "fit": {"exit_on_error": False}}
    return (cli_class or NSTCLI)(
        StyleTransfer,
        PairDataModule,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_callback=RunSaveConfig,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_class=NSTArgumentParser,
        parser_kwargs=parser_kwargs,
        run=run,
        args=args,
        **cli_kwargs,
    )
