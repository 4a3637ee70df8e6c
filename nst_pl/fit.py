"""One `nst-pl fit` run: `NSTCLI`, its parser, and `make_cli`, the factory that every subcommand builds its runs
with (`nst-pl fit` in cli.py, each experiment of `nst-pl compare` in compare.py), so that every run gets the same
trainer defaults, seed, checks (`NSTCLI.before_fit`) and signal handling (`NSTCLI.fit`).
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from nst_pl.callbacks import ImageLogger, LastCheckpoint, _check_writable
from nst_pl.checkpoint_io import AtomicCheckpointIO
from nst_pl.config_files import check_config_files
from nst_pl.data import PairDataModule
from nst_pl.errors import ConfigError, ImageError, OutputError
from nst_pl.extractors import EXTRACTORS
from nst_pl.image_io import find_images
from nst_pl.module import StyleTransfer, default_optimizer
from nst_pl.progress import RunTensorBoardLogger, StepProgressBar
from nst_pl.resume import check_resume, load_checkpoint
from nst_pl.versions import claim_version

DEBUG_ENV = "NST_PL_DEBUG"

# make_cli passes the command line explicitly (bundled config names resolved, `stylize` translated), which
# LightningCLI would otherwise warn about on every run.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")

# The shipped recipes (package data): `--config vgg19` names nst_pl/configs/vgg19.yaml from any folder.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def bundled_configs() -> list[str]:
    """The names `--config` accepts besides paths: `vgg19`, `experiments/vgg19_1_all_conv_content_averaged` …"""
    return sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """A `--config` value: an existing file as it is, else a bundled recipe's name (`vgg19`, `alexnet.yaml`)."""
    if not isinstance(value, str) or Path(value).expanduser().exists():
        return value
    name = value[: -len(".yaml")] if value.endswith(".yaml") else value
    bundled = CONFIGS_DIR / f"{name}.yaml"
    if name and bundled.is_file():
        return str(bundled)
    # Anything that is not a plain name or path (an inline YAML string) goes to jsonargparse as it is.
    if all(c.isalnum() or c in "._-/~\\" for c in value):
        shown = ", ".join(n for n in bundled_configs() if "/" not in n)
        raise ConfigError(f"--config {value}: no such file and no bundled recipe of that name (bundled: {shown})")
    return value


def resolve_configs(args: list[str]) -> list[str]:
    """Every `--config X` / `--config=X` of a command line, with bundled names replaced by their path."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + resolve_config(arg[len("--config=") :])
    return out


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


def debug() -> bool:
    """True when NST_PL_DEBUG asks for full tracebacks instead of one-paragraph errors."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def error_paragraph(message: str, command: str) -> str:
    """The one paragraph a user error ends with, on stderr (exit code 2)."""
    return f"nst-pl: error: {message.strip()}\nRun `nst-pl {command} --help` for the options.\n"


def _check_init_image(init: str) -> None:
    """`model.init` naming an image file: it must exist and be a file, checked before the run's folder exists."""
    if init in ("content", "noise", "style"):
        return
    try:
        if Path(init).expanduser().is_dir():
            raise ImageError(f"'{init}' is a folder")
        find_images(init, what="model.init")  # missing, a FIFO, a dangling link: says which
    except ImageError as err:
        raise ConfigError(f"model.init must be content, noise, style or an image file; {err}") from None


def default_optimizer_config() -> dict[str, Any]:
    """`StyleTransfer`'s default optimiser (`module.default_optimizer`) as `{class_path, init_args}`: the arguments
    it sets that differ from the class's own defaults (its tuned learning rate)."""
    optimizer = default_optimizer([torch.nn.Parameter(torch.zeros(1))])
    cls = type(optimizer)
    signature = inspect.signature(cls).parameters
    init_args = {k: v for k, v in optimizer.defaults.items() if k in signature and signature[k].default != v}
    module = "torch.optim" if getattr(torch.optim, cls.__name__, None) is cls else cls.__module__
    return {"class_path": f"{module}.{cls.__name__}", "init_args": init_args}


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
        # Forced callbacks: always on, configured under their own keys.
        parser.add_lightning_class_args(ImageLogger, "image_logger")
        # LastCheckpoint: a ModelCheckpoint whose last.ckpt is always at the final step (see callbacks.py).
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
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

    def instantiate_trainer(self, **kwargs: Any):
        trainer = super().instantiate_trainer(**kwargs)
        # Checkpoints are written atomically and durably (see checkpoint_io.py). Only Lightning's default is
        # replaced: a CheckpointIO plugin the user configured is kept.
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
        # Only Lightning's default bar is replaced: `enable_progress_bar: false` has none, and a configured one stays.
        bar = trainer.progress_bar_callback
        if type(bar) is TQDMProgressBar:
            i = trainer.callbacks.index(bar)
            trainer.callbacks[i] = StepProgressBar(refresh_rate=bar.refresh_rate, process_position=bar.process_position)
        return trainer

    def result_line(self) -> str:
        """The last line of `nst-pl fit`: where the run's images and its last checkpoint are."""
        trainer = self.trainer
        images = next((cb.root for cb in trainer.callbacks if isinstance(cb, ImageLogger)), None)
        parts = [f"images in {images}"] if images else []
        ckpt = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        if ckpt:
            parts.append(f"checkpoint {ckpt}")
        # The logger's own folder: `trainer.log_dir` is a collective under DDP, and only rank 0 gets here.
        log_dir = getattr(trainer.logger, "log_dir", None)
        if log_dir:
            parts.append(f"TensorBoard: tensorboard --logdir {log_dir}")
        return f"nst-pl: step {trainer.global_step}: " + "; ".join(parts) if parts else ""

    def before_fit(self) -> None:
        # Fail before any work, not after an hour: Lightning's logger creates its folder before any callback's
        # `setup`, so an unwritable `trainer.default_root_dir` would otherwise end in a bare NotADirectoryError.
        # The logger's folder holds the run (images, checkpoints); without a logger, default_root_dir does.
        if self.trainer.max_steps == 0:  # Lightning would run no step and exit 0 having written only the photo
            raise ConfigError("trainer.max_steps is 0: no step would run; give the number of steps, e.g. 500")
        loggers = self.trainer.loggers
        folders = [getattr(lg, "root_dir", None) or getattr(lg, "save_dir", None) for lg in loggers]
        folders = folders if loggers else [self.trainer.default_root_dir]
        folders += [getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]
        for folder in dict.fromkeys(f for f in folders if f):
            if "://" not in str(folder):  # remote storage: nothing to probe here
                _check_writable(Path(folder))
        if self.resume_checkpoint is not None:  # options that cannot change on resume: refused before any write
            ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
            check_resume(self.resume_checkpoint, ckpt_path, self.model, self.datamodule)
            # A finished run resumed (e.g. to write its images after a full disk): say that nothing is optimised.
            step, max_steps = int(self.resume_checkpoint.get("global_step", 0)), self.trainer.max_steps
            if 0 <= max_steps <= step:
                rank_zero_warn(
                    f"the checkpoint is at step {step} and trainer.max_steps is {max_steps}: no step runs, the images "
                    f"of step {step} are written; raise trainer.max_steps to optimise further"
                )
            self.resume_checkpoint = None  # the trainer loads it again; do not hold two copies
        # Decode the images now (the module's setup reuses them) and check their sizes against the layers: a photo
        # too small for the deepest layer, or a 1x5000 strip, is refused before the run's folder exists.
        if isinstance(self.datamodule, PairDataModule) and isinstance(self.model, StyleTransfer):
            self.datamodule.setup("fit")
            self.model.objective.bind(self.datamodule.images, self.trainer.max_steps)
            _check_init_image(self.model.init)
        # Rank 0 claims the run's folder, under DDP before Lightning starts the other ranks (its launcher starts them
        # in trainer.fit); they never use a folder of their own: trainer.log_dir and the checkpoint folder are
        # broadcast from rank 0. (torchrun/srun ranks start together; the same holds.)
        if self.trainer.global_rank == 0:
            for logger in loggers:
                claim_version(logger)

    def fit(self, model, **kwargs: Any) -> None:
        """`trainer.fit`, with a non-zero exit code and a resume hint when the run is stopped by a signal."""
        start = time.perf_counter()
        hangup: list[bool] = []
        try:
            with _hangup_stops_like_sigterm(self.trainer, hangup):
                self.trainer.fit(model, **kwargs)
        except SIGTERMException:
            # Lightning raises it (a SystemExit with code None, i.e. exit status 0!) at the end of the step during
            # which SIGTERM arrived, after the callbacks' on_exception saved the images and a checkpoint.
            if hangup:
                self._stopped("SIGHUP (the terminal was closed)", 129)
            self._stopped("SIGTERM", 143)
        except SystemExit as exc:
            # Lightning turns Ctrl-C into sys.exit(1) after the same saving; keep the shell's convention.
            if isinstance(exc.__context__, KeyboardInterrupt):
                self._stopped("Ctrl-C (SIGINT)", 130)
            raise
        self.fit_seconds = time.perf_counter() - start

    def _stopped(self, how: str, code: int) -> NoReturn:
        trainer = self.trainer
        if trainer.is_global_zero:
            ckpt = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
            images = next((cb.root for cb in trainer.callbacks if isinstance(cb, ImageLogger)), None)
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
    """SIGHUP (the terminal or the ssh session closed) stops the run like SIGTERM: images and last.ckpt saved, then
    exit 129. Its default action would end the process at once, losing every step since the last checkpoint. Left
    alone when SIGHUP is already handled or ignored (`nohup`), or outside the main thread."""
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


class NSTArgumentParser(LightningArgumentParser):
    """Command-line/config errors as one short paragraph, without the 60-line usage dump."""

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
