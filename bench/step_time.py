"""Step time on CPU: fp32 against bf16-mixed autocast and channels_last, per step and in time to quality.

    python bench/step_time.py                        # both sections
    python bench/step_time.py --sections step --sizes 256 --rounds 2
    python bench/step_time.py --sections quality --variant bf16

Section `step`: the real training step (`StyleTransfer` through a Lightning Trainer, `common.quiet_trainer`), VGG16
(the offline Caffe weights when present, else random: the time does not depend on the weights), content relu4_2,
style relu1_1…relu5_1, full size every step (no coarse-to-fine), Adam. Variants:
- `fp32`: `trainer.precision 32-true`, the CPU default;
- `bf16`: `trainer.precision bf16-mixed` (autocast: convolutions in bfloat16, losses in float32);
- `fp32_cl`, `bf16_cl`: the same with channels_last (NHWC): the extractor's weights converted once, and its input
  converted in a forward pre-hook (nst_pl has no option for it; this bench applies it itself).
Each round runs every variant once, in an order rotated from round to round (ABCD, BCDA, …), so that a change of
machine load falls on all variants alike; the first `--warmup` steps of each fit are dropped. Printed: median s/step
per variant and its ratio to fp32's median of the same run.

Section `quality`: time to quality of one variant against fp32, with the candidate recipe of bench/quality.py
(raw losses, style weight 1e3, Adam lr 0.02, 60 steps at 128 px and 40 at 181 px then 256 px, EMA 0.5), on
tubingen × starry_night at 256 px, judged every `--eval-every` steps by the independent judge (nst_pl.style_embedding:
style gain and luminance SSIM; judge time excluded). Runs alternate fp32 / variant `--quality-rounds` times (the
pictures are deterministic per variant; the time is the median over the rounds). Printed: both curves at equal steps,
and at equal wall time (each variant's last snapshot within a share of fp32's total time).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CONTENT_LAYERS, OFFLINE_VGG16, REPO, STYLE_LAYERS, StepTimer, quiet_trainer  # noqa: E402

from nst_pl.data import PairDataModule  # noqa: E402
from nst_pl.extractors import VGG16  # noqa: E402
from nst_pl.image_io import load_image  # noqa: E402
from nst_pl.module import StyleTransfer  # noqa: E402

CONTENT = REPO / "images" / "tubingen.jpg"
STYLE = REPO / "style" / "starry_night.jpg"
VARIANTS = {"fp32": ("32-true", False), "bf16": ("bf16-mixed", False), "fp32_cl": ("32-true", True),
            "bf16_cl": ("bf16-mixed", True)}  # fmt: skip
# bench/quality.py's candidate `raw_c2f` with EMA 0.5 (issue 11's pointer).
QUALITY_RECIPE = dict(relative_losses=False, style_weight=1e3, scales=[128, 181], scale_steps=[60, 40], ema_decay=0.5)


def _to_channels_last(module, args):
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def extractors() -> dict[bool, VGG16]:
    """{channels_last: extractor}: one plain VGG16 and one NHWC copy, built once and shared by every fit."""
    real = OFFLINE_VGG16.is_file()
    plain = VGG16(weights=str(OFFLINE_VGG16), normalization="caffe") if real else VGG16(weights=None)
    nhwc = copy.deepcopy(plain).to(memory_format=torch.channels_last)
    nhwc.register_forward_pre_hook(_to_channels_last)
    return {False: plain, True: nhwc}


def fit(extractor, precision: str, size: int, steps: int, callbacks, lr: float = 0.02, **recipe) -> StyleTransfer:
    model = StyleTransfer(
        extractor,
        content_layers=CONTENT_LAYERS,
        style_layers=STYLE_LAYERS,
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        **{"relative_losses": False, "style_weight": 1e3, "ema_decay": None, **recipe},
    )
    data = PairDataModule(content=str(CONTENT), style=str(STYLE), image_size=size)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as root:
        quiet_trainer(steps, root, callbacks, precision=precision).fit(model, datamodule=data)
    return model


def step_section(args, nets) -> dict:
    out = {}
    names = list(args.variants)
    for size in args.sizes:
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                precision, cl = VARIANTS[name]
                timer = StepTimer()
                fit(nets[cl], precision, size, args.warmup + args.steps, [timer])
                times[name] += timer.times[args.warmup :]
                print(f"[step] {size} px {name}: {[round(t, 2) for t in timer.times]} s", flush=True)
            print(f"[step] {size} px round {r + 1}/{args.rounds}, load {os.getloadavg()[0]:.1f}", flush=True)
        med = {n: statistics.median(t) for n, t in times.items()}
        out[size] = {"median_s": med, "ratio_to_fp32": {n: med[n] / med["fp32"] for n in names}, "times": times}
    return out


def quality_section(args, nets, variant: str) -> dict:
    from nst_pl.style_embedding import StyleEmbedding, ssim_luminance

    emb = StyleEmbedding(threads=1)
    photo, painting = load_image(CONTENT, long_side=256), load_image(STYLE)

    class Eval(pl.Callback):
        """Judge every `eval_every` steps; the clock stops while judging."""

        def __init__(self):
            self.curve, self.elapsed, self.t = [], 0.0, None

        def on_train_batch_start(self, trainer, pl_module, *a):
            self.t = self.t or time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, *a):
            step = trainer.global_step
            if step % args.eval_every == 0 or step == trainer.max_steps:
                self.elapsed += time.perf_counter() - self.t
                img = pl_module.output_images()[0]
                gain, ssim = emb.style_gain(img, photo, painting), ssim_luminance(img, photo)
                self.curve.append({"step": step, "seconds": self.elapsed, "gain": gain, "ssim": ssim})
                self.t = time.perf_counter()

    runs: dict[str, list[list[dict]]] = {"fp32": [], variant: []}
    for r in range(args.quality_rounds):
        for name in ("fp32", variant) if r % 2 == 0 else (variant, "fp32"):
            precision, cl = VARIANTS[name]
            ev = Eval()
            fit(nets[cl], precision, 256, args.quality_steps, [ev], **QUALITY_RECIPE)
            runs[name].append(ev.curve)
            curve = ", ".join(f"{p['step']}: {p['gain']:.3f}/{p['ssim']:.3f}/{p['seconds']:.0f}s" for p in ev.curve)
            print(f"[quality] {name} round {r + 1} (load {os.getloadavg()[0]:.1f}): {curve}", flush=True)
    # Same pictures every round (deterministic per variant); the time of each snapshot is the median over rounds.
    curves = {}
    for name, rs in runs.items():
        curves[name] = [dict(p, seconds=statistics.median(r[k]["seconds"] for r in rs)) for k, p in enumerate(rs[0])]
    return curves


def print_quality(curves: dict, variant: str) -> None:
    base, cand = curves["fp32"], curves[variant]
    print(f"\n| step | fp32: gain / SSIM / s | {variant}: gain / SSIM / s |\n|---:|---|---|")
    for a, b in zip(base, cand):
        print(f"| {a['step']} | {a['gain']:.3f} / {a['ssim']:.3f} / {a['seconds']:.1f} | "
              f"{b['gain']:.3f} / {b['ssim']:.3f} / {b['seconds']:.1f} |")  # fmt: skip
    total = base[-1]["seconds"]
    print(f"\n| wall time (share of fp32's {total:.1f} s) | fp32: step, gain / SSIM | {variant}: step, gain / SSIM |")
    print("|---|---|---|")
    for share in (1 / 3, 1 / 2, 2 / 3, 1.0):
        t = share * total
        a = [p for p in base if p["seconds"] <= t * 1.0001] or base[:1]
        b = [p for p in cand if p["seconds"] <= t * 1.0001] or cand[:1]
        a, b = a[-1], b[-1]
        print(f"| {t:.1f} s ({share:.2f}) | {a['step']}, {a['gain']:.3f} / {a['ssim']:.3f} | "
              f"{b['step']}, {b['gain']:.3f} / {b['ssim']:.3f} |")  # fmt: skip


def _onednn_bf16() -> bool | None:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op: absent from some builds
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="step,quality")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--rounds", type=int, default=3, help="fits per variant and size (interleaved)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per fit")
    ap.add_argument("--warmup", type=int, default=2, help="steps dropped at the start of each fit")
    ap.add_argument("--variant", default="fastest", help="quality: the variant against fp32 (default: fastest at 256)")
    ap.add_argument("--quality-steps", type=int, default=120)
    ap.add_argument("--quality-rounds", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")
    torch.set_num_threads(args.threads)
    nets = extractors()
    weights = "offline Caffe VGG16" if OFFLINE_VGG16.is_file() else "VGG16, random weights"
    # bf16 convolutions are fast only where oneDNN finds bf16 instructions (AVX-512 BF16 or AMX); elsewhere autocast
    # falls back to a slow reference path. Printed so that a table says which case it measured.
    cpu = {"capability": torch.backends.cpu.get_cpu_capability(), "onednn_bf16": _onednn_bf16()}
    print(f"{weights}; {args.threads} threads; CPU {cpu}; load average at start {os.getloadavg()}", flush=True)
    results: dict = {"load": [os.getloadavg()], "threads": args.threads, "weights": weights, "cpu": cpu}
    sections = args.sections.split(",")
    if "step" in sections:
        results["step"] = step_section(args, nets)
        results["load"].append(os.getloadavg())
        print(f"\n| variant | {' | '.join(f'{s} px s/step (ratio to fp32)' for s in args.sizes)} |")
        print("|---|" + "---:|" * len(args.sizes))
        for n in args.variants:
            cells = [f"{results['step'][s]['median_s'][n]:.3f} ({results['step'][s]['ratio_to_fp32'][n]:.2f})"
                     for s in args.sizes]  # fmt: skip
            print(f"| {n} | {' | '.join(cells)} |")
    if "quality" in sections:
        variant = args.variant
        if variant == "fastest":
            if "step" not in results:
                ap.error("--variant fastest needs the step section; name a variant")
            ratios = results["step"][args.sizes[0]]["ratio_to_fp32"]
            variant = min((n for n in ratios if n != "fp32"), key=ratios.get)
        results["quality"] = quality_section(args, nets, variant)
        results["load"].append(os.getloadavg())
        print_quality(results["quality"], variant)
    print(f"\nload average (1, 5, 15 min) at start and after each section: {results['load']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
