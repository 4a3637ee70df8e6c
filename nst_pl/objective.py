"""The objective of style transfer, without Lightning: targets, their relative scales and the weighted loss terms.

    objective = Objective(extractor, content_layers=[...], style_layers=[...], ...)
    objective.bind(pair_images, max_steps)      # the pairs, and the run length the schedule must fit in
    terms = objective(image[idx], idx, step)    # {"total": [n], "content": [n], "style/relu1_1": [n], ...}

The loss sees a view of the image: the image itself, or during the coarse phases of the coarse-to-fine schedule a
downscaled copy. Targets (content features, style statistics and their scales) are computed once per view size.

Departures from Gatys et al. (2015):
- with `relative_losses` the losses are divided by the mean square of their targets, so one set of weights works for
  every extractor and normalisation (raw feature scales differ by ~3 orders of magnitude between them): `true` divides
  each layer by its own target's, which gives every layer the same say; `shared` divides all the style layers by one
  number (and the content layers by another), which keeps the paper's proportions between layers (for Gram losses
  the low layers dominate: colour and fine texture);
- the Gram matrix is normalised by C·H·W (see `losses.gram`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

import nst_pl.losses as losses
from nst_pl.data import PairImages
from nst_pl.errors import ConfigError
from nst_pl.extractors import FeatureExtractor
from nst_pl.image_io import resize_long_side

DEFAULT_STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


class Objective:
    """Content, style and total-variation losses of a batch of generated images against their pairs' targets."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        content_layers: Sequence[str] = ("relu4_2",),
        style_layers: Sequence[str] = tuple(DEFAULT_STYLE_LAYERS),
        content_layer_weights: Sequence[float] | None = None,
        style_layer_weights: Sequence[float] | None = None,
        content_weight: float = 1.0,
        style_weight: float = 3.0,
        tv_weight: float = 0.0,
        style_loss: str = "gram",
        relative_losses: bool | str = True,
        scales: Sequence[int] | None = None,
        scale_steps: Sequence[int] | None = None,
    ) -> None:
        """Arguments as `StyleTransfer`'s of the same names (which documents them for users)."""
        self.extractor = extractor
        self.content_layers = list(content_layers)
        self.style_layers = list(style_layers)
        self.layers = list(dict.fromkeys(self.content_layers + self.style_layers))
        for name in self.layers:
            extractor.layer_index(name)  # unknown names fail here, with the valid ones listed
        self.content_layer_weights = _layer_weights(content_layer_weights, self.content_layers, "content")
        self.style_layer_weights = _layer_weights(style_layer_weights, self.style_layers, "style")
        for name, w in (("content_weight", content_weight), ("style_weight", style_weight), ("tv_weight", tv_weight)):
            if not (w >= 0 and math.isfinite(w)):
                raise ConfigError(f"model.{name} must be a finite number >= 0, got {w}")
        if style_loss not in losses.STYLE_LOSSES:
            raise ConfigError(
                f"unknown model.style_loss {style_loss!r}; choose one of {', '.join(losses.STYLE_LOSSES)}"
            )
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.style_loss = losses.STYLE_LOSSES[style_loss]
        if relative_losses not in (True, False, "shared"):
            raise ConfigError(f"model.relative_losses must be true, false or shared, got {relative_losses!r}")
        self.relative_losses = relative_losses
        self.scales, self.planned_steps = _check_scales(scales, scale_steps)
        self.scale_steps = self.planned_steps  # what `bind` fits into the run
        self.images: PairImages | None = None
        self._targets: dict[tuple[int, int], dict[str, Any]] = {}
        self._device: torch.device | None = None

    # ------------------------------------------------------------------------------------------------ pairs
    def bind(self, images: PairImages, max_steps: int | None = None) -> None:
        """Take the pairs to optimise, and fit the coarse-to-fine schedule into a run of `max_steps` steps."""
        self.images = images
        self._targets.clear()
        self.scale_steps = _fit_schedule(self.planned_steps, max_steps)
        self._check_sizes()

    def _check_sizes(self) -> None:
        """Every view and style image must be large enough for the deepest layer: say which option to change."""
        min_side = self.extractor.min_input_size(self.layers)
        full = max(self.images.content.shape[-2:])
        ratio = self.view_long_side(0) / full  # the first view is the smallest
        photo = min(min(h, w) for h, w in self.images.sizes) * ratio
        deepest = max(self.layers, key=self.extractor.layer_index)
        what = f"for {type(self.extractor).__name__} up to layer {deepest}: it needs at least {min_side} px"
        if photo < min_side:
            # The narrowest photo decides; a very elongated one (a 1x5000 strip) cannot be fixed by image_size.
            i = min(range(len(self.images.sizes)), key=lambda k: min(self.images.sizes[k]))
            h, w = self.images.sizes[i]
            sources = self.images.source_sizes
            sh, sw = (sources[i] if sources and sources[i] else None) or (h, w)  # the true aspect ratio
            needed = math.ceil(min_side * max(sh, sw) / min(sh, sw) / ratio)
            if needed > 4 * full:
                raise ConfigError(
                    f"the photo of pair '{self.images.names[i]}' is too elongated ({sw}x{sh} px in its file): its "
                    f"short side would reach the {min_side} px needed {what[4:]} only at "
                    f"data.image_size {needed}. Crop that photo to a less extreme aspect ratio, or leave it out of "
                    "data.content."
                )
            raise ConfigError(
                f"an image side of {int(photo)} px is too small {what}. Raise data.image_size (to at least {needed}) "
                "(or the first of model.scales), or use shallower layers."
            )
        style = min(
            min(s.shape[-2:]) * _style_long_side(s, ratio) / max(s.shape[-2:])
            for styles in self.images.styles
            for s in styles
        )
        if style < min_side:
            raise ConfigError(
                f"a style image side of {int(style)} px is too small {what}. Raise data.style_size (or the first of "
                "model.scales), or use shallower layers."
            )

    # ------------------------------------------------------------------------------------------------ views
    def view_long_side(self, step: int) -> int:
        """Long side (px) of the view that the loss sees at `step`: a coarse scale, else the full size."""
        full = max(self.images.content.shape[-2:])
        for size, end in zip(self.scales, accumulate(self.scale_steps)):
            if step < end:
                # A coarse scale that is not smaller than the image (the shipped schedule with a small
                # data.image_size) runs at full size: the schedule's step count is kept, nothing is upscaled.
                return min(size, full)
        return full

    def view_size(self, step: int) -> tuple[int, int]:
        """(h, w) of the view at `step`."""
        h, w = self.images.content.shape[-2:]
        scale = self.view_long_side(step) / max(h, w)
        if scale == 1:
            return h, w
        return max(1, round(h * scale)), max(1, round(w * scale))

    @staticmethod
    def view(x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        if self._device != x.device:  # the extractor follows the image to its device
            self.extractor.to(x.device)
            self._device = x.device
        return self.extractor(x, self.layers)

    # ---------------------------------------------------------------------------------------------- targets
    @torch.no_grad()
    def targets(self, size: tuple[int, int], device: torch.device) -> dict[str, Any]:
        """Content features, style statistics and loss scales of every pair at view `size`, computed once."""
        if size in self._targets:
            return self._targets[size]
        feats = self.features(self.view(self.images.content.to(device), size))
        content = {l: feats[l].float() for l in self.content_layers}  # [N, C, h, w]
        # Style images keep their aspect ratio and are scaled with the view, so that brush strokes keep their size
        # relative to the picture at every scale.
        ratio = max(size) / max(self.images.content.shape[-2:])
        style = []  # one dict per style slot k: layer -> statistics stacked over pairs
        for k in range(self.images.blend.shape[1]):
            per_pair = []
            for styles in self.images.styles:
                s = styles[k].to(device)
                f = self.features(resize_long_side(s, _style_long_side(s, ratio))[None])
                per_pair.append({l: self.style_loss.target(f[l]) for l in self.style_layers})
            style.append({l: _stack([p[l] for p in per_pair]) for l in self.style_layers})
        scale = {}
        if self.relative_losses:
            blend = self.images.blend.to(device)
            for l in self.content_layers:
                scale["content", l] = content[l].pow(2).flatten(1).mean(1) + 1e-8  # [N]
            for l in self.style_layers:
                scale["style", l] = sum(blend[:, k] * self.style_loss.scale(style[k][l]) for k in range(len(style)))
                scale["style", l] = scale["style", l] + 1e-8
            if self.relative_losses == "shared":  # one number per loss: the layer-weighted mean of the layers' scales
                for kind, layers, weights in (
                    ("content", self.content_layers, self.content_layer_weights),
                    ("style", self.style_layers, self.style_layer_weights),
                ):
                    shared = sum(w * scale[kind, l] for l, w in zip(layers, weights))
                    scale.update({(kind, l): shared for l in layers})
        self._targets[size] = {"content": content, "style": style, "scale": scale}
        return self._targets[size]

    # ------------------------------------------------------------------------------------------------- loss
    def term_names(self) -> list[str]:
        per_layer = [f"content/{l}" for l in self.content_layers] + [f"style/{l}" for l in self.style_layers]
        return ["total", "content", "style", "tv", *per_layer]

    def __call__(self, image: Tensor, idx: Tensor, step: int) -> dict[str, Tensor]:
        """Every loss term of the images `image` ([n, 3, H, W], pairs `idx`) at `step`, each [n]."""
        size = self.view_size(step)
        t = self.targets(size, image.device)
        x = self.view(image, size)
        feats = self.features(x)
        out: dict[str, Tensor] = {}
        content = x.new_zeros(len(idx), dtype=torch.float32)  # pure texture synthesis has no content layer
        for l, w in zip(self.content_layers, self.content_layer_weights):
            term = losses.content_loss(feats[l], t["content"][l][idx])
            if self.relative_losses:
                term = term / t["scale"]["content", l][idx]
            out[f"content/{l}"] = term
            content = content + w * term
        style = x.new_zeros(len(idx), dtype=torch.float32)
        blend = self.images.blend.to(x.device)[idx]  # [n, K]
        for l, w in zip(self.style_layers, self.style_layer_weights):
            term = sum(
                blend[:, k] * self.style_loss.loss(feats[l], _index(t["style"][k][l], idx))
                for k in range(blend.shape[1])
            )
            if self.relative_losses:
                term = term / t["scale"]["style", l][idx]
            out[f"style/{l}"] = term
            style = style + w * term
        out["content"], out["style"] = content, style
        out["tv"] = losses.total_variation(x) if self.tv_weight > 0 else torch.zeros_like(content)
        out["total"] = self.content_weight * content + self.style_weight * style + self.tv_weight * out["tv"]
        return out


def _style_long_side(style: Tensor, view_ratio: float) -> int:
    """Long side of a style image for a view `view_ratio` times the full size."""
    return max(1, round(max(style.shape[-2:]) * view_ratio))


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


def _check_scales(scales: Sequence[int] | None, scale_steps: Sequence[int] | None) -> tuple[list[int], list[int]]:
    if scales is None and scale_steps is None:
        return [], []
    if scales is None or scale_steps is None or len(scales) != len(scale_steps):
        raise ConfigError("model.scales and model.scale_steps go together, with one step count per scale")
    if any(s < 1 for s in scales) or list(scales) != sorted(scales):
        raise ConfigError(f"model.scales must be positive and ascending, got {scales}")
    if any(n < 0 for n in scale_steps):
        raise ConfigError(f"model.scale_steps must be >= 0, got {scale_steps}")
    return list(scales), list(scale_steps)


def _fit_schedule(scale_steps: list[int], max_steps: int | None) -> list[int]:
    """A short run with a long schedule (--trainer.max_steps 200 with 3 x 100 coarse steps) keeps the schedule's
    shape, shrunk to two thirds of the run, so the full size still gets a third."""
    if not max_steps or max_steps < 0 or sum(scale_steps) < max_steps:
        return scale_steps
    budget = (2 * max_steps) // 3
    shrunk = [n * budget // sum(scale_steps) for n in scale_steps]
    rank_zero_warn(
        f"model.scale_steps add up to {sum(scale_steps)} but trainer.max_steps is {max_steps}: using "
        f"{shrunk} so that the full size gets the last {max_steps - sum(shrunk)} steps"
    )
    return shrunk


def _stack(items: list):
    """Stack per-pair statistics (tensors [1, …] or tuples of them) into [N, …]."""
    if isinstance(items[0], tuple):
        return tuple(torch.cat([it[j] for it in items]) for j in range(len(items[0])))
    return torch.cat(items)


def _index(stat, idx: Tensor):
    return tuple(s[idx] for s in stat) if isinstance(stat, tuple) else stat[idx]
