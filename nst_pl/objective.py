"""The objective of style transfer, without Lightning: targets, their relative scales and the weighted loss terms.

    objective = Objective(extractor, content_layers=[...], style_layers=[...], ...)
    objective.bind(pair_images, max_steps)      # the pairs, and the run length the schedule must fit in
    terms = objective(image[idx], idx, step)    # {"total": [n], "content": [n], "style/relu1_1": [n], ...}

The loss sees a view of the image: the image itself, or during the coarse phases of the coarse-to-fine schedule a
downscaled copy. Targets (content features, style statistics and their scales) are computed once per view size.

With `tile_size`, a view larger than a tile is processed tile by tile (tiling.py) with the same loss and gradient:
every term is a function of sums over feature positions (style statistics, squared content errors, squared pixel
differences), so a first pass adds up the tiles' sums without a graph and takes the derivative of the loss with
respect to the sums; a second pass back-propagates each tile with the surrogate <dLoss/dSums, tile's sums>, whose
gradient is the tile's share of the true gradient. Peak memory is one tile's activations instead of the view's.

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
from collections.abc import Callable, Sequence
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
from nst_pl.tiling import Tile, grid_step, plan_tiles

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
        style_weight: float = 1000.0,
        tv_weight: float = 0.0,
        style_loss: str = "gram",
        relative_losses: bool | str = "shared",
        scales: Sequence[int] | None = None,
        scale_steps: Sequence[int] | None = None,
        tile_size: int | None = None,
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
        self.tile_size = _check_tile_size(tile_size, extractor, self.layers)
        self._tiles: dict[tuple[tuple[int, int], int], list[Tile]] = {}
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

    def features(self, x: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        if self._device != x.device:  # the extractor follows the image to its device
            self.extractor.to(x.device)
            self._device = x.device
        return self.extractor(x, layers or self.layers)

    def tiles(self, size: tuple[int, int]) -> list[Tile] | None:
        """The tiles of a picture of `size` = (h, w); None when tiling is off or the picture fits in one tile."""
        return self.plan(size, self.tile_size)

    def plan(self, size: tuple[int, int], tile_size: int | None) -> list[Tile] | None:
        """The tiles of `tile_size` px for a picture of `size`, None when it fits in one (or `tile_size` is None)."""
        size = tuple(size)
        if tile_size is None or max(size) <= tile_size:
            return None
        if (size, tile_size) not in self._tiles:
            shapes = self.extractor.feature_shapes(size, self.layers)
            self._tiles[size, tile_size] = plan_tiles(size, tile_size, self.extractor.reach(self.layers), shapes)
        return self._tiles[size, tile_size]

    def tiled(self, step: int) -> bool:
        """True when the step's view is processed tile by tile."""
        return self.tiles(self.view_size(step)) is not None

    # ---------------------------------------------------------------------------------------------- targets
    @torch.no_grad()
    def targets(self, size: tuple[int, int], device: torch.device) -> dict[str, Any]:
        """Content features, style statistics and loss scales of every pair at view `size`, computed once."""
        if size in self._targets:
            return self._targets[size]
        content = self._content_features(self.view(self.images.content.to(device), size))  # [N, C, h, w]
        # Style images keep their aspect ratio and are scaled with the view, so that brush strokes keep their size
        # relative to the picture at every scale.
        ratio = max(size) / max(self.images.content.shape[-2:])
        style = []  # one dict per style slot k: layer -> statistics stacked over pairs
        for k in range(self.images.blend.shape[1]):
            per_pair = []
            for styles in self.images.styles:
                s = styles[k].to(device)
                stats = self._style_stats(resize_long_side(s, _style_long_side(s, ratio))[None])
                per_pair.append({l: self.style_loss.target_of(stats[l]) for l in self.style_layers})
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

    def __call__(
        self,
        image: Tensor,
        idx: Tensor,
        step: int,
        shard: tuple[int, int] = (0, 1),
        all_reduce: Callable[[Tensor], Any] | None = None,
    ) -> dict[str, Tensor]:
        """Every loss term of the images `image` ([n, 3, H, W], pairs `idx`) at `step`, each [n].

        In a tiled step, `shard` = (rank, world size) says which tiles this process computes (every `world`-th
        from `rank` on); `all_reduce` (in place, a sum over the processes) then joins the processes' sums. The
        terms are the whole loss on every process, and "total" back-propagates this process's tiles only.
        """
        size = self.view_size(step)
        t = self.targets(size, image.device)
        x = self.view(image, size)
        tiles = self.tiles(size)
        if tiles is not None:
            return self._tiled_terms(x, idx, t, tiles, shard, all_reduce)
        feats = self.features(x)
        content = {l: losses.content_loss(feats[l], t["content"][l][idx]) for l in self.content_layers}
        stats = {l: self.style_loss.stat(feats[l]) for l in self.style_layers}
        tv = losses.total_variation(x) if self.tv_weight > 0 else None
        return self._terms(idx, t, content, stats, tv)

    def _terms(
        self, idx: Tensor, t: dict[str, Any], content: dict[str, Tensor], stats: dict[str, Any], tv: Tensor | None
    ) -> dict[str, Tensor]:
        """The weighted terms from each content layer's mean squared error, each style layer's statistic and the
        total variation (None when its weight is 0)."""
        out: dict[str, Tensor] = {}
        device = idx.device
        total_content = torch.zeros(len(idx), dtype=torch.float32, device=device)  # texture synthesis: no content
        for l, w in zip(self.content_layers, self.content_layer_weights):
            term = content[l]
            if self.relative_losses:
                term = term / t["scale"]["content", l][idx]
            out[f"content/{l}"] = term
            total_content = total_content + w * term
        style = torch.zeros_like(total_content)
        blend = self.images.blend.to(device)[idx]  # [n, K]
        for l, w in zip(self.style_layers, self.style_layer_weights):
            term = sum(
                blend[:, k] * self.style_loss.compare(stats[l], _index(t["style"][k][l], idx))
                for k in range(blend.shape[1])
            )
            if self.relative_losses:
                term = term / t["scale"]["style", l][idx]
            out[f"style/{l}"] = term
            style = style + w * term
        out["content"], out["style"] = total_content, style
        out["tv"] = tv if tv is not None else torch.zeros_like(total_content)
        out["total"] = self.content_weight * total_content + self.style_weight * style + self.tv_weight * out["tv"]
        return out

    # ------------------------------------------------------------------------------------------------ tiles
    def _tiled_terms(
        self,
        x: Tensor,
        idx: Tensor,
        t: dict[str, Any],
        tiles: list[Tile],
        shard: tuple[int, int],
        all_reduce: Callable[[Tensor], Any] | None,
    ) -> dict[str, Tensor]:
        rank, world = shard
        mine = tiles[rank::world]
        pixels = x.detach()
        shapes = self.extractor.feature_shapes(tuple(x.shape[-2:]), self.layers)
        backward = torch.is_grad_enabled() and x.requires_grad  # evaluating the loss alone needs no second pass
        # Pass 1: the sums over this process's tiles, without a graph except for the last tile, whose graph pass 2
        # uses first (one tile's forward fewer). float64: sums of up to ~1e7 positions, differences of moments.
        sums = {k: v.double() for k, v in self._zero_sums(len(idx), shapes, x.device).items()}
        kept = None
        for i, tile in enumerate(mine):
            keep = backward and i == len(mine) - 1
            with torch.set_grad_enabled(keep):
                leaf = pixels[(..., *tile.pixels())].detach().requires_grad_(keep)
                parts = self._tile_sums(leaf, tile, idx, t)
            for k, v in parts.items():
                sums[k] += v.detach()
            if keep:
                kept = (leaf, parts)
        if world > 1:
            flat = torch.cat([v.flatten() for v in sums.values()])
            all_reduce(flat)
            sums = {
                k: part.view_as(v) for (k, v), part in zip(sums.items(), flat.split([v.numel() for v in sums.values()]))
            }
        # The loss from the sums, and its derivative with respect to them.
        leaves = {k: v.detach().requires_grad_(backward) for k, v in sums.items()}
        with torch.set_grad_enabled(backward):
            out = self._terms(idx, t, *self._of_sums(leaves, shapes, tuple(x.shape[-2:]), _stat_dtype(x)))
        if not backward:
            return {k: v.detach() for k, v in out.items()}
        derivs = torch.autograd.grad(out["total"].sum(), list(leaves.values()), allow_unused=True)
        coefs = {k: d.to(_stat_dtype(x)) for k, d in zip(leaves, derivs) if d is not None}
        # Pass 2: each tile's share of the gradient, <dLoss/dSums, tile's sums> back-propagated to its pixels.
        grad = torch.zeros_like(pixels)
        for tile in reversed(mine):
            if kept is not None:
                (leaf, parts), kept = kept, None
            else:
                leaf = pixels[(..., *tile.pixels())].detach().requires_grad_()
                parts = self._tile_sums(leaf, tile, idx, t)
            surrogate = sum((coefs[k] * v).sum() for k, v in parts.items() if k in coefs and v.requires_grad)
            if torch.is_tensor(surrogate):
                grad[(..., *tile.pixels())] += torch.autograd.grad(surrogate, leaf)[0]
            del parts, leaf, surrogate
        out = {k: v.detach() for k, v in out.items()}
        # The value is the loss, the gradient (through the view, to the image) is the tiles' gradient.
        surrogate = (x * grad).flatten(1).sum(1)
        out["total"] = surrogate + (out["total"] - surrogate).detach()
        return out

    def _tile_sums(self, leaf: Tensor, tile: Tile, idx: Tensor, t: dict[str, Any]) -> dict[tuple, Tensor]:
        """The sums of one tile's core: squared content errors, style sums and squared pixel differences, [n, …]."""
        feats = self.features(leaf)
        out: dict[tuple, Tensor] = {}
        for l in self.content_layers:
            target = t["content"][l][(..., *tile.whole(l))][idx]
            out["content", l] = losses.content_sums(feats[l][(..., *tile.local(l))], target)
        for l in self.style_layers:
            for j, v in enumerate(self.style_loss.sums(feats[l][(..., *tile.local(l))])):
                out["style", l, j] = v
        if self.tv_weight > 0:
            r, c = tile.rows, tile.cols
            core = (
                slice(r.core_start - r.start, r.core_stop - r.start),
                slice(c.core_start - c.start, c.core_stop - c.start),
            )
            out["tv", "down"], out["tv", "right"] = losses.variation_sums(leaf, *core)
        return out

    def _zero_sums(self, n: int, shapes: dict[str, tuple[int, int, int]], device: torch.device) -> dict[tuple, Tensor]:
        """Sums of no position, with the keys and shapes that `_tile_sums` gives: what a process without tiles
        adds, and the layout of the all-reduced buffer."""
        out: dict[tuple, Tensor] = {("content", l): torch.zeros(n, device=device) for l in self.content_layers}
        for l in self.style_layers:
            empty = torch.zeros(n, shapes[l][0], 0, 0, device=device)
            for j, v in enumerate(self.style_loss.sums(empty)):
                out["style", l, j] = v
        if self.tv_weight > 0:
            out["tv", "down"], out["tv", "right"] = torch.zeros(n, device=device), torch.zeros(n, device=device)
        return out

    def _of_sums(
        self,
        sums: dict[tuple, Tensor],
        shapes: dict[str, tuple[int, int, int]],
        size: tuple[int, int],
        dtype: torch.dtype,
    ):
        """(content errors, style statistics, total variation) of the whole view from its sums: `_terms`' inputs."""
        content = {l: sums["content", l].to(dtype) / math.prod(shapes[l]) for l in self.content_layers}
        stats = {}
        for l in self.style_layers:
            parts = tuple(v for k, v in sums.items() if k[:2] == ("style", l))
            stat = self.style_loss.of_sums(parts, shapes[l][1] * shapes[l][2])
            stats[l] = tuple(v.to(dtype) for v in stat) if isinstance(stat, tuple) else stat.to(dtype)
        tv = None
        if self.tv_weight > 0:
            tv = losses.variation_of_sums(sums["tv", "down"], sums["tv", "right"], size).to(dtype)
        return content, stats, tv

    @torch.no_grad()
    def _content_features(self, x: Tensor) -> dict[str, Tensor]:
        """The content layers' maps of `x` (float32), assembled from tiles' cores when `x` is larger than a tile."""
        if not self.content_layers:  # texture synthesis: no forward at all (a print-size one would not fit)
            return {}
        tiles = self.tiles(tuple(x.shape[-2:]))
        if tiles is None:
            feats = self.features(x, self.content_layers)
            return {l: feats[l].to(_stat_dtype(x)) for l in self.content_layers}
        shapes = self.extractor.feature_shapes(tuple(x.shape[-2:]), self.content_layers)
        out = {l: x.new_empty(len(x), *shapes[l], dtype=_stat_dtype(x)) for l in self.content_layers}
        for tile in tiles:
            feats = self.features(x[(..., *tile.pixels())], self.content_layers)
            for l in self.content_layers:
                out[l][(..., *tile.whole(l))] = feats[l][(..., *tile.local(l))]
        return out

    @torch.no_grad()
    def _style_stats(self, x: Tensor) -> dict[str, Any]:
        """The style layers' statistics of `x`, from tiles' sums when `x` is larger than a tile."""
        tiles = self.tiles(tuple(x.shape[-2:]))
        if tiles is None:
            feats = self.features(x, self.style_layers)
            return {l: self.style_loss.stat(feats[l]) for l in self.style_layers}
        shapes = self.extractor.feature_shapes(tuple(x.shape[-2:]), self.style_layers)
        sums: dict[str, list[Tensor]] = {}
        for tile in tiles:
            feats = self.features(x[(..., *tile.pixels())], self.style_layers)
            for l in self.style_layers:
                parts = [v.double() for v in self.style_loss.sums(feats[l][(..., *tile.local(l))])]
                sums[l] = parts if l not in sums else [a + b for a, b in zip(sums[l], parts)]
        stats = {}
        for l in self.style_layers:
            stat = self.style_loss.of_sums(tuple(sums[l]), shapes[l][1] * shapes[l][2])
            dtype = _stat_dtype(x)
            stats[l] = tuple(v.to(dtype) for v in stat) if isinstance(stat, tuple) else stat.to(dtype)
        return stats


def _stat_dtype(x: Tensor) -> torch.dtype:
    """Statistics are float32 (also under autocast); float64 for a float64 picture (the exactness tests)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


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


def _check_tile_size(tile_size: int | None, extractor: FeatureExtractor, layers: list[str]) -> int | None:
    if tile_size is None:
        return None
    if extractor.smoothing and any(l in extractor.smoothing for l in layers):
        # A softmax over all positions of a map is no sum over positions: tiles cannot reproduce it.
        raise ConfigError(
            "model.tile_size cannot be used with activation smoothing (model.extractor.init_args.smoothing): its "
            "softmax spans the whole picture. Turn one of them off."
        )
    least = max(grid_step(extractor.reach(layers)), extractor.min_input_size(layers))
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < least:
        raise ConfigError(
            f"model.tile_size must be a whole number of pixels of at least {least} (the total stride and minimum "
            f"input of {type(extractor).__name__} up to its deepest layer), got {tile_size!r}; e.g. 512, or null"
        )
    return tile_size


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
