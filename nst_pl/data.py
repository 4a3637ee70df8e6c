"""PairDataModule: content and style images -> (content, style) pairs, and a loader that shards pairs over ranks.

There is no dataset to iterate in style transfer: the N pairs are fixed and every optimisation step touches all of
them. The "data loader" therefore yields, forever, the indices of the pairs that this rank owns; the module looks the
images up by index. Sharding is done here rather than by Lightning's DistributedSampler, which would reshuffle and pad
(padding repeats pairs, so two ranks would optimise the same pair): rank r owns pairs r, r + W, r + 2W, … (W = world
size). Which images pair with which, and each pair's file-system-safe name, are pairs.py's (no torch there: the checks
before a run list the same pairs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from nst_pl.image_io import load_image, pad_to
from nst_pl.pairs import IMAGE_SIZE, MAX_PAIRS, MAX_PIXELS, PAIRING, Pair, PathSpec, list_pairs, make_pairs, pair_names

# Pairing and naming (pairs.py) are part of the data module's API.
__all__ = ["Pair", "PairDataModule", "PairImages", "make_pairs", "pair_names", "shard"]


@dataclass
class PairImages:
    """What the module optimises against: every pair's images, decoded and sized, handed over in one piece."""

    content: Tensor  # [N, 3, H, W]: each photo reflect-padded at the bottom/right to a common canvas
    styles: list[list[Tensor]]  # per pair, its K style images [3, h, w] at their own aspect ratio
    blend: Tensor  # [N, K]: each pair's style weights, summing to 1
    names: list[str]
    sizes: list[tuple[int, int]]  # each photo's real (h, w) inside the canvas
    # Each photo's (h, w) in its file, when known: its true aspect ratio (a 1x5000 strip resized to 32 px is 1x32).
    source_sizes: list[tuple[int, int] | None] | None = None


class _ShardIndices(IterableDataset):
    """Yields the same index tensor forever: one "batch" per optimisation step."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = torch.tensor(indices, dtype=torch.long)

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            yield self.indices


def shard(num_pairs: int, rank: int, world_size: int) -> list[int]:
    """Pairs owned by `rank`: a strided slice, so the load differs by at most one pair between ranks."""
    return list(range(rank, num_pairs, world_size))


class PairDataModule(pl.LightningDataModule):
    def __init__(
        self,
        content: PathSpec = "images",
        style: PathSpec = "style",
        pairing: Literal["product", "zip"] = PAIRING,
        style_blend: list[float] | None = None,
        image_size: int = IMAGE_SIZE,
        style_size: int | None = None,
        max_pixels: int = MAX_PIXELS,
        max_pairs: int = MAX_PAIRS,
    ) -> None:
        """Content and style images, paired.

        Args:
            content: Content photo(s): a file, a folder (its images, sorted by name) or a list of files/folders.
            style: Style image(s), same forms as `content`.
            pairing: `product` pairs every content with every style; `zip` pairs them in order.
            style_blend: Blend several styles into each content: one weight per style image (normalised to sum
                to 1). When set, each content gets one pair using all the styles and `pairing` is ignored.
            image_size: Long side of the generated images, in pixels.
            style_size: Long side the style images are resized to (default: `image_size`).
            max_pixels: Refuse input images above this many pixels (read from the header, before decoding):
                a guard against decompression bombs. Larger photos are decoded at reduced scale when possible.
            max_pairs: Refuse more pairs than this (every pair is optimised at every step, and its images are
                written at every save): a guard against a `product` of two large folders. Above 1000 pairs a
                warning says how many there are.
        """
        super().__init__()
        # Listing files and reading headers is cheap and catches missing paths before any model is built.
        self.pairs, self._headers = list_pairs(
            content, style, pairing, style_blend, image_size, style_size, max_pixels, max_pairs
        )
        self.image_size = image_size
        self.style_size = style_size or image_size
        self.max_pixels = max_pixels
        self.images: PairImages | None = None  # decoded in `setup`

    def setup(self, stage: str | None = None) -> None:
        if self.images is not None:
            return
        cache: dict[tuple[Path, int], Tensor] = {}

        def load(path: Path, size: int) -> Tensor:
            key = (Path(path), size)
            if key not in cache:
                cache[key] = load_image(path, long_side=size, max_pixels=self.max_pixels)
            return cache[key]

        photos = [load(p.content, self.image_size) for p in self.pairs]
        sizes = [tuple(im.shape[-2:]) for im in photos]
        # Pairs of different aspect ratios share one [N, 3, H, W] parameter: each is reflect-padded at the
        # bottom/right to the largest height and width, and the padding is cropped off every saved image.
        height = max(h for h, _ in sizes)
        width = max(w for _, w in sizes)
        self.images = PairImages(
            content=torch.stack([pad_to(im, height, width) for im in photos]),
            styles=[[load(s, self.style_size) for s in p.styles] for p in self.pairs],
            blend=torch.tensor([p.blend for p in self.pairs], dtype=torch.float32),
            names=[p.name for p in self.pairs],
            sizes=sizes,
            source_sizes=[self._headers.get(p.content) for p in self.pairs],
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return DataLoader(_ShardIndices(shard(len(self.pairs), rank, world)), batch_size=None, num_workers=0)
