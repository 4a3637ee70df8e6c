"""Quality against wall time: nst-pl's default recipe versus the classic single-scale Adam loop.

    python bench/quality.py                       # 512 px, tubingen x starry_night, offline VGG16 (../shared)
    python bench/quality.py --pairs all           # every sample pair (2 photos x 2 paintings), ~35 min on 2 cores

Both recipes use the offline VGG16 (Caffe convention) as their feature extractor. Every `--eval-every` steps the
output is scored by one fixed judge (the same offline VGG16, absolute losses): content loss = MSE at relu4_2 against
the photo, style loss = mean over relu1_1…relu5_1 of the Gram MSE against the painting, and torchmetrics SSIM between
output and photo. Judge time is excluded from the wall time.

(a) nst-pl default recipe (StyleTransfer's defaults: relative losses, style weight 3, Adam lr 0.007, EMA 0.9) with
    the shipped configs' coarse-to-fine schedule 128 -> 181 -> 256 px -> target, shortened to --steps-per-scale.
(b) classic loop (seed-study settings): single scale, Adam lr 0.007, Gram/(C·H·W) losses, style weight 1e3.

Goal: (a) reaches (b)'s final judge style loss at equal or better SSIM in <= 1/3 of (b)'s wall time.
Writes a plot (loss vs seconds) and a result sheet to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torchmetrics.functional import structural_similarity_index_measure as ssim

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pytorch_lightning as pl  # noqa: E402
from common import CONTENT_LAYERS, OFFLINE_VGG16, REPO, STYLE_LAYERS, PlainLoop, quiet_trainer, row_sheet  # noqa: E402

from nst_pl import losses  # noqa: E402
from nst_pl.data import PairDataModule  # noqa: E402
from nst_pl.extractors import VGG16  # noqa: E402
from nst_pl.image_io import load_image, to_pil  # noqa: E402
from nst_pl.module import StyleTransfer  # noqa: E402


def vgg16() -> VGG16:
    return VGG16(weights=str(OFFLINE_VGG16), normalization="caffe")


class Judge:
    """Fixed scorer, identical for every recipe: `nst_pl.judge.Judge`'s definition (same layers, absolute losses),
    with the style targets computed once (it runs every few steps) and a scale-free per-layer style measure added."""

    def __init__(self, content: torch.Tensor, style: torch.Tensor):
        self.net = vgg16()
        self.content = content
        with torch.no_grad():
            self.content_f = self.net(content[None], CONTENT_LAYERS + STYLE_LAYERS)[CONTENT_LAYERS[0]]
            sf = self.net(style[None], CONTENT_LAYERS + STYLE_LAYERS)
            self.style_g = {l: losses.gram(sf[l]) for l in STYLE_LAYERS}

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict[str, float]:
        f = self.net(image[None], CONTENT_LAYERS + STYLE_LAYERS)
        per_layer = {l: float(losses.gram_loss(f[l], self.style_g[l])) for l in STYLE_LAYERS}
        return {
            "content": float(losses.content_loss(f[CONTENT_LAYERS[0]], self.content_f)),
            # The absolute mean over layers is what the classic loop optimises; in the Caffe scale relu1_1/relu2_1
            # outweigh relu5_1 by ~1e5, so it measures fine texture and colour only.
            "style": sum(per_layer.values()) / len(STYLE_LAYERS),
            # Scale-free view: each layer's Gram error relative to its target's mean square, then averaged, so every
            # layer (fine to coarse style) counts.
            "style_rel": sum(per_layer[l] / float(self.style_g[l].pow(2).mean()) for l in STYLE_LAYERS)
            / len(STYLE_LAYERS),
            "ssim": float(ssim(image[None].clamp(0, 1), self.content[None], data_range=1.0)),
        }


def run_ours(
    content_path,
    style_path,
    size,
    scales,
    steps_per_scale,
    final_steps,
    eval_every,
    judge,
    root,
    lr=None,
    overrides=None,
):
    scales = [s for s in scales if s < size]
    kw = dict(overrides or {})
    if lr is not None:  # otherwise StyleTransfer's default optimiser
        kw["optimizer"] = lambda params: torch.optim.Adam(params, lr=lr)
    model = StyleTransfer(vgg16(), scales=scales or None, scale_steps=[steps_per_scale] * len(scales) or None, **kw)
    data = PairDataModule(content=str(content_path), style=str(style_path), image_size=size)
    curve: list[dict] = []

    class Eval(pl.Callback):
        def __init__(self):
            self.elapsed, self.t = 0.0, None

        def on_train_batch_start(self, trainer, pl_module, *a):
            if self.t is None:
                self.t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, *a):
            step = trainer.global_step
            if step % eval_every == 0 or step == trainer.max_steps:
                self.elapsed += time.perf_counter() - self.t
                curve.append({"step": step, "seconds": self.elapsed, **judge(pl_module.output_images()[0])})
                self.t = time.perf_counter()

    total = steps_per_scale * len(scales) + final_steps
    quiet_trainer(total, root, [Eval()]).fit(model, datamodule=data)
    return curve, model.output_images()[0], scales


def run_classic(content, style, steps, eval_every, judge):
    loop = PlainLoop(vgg16(), content[None], style[None], content_weight=1.0, style_weight=1e3, lr=0.007)
    curve, elapsed = [], 0.0
    for step in range(1, steps + 1):
        t = time.perf_counter()
        loop.step()
        elapsed += time.perf_counter() - t
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, "seconds": elapsed, **judge(loop.image.detach()[0])})
    return curve, loop.image.detach()[0]


def verdict(ours: list[dict], classic: list[dict], key: str = "style") -> dict:
    target = classic[-1]
    hit = next((p for p in ours if p[key] <= target[key]), None)
    out = {"classic_seconds": target["seconds"], "classic_style": target[key], "classic_ssim": target["ssim"]}
    if hit is None:
        out.update(reached=False)
    else:
        out.update(
            reached=True,
            ours_seconds=hit["seconds"],
            ours_ssim=hit["ssim"],
            ours_step=hit["step"],
            time_ratio=hit["seconds"] / target["seconds"],
            goal_met=hit["seconds"] <= target["seconds"] / 3 and hit["ssim"] >= target["ssim"],
        )
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for pair, r in results.items():
        for name, style in (("ours", "-"), ("classic", "--")):
            xs = [p["seconds"] for p in r[name]]
            axes[0].plot(xs, [p["style"] for p in r[name]], style, label=f"{name} {pair}")
            axes[1].plot(xs, [p["style_rel"] for p in r[name]], style, label=f"{name} {pair}")
            axes[2].plot(xs, [p["ssim"] for p in r[name]], style, label=f"{name} {pair}")
    for ax in axes[:2]:
        ax.set_yscale("log")
    axes[0].set_ylabel("judge style loss (absolute Gram MSE)")
    axes[1].set_ylabel("judge style loss (relative per layer)")
    axes[2].set_ylabel("SSIM to the photo")
    for ax in axes:
        ax.set_xlabel("wall time (s, judge excluded)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--classic-steps", type=int, default=150)
    ap.add_argument("--scales", type=int, nargs="*", default=[128, 181, 256], help="coarse scales (the recipes)")
    ap.add_argument("--steps-per-scale", type=int, default=30)
    ap.add_argument("--final-steps", type=int, default=40)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--pairs", choices=["one", "all"], default="one")
    ap.add_argument("--lr", type=float, default=None, help="Adam step size for ours (default: the module's)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a StyleTransfer argument for ours, e.g. --set ema_decay=null --set style_weight=10",
    )
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    if not OFFLINE_VGG16.exists():
        sys.exit(f"needs the offline VGG16 weights at {OFFLINE_VGG16} (see README, 'Offline weights')")
    contents = sorted((REPO / "images").glob("*.jpg"))
    styles = sorted((REPO / "style").glob("*.jpg"))
    pairs = (
        [(c, s) for c in contents for s in styles]
        if args.pairs == "all"
        else [(REPO / "images" / "tubingen.jpg", REPO / "style" / "starry_night.jpg")]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    results, tiles = {}, []
    for c, s in pairs:
        name = f"{c.stem}__{s.stem}"
        content, style = load_image(c, long_side=args.size), load_image(s, long_side=args.size)
        judge = Judge(content, style)
        classic, classic_img = run_classic(content, style, args.classic_steps, args.eval_every, judge)
        with tempfile.TemporaryDirectory() as root:
            ours, ours_img, scales = run_ours(
                c,
                s,
                args.size,
                args.scales,
                args.steps_per_scale,
                args.final_steps,
                args.eval_every,
                judge,
                root,
                args.lr,
                overrides,
            )
        results[name] = {
            "ours": ours,
            "classic": classic,
            "scales": scales,
            "verdict": {k: verdict(ours, classic, k) for k in ("style", "style_rel")},
        }
        tiles.append((content, style, classic_img, ours_img))
        print(f"{name}: {json.dumps(results[name]['verdict'])}", flush=True)
    (args.out / f"quality_{args.size}.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / f"quality_{args.size}.png")
    row_sheet([[to_pil(t) for t in row] for row in tiles], args.out / f"quality_{args.size}_sheet.jpg")
    print()
    print(
        f"| pair ({args.size} px) | judge style measure | classic: steps, s | classic style / SSIM | "
        "ours reaches it at step, s | ours SSIM there | time ratio | goal (<= 1/3, SSIM >=) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (name, r), key in ((item, k) for item in results.items() for k in ("style", "style_rel")):
        v = r["verdict"][key]
        label = "absolute Gram MSE" if key == "style" else "relative per layer"
        head = (
            f"| {name} | {label} | {args.classic_steps}, {v['classic_seconds']:.0f} | "
            f"{v['classic_style']:.3g} / {v['classic_ssim']:.3f} |"
        )
        if v["reached"]:
            print(
                f"{head} {v['ours_step']}, {v['ours_seconds']:.0f} | {v['ours_ssim']:.3f} | "
                f"{v['time_ratio']:.2f} | {'met' if v['goal_met'] else 'NOT met'} |"
            )
        else:
            print(f"{head} not reached | - | - | NOT met |")


if __name__ == "__main__":
    main()
