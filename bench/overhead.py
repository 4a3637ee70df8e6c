"""Per-step overhead of nst-pl's Lightning training step against a plain PyTorch loop doing the same maths, and the
time from `nst-pl fit` start to the first step.

    python bench/overhead.py            # 256 px, VGG19, 60 timed steps of each side, taken in turn
    python bench/overhead.py --quick    # smoke run
    python bench/overhead.py --startup-only   # start-up only: the import chain and `nst-pl fit` -> first step
    python bench/overhead.py --layers default # the default recipe's layers instead of the judge's

Both sides use the same extractor object, layers (by default the judge's: content relu4_2, style relu1_1…relu5_1;
`--layers default`: the default recipe's, content relu4_1, style relu1_1…relu4_1), losses (relative Gram),
image size and optimiser (Adam, lr 0.02); nst-pl's step adds the default recipe's Laplacian term and gradient floor
(a copy of the image, the step map and the step's regional part), which the plain loop does not compute, so the ratio
is the Lightning glue plus those. The steps alternate (plain, nst-pl, plain, …)
inside one run, so that load from other processes hits both sides alike; the figure that matters is the ratio of
medians.
Goal: ratio <= 1.03.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONTENT_LAYERS, OFFLINE_VGG16, REPO, STYLE_LAYERS, PlainLoop, median, quiet_trainer  # noqa: E402

from nst_pl.data import PairDataModule  # noqa: E402
from nst_pl.extractors import VGG19  # noqa: E402
from nst_pl.module import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, StyleTransfer  # noqa: E402

CONTENT = REPO / "images" / "tubingen.jpg"
STYLE = REPO / "style" / "starry_night.jpg"
LAYERS = {
    "judge": (CONTENT_LAYERS, STYLE_LAYERS),
    "default": (list(DEFAULT_CONTENT_LAYERS), list(DEFAULT_STYLE_LAYERS)),
}


class Alternate(pl.Callback):
    """Runs one plain-loop step before each of nst-pl's steps and times both: the nst-pl step from the end of the
    plain one to the next step's start (everything Lightning does per step: hooks, logging, optimiser, data)."""

    def __init__(self, loop: PlainLoop):
        self.loop, self.plain, self.nst, self._t = loop, [], [], 0.0

    def on_train_batch_start(self, *args) -> None:
        now = time.perf_counter()
        if self._t:
            self.nst.append(now - self._t)
        self.loop.step()
        self.plain.append(time.perf_counter() - now)
        self._t = time.perf_counter()


def paired_steps(
    extractor, size: int, steps: int, warmup: int, root: str, layers: tuple[list[str], list[str]]
) -> tuple[list[float], list[float]]:
    """Seconds of `steps` plain-loop steps and of `steps` nst-pl steps on `layers` (content, style), taken in turn
    (plain, nst-pl, plain, …) so that load from other processes hits both sides alike, step by step."""
    data = PairDataModule(content=str(CONTENT), style=str(STYLE), image_size=size)
    data.setup()
    images = data.images
    style = images.styles[0][0][None]
    loop = PlainLoop(extractor, images.content, style, 1.0, 10.0, lr=0.02, relative=True, layers=layers)
    # The plain loop's settings, spelled out (the module's defaults are the vgg19 recipe's: style weight 2500, shared
    # relative losses, lr 0.06 (0.02 in coarse phases), EMA 0.5; the EMA would add an image update per step that the
    # plain loop does not do). The recipe's Laplacian term and gradient floor stay on (the module's defaults): the
    # ratio counts their cost.
    model = StyleTransfer(
        extractor,
        content_layers=layers[0],
        style_layers=layers[1],
        style_weight=10.0,
        relative_losses=True,
        ema_decay=None,
        optimizer=lambda params: torch.optim.Adam(params, lr=0.02),
    )
    alternate = Alternate(loop)
    # One step more than timed: the last nst-pl step ends at the next step's start.
    quiet_trainer(warmup + steps + 1, root, [alternate]).fit(model, datamodule=data)
    return alternate.plain[warmup : warmup + steps], alternate.nst[warmup:]


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
    ap.add_argument("--steps", type=int, default=60, help="timed steps of each side")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--layers", choices=sorted(LAYERS), default="judge", help="both sides' layers")
    ap.add_argument("--startup-only", action="store_true", help="only the start-up measures")
    args = ap.parse_args()
    if args.startup_only:
        return startup_table(args.size, rounds=1 if args.quick else 3)
    if args.quick:
        args.size, args.steps = 64, 3
    torch.manual_seed(0)
    extractor = VGG19(weights=None)  # speed does not depend on the weights' values
    with tempfile.TemporaryDirectory() as root:
        plain, nst = paired_steps(extractor, args.size, args.steps, warmup=2, root=root, layers=LAYERS[args.layers])
    ratio = median(nst) / median(plain)
    pairs = sorted(n / p for n, p in zip(nst, plain))
    quartiles = pairs[len(pairs) // 4], pairs[(3 * len(pairs)) // 4]
    print()
    print(f"| measure ({args.size} px, VGG19, {args.layers} layers, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    print(f"| plain PyTorch loop, median s/step ({len(plain)} steps) | {median(plain):.3f} |")
    print(f"| nst-pl training step, median s/step ({len(nst)} steps) | {median(nst):.3f} |")
    print(f"| **overhead ratio nst-pl / plain** (goal <= 1.03) | **{ratio:.3f}** |")
    print(f"| step-by-step ratios nst-pl / plain: quartiles | {quartiles[0]:.3f} - {quartiles[1]:.3f} |")
    # The mean counts what only some steps do (the loss terms handed to the logger every `log_every_n_steps`).
    means = statistics.mean(nst) / statistics.mean(plain)
    print(f"| ratio of the means (every step's cost, the logging steps' included) | {means:.3f} |")
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
