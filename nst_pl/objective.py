"""The objective of style transfer, without Lightning: targets, their relative scales and the weighted loss terms.

    objective = Objective(extractor, content_layers=[...], style_layers=[...], ...)   # every option by keyword
    objective.bind(pair_images)                     # the pairs to optimise
    terms = objective(image[idx], idx, size=(h, w)) # {"total": [n], "content": [n], "style/relu1_1": [n], ...}

The loss sees a view of the image at `size`: the image itself, or during the coarse phases of the coarse-to-fine
schedule (schedule.py) a downscaled copy. Targets (content features, style statistics and their scales) are computed
once per view size.

With `tile_size`, a view larger than a tile is computed tile by tile with the same loss and gradient (tiling.py):
`tiles_for` decides, once per size, and both the targets (`_measure`) and the loss (`__call__`) follow it.

Departures from Gatys et al. (2015):
- with `relative_losses` the losses are divided by the mean square of their targets, so one set of weights works for
  every extractor and normalisation (raw feature scales differ by ~3 orders of magnitude between them): `true` divides
  each layer by its own target's, which gives every layer the same say; `shared` divides all the style layers by one
  number (and the content layers by another), which keeps the paper's proportions between layers (for Gram losses
  the low layers dominate: colour and fine texture);
- the Gram matrix is normalised by C·H·W (see `losses.gram`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import nst_pl.losses as losses
from nst_pl.data import PairImages
from nst_pl.errors import ConfigError
from nst_pl.extractors import FeatureExtractor
from nst_pl.image_io import resize_long_side
from nst_pl.memory import check_memory
from nst_pl.tiling import Sums, Tile, grid_step, measure_tiles, tiles_of, two_pass

# Targets at one view size: {"content": {layer: [N, C, h, w]}, "style": [{layer: stats [N, …]} per style slot],
# "scale": {("content" | "style", layer): [N]}}, and the pixel terms' (`pixel_targets`).
Targets = dict[str, Any]


class Objective:
    """Content, style and total-variation losses of a batch of generated images against their pairs' targets.

    The options are `StyleTransfer`'s of the same names, which documents them for users and holds their defaults.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        *,
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        content_layer_weights: Sequence[float] | None,
        style_layer_weights: Sequence[float] | None,
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        laplacian_weight: float,
        coarse_luminance_weight: float,
        style_loss: str,
        relative_losses: bool | str,
        tile_size: int | None,
    ) -> None:
        self.extractor = extractor
        self.content_layers = list(content_layers)
        self.style_layers = list(style_layers)
        self.layers = list(dict.fromkeys(self.content_layers + self.style_layers))
        for name in self.layers:
            extractor.layer_index(name)  # unknown names fail here, with the valid ones listed
        self.content_layer_weights = _layer_weights(content_layer_weights, self.content_layers, "content")
        self.style_layer_weights = _layer_weights(style_layer_weights, self.style_layers, "style")
        weights = dict(content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight)
        pixel_weights = dict(laplacian_weight=laplacian_weight, coarse_luminance_weight=coarse_luminance_weight)
        _check_options({**weights, **pixel_weights}, style_loss, relative_losses)
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.laplacian_weight, self.coarse_luminance_weight = laplacian_weight, coarse_luminance_weight
        self.style_loss = losses.STYLE_LOSSES[style_loss]
        self.relative_losses = relative_losses
        self.tile_size = _check_tile_size(tile_size, extractor, self.layers)
        self._tiles: dict[tuple[int, int], list[Tile] | None] = {}
        self.images: PairImages | None = None
        self.step_memory: str | None = None
        self._targets: dict[tuple[int, int], Targets] = {}
        self._device: torch.device | None = None

    # ------------------------------------------------------------------------------------------------ pairs
    def bind(
        self, images: PairImages, smallest_view: int | None = None, device: torch.device | None = None, step_copies=0.0
    ) -> None:
        """Take the pairs to optimise, and check that they can be: every view down to `smallest_view` (the first
        coarse scale's long side; default the full size) must be large enough for the deepest layer, and with a
        `device`, a full-size step (its step maps' `step_copies` too) must fit in its memory (memory.py)."""
        self.images = images
        self._targets.clear()
        check_sizes(self.extractor, self.layers, images, smallest_view or max(images.content.shape[-2:]))
        self.step_memory = check_memory(self, images, device, step_copies) if device is not None else None

    # -------------------------------------------------------------------------------------- features, tiles
    def features(self, x: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        if self._device != x.device:  # the extractor follows the image to its device
            self.extractor.to(x.device)
            self._device = x.device
        return self.extractor(x, layers or self.layers)

    def tiles_for(self, size: Sequence[int]) -> list[Tile] | None:
        """The tiles of a picture of `size` = (h, w) (cached); None when it is computed whole: the one decision that
        the targets (`_measure`) and the loss (`__call__`) follow."""
        size = (int(size[0]), int(size[1]))
        if size not in self._tiles:
            self._tiles[size] = tiles_of(self.extractor, self.layers, size, self.tile_size)
        return self._tiles[size]

    @torch.no_grad()
    def _measure(self, x: Tensor, map_layers: list[str], stat_layers: list[str]) -> tuple[dict, dict]:
        """`map_layers`' feature maps (float32) and `stat_layers`' style statistics of `x`, from tiles when `x` is
        larger than a tile."""
        layers, dtype = map_layers + stat_layers, stat_dtype(x)
        if not layers:  # texture synthesis: no content forward at all (a print-size one would not fit)
            return {}, {}
        tiles = self.tiles_for(x.shape[-2:])
        if tiles is None:
            feats = self.features(x, layers)
            maps = {layer: feats[layer].to(dtype) for layer in map_layers}
            return maps, {layer: self.style_loss.stat(feats[layer]) for layer in stat_layers}
        shapes = self.extractor.feature_shapes(tuple(x.shape[-2:]), layers)
        features = functools.partial(self.features, layers=layers)
        maps, sums = measure_tiles(x, tiles, features, map_layers, stat_layers, shapes, self.style_loss.sums, dtype)
        stats = {}
        for layer in stat_layers:
            count = shapes[layer][1] * shapes[layer][2]  # positions of the whole map
            stats[layer] = _cast(self.style_loss.of_sums(tuple(sums[layer]), count), dtype)
        return maps, stats

    # ---------------------------------------------------------------------------------------------- targets
    @torch.no_grad()
    def targets(self, size: tuple[int, int], device: torch.device) -> Targets:
        """Content features, style statistics and loss scales of every pair at view `size`, computed once."""
        if size in self._targets:
            return self._targets[size]
        photo = downscale(self.images.content.to(device), size)
        content, _ = self._measure(photo, self.content_layers, [])
        # Style images keep their aspect ratio and are scaled with the view, so that brush strokes keep their size
        # relative to the picture at every scale.
        ratio = max(size) / max(self.images.content.shape[-2:])
        style = []  # one dict per style slot k: layer -> statistics stacked over pairs
        for k in range(self.images.blend.shape[1]):
            per_pair = []
            for styles in self.images.styles:
                s = styles[k].to(device)
                _, stats = self._measure(resize_long_side(s, _style_long_side(s, ratio))[None], [], self.style_layers)
                per_pair.append({layer: self.style_loss.target_of(stats[layer]) for layer in self.style_layers})
            style.append({layer: _stack([p[layer] for p in per_pair]) for layer in self.style_layers})
        scale = {}
        if self.relative_losses:
            weights = (
                dict(zip(self.content_layers, self.content_layer_weights)),
                dict(zip(self.style_layers, self.style_layer_weights)),
            )
            blend = self.images.blend.to(device)
            scale = relative_scales(self.relative_losses, content, style, blend, self.style_loss, *weights)
        full = tuple(self.images.content.shape[-2:])
        pixels = pixel_targets(photo, full, self.laplacian_weight, self.coarse_luminance_weight)
        self._targets[size] = {"content": content, "style": style, "scale": scale, **pixels}
        return self._targets[size]

    # ------------------------------------------------------------------------------------------------- loss
    def term_names(self) -> list[str]:
        content = [f"content/{layer}" for layer in self.content_layers]
        style = (f"style/{layer}" for layer in self.style_layers)
        return ["total", "content", "style", "tv", "laplacian", "luminance", *content, *style]

    def __call__(
        self,
        image: Tensor,
        idx: Tensor,
        size: tuple[int, int] | None = None,
        shard: tuple[int, int] = (0, 1),
        all_reduce: Callable[[Tensor], Any] | None = None,
    ) -> dict[str, Tensor]:
        """Every loss term of the images `image` ([n, 3, H, W], pairs `idx`) seen at view `size` (default: their own
        size), each [n].

        In a tiled step, `shard` = (rank, world size) says which tiles this process computes (every `world`-th
        from `rank` on); `all_reduce` (in place, a sum over the processes) then joins the processes' sums. The
        terms are the whole loss on every process, and "total" back-propagates this process's tiles only.
        """
        size = tuple(size or image.shape[-2:])
        targets = self.targets(size, image.device)
        x = downscale(image, size)
        tiles = self.tiles_for(size)
        if tiles is None:
            feats = self.features(x)
            content = {
                layer: losses.content_loss(feats[layer], targets["content"][layer][idx])
                for layer in self.content_layers
            }
            stats = {layer: self.style_loss.stat(feats[layer]) for layer in self.style_layers}
            tv = losses.total_variation(x) if self.tv_weight > 0 else None
            terms = self._terms(idx, targets, content, stats, tv)
            return with_pixel_terms(terms, x, idx, targets, self.laplacian_weight, self.coarse_luminance_weight)
        rank, world = shard
        shapes = self.extractor.feature_shapes(size, self.layers)
        terms = two_pass(
            x,
            tiles[rank::world],
            tile_sums=lambda leaf, tile: self._tile_sums(leaf, tile, idx, targets),
            zero_sums=self._zero_sums(len(idx), shapes, x.device),
            loss_of_sums=lambda sums: self._terms(idx, targets, *self._terms_inputs(sums, shapes, size, stat_dtype(x))),
            dtype=stat_dtype(x),
            all_reduce=all_reduce if world > 1 else None,
        )
        # Every rank has the whole view: the term's value on each, its gradient from one (DDP adds the ranks' up).
        weights = self.laplacian_weight, self.coarse_luminance_weight
        return with_pixel_terms(terms, x, idx, targets, *weights, grad=rank == 0)

    def _terms(
        self, idx: Tensor, targets: Targets, content: dict[str, Tensor], stats: dict[str, Any], tv: Tensor | None
    ) -> dict[str, Tensor]:
        """The weighted terms from each content layer's mean squared error, each style layer's statistic and the
        total variation (None when its weight is 0)."""
        out: dict[str, Tensor] = {}
        total_content = torch.zeros(len(idx), dtype=torch.float32, device=idx.device)  # texture synthesis: no content
        for layer, w in zip(self.content_layers, self.content_layer_weights):
            term = content[layer]
            if self.relative_losses:
                term = term / targets["scale"]["content", layer][idx]
            out[f"content/{layer}"] = term
            total_content = total_content + w * term
        style = torch.zeros_like(total_content)
        blend = self.images.blend.to(idx.device)[idx]  # [n, K]
        for layer, w in zip(self.style_layers, self.style_layer_weights):
            term = sum(
                blend[:, k] * self.style_loss.compare(stats[layer], _index(targets["style"][k][layer], idx))
                for k in range(blend.shape[1])
            )
            if self.relative_losses:
                term = term / targets["scale"]["style", layer][idx]
            out[f"style/{layer}"] = term
            style = style + w * term
        out["content"], out["style"] = total_content, style
        out["tv"] = tv if tv is not None else torch.zeros_like(total_content)
        out["laplacian"] = torch.zeros_like(total_content)  # `with_pixel_terms` adds these to the total
        out["luminance"] = torch.zeros_like(total_content)
        out["total"] = self.content_weight * total_content + self.style_weight * style + self.tv_weight * out["tv"]
        return out

    # ------------------------------------------------------------------------------------ tiles' sums (tiling.py)
    def _tile_sums(self, leaf: Tensor, tile: Tile, idx: Tensor, targets: Targets) -> Sums:
        """The sums of one tile's core: squared content errors, style sums and squared pixel differences, [n, …]."""
        feats = self.features(leaf)
        out: Sums = {}
        for layer in self.content_layers:
            target = targets["content"][layer][(..., *tile.whole(layer))][idx]
            out["content", layer] = losses.content_sums(feats[layer][(..., *tile.local(layer))], target)
        for layer in self.style_layers:
            for j, v in enumerate(self.style_loss.sums(feats[layer][(..., *tile.local(layer))])):
                out["style", layer, j] = v
        if self.tv_weight > 0:
            r, c = tile.rows, tile.cols
            core = (
                slice(r.core_start - r.start, r.core_stop - r.start),
                slice(c.core_start - c.start, c.core_stop - c.start),
            )
            out["tv", "down"], out["tv", "right"] = losses.variation_sums(leaf, *core)
        return out

    def _zero_sums(self, n: int, shapes: dict[str, tuple[int, int, int]], device: torch.device) -> Sums:
        """Sums of no position, with the keys and shapes that `_tile_sums` gives."""
        out: Sums = {("content", layer): torch.zeros(n, device=device) for layer in self.content_layers}
        for layer in self.style_layers:
            empty = torch.zeros(n, shapes[layer][0], 0, 0, device=device)
            for j, v in enumerate(self.style_loss.sums(empty)):
                out["style", layer, j] = v
        if self.tv_weight > 0:
            out["tv", "down"], out["tv", "right"] = torch.zeros(n, device=device), torch.zeros(n, device=device)
        return out

    def _terms_inputs(
        self, sums: Sums, shapes: dict[str, tuple[int, int, int]], size: tuple[int, int], dtype: torch.dtype
    ) -> tuple[dict[str, Tensor], dict[str, Any], Tensor | None]:
        """`_terms`' inputs (content errors, style statistics, total variation) of the whole view from its sums."""
        content = {layer: sums["content", layer].to(dtype) / math.prod(shapes[layer]) for layer in self.content_layers}
        stats = {}
        for layer in self.style_layers:
            parts = tuple(v for k, v in sums.items() if k[:2] == ("style", layer))
            stats[layer] = _cast(self.style_loss.of_sums(parts, shapes[layer][1] * shapes[layer][2]), dtype)
        tv = None
        if self.tv_weight > 0:
            tv = losses.variation_of_sums(sums["tv", "down"], sums["tv", "right"], size).to(dtype)
        return content, stats, tv


def pixel_targets(photo: Tensor, full: tuple[int, int], laplacian_weight: float, luminance_weight: float) -> Targets:
    """The targets of the pixel-space terms at the photo's view `photo` (of a picture of `full` = (h, w) px) whose
    weight is above 0: "laplacian": (its Laplacian, the pooling, its energy [N]: the term's scale), and at a coarse
    view "luminance": its pattern of light and dark (standardised: no scale)."""
    out: Targets = {}
    if laplacian_weight > 0:
        pool = losses.laplacian_pool(max(full))
        lap = losses.laplacian(photo, pool)
        out["laplacian"] = lap, pool, lap.pow(2).flatten(1).mean(1) + 1e-8
    if luminance_weight > 0 and tuple(photo.shape[-2:]) != tuple(full):
        out["luminance"] = losses.luminance_layout(photo)
    return out


def with_pixel_terms(
    out: dict[str, Tensor],
    x: Tensor,
    idx: Tensor,
    targets: Targets,
    laplacian_weight: float,
    luminance_weight: float,
    grad: bool = True,
) -> dict[str, Tensor]:
    """`out` with the pixel-space terms of the whole view `x` against the photo's (`pixel_targets`) added to the total
    (`grad`: back-propagated): the Laplacian relative to the photo's energy, and at a coarse view the luminance."""
    if "laplacian" in targets:
        target, pool, energy = targets["laplacian"]
        term = losses.laplacian_loss(x, target[idx], pool) / energy[idx]
        out["laplacian"] = term if grad else term.detach()
        out["total"] = out["total"] + laplacian_weight * out["laplacian"]
    if "luminance" in targets:
        term = losses.luminance_loss(x, targets["luminance"][idx])
        out["luminance"] = term if grad else term.detach()
        out["total"] = out["total"] + luminance_weight * out["luminance"]
    return out


def relative_scales(
    mode: bool | str,
    content: dict[str, Tensor],
    style: list[dict[str, Any]],
    blend: Tensor,
    style_loss: losses.StyleLoss,
    content_weights: dict[str, float],
    style_weights: dict[str, float],
) -> dict[tuple[str, str], Tensor]:
    """The denominators of the relative losses, [N] per ("content" | "style", layer), from the targets: each layer's
    target mean square (`relative_losses: true`), or their layer-weighted mean, one number per loss (`shared`).
    `style` holds one dict of targets per style slot, blended with `blend` [N, K]."""
    scale = {}
    for layer in content_weights:
        scale["content", layer] = content[layer].pow(2).flatten(1).mean(1) + 1e-8  # [N]
    for layer in style_weights:
        scale["style", layer] = sum(blend[:, k] * style_loss.scale(style[k][layer]) for k in range(len(style))) + 1e-8
    if mode == "shared":
        for kind, weights in (("content", content_weights), ("style", style_weights)):
            shared = sum(w * scale[kind, layer] for layer, w in weights.items())
            scale.update({(kind, layer): shared for layer in weights})
    return scale


def check_sizes(extractor: FeatureExtractor, layers: list[str], images: PairImages, smallest_view: int) -> None:
    """Every view (down to `smallest_view` px, long side) and style image must be large enough for the deepest of
    `layers`: say which option to change."""
    min_side = extractor.min_input_size(layers)
    full = max(images.content.shape[-2:])
    ratio = smallest_view / full
    photo = min(min(h, w) for h, w in images.sizes) * ratio
    deepest = max(layers, key=extractor.layer_index)
    what = f"for {type(extractor).__name__} up to layer {deepest}: it needs at least {min_side} px"
    if photo < min_side:
        # The narrowest photo decides; a very elongated one (a 1x5000 strip) cannot be fixed by image_size.
        i = min(range(len(images.sizes)), key=lambda k: min(images.sizes[k]))
        h, w = images.sizes[i]
        sources = images.source_sizes
        sh, sw = (sources[i] if sources and sources[i] else None) or (h, w)  # the true aspect ratio
        needed = math.ceil(min_side * max(sh, sw) / min(sh, sw) / ratio)
        if needed > 4 * full:
            raise ConfigError(
                f"the photo of pair '{images.names[i]}' is too elongated ({sw}x{sh} px in its file): "
                f"{type(extractor).__name__} up to layer {deepest} needs a short side of at least {min_side} px, "
                f"which this photo would reach only at data.image_size {needed}. Crop that photo to a less extreme "
                "aspect ratio, or leave it out of data.content."
            )
        raise ConfigError(
            f"an image side of {int(photo)} px is too small {what}. Raise data.image_size (to at least {needed}) "
            "(or the first of model.scales), or use shallower layers."
        )
    style = min(
        min(s.shape[-2:]) * _style_long_side(s, ratio) / max(s.shape[-2:]) for styles in images.styles for s in styles
    )
    if style < min_side:
        raise ConfigError(
            f"a style image side of {int(style)} px is too small {what}. Raise data.style_size (or the first of "
            "model.scales), or use shallower layers."
        )


def downscale(x: Tensor, size: tuple[int, int]) -> Tensor:
    """`x` resized to the view `size` = (h, w) (antialiased bilinear); `x` itself at its own size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def stat_dtype(x: Tensor) -> torch.dtype:
    """Statistics are float32 (also under autocast); float64 for a float64 picture (the exactness tests)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _cast(stat: Tensor | tuple[Tensor, ...], dtype: torch.dtype) -> Tensor | tuple[Tensor, ...]:
    return tuple(v.to(dtype) for v in stat) if isinstance(stat, tuple) else stat.to(dtype)


def _style_long_side(style: Tensor, view_ratio: float) -> int:
    """Long side of a style image for a view `view_ratio` times the full size."""
    return max(1, round(max(style.shape[-2:]) * view_ratio))


def _check_options(weights: dict[str, float], style_loss: str, relative_losses: bool | str) -> None:
    """The loss weights (by option name), the style loss and the relative mode, each refused with its valid values."""
    for name, w in weights.items():
        if not (w >= 0 and math.isfinite(w)):
            raise ConfigError(f"model.{name} must be a finite number >= 0, got {w}")
    if style_loss not in losses.STYLE_LOSSES:
        raise ConfigError(f"unknown model.style_loss {style_loss!r}; choose one of {', '.join(losses.STYLE_LOSSES)}")
    if relative_losses not in (True, False, "shared"):
        raise ConfigError(f"model.relative_losses must be true, false or shared, got {relative_losses!r}")


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
    if extractor.smoothing and any(layer in extractor.smoothing for layer in layers):
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


def _stack(items: list):
    """Stack per-pair statistics (tensors [1, …] or tuples of them) into [N, …]."""
    if isinstance(items[0], tuple):
        return tuple(torch.cat([it[j] for it in items]) for j in range(len(items[0])))
    return torch.cat(items)


def _index(stat, idx: Tensor):
    return tuple(s[idx] for s in stat) if isinstance(stat, tuple) else stat[idx]
