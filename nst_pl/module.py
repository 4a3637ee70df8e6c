"""StyleTransfer: a LightningModule whose only trainable parameter is the generated image.

One optimisation step:
    image [N, 3, H, W] (pixels in [0, 1]) --(this rank's pairs, the schedule's view size)--> Objective: view, frozen
        extractor, content and style losses (objective.py) --> gradient on the pixels --> optimiser step (the
        schedule's learning-rate factor; with `flat_lr_factor` a smaller one where the photo is flat, with
        `flat_step_shift` moved from there to its detail, with `gradient_floor` where the loss pulls weakly, on the
        step's detail and part of its regional light) --> clamp to [0, 1] --> EMA

This file is the Lightning glue around the objective: the parameter, the checks before the first step (`preflight`),
the step and who computes what under DDP, logging, the optimiser and its guards, iterate averaging and the checkpoint
hooks. The coarse-to-fine schedule is schedule.py's, the start image and the output pictures.py's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from nst_pl.data import PairDataModule, PairImages
from nst_pl.errors import ConfigError, DivergedError
from nst_pl.extractors import FeatureExtractor
from nst_pl.objective import Objective
from nst_pl.pictures import (
    OUTPUT_OPTIONS,
    averaged_image,
    check_init,
    check_output_options,
    initial_images,
    output_picture,
    towards_photo,
)
from nst_pl.resume import NST_KEY, checkpoint_record, fit_checkpoint
from nst_pl.schedule import Schedule

# `towards_photo` is the output's `style_strength`, which the benches apply to snapshots too.
__all__ = ["DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS", "StyleTransfer", "default_optimizer", "towards_photo"]

# Gatys et al.'s style layers less relu5_1, content one layer shallower (relu4_1 for relu4_2): as good, sooner
# (the network stops at relu4_1; README, "Recipes", the seventeenth round).
DEFAULT_CONTENT_LAYERS = ("relu4_1",)
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def default_optimizer(params) -> torch.optim.Optimizer:
    # The vgg19 recipe's full-size step (1/3 of it in the coarse phases; style_weight 2500, shared relative losses,
    # ema_decay 0.5), tuned with bench/quality.py: see README, "Recipes" and "Quality".
    return torch.optim.Adam(params, lr=0.06)


class StyleTransfer(pl.LightningModule):
    def __init__(
        self,
        extractor: FeatureExtractor,
        content_layers: Sequence[str] = DEFAULT_CONTENT_LAYERS,
        style_layers: Sequence[str] = DEFAULT_STYLE_LAYERS,
        content_layer_weights: list[float] | None = None,
        style_layer_weights: list[float] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 2500.0,
        tv_weight: float = 0.0,
        laplacian_weight: float = 4.5,
        coarse_luminance_weight: float = 30.0,
        style_loss: Literal["gram", "mean_std", "wasserstein"] = "gram",
        relative_losses: bool | Literal["shared"] = "shared",
        init: str = "content",
        scales: list[int] | None = None,
        scale_steps: list[int] | None = None,
        coarse_lr_factor: float = 0.3333,
        flat_lr_factor: float = 1.0,
        flat_step_shift: float = 0.7,
        gradient_floor: float = 1.0,
        gradient_floor_region: float = 33.0,
        gradient_floor_light: float = 0.5,
        tile_size: int | None = None,
        ema_decay: float | None = 0.5,
        preserve_color: Literal["none", "luminance", "histogram"] = "none",
        palette_transfer: float = 0.7,
        palette_match: Literal["covariance", "distribution"] = "distribution",
        style_strength: float = 1.0,
        optimizer: OptimizerCallable = default_optimizer,
    ) -> None:
        """Gatys-style transfer: optimise the pixels of one image per (content, style) pair.

        The defaults are the loss and optimiser values of the vgg19 recipe (nst_pl/configs/vgg19.yaml); its
        coarse-to-fine schedule depends on the image size and stays in the config.

        Args:
            extractor: The frozen feature network (`nst_pl.extractors.VGG19` …), its weights and normalisation.
            content_layers: Layers whose activations must match the content photo's.
            style_layers: Layers whose statistics must match the style image's.
            content_layer_weights: One weight per content layer (default: equal): the loss's mean over them.
            style_layer_weights: One weight per style layer (default: equal): the loss's mean over them.
            content_weight: Weight of the content loss in the total.
            style_weight: Weight of the style loss in the total.
            tv_weight: Weight of the total-variation (smoothness) term; 0 turns it off.
            laplacian_weight: Weight of the Laplacian term (Li et al. 2017): the photo's edges and fine shading, which
                the content layer lets the style overwrite (the mean squared difference of the view's and the photo's
                Laplacians, average-pooled 2 px per 256 px, relative to the photo's own). 0 turns it off.
            coarse_luminance_weight: Weight of the coarse phases' luminance term: the photo's light and dark
                (`losses.luminance_layout`) held while the coarse views take the painting's colours and shapes; 0: off.
            style_loss: `gram` (Gatys et al.), `mean_std` (per-channel mean and std, as in AdaIN) or
                `wasserstein` (2-Wasserstein distance between Gaussian fits of the features).
            relative_losses: Divide the losses by the mean square of their targets, so the weights do not depend on
                the extractor's feature scale: `true` each layer by its own (every layer the same say), `shared` every
                style layer by one number (the paper's proportions between layers; the default); false: plain losses.
            init: Starting image: `content` (the photo), `palette` (the photo in the painting's colours, with its
                own luminance), `noise` (uniform), `style` (noise with the style's colour mean and std), or a path
                to an image file.
            scales: Coarse-to-fine: long sides (px) of the coarse phases, ascending and below `data.image_size`,
                e.g. [128, 181, 256]. The image keeps its full size; the loss sees a downscaled view of it.
            scale_steps: Steps spent at each coarse scale (same length as `scales`); the full size gets the rest.
                A schedule as long as `trainer.max_steps` or longer is shrunk to two thirds of the run (warning).
            coarse_lr_factor: The learning rate × this in the coarse phases: the default 0.3333 (lr 0.06) takes the
                colours and large shapes in gentle steps, the full-size strokes in bold ones (README, "Recipes").
            flat_lr_factor: Smaller steps where the photo is flat (a night sky, a studio wall stay smooth): each
                pixel's step × the photo's local contrast ÷ 0.02, at least this (flat_regions.py); 1 (default) is off.
            flat_step_shift: On a mostly flat photo, step moved from its flat regions to its detail as far as the
                painting is flat too: down to 1 − this there (flat_regions.py); 0.7 (default) keeps a night sky calm.
            gradient_floor: Adam's denominator at least this × the pair's mean: weakly pulled pixels move less; 0: off.
            gradient_floor_region: The step's average over boxes of this many px per 256 px moves whole; 0: none.
            gradient_floor_light: The share of that average's change of brightness that moves whole (0.5; 1: all).
            tile_size: Print size: each step computed tile by tile (tile cores of about this many px a side of the
                view), the same loss and gradient on bounded memory; null: the whole view at once. Applies to views
                larger than a tile; under DDP the ranks share the tiles.
            ema_decay: If set (default 0.5), the output is a bias-corrected exponential moving average of the
                iterates, which is smoother than the raw iterate; null outputs the raw iterate.
            preserve_color: Keep the photo's colours in the output: `luminance` (output's luminance with the photo's
                chrominance) or `histogram` (match the output's colour mean and covariance to the photo's).
            palette_transfer: How far the output's chrominance moves towards the painting's colours, its luminance kept
                (0: as optimised, 1: all the way; default 0.7, README "Recipes"); `preserve_color` other than none
                turns it off. Applied to the output first, so it can change on resume, as can palette_match.
            palette_match: The painting's colours it moves to: `distribution` (default; which colours, how often:
                sliced optimal transport of the chrominance) or `covariance` (their mean and covariance only).
            style_strength: The output is photo + style_strength x (optimised - photo): 1 (default) the optimised
                image, 0 the photo, 0.5 halfway; applied like `preserve_color` (before it), so it can change on resume.
            optimizer: Optimiser for the image, e.g. `{class_path: torch.optim.Adam, init_args: {lr: 0.06}}` (the
                default) or `torch.optim.LBFGS` (with `max_iter: 1`).
        """
        super().__init__()
        # Lists, as a config gives them: the saved hyper-parameters compare equal on resume (resume.py).
        content_layers, style_layers = list(content_layers), list(style_layers)
        self.save_hyperparameters(ignore=["extractor", "optimizer"])
        check_output_options(ema_decay, style_strength, preserve_color, palette_transfer, palette_match)
        check_texture_synthesis(content_layers, laplacian_weight, coarse_luminance_weight)
        # The objective holds the extractor OUT of the module tree on purpose: it is not a parameter, must not be
        # saved in checkpoints (550 MB for VGG19), broadcast by DDP or put in train mode.
        self.objective = Objective(
            extractor,
            content_layers=content_layers,
            style_layers=style_layers,
            content_layer_weights=content_layer_weights,
            style_layer_weights=style_layer_weights,
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            laplacian_weight=laplacian_weight,
            coarse_luminance_weight=coarse_luminance_weight,
            style_loss=style_loss,
            relative_losses=relative_losses,
            tile_size=tile_size,
        )
        steps = (flat_lr_factor, flat_step_shift, gradient_floor, gradient_floor_region, gradient_floor_light)
        self.schedule = Schedule(scales, scale_steps, coarse_lr_factor, *steps)
        self.init, self.style_strength, self.palette_transfer = init, style_strength, palette_transfer
        self.palette_match = palette_match
        self.ema_decay, self.preserve_color, self.optimizer_factory = ema_decay, preserve_color, optimizer

        # The generated images: created in `setup` once the data are known (shape [N, 3, H, W]).
        self.image = nn.Parameter(torch.empty(0))
        self.register_buffer("image_ema", torch.empty(0))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.pair_images: PairImages | None = None
        self._terms_to_log, self._terms_step = {}, 0  # this step's terms but the total, till `_log_other_terms`

    # ------------------------------------------------------------------ setup
    def preflight(self, datamodule: PairDataModule, trainer: pl.Trainer) -> None:
        """All that can fail before the first step, checked once before the run's folder exists (`nst-pl fit` calls it
        in `before_fit`, `setup` when nothing did): images decoded and large enough for the layers, the schedule fitted
        into `trainer.max_steps`, the start image, a step's memory (memory.py: too much fails now, with a tile size)."""
        if not isinstance(datamodule, PairDataModule):
            raise ConfigError("StyleTransfer needs a PairDataModule (the `data:` section of the config)")
        datamodule.setup("fit")
        images = datamodule.images
        self.schedule.fit(images.content.shape[-2:], trainer.max_steps)
        check_init(self.init)
        first, copies = self.schedule.long_side(0), self.schedule.step_copies(images)
        self.objective.bind(images, smallest_view=first, device=trainer.strategy.root_device, step_copies=copies)
        if self.objective.step_memory and trainer.is_global_zero:
            sys.stderr.write(f"nst-pl: memory: {self.objective.step_memory}\n")
        self.pair_images = images

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if self.pair_images is None or self.pair_images is not getattr(datamodule, "images", None):
            self.preflight(datamodule, self.trainer)
        if self.image.shape != self.pair_images.content.shape:
            with torch.no_grad():
                self.image = nn.Parameter(initial_images(self.init, self.pair_images))
            self.image_ema = torch.zeros_like(self.image.data) if self.ema_decay else torch.empty(0)

    # ------------------------------------------------------------------ step
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        size = self.schedule.view_size(self.global_step)
        world = self.trainer.world_size
        # Who computes what, decided here: each rank its pairs (the loader's indices, data.py), except in a tiled step
        # under DDP, where every rank takes all pairs and every world-th tile; the objective all-reduces the tiles'
        # sums, so every rank's terms are the whole loss (logged divided by `world`: _log_terms adds the ranks up).
        if world > 1 and self.objective.tiles_for(size) is not None:
            idx = torch.arange(len(self.pair_images.names), device=self.image.device)
            shard = (self.global_rank, world)
            terms = self.objective(images_of(self.image, idx), idx, size, shard, torch.distributed.all_reduce)
            self._log_terms({k: v.detach() / world for k, v in terms.items()})
        else:
            idx = batch.to(self.image.device)
            if idx.numel() == 0:
                # A rank without pairs (more ranks than pairs) still takes part in DDP's gradient all-reduce, with a
                # zero gradient, and in the all-reduce of the logged values.
                zero = self.image.sum() * 0.0
                self._log_terms({k: zero.detach()[None] for k in self.objective.term_names()})
                return zero
            terms = self.objective(images_of(self.image, idx), idx, size)
            self._log_terms(terms)
        # Sum over pairs: each image gets exactly its own gradient (or its tiles' share). DDP averages gradients over
        # ranks, and each image (or tile) lives on one rank only, so multiply by the world size to undo the average.
        return terms["total"].sum() * world

    def _log_terms(self, terms: dict[str, Tensor]) -> None:
        keys = self.objective.term_names()
        values = pair_means(terms, keys, len(self.pair_images.names), self.trainer.world_size, self.global_step)
        self.log("loss/total", values[0], on_step=True, prog_bar=True)
        self._terms_to_log, self._terms_step = dict(zip(keys[1:], values[1:])), self.global_step
        # Each `self.log` costs ~0.7 ms of Lightning's bookkeeping (1.5 % of a 256 px step for a dozen terms): the
        # other terms only on the steps the logger writes, and at the last step (callback_metrics at the end).
        if logger_writes(self.trainer) or self.global_step + 1 == self.trainer.max_steps:
            self._log_other_terms()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # Asked again after the callbacks: one that stops the run makes this step one the logger writes too.
        if self._terms_to_log and logger_writes(self.trainer):
            self._log_other_terms()

    def _log_other_terms(self) -> None:
        for k, v in self._terms_to_log.items():
            self.log(f"loss/{k}", v, on_step=True)
        # The coarse-to-fine phase (long side of the view the loss sees), so that phase switches show in TensorBoard.
        self.log("stylized/scale_long_side", float(self.schedule.long_side(self._terms_step)), on_step=True)
        self._terms_to_log = {}

    # ------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        try:
            opt = self.optimizer_factory([self.image])
        except ValueError as err:  # torch.optim's own checks ("Invalid learning rate: -1.0"): say where to fix it
            raise ConfigError(f"model.optimizer: {err}") from err
        check_optimizer(opt, self)
        return opt

    def on_before_optimizer_step(self, optimizer) -> None:
        # A NaN gradient would make the pixels NaN and the exit checkpoint would lose the last good image: stop
        # before the update. DDP gradients are all-reduced, so every rank stops at the same step. 16-mixed's
        # scaler expects inf gradients now and then (it skips those steps), so it is left alone.
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None or self.image.grad is None:
            return
        if not torch.isfinite(self.image.grad).all():
            raise DivergedError(
                f"the gradient became NaN or inf at step {self.global_step}: the optimisation diverged. Lower the "
                "learning rate (model.optimizer.init_args.lr) or the loss weights; the images saved so far are kept "
                "and the image of this step is still finite."
            )

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        with self.schedule.step_size(self.global_step, optimizer, self.image, self.pair_images) as wrap:
            super().optimizer_step(epoch, batch_idx, optimizer, wrap(optimizer_closure))
        # Clamp after the step, never inside the closure (an LBFGS closure must see the point it is evaluating).
        with torch.no_grad():
            self.image.clamp_(0.0, 1.0)
            if self.ema_decay:
                self.ema_steps += 1
                self.image_ema.mul_(self.ema_decay).add_(self.image, alpha=1 - self.ema_decay)

    # ---------------------------------------------------------------- output
    @torch.no_grad()
    def output_images(self) -> list[Tensor]:
        """The current result of every pair, [3, h, w] each, cropped to its real size, post-processed, in [0, 1]."""
        x = averaged_image(self.image.detach(), self.image_ema, int(self.ema_steps), self.ema_decay)
        x = x.float().clamp(0, 1)
        outputs, options = [], {k: getattr(self, k) for k in OUTPUT_OPTIONS}
        for i, (h, w) in enumerate(self.pair_images.sizes):  # crop first: colour statistics of the real image only
            out, content = x[i, :, :h, :w], self.pair_images.content[i, :, :h, :w].to(x.device)
            styles, blend = self.pair_images.styles[i], self.pair_images.blend[i]
            outputs.append(output_picture(out, content, styles, blend, **options).cpu())
        return outputs

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[NST_KEY] = checkpoint_record(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        fit_checkpoint(checkpoint, self)


def check_texture_synthesis(content_layers: list[str], laplacian_weight: float, luminance_weight: float) -> None:
    """content_layers: [] (texture synthesis) with the recipe's pixel terms on is named: they still draw the photo."""
    if not content_layers and laplacian_weight + luminance_weight > 0:
        rank_zero_warn(
            "model.content_layers is empty (texture synthesis) but model.laplacian_weight or "
            "model.coarse_luminance_weight is above 0: those terms still pull the picture towards the photo's edges "
            "and its light and dark; set both to 0 for a texture of the painting alone"
        )


def logger_writes(trainer: pl.Trainer) -> bool:
    """Whether Lightning's logger writes this training step's metrics: its own decision (which counts the steps
    its own way after a resume from a mid-step checkpoint), every step with a Lightning that does not expose it."""
    writes = getattr(getattr(trainer, "_logger_connector", None), "should_update_logs", None)
    return True if writes is None else bool(writes or trainer.fast_dev_run)


def images_of(image: Tensor, idx: Tensor) -> Tensor:
    """The images of the pairs `idx`: with all pairs in order (one process, or tiles) the parameter itself, not an
    indexed copy of a print-size image."""
    if len(idx) == len(image) and bool((idx == torch.arange(len(idx), device=idx.device)).all()):
        return image
    return image[idx]


def pair_means(terms: dict[str, Tensor], keys: list[str], pairs: int, world: int, step: int) -> Tensor:
    """The terms `keys` (the total first) as per-pair means over every rank's pairs: one all-reduce for all of them
    (instead of one per `self.log(sync_dist=True)` call). A total that is not finite stops the run."""
    values = torch.stack([terms[k].detach().float().sum() for k in keys])
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)
    values = values / pairs
    if not torch.isfinite(values[0]):
        raise DivergedError(
            f"the loss became {values[0].item()} at step {step}: the optimisation diverged. Lower the learning rate "
            "(model.optimizer.init_args.lr) or the loss weights; the images saved so far are kept."
        )
    return values


def check_optimizer(optimizer, module: StyleTransfer) -> None:
    """Refuse an optimiser setup that cannot work here, before the first step."""
    precision, world_size = str(module.trainer.precision), module.trainer.world_size
    tiled = bool(module.objective.tile_size)
    if tiled and precision == "16-mixed":
        # The gradient scaler scales the step's returned loss, not the per-tile backward passes inside it.
        raise ConfigError(
            "model.tile_size cannot run with trainer.precision 16-mixed (its gradient scaler does not reach the "
            "per-tile backward passes): use bf16-mixed or 32-true"
        )
    adam_like = (torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam)  # not RAdam: no denominator at first
    schedule, name = module.schedule, type(optimizer).__name__
    # The floor and the shift are on by default, so an optimiser that cannot take one runs without it rather than
    # failing: the floor is on Adam's denominator (its running mean of squared gradients).
    if schedule.gradient_floor > 0 and not isinstance(optimizer, adam_like):
        rank_zero_warn(
            f"model.gradient_floor {schedule.gradient_floor} acts on Adam-type optimisers (Adam, AdamW, NAdam); "
            f"{name} runs without it (set gradient_floor: 0 to say so)"
        )
        schedule.gradient_floor = 0.0
    if isinstance(optimizer, torch.optim.LBFGS):
        group = optimizer.param_groups[0]
        if group["max_iter"] != 1:
            raise ConfigError(
                f"LBFGS needs max_iter: 1 here (got {group['max_iter']}): Lightning runs one training_step per "
                "closure call, so one optimisation step must be one evaluation"
            )
        if world_size > 1 and group["line_search_fn"] is not None:
            raise ConfigError("LBFGS with a line search can desynchronise DDP ranks: set line_search_fn: null")
        if precision == "16-mixed":
            raise ConfigError(
                "LBFGS cannot run with trainer.precision 16-mixed (its gradient scaler cannot scale a closure "
                "that is evaluated several times): use bf16-mixed, 32-true, or Adam"
            )
        # Scaling L-BFGS's step after it is taken would break the curvature pairs it keeps.
        if schedule.flat_lr_factor < 1:
            raise ConfigError("LBFGS cannot run with model.flat_lr_factor below 1: use Adam, or flat_lr_factor 1")
        if any(schedule.pair_shifts(module.pair_images)):  # said only where a pair's step would change
            rank_zero_warn(
                f"model.flat_step_shift {schedule.flat_step_shift} scales the step after it is taken, which L-BFGS's "
                f"curvature pairs cannot follow; {name} runs without it (set flat_step_shift: 0 to say so)"
            )
        schedule.flat_step_shift = 0.0
