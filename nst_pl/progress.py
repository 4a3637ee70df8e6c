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
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only


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
        objective = getattr(pl_module, "objective", None)
        if objective is not None and getattr(objective, "images", None) is not None:
            metrics["scale"] = f"{objective.view_long_side(max(0, trainer.global_step - 1))} px"
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
    """TensorBoardLogger without the `epoch` scalar and the `hp_metric` placeholder (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(*args, **kwargs)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)
