"""Per-step overhead of nst-pl's Lightning training step against a plain PyTorch loop doing the same maths, and the
time from `nst-pl fit` start to the first step.

    python bench/overhead.py            # 256 px, VGG19, 3 alternating rounds of 15 timed steps each
    python bench/overhead.py --quick    # smoke run
    python bench/overhead.py --startup-only   # start-up only: the import chain and `nst-pl fit` -> first step

Both sides use the same extractor object, layers (content relu4_2, style relu1_1…relu5_1), losses (relative Gram),
image size and optimiser (Adam, lr 0.02); nst-pl's step adds the default recipe's Laplacian term, which the plain loop
does not compute, so the ratio is the Lightning glue plus that term. Rounds alternate (plain, nst-pl, plain, …) so
that load from other processes hits both sides alike; the figure that matters is the ratio of medians.
Goal: ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONTENT_LAYERS, OFFLINE_VGG16, REPO, STYLE_LAYERS, PlainLoop, StepTimer, median, quiet_trainer  # noqa: E402

from nst_pl.data import PairDataModule  # noqa: E402
from nst_pl.extractors import VGG19  # noqa: E402
from nst_pl.module import StyleTransfer  # noqa: E402

CONTENT = REPO / "images" / "tubingen.jpg"
STYLE = REPO / "style" / "starry_night.jpg"


def plain_round(extractor, data, steps: int, warmup: int) -> list[float]:
    images = data.images
    loop = PlainLoop(
        extractor,
        images.content,
        images.styles[0][0][None],
        content_weight=1.0,
        style_weight=10.0,
        lr=0.02,
        relative=True,
    )
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        loop.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def nst_round(extractor, size: int, steps: int, warmup: int, root: str) -> list[float]:
    # The plain loop's settings, spelled out (the module's defaults are the vgg19 recipe's: style weight 2500, shared
    # relative losses, lr 0.05 (0.02 in coarse phases), EMA 0.5; the EMA would add an image update per step that the
    # plain loop does not do). The recipe's Laplacian term stays on (the module's default): the ratio counts its cost.
    model = StyleTransfer(
        extractor,
        content_layers=CONTENT_LAYERS,
        style_layers=STYLE_LAYERS,
        style_weight=10.0,
        relative_losses=True,
        ema_decay=None,
        optimizer=lambda params: torch.optim.Adam(params, lr=0.02),
    )
    data = PairDataModule(content=str(CONTENT), style=str(STYLE), image_size=size)
    timer = StepTimer()
    quiet_trainer(warmup + steps, root, [timer]).fit(model, datamodule=data)
    return timer.times[warmup:]


def first_step_latency(size: int, weights: Path | None) -> float:
    """Seconds from launching `python -m nst_pl.cli fit` to the first optimisation step."""
    with tempfile.TemporaryDirectory() as root:
        cmd = [
            sys.executable,
            "-m",
            "nst_pl.cli",
            "fit",
            "--config",
            str(REPO / "nst_pl" / "configs" / "vgg19.yaml"),
            "--data.content",
            str(CONTENT),
            "--data.style",
            str(STYLE),
            "--data.image_size",
            str(size),
            "--trainer.max_steps",
            "1",
            "--trainer.default_root_dir",
            root,
            "--trainer.callbacks+=first_step_stamp.FirstStepStamp",
        ]
        if weights is not None:
            cmd += [
                "--model.extractor",
                "nst_pl.extractors.VGG16",
                "--model.extractor.init_args.weights",
                str(weights),
                "--model.extractor.init_args.normalization",
                "caffe",
            ]
        else:
            cmd += ["--model.extractor.init_args.weights", "null"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "bench"), str(REPO)]))
        start = time.time()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        stamp = float(re.search(r"FIRST_STEP_AT (\d+\.\d+)", out).group(1))
        return stamp - start


def import_seconds(module: str) -> float:
    """Wall time of a fresh `python -c "import <module>"` (interpreter start included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)
    return time.perf_counter() - start


# What `nst-pl fit` has to import before its first step, innermost first: the floor under the start-up time
# (`nst_pl.cli` itself loads neither torch nor Lightning: bench/startup.py times its answers).
IMPORT_CHAIN = ["torch", "torchvision.models", "torchmetrics", "pytorch_lightning", "nst_pl.fit"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=15, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--startup-only", action="store_true", help="only the start-up measures")
    args = ap.parse_args()
    if args.startup_only:
        return startup_table(args.size, rounds=1 if args.quick else 3)
    if args.quick:
        args.size, args.steps, args.rounds = 64, 3, 1
    torch.manual_seed(0)
    extractor = VGG19(weights=None)  # speed does not depend on the weights' values
    data = PairDataModule(content=str(CONTENT), style=str(STYLE), image_size=args.size)
    data.setup()
    plain, nst = [], []
    with tempfile.TemporaryDirectory() as root:
        for r in range(args.rounds):
            plain += plain_round(extractor, data, args.steps, warmup=2)
            nst += nst_round(extractor, args.size, args.steps, warmup=2, root=root)
            print(f"round {r + 1}: plain {median(plain):.3f} s/step, nst-pl {median(nst):.3f} s/step", flush=True)
    ratio = median(nst) / median(plain)
    print()
    print(f"| measure ({args.size} px, VGG19, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    print(f"| plain PyTorch loop, median s/step ({len(plain)} steps) | {median(plain):.3f} |")
    print(f"| nst-pl training step, median s/step ({len(nst)} steps) | {median(nst):.3f} |")
    print(f"| **overhead ratio nst-pl / plain** (goal <= 1.03) | **{ratio:.3f}** |")
    startup_table(args.size, rounds=1 if args.quick else 3, header=False)


def startup_table(size: int, rounds: int, header: bool = True) -> None:
    weights = OFFLINE_VGG16 if OFFLINE_VGG16.exists() else None
    imports = {m: median([import_seconds(m) for _ in range(rounds)]) for m in IMPORT_CHAIN}
    latency = median([first_step_latency(size, weights) for _ in range(rounds)])
    if header:
        print("| measure | value |")
        print("|---|---|")
    for m, t in imports.items():
        print(f"| `python -c 'import {m}'`, median of {rounds} | {t:.2f} s |")
    what = "offline VGG16 file" if weights else "random weights"
    print(
        f"| `nst-pl fit` start -> first step, median of {rounds} ({what}, {size} px; goal <= 5 s) | {latency:.2f} s |"
    )


if __name__ == "__main__":
    main()
