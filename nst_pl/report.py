"""The report of `nst-pl compare`: the result record (`Result`) and what is made of a list of them — the metrics
table (`metrics.csv`, `metrics.md`) and the contact sheet (`sheet.png`). Files are written atomically (a reader sees
the previous version or the new one, never a partial file), as every file nst-pl writes.

Running the experiments and scoring them is compare.py's part; it fills the records.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from nst_pl.image_io import atomic_write_bytes

# Sheet layout (pixels). Public so that tests and callers can predict the sheet's size.
LABEL_WIDTH = 240
HEADER_HEIGHT = 24
DEFAULT_TILE = 160

CSV_FIELDS = [
    "experiment",
    "pair",
    "status",
    "extractor",
    "weights",
    "steps",
    "judge_content",
    "judge_style",
    "style_gain",
    "ssim",
    "ssim_luminance",
    "palette",
    "wall_time_s",
    "peak_mem_mb",
    "reason",
]


@dataclass
class Result:
    experiment: str
    pair: str
    status: str = "ok"  # "ok" or "failed"
    extractor: str = ""
    weights: str = ""
    steps: int = 0
    judge_content: float = math.nan
    judge_style: float = math.nan
    style_gain: float = math.nan
    ssim: float = math.nan
    ssim_luminance: float = math.nan
    palette: float = math.nan
    wall_time_s: float = math.nan
    peak_mem_mb: float = math.nan
    reason: str = ""
    # For the sheet, not the table: [3, h, w] tensors and {step: image}.
    content: Any = field(default=None, repr=False)
    style: Any = field(default=None, repr=False)
    snapshots: dict[int, Any] = field(default_factory=dict, repr=False)
    final: Any = field(default=None, repr=False)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_tables(
    results: Sequence[Result], out: Path, judge_description: str, style_gain_judge: str | None = None
) -> None:
    """`out/metrics.csv` (every field) and `out/metrics.md` (the table for people). Raises OutputError.

    `judge_description` names the VGG16 judge, `style_gain_judge` the independent one (None: not measured).
    """
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(CSV_FIELDS)
    for r in results:
        w.writerow([_fmt(getattr(r, k)) if isinstance(getattr(r, k), float) else getattr(r, k) for k in CSV_FIELDS])
    atomic_write_bytes(out / "metrics.csv", table.getvalue().encode())
    md_fields = [f for f in CSV_FIELDS if f not in ("status", "reason")]
    headers = [
        "experiment",
        "pair",
        "extractor",
        "weights",
        "steps",
        "judge content ↓",
        "judge style ↓",
        "style gain ↑",
        "SSIM to content (RGB)",
        "SSIM to content (luminance)",
        "palette distance ↓",
        "wall time (s)",
        "peak mem (MB)",
    ]
    mem_note = (
        "peak torch.cuda.max_memory_allocated"
        if torch.cuda.is_available()
        else "peak RSS increase over the run (sampled every 20 ms)"
    )
    gain_note = (
        f"Style gain by {style_gain_judge}, a network that no experiment optimises: 1 − d(output, painting) / "
        "d(photo, painting) between its style vectors, 0 = the photo's style, 1 = the painting's (several paintings: "
        "the blend-weighted mean)."
        if style_gain_judge
        else "Style gain not measured (the independent judge needs `pip install nst-pl[judge]`)."
    )
    lines = [
        f"Judges: judge content and judge style by {judge_description}: content = MSE at relu4_2, style = mean Gram "
        "MSE over relu1_1…relu5_1 (absolute, not the experiments' own losses; a VGG judge favours VGG experiments). "
        f"{gain_note} SSIM to the photo, no network: RGB counts the colour change, luminance only the structure. "
        "Palette distance, no network: sliced Wasserstein distance between the CIELAB pixels of output and painting "
        "(ΔE-like units, lower = closer to the painting's colours). "
        f"Memory = {mem_note}.",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i < 4 else "---:" for i in range(len(headers))) + "|",
    ]
    for r in results:
        if r.status != "ok":
            cells = [r.experiment, r.pair or "—", f"**failed**: {r.reason}"] + [""] * (len(headers) - 3)
        else:
            cells = [_fmt(getattr(r, k)) for k in md_fields]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    atomic_write_bytes(out / "metrics.md", ("\n".join(lines) + "\n").encode())


def sheet_columns(results: Sequence[Result], snapshots: Sequence[int]) -> list[int]:
    """Snapshot steps shown as columns: those that some successful run reached before its last step."""
    return [s for s in snapshots if any(s in r.snapshots for r in results)]


def make_sheet(results: Sequence[Result], snapshots: Sequence[int], tile: int = DEFAULT_TILE) -> Image.Image:
    """Contact sheet: a label column + one column per content, style, snapshot, final; one row per result.

    Size: (LABEL_WIDTH + tile · (3 + len(columns))) × (HEADER_HEIGHT + tile · rows).
    """
    steps = sheet_columns(results, snapshots)
    final_steps = sorted({r.steps for r in results if r.status == "ok"})
    final_label = f"final (step {final_steps[0]})" if len(final_steps) == 1 else "final"
    headers = ["content", "style"] + [f"step {s}" for s in steps] + [final_label]
    width, height = LABEL_WIDTH + tile * len(headers), HEADER_HEIGHT + tile * len(results)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for j, text in enumerate(headers):
        x = LABEL_WIDTH + j * tile
        draw.text((x + tile // 2, HEADER_HEIGHT // 2), text, fill="black", font=font, anchor="mm")
    for i, r in enumerate(results):
        y = HEADER_HEIGHT + i * tile
        label = r.experiment + (f"\n{r.pair}" if r.pair else "")
        if r.status == "ok" and r.weights == "random":
            label += "\n[untrained: random weights]"
        elif r.status == "ok":
            label += f"\n{r.extractor}, {r.weights}"
        if r.status != "ok":
            label += "\nFAILED: " + r.reason
        _draw_label(draw, font, label, (6, y + 6), LABEL_WIDTH - 12, tile - 12)
        cells = [r.content, r.style] + [r.snapshots.get(s) for s in steps] + [r.final]
        for j, img in enumerate(cells):
            box = (LABEL_WIDTH + j * tile, y)
            if img is None:
                draw.rectangle([box[0] + 2, box[1] + 2, box[0] + tile - 3, box[1] + tile - 3], fill=(225, 225, 225))
                continue
            sheet.paste(_thumb(img, tile - 4), (box[0] + 2, box[1] + 2))
        draw.line([(0, y), (width, y)], fill=(200, 200, 200))
    return sheet


def write_sheet(results: Sequence[Result], snapshots: Sequence[int], out: Path, tile: int = DEFAULT_TILE) -> Path:
    """`out/sheet.png`, the contact sheet (`make_sheet`). Raises OutputError."""
    png = io.BytesIO()
    make_sheet(results, snapshots, tile).save(png, format="PNG", optimize=True)
    path = out / "sheet.png"
    atomic_write_bytes(path, png.getvalue())
    return path


def _thumb(img: torch.Tensor, side: int) -> Image.Image:
    """[3, h, w] in [0, 1] -> a PIL image fitted (aspect kept) and centred in a side × side white square."""
    arr = (img.detach().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    pic = Image.fromarray(arr)
    if max(pic.size) > side:
        pic.thumbnail((side, side), Image.Resampling.LANCZOS)
    elif max(pic.size) < side:  # small outputs are shown enlarged (nearest: the pixels stay visible as they are)
        scale = side / max(pic.size)
        size = (max(1, round(pic.width * scale)), max(1, round(pic.height * scale)))
        pic = pic.resize(size, Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (side, side), "white")
    canvas.paste(pic, ((side - pic.width) // 2, (side - pic.height) // 2))
    return canvas


def _draw_label(draw: ImageDraw.ImageDraw, font, text: str, xy: tuple[int, int], width: int, height: int) -> None:
    """Draw `text` wrapped to `width` px (breaking long names at '_' or anywhere), clipped to `height` px."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for ch in para:
            if draw.textlength(line + ch, font=font) > width:
                cut = line.rfind("_") + 1 if "_" in line[1:] and len(line) - line.rfind("_") < 12 else len(line)
                cut = cut or len(line)
                lines.append(line[:cut])
                line = line[cut:]
            line += ch
        lines.append(line)
    line_h = 12
    for k, line in enumerate(lines[: max(1, height // line_h)]):
        draw.text((xy[0], xy[1] + k * line_h), line, fill="black", font=font)
