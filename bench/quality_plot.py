"""The frontier plot of `bench/quality.py`'s results: style gain against SSIM along each run, per pair.

    python bench/quality_plot.py docs/bench/quality/report_default.json [more.json …] -o docs/bench/quality/frontier.png

Each panel is one pair: the classic loop's trajectory (grey, every 10 steps) ending at its final point (star, the
target), and each recipe's trajectory (every evaluation), whose points are filled while the recipe's time is within
1/3 of the classic's and hollow after; the dashed line is the 1/3-time snapshot under the knob `model.style_strength`
(0.5 … 1: the output moved back towards the photo); dotted, Magenta's feed-forward network at strengths 0 … 1. The
shaded corner is where a snapshot dominates the classic's final point.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", type=Path, help="JSON files written by bench/quality.py")
    ap.add_argument("-o", "--out", type=Path, required=True)
    args = ap.parse_args()
    runs = [(path.stem, json.loads(path.read_text())) for path in args.results]
    pairs = list(runs[0][1]["pairs"])
    cols = min(len(pairs), 4)
    rows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax, pair in zip(axes.flat, pairs):
        classic = runs[0][1]["pairs"][pair]["classic"]
        ref = classic[-1]
        ax.plot([p["ssim"] for p in classic], [p["gain"] for p in classic], "-o", color="0.6", ms=3, label="classic")
        ax.plot(ref["ssim"], ref["gain"], "*", color="k", ms=14, label="classic, final")
        magenta = runs[0][1]["pairs"][pair].get("magenta")
        if magenta:  # the feed-forward network's strength 0 … 1 (its style vector from the photo's to the painting's)
            ax.plot([p["ssim"] for p in magenta], [p["gain"] for p in magenta], ":s", color="C3", ms=3, lw=1,
                    label="Magenta (feed-forward), strength 0…1")  # fmt: skip
        for i, (name, run) in enumerate(runs):
            curve = run["pairs"][pair]["recipe"]
            color = f"C{i}"
            ax.plot([p["ssim"] for p in curve], [p["gain"] for p in curve], "-", color=color, lw=1)
            third = [p for p in curve if p["seconds"] <= ref["seconds"] / 3]
            later = [p for p in curve if p["seconds"] > ref["seconds"] / 3]
            ax.plot([p["ssim"] for p in third], [p["gain"] for p in third], "o", color=color, ms=4,
                    label=f"{name}, ≤ 1/3 time")  # fmt: skip
            ax.plot([p["ssim"] for p in later], [p["gain"] for p in later], "o", mfc="none", color=color, ms=4,
                    label=f"{name}, later")  # fmt: skip
            knob = run["pairs"][pair].get("strength_at_third")
            if knob:  # model.style_strength 0.5 … 1 applied to the 1/3-time snapshot
                span = f"{knob[0]['strength']:g}…{knob[-1]['strength']:g}"
                ax.plot([p["ssim"] for p in knob], [p["gain"] for p in knob], "--x", color=color, lw=1, ms=4,
                        label=f"{name} at 1/3 time, style_strength {span}")  # fmt: skip
        x1, y1 = ax.get_xlim()[1], ax.get_ylim()[1]
        ax.fill_between([ref["ssim"], x1], ref["gain"], y1, color="C2", alpha=0.12, lw=0)
        ax.set_title(pair.replace("__", " × "), fontsize=9)
        ax.set_xlabel("SSIM of the luminance to the photo →")
        ax.set_ylabel("style gain (independent judge) →")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(pairs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
