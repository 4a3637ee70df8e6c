"""Print-size benchmark: peak memory and time of one step, untiled vs tiled vs the plain loop, up to 4096 px.

    python bench/memory.py                       # 1024, 512, 2048, 4096 px (~1 h on 2 shared CPU cores)
    python bench/memory.py --sizes 512 1024      # some sizes only (--kinds: some configurations only)
    python bench/memory.py --quick               # smoke run: 128 / 256 px

Each configuration runs in a fresh process: peak RSS (`getrusage` ru_maxrss) at the end minus the peak right after
the imports, as in bench/scale.py; beside it, nst-pl's own estimate (nst_pl/memory.py) of the same step.
- plain: the plain PyTorch loop of bench/common.py (same objective, bare Adam, no Lightning), untiled;
- untiled / tiled: nst-pl's Lightning training step with `model.tile_size` null / `--tile` px.
VGG19 with random weights (memory and time do not depend on the weights' values), content relu4_2, style
relu1_1…relu5_1, Adam, no coarse-to-fine, the 4:3 photo images/tubingen.jpg resized to the long side (so 4096 x 3072),
the style image at long side min(size, --style-size). Time: the median of the steps after the first (the first also
computes the targets); with one step (4096 px) that step, targets included. CPU s / step (process time, one
thread) is the fairer measure on a shared machine: wall time also counts the neighbours. The untiled step at
4096 px is not run (it needs more memory than this machine has): its estimate is printed instead.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]  # bench/ for its helpers, the checkout for nst_pl

import scale  # noqa: E402  (bench/ on the path first)

GIB = 2**30


def steps_for(size: int) -> int:
    return 3 if size <= 1024 else 2 if size <= 2048 else 1


def tile_for(size: int, tile: int) -> int:
    # Below 2 x the tile the picture is cut in two along its long side (a tile of 3/4 of it).
    return min(tile, size * 3 // 4)


def worker(kind: str, size: int, tile: int, style_size: int) -> dict:
    _, _, _, _, plain_steps, _, _, _, _ = scale._imports()
    import nst_pl.memory as memory

    base = scale._peak_mb()
    steps = steps_for(size)
    data_kw = {"style_size": min(size, style_size)}
    with tempfile.TemporaryDirectory() as root:
        if kind == "plain":
            cpu = []
            loop, images, times = plain_steps(
                scale.CONTENT, scale.STYLE, size, steps, style_weight=3.0, lr=0.007, cpu=cpu, **data_kw
            )
            objective = loop.objective
        else:
            keep, cpu = [], []
            model_kw = {"tile_size": tile if kind == "tiled" else None, "ema_decay": 0.9}
            times = scale._nst_steps(
                1, size, steps, Path(root), warmup=0, model_kw=model_kw, data_kw=data_kw, keep=keep, cpu=cpu
            )
            objective, images = keep[0].objective, keep[0].pair_images
        estimate = memory.step_bytes(objective, images, tile if kind == "tiled" else None)
        tiles = objective.tiles_for(images.content.shape[-2:]) if kind == "tiled" else None
    return {
        "peak_mb": scale._peak_mb() - base,
        "times": times,
        "cpu": cpu,
        "estimate_mb": estimate / 2**20,
        "tiles": len(tiles or [None]),
    }


def estimate_only(size: int, style_size: int) -> float:
    """nst-pl's estimate of the untiled step at `size` (MiB), without running it."""
    import torch
    from common import CONTENT_LAYERS, STYLE_LAYERS, objective_options

    from nst_pl.data import PairImages
    from nst_pl.extractors import VGG19
    from nst_pl.memory import step_bytes
    from nst_pl.objective import Objective

    h, w = size * 3 // 4, size
    images = PairImages(torch.zeros(1).expand(1, 3, h, w), [[torch.zeros(3, 8, 8)]], torch.ones(1, 1), ["a"], [(h, w)])
    objective = Objective(VGG19(weights=None), **objective_options(CONTENT_LAYERS, STYLE_LAYERS))
    return step_bytes(objective, images, None) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 512, 2048, 4096], help="long sides (px)")
    ap.add_argument("--tile", type=int, default=768, help="model.tile_size (px); 3/4 of the picture when smaller")
    ap.add_argument("--style-size", type=int, default=1024, help="largest style image long side (px)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (see bench/scale.py)")
    ap.add_argument("--kinds", nargs="+", default=["untiled", "tiled", "plain"], help="configurations to run")
    ap.add_argument("--quick", action="store_true", help="smoke run: 128 and 256 px")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, size, tile, style_size = args.worker
        print("RESULT " + json.dumps(worker(kind, int(size), int(tile), int(style_size))), flush=True)
        return
    if args.quick:
        args.sizes = [128, 256]
    started = time.time()
    print(
        f"nst-pl print-size benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"{args.threads} thread(s) per process; VGG19 random weights; load average at start "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    print("| long side | kind | tiles | peak MB (RSS) | estimate MB | s / step | CPU s / step | vs untiled (CPU) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        tile = tile_for(size, args.tile)
        untiled_time = None
        for kind in args.kinds:
            if size > 2048 and kind != "tiled":
                if kind == "untiled":
                    est = estimate_only(size, args.style_size)
                    print(f"| {size} | untiled | 1 | not run | {est:.0f} | | | |", flush=True)
                continue
            r = scale._run_worker(args.threads, kind, str(size), str(tile), str(args.style_size), script=Path(__file__))
            t, c = (scale._median(r[k][1:] or r[k]) for k in ("times", "cpu"))
            untiled_time = c if kind == "untiled" else untiled_time
            ratio = f"{c / untiled_time:.2f}x" if untiled_time and kind != "untiled" else ""
            label = f"tiled ({tile} px)" if kind == "tiled" else kind
            cells = [size, label, r["tiles"], f"{r['peak_mb']:.0f}", f"{r['estimate_mb']:.0f}", f"{t:.2f}", f"{c:.2f}"]
            cells.append(ratio)
            print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    print(
        f"\ntotal {time.time() - started:.0f} s; load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
