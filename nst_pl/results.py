"""The result files of `nst-pl stylize` (`-o`): where each pair's result goes (`output_paths`), checked before the
libraries load (`check_output`: a folder that cannot be written fails in a second, before any step, and nothing is
created), and written at the end (`write_results`).

    -o out.png          one pair: that file (its suffix names the format: .png, .jpg, .webp, …)
    -o out              one pair: the file out.png (a name without an image type gets .png)
    -o results/         a folder: results/<content>__<style>.png for each pair (so is `-o results` for several pairs,
                        and any existing folder)
    (no -o)             ./<content>__<style>.png for one pair, ./stylized/ for several
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from PIL import Image

from nst_pl.errors import ConfigError, OutputError
from nst_pl.image_files import expanduser
from nst_pl.run_folder import check_writable

# Where the results of several pairs go when no -o is given.
DEFAULT_FOLDER = "stylized"

_IMAGE_SUFFIXES = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def output_paths(output: str | PathLike | None, names: Sequence[str]) -> list[Path]:
    """Where each pair's result goes (see the module doc), for pairs named `names`."""
    if output is None:
        return [Path(f"{names[0]}.png")] if len(names) == 1 else [Path(DEFAULT_FOLDER) / f"{n}.png" for n in names]
    out = expanduser(output)
    folder = out.is_dir() or str(output).endswith(("/", os.sep))
    if out.suffix.lower() in _IMAGE_SUFFIXES and not folder:
        if len(names) > 1:
            raise ConfigError(
                f"-o {output}: {len(names)} (content, style) pairs give {len(names)} results; give a folder to "
                "write them into (e.g. -o results/), or one content and one style image"
            )
        return [out]
    if out.suffix and not folder:
        known = ", ".join(sorted(s for s in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".bmp") if s in _IMAGE_SUFFIXES))
        raise ConfigError(f"-o {output}: unknown image type {out.suffix!r}; use one of {known} (or a folder)")
    if not folder and len(names) == 1:
        return [out.with_name(f"{out.name}.png")]
    return [out / f"{n}.png" for n in names]


def check_output(output: str | PathLike | None, names: Sequence[str]) -> list[Path]:
    """`output_paths`, after checking that their folders can be written (nothing is created)."""
    targets = output_paths(output, names)
    shown = f"-o {output}" if output is not None else "the result"
    for folder in dict.fromkeys(t.parent for t in targets):
        check_writable(folder, f"{shown} ('{folder}')", "a location you can write to for -o, e.g. -o ./out.png")
    return targets


def write_results(images: Sequence[Any], targets: Sequence[Path], run_images: Path | None) -> None:
    """Each pair's result [3, h, w] to its target, atomically, in the format its suffix names (8 bits, like the
    PNGs). A failed write says where the run's own images are: the run is done, and its result is not lost."""
    from nst_pl.image_io import atomic_write_bytes, to_pil  # torch: the run has imported it by now

    for img, target in zip(images, targets):
        buffer = io.BytesIO()
        fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
        to_pil(img).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        try:
            atomic_write_bytes(target, buffer.getvalue())
        except OutputError as err:
            where = f" The run's images are in {run_images} (the last step of each pair)." if run_images else ""
            raise OutputError(f"{err}{where}") from None
