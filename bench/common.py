"""Helpers shared by the benchmarks: the plain-PyTorch reference loop and timing utilities."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from nst_pl.data import PairDataModule, PairImages
from nst_pl.extractors import VGG19
from nst_pl.judge import JUDGE_CONTENT_LAYER, JUDGE_STYLE_LAYERS
from nst_pl.objective import Objective

REPO = Path(__file__).resolve().parents[1]
OFFLINE_VGG16 = REPO.parent / "shared" / "weights" / "vgg16_caffe_hed.pth"
# The judge's layer set (nst_pl.judge), which is also the classic Gatys recipe: one definition for both.
STYLE_LAYERS = list(JUDGE_STYLE_LAYERS)
CONTENT_LAYERS = [JUDGE_CONTENT_LAYER]


def objective_options(
    content_layers, style_layers, content_weight=1.0, style_weight=1.0, relative_losses=False, **options
) -> dict:
    """Every keyword of `Objective` for the classic recipe (equal layer weights, Gram losses, no TV, no tiles)."""
    return dict(
        content_layers=content_layers,
        style_layers=style_layers,
        content_layer_weights=None,
        style_layer_weights=None,
        content_weight=content_weight,
        style_weight=style_weight,
        tv_weight=0.0,
        laplacian_weight=0.0,
        coarse_luminance_weight=0.0,
        style_loss="gram",
        relative_losses=relative_losses,
        tile_size=None,
        **options,
    )


class PlainLoop:
    """The classic Gatys loop written directly in PyTorch: the baseline every benchmark compares against.

    nst-pl's own objective (same extractor, layers and losses as the module), driven by a bare Adam loop: no
    Lightning, no coarse-to-fine, no averaging.
    """

    def __init__(
        self,
        extractor,
        content: torch.Tensor,
        style: torch.Tensor,
        content_weight: float,
        style_weight: float,
        lr: float,
        relative: bool = False,
        init: torch.Tensor | None = None,
        layers: tuple[list[str], list[str]] = (CONTENT_LAYERS, STYLE_LAYERS),
    ):
        self.objective = Objective(
            extractor, **objective_options(*layers, content_weight, style_weight, relative_losses=relative)
        )
        h, w = content.shape[-2:]
        self.objective.bind(PairImages(content, [[style[0]]], torch.ones(1, 1), ["pair"], [(h, w)]))
        self.idx = torch.zeros(1, dtype=torch.long)
        self.image = (content if init is None else init).clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.image], lr=lr)

    def step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.objective(self.image, self.idx)["total"].sum()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            self.image.clamp_(0, 1)
        return loss.item()


def plain_steps(content: Path, style: Path, size: int, steps: int, style_weight: float, lr: float, cpu=None, **data_kw):
    """`steps` steps of the PlainLoop on an untrained VGG19, seeded, at long side `size`: (loop, images, wall
    seconds of each step); the CPU seconds of each step go to `cpu` if given."""
    torch.manual_seed(0)
    data = PairDataModule(content=str(content), style=str(style), image_size=size, **data_kw)
    data.setup()
    loop = PlainLoop(
        VGG19(weights=None),
        data.images.content,
        data.images.styles[0][0][None],
        content_weight=1.0,
        style_weight=style_weight,
        lr=lr,
        relative=True,
    )
    times = []
    for _ in range(steps):
        t, c = time.perf_counter(), time.process_time()
        loop.step()
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
    return loop, data.images, times


def row_sheet(rows, path: Path, height: int = 256) -> None:
    """Save rows of PIL images as one JPEG: every image scaled to `height`, rows left-aligned on white."""
    rows = [[im.resize((round(im.width * height / im.height), height)) for im in r] for r in rows]
    canvas = Image.new("RGB", (max(sum(im.width for im in r) for r in rows), height * len(rows)), "white")
    for y, r in enumerate(rows):
        x = 0
        for im in r:
            canvas.paste(im, (x, y * height))
            x += im.width
    canvas.save(path, quality=88)


def quiet_trainer(max_steps: int, root: str, callbacks, **trainer_args):
    """A CPU Trainer with nst-pl's defaults and nothing written: no logger, checkpoints or progress bar.
    `trainer_args` (e.g. precision) are passed on to the Trainer."""
    import pytorch_lightning as pl

    from nst_pl.trainer import TRAINER_DEFAULTS

    args = dict(TRAINER_DEFAULTS)
    args.update(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        default_root_dir=root,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=list(callbacks),
        **trainer_args,
    )
    return pl.Trainer(**args)


def median(xs) -> float:
    return statistics.median(xs)


class StepTimer:
    """Lightning callback: wall time of each optimisation step, measured between consecutive step starts so that
    everything Lightning does per step (data fetch, hooks, logging, optimiser) is included."""

    def __new__(cls):
        import pytorch_lightning as pl

        class _T(pl.Callback):
            def __init__(self):
                self.times: list[float] = []
                self._t = 0.0

            def on_train_batch_start(self, *a):
                now = time.perf_counter()
                if self._t:
                    self.times.append(now - self._t)
                self._t = now

            def on_train_end(self, *a):
                self.times.append(time.perf_counter() - self._t)

        return _T()
