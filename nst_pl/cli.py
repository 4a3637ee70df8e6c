"""`nst-pl`: the LightningCLI entry point. `nst-pl fit --config configs/vgg19.yaml`; `nst-pl compare …` (compare.py)."""
from __future__ import annotations

import sys

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from nst_pl.callbacks import ImageLogger
from nst_pl.data import PairDataModule
from nst_pl.module import StyleTransfer

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
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.every_n_train_steps": 1000,
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 0,
                "checkpoint.save_on_exception": True,
            }
        )
        # One value, two users: the model validates its coarse-to-fine schedule against the run length.
        parser.link_arguments("trainer.max_steps", "model.max_steps")


def main(args=None) -> int | None:
    # `nst-pl compare …` is not a LightningCLI subcommand (it runs several fit configs, see nst_pl/compare.py):
    # dispatch it before LightningCLI parses anything; every other subcommand goes to LightningCLI unchanged.
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, (list, tuple)) and argv[:1] == ["compare"]:
        from nst_pl.compare import main as compare_main

        return compare_main(argv[1:])
    NSTCLI(
        StyleTransfer,
        PairDataModule,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
    )


if __name__ == "__main__":
    sys.exit(main())
