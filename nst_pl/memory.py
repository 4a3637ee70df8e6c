"""What a step will cost in memory, said before the first step: an estimate, and a clear error when it cannot fit.

    line = check_memory(objective, images, device)   # in Objective.bind: a ConfigError when the step cannot fit

The estimate (float32) adds up:
- the fixed state: the extractor's weights, ~8 image-sized copies (the image, its gradient, the average, Adam's two
  moments, the photo, the view and its gradient) and the content targets;
- what autograd keeps for the backward (from a run on meta tensors), for the whole view or, with tiles, for the
  largest tile;
- the transient: the largest activation's output and gradients (`BACKWARD_TRANSIENT` of them), or the optimiser
  step's image-sized temporaries after the backward (`Schedule.step_copies`: Adam's, the step maps'), whichever is more;
- a measured constant for the rest (`OVERHEAD`).
Measured against it by bench/memory.py (README, "Print size").
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nst_pl.data import PairImages
from nst_pl.errors import ConfigError
from nst_pl.tiling import tiles_of

GIB = 2**30
# Image-sized float32 tensors alive during a step: image, gradient, EMA, Adam's exp_avg and exp_avg_sq, the photo,
# the view (and its gradient in tiled steps).
IMAGE_COPIES = 8
# Activation-sized tensors alive at once beside the saved ones: an output in flight, then the gradients of a layer's
# output and input during the backward.
BACKWARD_TRANSIENT = 3
# Beside the above: the style images, the targets' temporaries, the libraries' buffers and the allocator's slack
# (what bench/memory.py measured above the estimate at 256-1024 px untiled on CPU: 70-140 MiB).
OVERHEAD = 128 * 2**20
# Steps below this size start without a word about memory.
NOTE_FROM = GIB
# Tile sizes suggested when a step does not fit: the largest that does.
SUGGESTED_TILES = (2048, 1536, 1024, 768, 512, 384, 256)


def step_bytes(objective, images: PairImages, tile_size: int | None, step_copies: float = 0.0) -> int:
    """Estimated peak bytes of a full-size step of `objective` on `images` with tiles of `tile_size` (None: whole),
    whose optimiser step holds `step_copies` image-sized temporaries after the backward (its activations freed)."""
    extractor = objective.extractor
    n, _, h, w = images.content.shape
    fixed = OVERHEAD + sum(p.numel() for p in extractor.parameters()) * 4 + IMAGE_COPIES * images.content.numel() * 4
    if objective.content_layers:
        shapes = extractor.feature_shapes((h, w), objective.content_layers)
        fixed += sum(n * c * fh * fw for c, fh, fw in shapes.values()) * 4
    tiles = tiles_of(extractor, objective.layers, (h, w), tile_size)
    regions = [(h, w)] if tiles is None else {(t.rows.stop - t.rows.start, t.cols.stop - t.cols.start) for t in tiles}
    backward = max(_forward_backward_bytes(extractor, objective.layers, region, n) for region in regions)
    return fixed + max(backward, int(step_copies * images.content.numel() * 4))


def _forward_backward_bytes(extractor, layers: list[str], size: tuple[int, int], n: int) -> int:
    saved, largest = extractor.activation_bytes(size, layers)
    return n * (saved + BACKWARD_TRANSIENT * largest)


def available_bytes(device: torch.device) -> tuple[int | None, str]:
    """Memory a run may still take on `device`, and what it is: free GPU memory, or the RAM the kernel says is
    available (bounded by the cgroup's limit inside a container). None when it cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free memory of GPU {device.index or 0}"
    if device.type != "cpu":
        return None, str(device)
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # cgroup v2: the container's limit minus what it uses
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free or 1 << 62, int(limit) - used)
    except (OSError, ValueError):
        pass
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            pass
    return free, "available RAM"


def check_memory(objective, images: PairImages, device: torch.device, step_copies: float = 0.0) -> str | None:
    """The line that says what a step costs, when worth saying (tiles on, or a step of `NOTE_FROM` or more); a
    ConfigError (suggesting a tile size) when it cannot fit."""
    h, w = images.content.shape[-2:]

    def cost(tile_size: int | None) -> int:
        return step_bytes(objective, images, tile_size, step_copies)

    untiled, tile = cost(None), objective.tile_size
    need = untiled if tile is None else cost(tile)
    free, where = available_bytes(device)
    pairs = f" for {len(images.names)} pairs" if len(images.names) > 1 else ""
    line = f"a {w}x{h} px step{pairs} needs about {untiled / GIB:.1f} GiB"
    if tile is not None:
        count = len(tiles_of(objective.extractor, objective.layers, (h, w), tile) or [None])
        line += f" untiled, {need / GIB:.1f} GiB in {count} tile(s) of {tile} px"
    line += f"; {free / GIB:.1f} GiB {where}" if free is not None else ""
    if free is not None and need > free:
        fits = [t for t in SUGGESTED_TILES if t < max(h, w) and cost(t) <= 0.8 * free]
        fix = (
            f"set model.tile_size {fits[0]} (about {cost(fits[0]) / GIB:.1f} GiB)"
            if fits
            else "even small tiles do not fit: lower data.image_size, or run fewer pairs at once"
        )
        raise ConfigError(f"not enough memory: {line}. {fix[0].upper()}{fix[1:]}; the estimate is float32.")
    return line if tile is not None or untiled >= NOTE_FROM else None
