"""PairDataModule: content and style images -> (content, style) pairs, and a loader that shards pairs over ranks.

There is no dataset to iterate in style transfer: the N pairs are fixed and every optimisation step touches all of
them. The "data loader" therefore yields, forever, the indices of the pairs that this rank owns; the module looks the
images up by index. Sharding is done here rather than by Lightning's DistributedSampler, which would reshuffle and pad
(padding repeats pairs, so two ranks would optimise the same pair): rank r owns pairs r, r + W, r + 2W, … (W = world
size). Each pair also gets its file-system-safe output name here (`pair_names`).
"""

from __future__ import annotations

import math
import os
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from nst_pl.errors import ConfigError
from nst_pl.image_io import find_images, load_image, pad_to

PathSpec = str | Sequence[str]
# Above this many pairs a run says how many it starts (data.max_pairs refuses more).
PAIRS_WARNING = 1000


@dataclass
class Pair:
    """One output: a content photo, its style image(s) and how much each style counts (`blend`, sums to 1)."""

    name: str
    content: Path
    styles: list[Path]
    blend: list[float]


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


# Names are cut to this many UTF-8 bytes so that "<name>-NN" stays far below the usual 255-byte limit.
_MAX_NAME_BYTES = 150


def _sanitise(stem: str) -> str:
    """A file-system-safe version of a file stem: unicode letters, digits, '-', '_', '.', '+' survive."""
    # NFC first, so that an accent typed as a combining mark joins its letter instead of becoming "_".
    stem = unicodedata.normalize("NFC", stem)
    chars = [
        c if c in "-_.+" or unicodedata.category(c)[0] in "LMN" else "_"  # Letters, marks (of scripts), numbers.
        for c in stem
    ]
    cleaned = "".join(chars)
    # Runs of "_" collapse and edge "_" go, so that "__" only ever appears as the content/style separator.
    while "__" in cleaned:
        cleaned = cleaned.replace("__", "_")
    return cleaned.strip("_") or "image"


def _truncate_utf8(name: str, limit: int) -> str:
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode("utf-8", errors="ignore")  # Never cut a character in half.


def pair_names(contents: Sequence[Path], styles: Sequence[Sequence[Path]]) -> list[str]:
    """One file-system-safe, unique and stable name per (content, styles) pair.

    The name is ``"<content-stem>__<style-stem>"``, several styles joined with ``"+"``. Characters other than
    unicode letters and digits, ``-``, ``_``, ``.`` and ``+`` (spaces, shell metacharacters, ``/``) become ``_``.
    Duplicates get ``-2``, ``-3``, ... in order of appearance, so the same input list always gives the same
    names; uniqueness is checked case-insensitively, because macOS and Windows file systems are.

    Args:
        contents: The content image of each pair.
        styles: The style images of each pair (one sequence per pair).

    Returns:
        The names, one per pair.
    """
    if len(contents) != len(styles):
        raise ValueError(f"{len(contents)} content images but {len(styles)} style lists: one list per pair")
    bases = []
    for content, pair_styles in zip(contents, styles):
        style_part = "+".join(_sanitise(Path(s).stem) for s in pair_styles) or "nostyle"
        name = f"{_sanitise(Path(content).stem)}__{style_part}"
        # No leading "." (hidden folder) or "-" (read as an option by shell tools).
        name = _truncate_utf8(name.lstrip(".-") or "image", _MAX_NAME_BYTES)
        bases.append(name)

    # A later original name must not be taken by an earlier duplicate's suffix ("a", "a", "a-2").
    reserved = {b.casefold() for b in bases}
    used: set[str] = set()
    names = []
    for base in bases:
        name = base
        if name.casefold() in used:
            k = 2
            while f"{base}-{k}".casefold() in used or f"{base}-{k}".casefold() in reserved:
                k += 1
            name = f"{base}-{k}"
        used.add(name.casefold())
        names.append(name)
    return names


def make_pairs(
    contents: Sequence[Path],
    styles: Sequence[Path],
    pairing: str = "product",
    style_blend: Sequence[float] | None = None,
) -> list[Pair]:
    """Build the list of pairs.

    - `style_blend` given: every content gets ONE pair that blends all styles with these weights.
    - else `product`: every content × every style; `zip`: content i with style i (lists of equal length).
    """
    if style_blend is not None:
        if len(style_blend) != len(styles):
            raise ConfigError(
                f"data.style_blend has {len(style_blend)} value(s) but {len(styles)} style image(s) were given: "
                "give one weight per style image (or drop style_blend to pair every style separately)"
            )
        if not all(w >= 0 and math.isfinite(w) for w in style_blend) or sum(style_blend) <= 0:
            raise ConfigError(f"data.style_blend must be finite, >= 0 and not all zero, got {list(style_blend)}")
        total = float(sum(style_blend))
        groups = [(c, list(styles), [w / total for w in style_blend]) for c in contents]
    elif pairing == "product":
        groups = [(c, [s], [1.0]) for c in contents for s in styles]
    elif pairing == "zip":
        if len(contents) != len(styles):
            raise ConfigError(
                f"data.pairing 'zip' needs as many content as style images, got {len(contents)} and {len(styles)}; "
                "use pairing: product to combine every content with every style"
            )
        groups = [(c, [s], [1.0]) for c, s in zip(contents, styles)]
    else:
        raise ConfigError(f"unknown data.pairing {pairing!r}; choose 'product' or 'zip'")
    names = pair_names([g[0] for g in groups], [g[1] for g in groups])
    return [Pair(n, c, s, w) for n, (c, s, w) in zip(names, groups)]


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
        pairing: Literal["product", "zip"] = "product",
        style_blend: list[float] | None = None,
        image_size: int = 512,
        style_size: int | None = None,
        max_pixels: int = 300_000_000,
        max_pairs: int = 10_000,
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
        for name, value in (("image_size", image_size), ("style_size", style_size)):
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be a positive number of pixels, got {value}")
        if max_pixels < 1:
            raise ConfigError(f"data.max_pixels must be a positive number of pixels (e.g. 300000000), not {max_pixels}")
        self.image_size = image_size
        self.style_size = style_size or image_size
        self.max_pixels = max_pixels
        # Listing files is cheap and catches missing paths before any model is built.
        contents = find_images(_as_list(content), what="content")
        styles = find_images(_as_list(style), what="style")
        self.pairs = make_pairs(contents, styles, pairing, style_blend)
        if len(self.pairs) > max_pairs:
            raise ConfigError(
                f"{len(contents)} content x {len(styles)} style images make {len(self.pairs):,} pairs, above "
                f"data.max_pairs={max_pairs:,}: every pair is optimised at every step. Pass fewer images, use "
                "data.pairing zip, or raise data.max_pairs"
            )
        if len(self.pairs) > PAIRS_WARNING:
            warnings.warn(
                f"{len(self.pairs):,} pairs ({len(contents)} content x {len(styles)} style images): every pair is "
                "optimised at every step and written at every save",
                stacklevel=2,
            )
        # Headers only (no decoding): an image_size that would make any image larger than max_pixels is refused
        # now, naming the option, instead of failing in the allocator while the run's folder already exists.
        self._headers = {p: _header_size(p) for p in dict.fromkeys([*contents, *styles])}
        for paths, size, option in ((contents, self.image_size, "image_size"), (styles, self.style_size, "style_size")):
            for path in dict.fromkeys(paths):
                _check_resized(path, self._headers[path], size, max_pixels, option)
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


def _header_size(path: Path) -> tuple[int, int] | None:
    """(h, w) from the file's header, without decoding; None when it cannot be read (load_image reports that)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # a broken, missing or bomb-sized file: reported by load_image with its own message
        return None
    return h, w


def _check_resized(path: Path, header: tuple[int, int] | None, long_side: int, max_pixels: int, option: str) -> None:
    if header is None:
        return
    h, w = header
    scale = long_side / max(h, w)
    pixels = max(1, round(h * scale)) * max(1, round(w * scale))
    if pixels > max_pixels:
        raise ConfigError(
            f"data.{option} {long_side} would resize '{path}' ({w}x{h}) to {pixels / 1e6:.1f} megapixels, above "
            f"data.max_pixels={max_pixels:,}; choose a smaller data.{option} (e.g. 512)"
        )


def _as_list(spec: PathSpec) -> list[str]:
    if isinstance(spec, (str, os.PathLike)):
        return [spec]
    return list(spec)
