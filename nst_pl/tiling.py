"""Tiles of a picture whose features, inside each tile's core, equal the whole picture's.

    tiles = plan_tiles((h, w), tile_size, extractor.reach(layers), extractor.feature_shapes((h, w), layers))

A tile is a core (the pixels it answers for) plus a halo: the pixels that the core's features look at, taken from the
picture itself and clipped at its border, so a tile at the border sees the same zero padding as the whole picture.
Cores start at multiples of the network's total stride, so the tile's feature grid is the picture's grid, shifted by
a whole number of positions. Every feature position of every layer belongs to exactly one tile: the one whose core
holds the position's top-left pixel (its anchor), so sums over tiles' cores are sums over the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nst_pl.extractors.base import Reach


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
