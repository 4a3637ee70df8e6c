"""StylizeCLI: the run of `nst-pl stylize` and `nst_pl.stylize()`, an `nst-pl fit` run that also writes each pair's
result to a named file (`-o`, results.py). Kept apart from stylize.py, which must load without torch and Lightning."""

from __future__ import annotations

import inspect
from os import PathLike
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image

from nst_pl.data import PairDataModule
from nst_pl.fit import NSTCLI, make_cli
from nst_pl.image_io import to_pil
from nst_pl.module import StyleTransfer
from nst_pl.results import check_output, write_results
from nst_pl.trainer import saved_files


class StylizeCLI(NSTCLI):
    """An `nst-pl fit` run that also writes each pair's result to `output` (see results.output_paths)."""

    def __init__(self, *args: Any, output: str | PathLike | None = None, write: bool = True, **kwargs: Any) -> None:
        self.output = output
        self.write = write
        self.targets: list[Path] = []
        self.results: list[torch.Tensor] = []
        super().__init__(*args, **kwargs)

    def before_fit(self) -> None:
        super().before_fit()
        # Before any work: a wrong -o must not cost a whole run.
        self.targets = check_output(self.output, [p.name for p in self.datamodule.pairs]) if self.write else []

    def after_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        self.results = self.model.output_images()
        write_results(self.results, self.targets, saved_files(self.trainer)[0])

    def pictures(self) -> list[Image.Image]:
        """The results of the run, as PIL images (RGB, 8 bits), in pair order."""
        return [to_pil(img) for img in self.results]


def run_stylize(argv: list[str], output: str | PathLike | None, *, write: bool, **kwargs: Any) -> StylizeCLI:
    """Run the `fit` command line `argv` as a StylizeCLI (`kwargs` go to `make_cli`)."""
    return make_cli(argv, cli_class=StylizeCLI, output=output, write=write, **kwargs)


def option_section(name: str) -> str | None:
    """The section (model, data or trainer) whose class takes the plain option `name` (`style_weight`,
    `image_size`, `max_steps`), for `nst_pl.stylize(**options)`; None for none."""
    classes = {"model": StyleTransfer, "data": PairDataModule, "trainer": pl.Trainer}
    return next((s for s, c in classes.items() if name != "self" and name in inspect.signature(c).parameters), None)
