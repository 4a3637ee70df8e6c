"""The (content, style) pairs of a run, without torch: which images pair with which, what each pair is called, and the
checks of the `data` options that need no pixel (`list_pairs`). PairDataModule (data.py) builds its pairs here, and
the checks before a run (early_checks.py) call the same function before torch and Lightning are imported.

Each pair gets its file-system-safe output name here (`pair_names`).
"""

from __future__ import annotations

import math
import os
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from nst_pl.errors import ConfigError
from nst_pl.image_files import check_decodes, check_resized, find_images

PathSpec = str | Sequence[str]
# Above this many pairs a run says how many it starts (data.max_pairs refuses more).
PAIRS_WARNING = 1000
# The `data` options' defaults that the checks before a run need (PairDataModule's signature takes them from here).
PAIRING = "product"
IMAGE_SIZE = 512
MAX_PIXELS = 300_000_000
MAX_PAIRS = 10_000


@dataclass
class Pair:
    """One output: a content photo, its style image(s) and how much each style counts (`blend`, sums to 1)."""

    name: str
    content: Path
    styles: list[Path]
    blend: list[float]


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


def list_pairs(
    content: PathSpec,
    style: PathSpec,
    pairing: str = PAIRING,
    style_blend: Sequence[float] | None = None,
    image_size: int = IMAGE_SIZE,
    style_size: int | None = None,
    max_pixels: int = MAX_PIXELS,
    max_pairs: int = MAX_PAIRS,
    decode: bool = False,
) -> tuple[list[Pair], dict[Path, tuple[int, int] | None]]:
    """The pairs of the `data` options (see PairDataModule), and each input's (h, w) from its file (None when its
    header cannot be read: loading it says why). Every check that needs no pixels is made here: sizes, missing files,
    pairing, the number of pairs, the pixels after resizing; with `decode`, every file is also decoded (cheaply:
    image_files.check_decodes), so that a corrupt image is refused too."""
    for name, value in (("image_size", image_size), ("style_size", style_size)):
        if value is not None and value < 1:
            raise ConfigError(f"data.{name} must be a positive number of pixels, got {value}")
    if max_pixels < 1:
        raise ConfigError(f"data.max_pixels must be a positive number of pixels (e.g. 300000000), not {max_pixels}")
    contents = find_images(_as_list(content), what="content")
    styles = find_images(_as_list(style), what="style")
    pairs = make_pairs(contents, styles, pairing, style_blend)
    if len(pairs) > max_pairs:
        raise ConfigError(
            f"{len(contents)} content x {len(styles)} style images make {len(pairs):,} pairs, above "
            f"data.max_pairs={max_pairs:,}: every pair is optimised at every step. Pass fewer images, use "
            "data.pairing zip, or raise data.max_pairs"
        )
    if len(pairs) > PAIRS_WARNING:
        warnings.warn(
            f"{len(pairs):,} pairs ({len(contents)} content x {len(styles)} style images): every pair is "
            "optimised at every step and written at every save",
            stacklevel=3,
        )
    # Headers only, unless `decode`: an image_size that would make any image larger than max_pixels is refused now,
    # naming the option, instead of failing in the allocator while the run's folder already exists.
    read = (lambda p: check_decodes(p, max_pixels)) if decode else _header_size
    sizes = {p: read(p) for p in dict.fromkeys([*contents, *styles])}
    for paths, size, option in ((contents, image_size, "image_size"), (styles, style_size or image_size, "style_size")):
        for path in dict.fromkeys(paths):
            if sizes[path] is not None:
                check_resized(path, sizes[path], size, max_pixels, option)
    return pairs, {p: (wh[1], wh[0]) if wh else None for p, wh in sizes.items()}


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding; None when it cannot be read (load_image says why)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # a broken, missing or bomb-sized file: reported by load_image with its own message
        return None


def _as_list(spec: PathSpec) -> list[str]:
    if isinstance(spec, (str, os.PathLike)):
        return [spec]
    return list(spec)
