"""StyleTransfer: a LightningModule whose only trainable parameter is the generated image.

One optimisation step:
    image [N, 3, H, W] (pixels in [0, 1]) --(this rank's pairs, maybe downscaled view)--> frozen extractor
        --> features --> content loss vs. the content photo's features, style loss vs. the painting's statistics
        --> gradient on the pixels --> optimizer step --> clamp to [0, 1] (--> EMA of the image)

Departures from Gatys et al. (2015), each marked where it happens:
- per-layer losses are divided by the size of their target ("relative" losses) so that one set of weights works for
  every extractor and normalisation (raw feature scales differ by ~3 orders of magnitude between them);
- the Gram matrix is normalised by C·H·W (see `losses.gram`);
- the pixels are clamped to [0, 1] after every step; the optimiser is Adam on pixels by default.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from nst_pl import losses
from nst_pl.errors import ConfigError, DivergedError
from nst_pl.extractors import FeatureExtractor
from nst_pl.color import match_color, transfer_luminance
from nst_pl.image_io import load_image, resize_long_side

DEFAULT_STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def default_optimizer(params) -> torch.optim.Optimizer:
    # Step size tuned with bench/quality.py (512 px, offline VGG16): 0.02 stylises sooner, but its per-pixel jitter
    # costs SSIM to the photo. 0.007 with iterate averaging (ema_decay 0.9) and coarse-to-fine reaches the classic
    # loop's final style (relative per-layer judge) in 0.05-0.22 of its time at a better SSIM on 3 of the 4 sample
    # pairs, and not within the run on the fourth (see README, Benchmarks).
    return torch.optim.Adam(params, lr=0.007)


class StyleTransfer(pl.LightningModule):
    def __init__(
        self,
        extractor: FeatureExtractor,
        content_layers: list[str] = ["relu4_2"],
        style_layers: list[str] = DEFAULT_STYLE_LAYERS,
        content_layer_weights: list[float] | None = None,
        style_layer_weights: list[float] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 3.0,
        tv_weight: float = 0.0,
        style_loss: Literal["gram", "mean_std", "wasserstein"] = "gram",
        relative_losses: bool = True,
        init: str = "content",
        scales: list[int] | None = None,
        scale_steps: list[int] | None = None,
        ema_decay: float | None = 0.9,
        preserve_color: Literal["none", "luminance", "histogram"] = "none",
        max_steps: int | None = None,
        optimizer: OptimizerCallable = default_optimizer,
    ) -> None:
        """Gatys-style transfer: optimise the pixels of one image per (content, style) pair.

        Args:
            extractor: Frozen feature network (`class_path: nst_pl.extractors.VGG19` …) with its weights and
                normalisation.
            content_layers: Layers whose activations must match the content photo's.
            style_layers: Layers whose statistics must match the style image's.
            content_layer_weights: One weight per content layer (default: equal). The content loss is the weighted
                mean over its layers.
            style_layer_weights: One weight per style layer (default: equal). The style loss is the weighted mean
                over its layers.
            content_weight: Weight of the content loss in the total.
            style_weight: Weight of the style loss in the total.
            tv_weight: Weight of the total-variation (smoothness) term; 0 turns it off.
            style_loss: `gram` (Gatys et al.), `mean_std` (per-channel mean and std, as in AdaIN) or
                `wasserstein` (2-Wasserstein distance between Gaussian fits of the features).
            relative_losses: Divide each layer's loss by the mean square of its target, so the weights do not depend
                on the extractor's feature scale. False gives the plain losses of the paper.
            init: Starting image: `content` (the photo), `noise` (uniform), `style` (noise with the style's colour
                mean and std), or a path to an image file.
            scales: Coarse-to-fine: long sides (px) of the coarse phases, ascending and below `data.image_size`,
                e.g. [128, 181, 256]. The image keeps its full size; the loss sees a downscaled view of it.
            scale_steps: Steps spent at each coarse scale (same length as `scales`); the full size gets the rest.
            ema_decay: If set (default 0.9), the output is a bias-corrected exponential moving average of the
                iterates, which is smoother than the raw iterate; null outputs the raw iterate.
            preserve_color: Keep the photo's colours in the output: `luminance` (output's luminance with the photo's
                chrominance) or `histogram` (match the output's colour mean and covariance to the photo's).
            max_steps: Total steps of the run (linked from `trainer.max_steps` by the CLI); used to validate
                `scale_steps`.
            optimizer: Optimiser for the image, e.g. `{class_path: torch.optim.Adam, init_args: {lr: 0.007}}` (the
                default) or `torch.optim.LBFGS` (with `max_iter: 1`).
        """
        super().__init__()
        self.save_hyperparameters(ignore=["extractor", "optimizer"])
        self.content_layers = list(content_layers)
        self.style_layers = list(style_layers)
        self.content_layer_weights = _layer_weights(content_layer_weights, self.content_layers, "content")
        self.style_layer_weights = _layer_weights(style_layer_weights, self.style_layers, "style")
        for name, w in (("content_weight", content_weight), ("style_weight", style_weight), ("tv_weight", tv_weight)):
            if not (w >= 0 and math.isfinite(w)):
                raise ConfigError(f"model.{name} must be a finite number >= 0, got {w}")
        if style_loss not in losses.STYLE_LOSSES:
            raise ConfigError(f"unknown model.style_loss {style_loss!r}; choose one of {', '.join(losses.STYLE_LOSSES)}")
        if preserve_color not in ("none", "luminance", "histogram"):
            raise ConfigError(f"unknown model.preserve_color {preserve_color!r}; choose none, luminance or histogram")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be between 0 and 1 (e.g. 0.95), got {ema_decay}")
        self.scales, self.scale_steps = _check_scales(scales, scale_steps, max_steps)
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.style_loss_kind = style_loss
        self.relative_losses = relative_losses
        self.init = init
        self.ema_decay = ema_decay
        self.preserve_color = preserve_color
        self.optimizer_factory = optimizer

        # The extractor is kept OUT of the module tree on purpose: it is not a parameter, must not be saved in
        # checkpoints (550 MB for VGG19), must not be broadcast or bucketed by DDP, and must stay in eval mode.
        # We move it to the image's device ourselves.
        extractor.set_layers(list(dict.fromkeys(self.content_layers + self.style_layers)))  # validates names
        self.__dict__["extractor"] = extractor
        self._extractor_device: torch.device | None = None

        # The generated images: created in `setup` once the data are known (shape [N, 3, H, W]).
        self.image = nn.Parameter(torch.empty(0))
        self.register_buffer("image_ema", torch.empty(0))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self._targets: dict[tuple[int, int], dict[str, Any]] = {}
        self.content_images: Tensor | None = None
        self.style_images: list[list[Tensor]] = []
        self.pair_names: list[str] = []
        self.sizes: list[tuple[int, int]] = []

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "pairs"):
            raise ConfigError("StyleTransfer needs a PairDataModule (the `data:` section of the config)")
        dm.setup(stage)
        self.content_images = dm.content  # [N, 3, H, W]
        self.style_images = dm.styles
        self.style_mix = dm.style_weight_matrix  # [N, K]
        self.pair_names, self.sizes = dm.names, dm.sizes
        min_side = self.extractor.min_input_size()
        full = max(self.content_images.shape[-2:])
        first = min([*self.scales, full])  # coarse scales at or above the full size are not used (see current_size)
        smallest = min(min(h, w) for h, w in self.sizes) * first / full
        if smallest < min_side:
            raise ConfigError(
                f"an image side of {int(smallest)} px is too small for {type(self.extractor).__name__} up to layer "
                f"{self._deepest_layer()}: it needs at least {min_side} px. Raise data.image_size (or the first of "
                "model.scales), or use shallower layers."
            )
        if self.image.shape != self.content_images.shape:
            with torch.no_grad():
                self.image = nn.Parameter(self._initial_image())
            self.image_ema = torch.zeros_like(self.image.data) if self.ema_decay else torch.empty(0)
        self._targets.clear()

    def _deepest_layer(self) -> str:
        return max(self.content_layers + self.style_layers, key=self.extractor.layer_index)

    def _initial_image(self) -> Tensor:
        content = self.content_images
        if self.init == "content":
            return content.clone()
        if self.init == "noise":
            return torch.rand_like(content)
        if self.init == "style":
            # Noise with each pair's (first) style image's per-channel colour mean and std.
            stats = [s[0].flatten(1) for s in self.style_images]
            mean = torch.stack([s.mean(1) for s in stats])[:, :, None, None]  # [N, 3, 1, 1]
            std = torch.stack([s.std(1) for s in stats])[:, :, None, None]
            return (mean + std * torch.randn_like(content)).clamp(0, 1)
        # Anything else is a path to an image file, resized to the canvas of every pair.
        img = load_image(self.init)
        h, w = content.shape[-2:]
        img = F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        return img.expand_as(content).clone().clamp(0, 1)

    # --------------------------------------------------------------- targets
    def current_size(self, step: int | None = None) -> tuple[int, int]:
        """(h, w) of the view that the loss sees at `step` (coarse-to-fine schedule), full size at the end."""
        step = self.global_step if step is None else step
        full = tuple(self.image.shape[-2:])
        if not self.scales:
            return full
        for size, end in zip(self.scales, _cumsum(self.scale_steps)):
            if step < end:
                if size >= max(full):
                    # A coarse scale that is not smaller than the image (e.g. the shipped schedule with a small
                    # data.image_size) runs at full size: the schedule's step count is kept, nothing is upscaled.
                    return full
                scale = size / max(full)
                return max(1, round(full[0] * scale)), max(1, round(full[1] * scale))
        return full

    def _features(self, x: Tensor) -> dict[str, Tensor]:
        if self._extractor_device != x.device:
            self.extractor.to(x.device)
            self._extractor_device = x.device
        return self.extractor(x)

    def _view(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)

    @torch.no_grad()
    def targets(self, size: tuple[int, int]) -> dict[str, Any]:
        """Content features and style statistics for every pair at view `size`, computed once and cached."""
        if size in self._targets:
            return self._targets[size]
        device = self.image.device
        content = self._view(self.content_images.to(device), size)
        feats = self._features(content)
        content_t = {l: feats[l].float() for l in self.content_layers}  # [N, C, h, w]
        # Style images keep their own aspect ratio; they are scaled with the view so that brush strokes keep their
        # size relative to the picture at every scale.
        ratio = max(size) / max(self.image.shape[-2:])
        style_t = []  # one dict per style slot k: layer -> stats stacked over pairs
        for k in range(self.style_mix.shape[1]):
            per_pair = []
            for styles in self.style_images:
                s = styles[k].to(device)
                s = resize_long_side(s, max(1, round(max(s.shape[-2:]) * ratio)))
                f = self._features(s[None])
                per_pair.append({l: losses.style_target(f[l], self.style_loss_kind) for l in self.style_layers})
            style_t.append({l: _stack([p[l] for p in per_pair]) for l in self.style_layers})
        scale = {}
        if self.relative_losses:
            for l in self.content_layers:
                scale[("content", l)] = content_t[l].pow(2).flatten(1).mean(1) + 1e-8  # [N]
            for l in self.style_layers:
                scale[("style", l)] = sum(
                    self.style_mix[:, k].to(device) * _target_scale(style_t[k][l], self.style_loss_kind)
                    for k in range(len(style_t))
                ) + 1e-8
        self._targets[size] = {"content": content_t, "style": style_t, "scale": scale}
        return self._targets[size]

    # ------------------------------------------------------------------ loss
    def compute_losses(self, idx: Tensor) -> dict[str, Tensor]:
        """All loss terms for the pairs `idx`, each [n] (one value per pair in idx)."""
        size = self.current_size()
        t = self.targets(size)
        x = self._view(self.image[idx], size)  # [n, 3, h, w]
        feats = self._features(x)
        out: dict[str, Tensor] = {}
        content = 0.0
        for l, w in zip(self.content_layers, self.content_layer_weights):
            term = losses.content_loss(feats[l], t["content"][l][idx])
            if self.relative_losses:
                term = term / t["scale"][("content", l)][idx]
            out[f"content/{l}"] = term
            content = content + w * term
        style = 0.0
        mix = self.style_mix.to(x.device)[idx]  # [n, K]
        for l, w in zip(self.style_layers, self.style_layer_weights):
            term = sum(
                mix[:, k] * losses.style_loss(feats[l], _index(t["style"][k][l], idx), self.style_loss_kind)
                for k in range(mix.shape[1])
            )
            if self.relative_losses:
                term = term / t["scale"][("style", l)][idx]
            out[f"style/{l}"] = term
            style = style + w * term
        out["content"], out["style"] = content, style
        out["tv"] = losses.total_variation(x) if self.tv_weight > 0 else torch.zeros_like(content)
        out["total"] = self.content_weight * content + self.style_weight * style + self.tv_weight * out["tv"]
        return out

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        idx = batch.to(self.image.device)
        world = self.trainer.world_size
        if idx.numel() == 0:
            # A rank without pairs (more ranks than pairs) still takes part in DDP's gradient all-reduce, with a
            # zero gradient, and in the all-reduce of the logged values.
            zero = self.image.sum() * 0.0
            self._log_terms({k: zero.detach()[None] for k in self._term_names()})
            return zero
        terms = self.compute_losses(idx)
        # Sum over pairs: each image gets exactly its own gradient. DDP averages gradients over ranks, and each
        # image lives on one rank only, so multiply by the world size to undo the average.
        loss = terms["total"].sum() * world
        self._log_terms(terms)
        return loss

    def _term_names(self) -> list[str]:
        return (["total", "content", "style", "tv"] + [f"content/{l}" for l in self.content_layers]
                + [f"style/{l}" for l in self.style_layers])

    def _log_terms(self, terms: dict[str, Tensor]) -> None:
        # One all-reduce for every scalar (instead of one per `self.log(sync_dist=True)` call): sums over pairs,
        # then divided by N, so the logged values are per-pair means whatever the sharding.
        keys = self._term_names()
        values = torch.stack([terms[k].detach().float().sum() for k in keys])
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(values)
        values = values / len(self.pair_names)
        if not torch.isfinite(values[0]):
            raise DivergedError(
                f"the loss became {values[0].item()} at step {self.global_step}: the optimisation diverged. "
                "Lower the learning rate (model.optimizer.init_args.lr) or the loss weights; the images saved so far "
                "are kept."
            )
        for k, v in zip(keys, values):
            self.log(f"loss/{k}", v, on_step=True, prog_bar=k == "total")

    # ------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        try:
            opt = self.optimizer_factory([self.image])
        except ValueError as err:  # torch.optim's own checks ("Invalid learning rate: -1.0"): say where to fix it
            raise ConfigError(f"model.optimizer: {err}") from err
        if isinstance(opt, torch.optim.LBFGS):
            group = opt.param_groups[0]
            if group["max_iter"] != 1:
                raise ConfigError(
                    f"LBFGS needs max_iter: 1 here (got {group['max_iter']}): Lightning runs one training_step per "
                    "closure call, so one optimisation step must be one evaluation"
                )
            if self.trainer.world_size > 1 and group["line_search_fn"] is not None:
                raise ConfigError("LBFGS with a line search can desynchronise DDP ranks: set line_search_fn: null")
            if str(self.trainer.precision) == "16-mixed":
                raise ConfigError(
                    "LBFGS cannot run with trainer.precision 16-mixed (its gradient scaler cannot scale a closure "
                    "that is evaluated several times): use bf16-mixed, 32-true, or Adam"
                )
        return opt

    def on_before_optimizer_step(self, optimizer) -> None:
        # Runs after backward, before the update. A NaN/inf gradient with a finite loss would turn the pixels into
        # NaN (clamping keeps NaN), and the checkpoint written on the way out would then hold a NaN image in place
        # of the last good one: stop here, while the image is still finite. Under DDP the gradient is already
        # all-reduced, so every rank sees the same values and raises at the same step (no rank left waiting).
        # Skipped under 16-mixed, whose gradient scaler expects inf gradients now and then and skips those steps.
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None or self.image.grad is None:
            return
        if not torch.isfinite(self.image.grad).all():
            raise DivergedError(
                f"the gradient became NaN or inf at step {self.global_step}: the optimisation diverged. Lower the "
                "learning rate (model.optimizer.init_args.lr) or the loss weights; the images saved so far are kept "
                "and the image of this step is still finite."
            )

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
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
        content = self.content_images.to(x.device)
        if self.preserve_color == "luminance":
            x = transfer_luminance(x, content)
        elif self.preserve_color == "histogram":
            x = match_color(x, content)
        return [x[i, :, :h, :w].cpu() for i, (h, w) in enumerate(self.sizes)]

    # ----------------------------------------------------------- checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The image parameter is created in `setup` from the data, so it already has the checkpoint's shape; a
        # mismatch means the resumed run was given other images.
        saved = checkpoint["state_dict"].get("image")
        if saved is not None and self.image.shape != saved.shape:
            raise ConfigError(
                f"the checkpoint holds images of shape {tuple(saved.shape)} but this run's data give "
                f"{tuple(self.image.shape)}: resume with the same data.content, data.style and data.image_size"
            )
        if self.ema_decay and "image_ema" not in checkpoint["state_dict"]:
            checkpoint["state_dict"]["image_ema"] = torch.zeros_like(self.image.data)


def averaged_image(image: Tensor, image_ema: Tensor, ema_steps: int, ema_decay: float | None) -> Tensor:
    """The output before clamping: the bias-corrected EMA of the iterates when averaging is on and has started, else
    the raw iterate. Works on the module's tensors and on a checkpoint's `state_dict` entries alike."""
    if ema_decay and ema_steps > 0:
        # Bias correction: the EMA starts at zero, so divide by the weight the iterates have accumulated.
        return image_ema / (1 - ema_decay**ema_steps)
    return image


def _layer_weights(weights: Sequence[float] | None, layers: list[str], what: str) -> list[float]:
    if not layers and what == "style":
        raise ConfigError("model.style_layers is empty: give at least one layer")
    if weights is None:
        weights = [1.0] * len(layers)
    if len(weights) != len(layers):
        raise ConfigError(
            f"model.{what}_layer_weights has {len(weights)} value(s) for {len(layers)} {what} layer(s) {layers}: "
            "give one weight per layer"
        )
    if any(not (w >= 0 and math.isfinite(w)) for w in weights) or (layers and sum(weights) <= 0):
        raise ConfigError(f"model.{what}_layer_weights must be finite, >= 0 and not all zero, got {list(weights)}")
    total = float(sum(weights)) or 1.0
    return [w / total for w in weights]  # a weighted MEAN over layers


def _check_scales(scales, scale_steps, max_steps):
    if scales is None and scale_steps is None:
        return [], []
    if scales is None or scale_steps is None or len(scales) != len(scale_steps):
        raise ConfigError("model.scales and model.scale_steps go together, with one step count per scale")
    if any(s < 1 for s in scales) or list(scales) != sorted(scales):
        raise ConfigError(f"model.scales must be positive and ascending, got {scales}")
    if any(n < 0 for n in scale_steps):
        raise ConfigError(f"model.scale_steps must be >= 0, got {scale_steps}")
    if max_steps is not None and max_steps > 0 and sum(scale_steps) >= max_steps:
        # A short run with the shipped schedule (e.g. --trainer.max_steps 200 with 3 x 100 coarse steps): keep the
        # schedule's shape but shrink it to two thirds of the run, so the full size still gets a third.
        budget = (2 * max_steps) // 3
        shrunk = [n * budget // sum(scale_steps) for n in scale_steps]
        rank_zero_warn(
            f"model.scale_steps add up to {sum(scale_steps)} but trainer.max_steps is {max_steps}: using "
            f"{shrunk} so that the full size gets the last {max_steps - sum(shrunk)} steps"
        )
        scale_steps = shrunk
    return list(scales), list(scale_steps)


def _cumsum(xs: Sequence[int]) -> list[int]:
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


def _stack(items: list):
    """Stack per-pair statistics (tensors [1, …] or tuples of them) into [N, …]."""
    if isinstance(items[0], tuple):
        return tuple(torch.cat([it[j] for it in items]) for j in range(len(items[0])))
    return torch.cat(items)


def _index(stat, idx: Tensor):
    return tuple(s[idx] for s in stat) if isinstance(stat, tuple) else stat[idx]


def _target_scale(stat, kind: str) -> Tensor:
    """Mean square of a style target, per pair [N]: the denominator of the relative style loss."""
    if kind == "gram":
        return stat.pow(2).flatten(1).mean(1)
    if kind == "mean_std":
        return stat[0].pow(2).mean(1) + stat[1].pow(2).mean(1)
    mu, cov, _ = stat  # wasserstein: the loss is |Δμ|² + tr(…) over C, so use (|μ|² + tr Σ) / C
    return (mu.pow(2).sum(1) + cov.diagonal(dim1=-2, dim2=-1).sum(-1)) / mu.shape[1]
