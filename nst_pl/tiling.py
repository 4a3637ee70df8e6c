"""Tiling: a picture larger than a tile computed tile by tile, with the whole picture's features, loss and gradient
on one tile's memory (`model.tile_size`, README "Print size").

    tiles = plan_tiles((h, w), tile_size, extractor.reach(layers), extractor.feature_shapes((h, w), layers))
    maps, sums = measure_tiles(x, tiles, features, ...)     # without a graph: content maps, style sums
    terms = two_pass(x, tiles, tile_sums, zero_sums, loss_of_sums)   # the loss, with its gradient to x

The objective (objective.py) hands in what is its own as callables: a tile's features and sums, and the loss as a
function of the sums. This module knows tiles, not losses.

A tile is a core (the pixels it answers for) plus a halo: the pixels that the core's features look at, taken from the
picture itself and clipped at its border, so a tile at the border sees the same zero padding as the whole picture.
Cores start at multiples of the network's total stride, so the tile's feature grid is the picture's grid, shifted by
a whole number of positions. Every feature position of every layer belongs to exactly one tile: the one whose core
holds the position's top-left pixel (its anchor), so sums over tiles' cores are sums over the picture.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from nst_pl.extractors.reach import Reach

Sums = dict[tuple, Tensor]  # keys such as ("style", layer, j): sums over feature positions, [n, …] each


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in pixels of the picture: input [start, stop), core [core_start, core_stop)."""

    start: int
    stop: int
    core_start: int
    core_stop: int
    # Per layer, the feature positions the tile owns: [first, last) in the picture's map; the tile's own map holds
    # them from first - offset on, where offset = start / stride.
    owned: dict[str, tuple[int, int]]
    offset: dict[str, int]

    def local(self, layer: str) -> slice:
        first, last = self.owned[layer]
        return slice(first - self.offset[layer], last - self.offset[layer])

    def whole(self, layer: str) -> slice:
        return slice(*self.owned[layer])


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span

    def pixels(self) -> tuple[slice, slice]:
        """The tile's input pixels (core and halo) in the picture."""
        return slice(self.rows.start, self.rows.stop), slice(self.cols.start, self.cols.stop)

    def local(self, layer: str) -> tuple[slice, slice]:
        """The owned positions of `layer` in the tile's own feature map."""
        return self.rows.local(layer), self.cols.local(layer)

    def whole(self, layer: str) -> tuple[slice, slice]:
        """The owned positions of `layer` in the picture's feature map."""
        return self.rows.whole(layer), self.cols.whole(layer)

    @property
    def area(self) -> int:
        return (self.rows.stop - self.rows.start) * (self.cols.stop - self.cols.start)


def grid_step(reach: dict[str, tuple[Reach, Reach]]) -> int:
    """The alignment of tile cores: a multiple of every layer's stride (both axes)."""
    return math.lcm(*(r.stride for pair in reach.values() for r in pair))


def plan_tiles(
    size: tuple[int, int],
    tile_size: int,
    reach: dict[str, tuple[Reach, Reach]],
    shapes: dict[str, tuple[int, int, int]],
) -> list[Tile]:
    """Cover a picture of `size` = (h, w) with tiles whose cores are at most about `tile_size` px a side (a multiple
    of the grid step; a picture no larger than a tile is one tile). Row-major order."""
    rows = _spans(size[0], tile_size, {l: r[0] for l, r in reach.items()}, {l: s[1] for l, s in shapes.items()})
    cols = _spans(size[1], tile_size, {l: r[1] for l, r in reach.items()}, {l: s[2] for l, s in shapes.items()})
    return [Tile(r, c) for r in rows for c in cols]


def tiles_of(extractor, layers: list[str], size: tuple[int, int], tile_size: int | None) -> list[Tile] | None:
    """The tiles of `tile_size` px of a picture of `size` = (h, w) for `extractor` up to `layers`; None when tiling is
    off (`tile_size` None) or the picture fits in one tile: the rule for whether a picture is tiled."""
    if tile_size is None or max(size) <= tile_size:
        return None
    return plan_tiles(size, tile_size, extractor.reach(layers), extractor.feature_shapes(size, layers))


def _spans(length: int, tile_size: int, reach: dict[str, Reach], counts: dict[str, int]) -> list[Span]:
    step = math.lcm(*(r.stride for r in reach.values()))
    n = max(1, math.ceil(length / tile_size))
    # Equal cores, each boundary rounded to the grid step; boundaries that collapse (a picture barely larger than a
    # tile with a coarse grid) are dropped.
    inner = sorted({round(i * length / n / step) * step for i in range(1, n)} - {0})
    bounds = [0, *(b for b in inner if b < length), length]
    # The halo before a core: the farthest any owned position looks back, rounded up to the grid step so that the
    # tile starts on the grid. After: the farthest the last owned position (its anchor at core_stop - stride) looks
    # ahead, and at least one pixel (the total-variation term compares each pixel with its right/lower neighbour).
    before = math.ceil(max(-r.lo for r in reach.values()) / step) * step
    after = max(1, *(r.hi - r.stride + 1 for r in reach.values()))
    spans = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        last = i == len(bounds) - 2
        start, stop = max(0, a - before), length if last else min(length, b + after)
        owned = {
            l: (min(a // r.stride, counts[l]), counts[l] if last else min(b // r.stride, counts[l]))
            for l, r in reach.items()
        }
        spans.append(Span(start, stop, a, b, owned, {l: start // r.stride for l, r in reach.items()}))
    return spans


@torch.no_grad()
def measure_tiles(
    x: Tensor,
    tiles: list[Tile],
    features: Callable[[Tensor], dict[str, Tensor]],
    map_layers: list[str],
    sum_layers: list[str],
    shapes: dict[str, tuple[int, int, int]],
    sums_of: Callable[[Tensor], tuple[Tensor, ...]],
    dtype: torch.dtype,
) -> tuple[dict[str, Tensor], dict[str, list[Tensor]]]:
    """`map_layers`' feature maps of `x` assembled from the tiles' cores (in `dtype`), and `sum_layers`' sums
    (`sums_of` each core's map) added up over the tiles in float64: sums of up to ~1e7 positions, differences of
    moments."""
    maps = {layer: x.new_empty(len(x), *shapes[layer], dtype=dtype) for layer in map_layers}
    sums: dict[str, list[Tensor]] = {}
    for tile in tiles:
        feats = features(x[(..., *tile.pixels())])
        for layer in map_layers:
            maps[layer][(..., *tile.whole(layer))] = feats[layer][(..., *tile.local(layer))]
        for layer in sum_layers:
            parts = [v.double() for v in sums_of(feats[layer][(..., *tile.local(layer))])]
            sums[layer] = parts if layer not in sums else [a + b for a, b in zip(sums[layer], parts)]
    return maps, sums


def two_pass(
    x: Tensor,
    tiles: list[Tile],
    tile_sums: Callable[[Tensor, Tile], Sums],
    zero_sums: Sums,
    loss_of_sums: Callable[[Sums], dict[str, Tensor]],
    dtype: torch.dtype,
    all_reduce: Callable[[Tensor], object] | None = None,
) -> dict[str, Tensor]:
    """The loss terms of the view `x` from its tiles, and their gradient to `x`, on one tile's memory.

    Every term is a function of sums over feature positions (style statistics, squared content errors, squared
    pixel differences). Pass 1 adds up the tiles' sums without a graph and takes the derivative of the loss
    (`loss_of_sums`, whose "total" is back-propagated) with respect to the sums; pass 2 back-propagates each tile
    with the surrogate <dLoss/dSums, tile's sums>, whose gradient is the tile's share of the true gradient.

    Args:
        x: The view [n, 3, h, w]; its gradient is the tiles' gradient.
        tiles: The tiles this process computes (all of them, or its share under DDP).
        tile_sums: A tile's sums from its pixels (a leaf [n, 3, th, tw]), differentiable.
        zero_sums: Sums of no position, with the keys and shapes of `tile_sums`: what a process without tiles adds,
            and the layout of the all-reduced buffer.
        loss_of_sums: The terms ("total" among them, each [n]) from the sums over the whole view.
        dtype: The dtype of the derivatives (the statistics' dtype).
        all_reduce: In place, a sum over the processes that share the tiles; None for one process.
    """
    pixels = x.detach()
    backward = torch.is_grad_enabled() and x.requires_grad  # evaluating the loss alone needs no second pass
    # Pass 1: the sums over the tiles, without a graph except for the last tile, whose graph pass 2 uses first (one
    # tile's forward fewer). float64: sums of up to ~1e7 positions, differences of moments.
    sums = {k: v.double() for k, v in zero_sums.items()}
    kept = None
    for i, tile in enumerate(tiles):
        keep = backward and i == len(tiles) - 1
        with torch.set_grad_enabled(keep):
            leaf = pixels[(..., *tile.pixels())].detach().requires_grad_(keep)
            parts = tile_sums(leaf, tile)
        for k, v in parts.items():
            sums[k] += v.detach()
        if keep:
            kept = (leaf, parts)
    if all_reduce is not None:
        flat = torch.cat([v.flatten() for v in sums.values()])
        all_reduce(flat)
        sums = {
            k: part.view_as(v) for (k, v), part in zip(sums.items(), flat.split([v.numel() for v in sums.values()]))
        }
    # The loss from the sums, and its derivative with respect to them.
    leaves = {k: v.detach().requires_grad_(backward) for k, v in sums.items()}
    with torch.set_grad_enabled(backward):
        out = loss_of_sums(leaves)
    if not backward:
        return {k: v.detach() for k, v in out.items()}
    derivs = torch.autograd.grad(out["total"].sum(), list(leaves.values()), allow_unused=True)
    coefs = {k: d.to(dtype) for k, d in zip(leaves, derivs) if d is not None}
    # Pass 2: each tile's share of the gradient, <dLoss/dSums, tile's sums> back-propagated to its pixels.
    grad = torch.zeros_like(pixels)
    for tile in reversed(tiles):
        if kept is not None:
            (leaf, parts), kept = kept, None
        else:
            leaf = pixels[(..., *tile.pixels())].detach().requires_grad_()
            parts = tile_sums(leaf, tile)
        surrogate = sum((coefs[k] * v).sum() for k, v in parts.items() if k in coefs and v.requires_grad)
        if torch.is_tensor(surrogate):
            grad[(..., *tile.pixels())] += torch.autograd.grad(surrogate, leaf)[0]
        del parts, leaf, surrogate
    out = {k: v.detach() for k, v in out.items()}
    # The value is the loss, the gradient (through the view, to the image) is the tiles' gradient.
    surrogate = (x * grad).flatten(1).sum(1)
    out["total"] = surrogate + (out["total"] - surrogate).detach()
    return out
