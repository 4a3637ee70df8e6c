"""Fixed-seed tiny runs whose pixels must not change under a refactor, and the generator of their reference.

    python tests/pixel_runs.py      # rewrites tests/reference/pixels-<CPU capability>.pt from the current code

Each run states every recipe value (loss weights, relative losses, averaging, optimiser, schedule …) instead of
relying on the module's defaults, so that a change of the default recipe does not move these pixels. One thread:
a convolution's summation order, hence its last bits, depends on the thread count, and on the CPU's instruction
set: one reference per `torch.backends.cpu.get_cpu_capability()` (AVX2, AVX512), since five Adam steps carry the
last bits of another instruction set up to 7e-3 (measured: an AVX2 machine against AVX-512 references).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCES = REPO / "tests" / "reference"


def reference_path(capability: str | None = None) -> Path:
    """The reference file of this CPU's instruction set (or of `capability`)."""
    return REFERENCES / f"pixels-{capability or torch.backends.cpu.get_cpu_capability()}.pt"


SIZE = 32
STEPS = 5

# The recipe every run starts from; each run changes a few of these.
BASE = dict(
    content_layers=["relu2_1"],
    style_layers=["relu1_1", "relu2_1"],
    content_layer_weights=None,
    style_layer_weights=None,
    content_weight=1.0,
    style_weight=1000.0,
    tv_weight=0.0,
    laplacian_weight=0.0,
    coarse_luminance_weight=0.0,
    style_loss="gram",
    relative_losses="shared",
    init="content",
    scales=None,
    scale_steps=None,
    coarse_lr_factor=1.0,
    tile_size=None,
    ema_decay=None,
    preserve_color="none",
    palette_transfer=0.0,
    gradient_floor=0.0,
    flat_step_shift=0.0,
    style_strength=1.0,
)
ADAM = functools.partial(torch.optim.Adam, lr=0.02)
LBFGS = functools.partial(torch.optim.LBFGS, lr=0.5, max_iter=1, history_size=5)
PHOTOS, PAINTINGS = REPO / "images", REPO / "style"

# name -> (model options over BASE, data options, optimiser)
RUNS = {
    "plain": ({}, {}, ADAM),
    "coarse_to_fine": ({"scales": [16, 24], "scale_steps": [2, 1], "coarse_lr_factor": 0.5}, {}, ADAM),
    "tiled": ({"tile_size": 12, "scales": [16], "scale_steps": [2], "tv_weight": 0.3}, {}, ADAM),
    "ema": ({"ema_decay": 0.8, "relative_losses": True, "style_strength": 0.7}, {}, ADAM),
    "lbfgs": ({"relative_losses": False, "style_weight": 3.0, "preserve_color": "histogram"}, {}, LBFGS),
    "pairs_and_blend": (
        {"style_loss": "mean_std", "init": "noise", "style_layer_weights": [1.0, 3.0], "ema_decay": 0.5},
        {"content": [str(PHOTOS / "tubingen.jpg"), str(PHOTOS / "chelsea.jpg")], "style_blend": [0.3, 0.7]},
        ADAM,
    ),
    "wasserstein_style_init": (
        {"style_loss": "wasserstein", "init": "style", "tv_weight": 0.1, "preserve_color": "luminance"},
        {"content": str(PHOTOS / "chelsea.jpg"), "pairing": "zip", "style": str(PAINTINGS / "starry_night.jpg")},
        ADAM,
    ),
}


def run(name: str, root: Path) -> dict:
    """One run of `RUNS` on a seeded untrained VGG16: its raw images and its output images."""
    import pytorch_lightning as pl

    from nst_pl.data import PairDataModule
    from nst_pl.extractors import VGG16
    from nst_pl.module import StyleTransfer

    model_kw, data_kw, optimizer = RUNS[name]
    torch.manual_seed(0)
    model = StyleTransfer(
        extractor=VGG16(weights=None, normalization="imagenet"), optimizer=optimizer, **{**BASE, **model_kw}
    )
    data = PairDataModule(
        **{"content": str(PHOTOS / "tubingen.jpg"), "style": str(PAINTINGS), "image_size": SIZE, **data_kw}
    )
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)
    return {"image": model.image.detach().clone(), "outputs": model.output_images()}


def cli_run(root: Path) -> dict:
    """`nst-pl fit` from a config that states every value: the command line's path (parsing, preflight, seed)."""
    import yaml

    from nst_pl.cli import main

    model = {**BASE, "scales": [16], "scale_steps": [2], "ema_decay": 0.6, "tv_weight": 0.2}
    model["extractor"] = {
        "class_path": "nst_pl.extractors.VGG16",
        "init_args": {"weights": None, "normalization": "imagenet"},
    }
    model["optimizer"] = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.03}}
    config = {
        "seed_everything": 0,
        "model": model,
        "data": {"content": str(PHOTOS / "tubingen.jpg"), "style": str(PAINTINGS), "image_size": SIZE},
        "trainer": {
            "max_steps": STEPS,
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(root),
            "enable_progress_bar": False,
        },
    }
    path = root / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    ckpt = torch.load(next(root.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    return {"image": ckpt["state_dict"]["image"], "image_ema": ckpt["state_dict"]["image_ema"]}


def run_all(root: Path) -> dict[str, dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {**{name: run(name, root / name) for name in RUNS}, "cli": cli_run(root / "cli")}
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    import tempfile

    os.environ.setdefault("PL_DISABLE_FORK", "1")
    with tempfile.TemporaryDirectory() as tmp:
        pixels = run_all(Path(tmp))
    path = reference_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pixels, path)
    for name, tensors in pixels.items():
        print(name, tuple(tensors["image"].shape), file=sys.stderr)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
