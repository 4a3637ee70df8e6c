"""`nst-pl compare`: run several experiment configs on the same pairs and put the results side by side.

    nst-pl compare --configs configs/experiments/*.yaml --data.content images/tubingen.jpg \
        --data.style style/starry_night.jpg --steps 300 --image_size 128 --snapshots 100,200 --out out/study \
        --judge_weights ../shared/weights/vgg16_caffe_hed.pth --judge_normalization caffe \
        --override 'alexnet*:model.extractor.init_args.weights=null'

Each config is an ordinary `nst-pl fit` config; they run one after the other in this process, each through NSTCLI
(so every option, link and forced callback of `nst-pl fit` applies), each into its own TensorBoard run
`<out>/runs/<experiment>/` (`tensorboard --logdir <out>/runs` compares them). Then every output is scored by one
fixed judge network (`nst_pl.judge.Judge`), and `<out>/` receives:

- `sheet.png`: one row per experiment (and pair), columns content, style, the output at each snapshot step, final;
- `metrics.csv`, `metrics.md`: judge content loss, judge style loss, SSIM to the content, steps, wall time, peak
  memory, and for failed experiments the reason;
- scalars `judge/content`, `judge/style`, `judge/ssim` (and `compare/wall_time_s`, `compare/peak_mem_mb`) in each
  experiment's TensorBoard run.

A failing experiment (weights that cannot be downloaded, a bad option, a diverged loss) is recorded as failed with
its reason; the others still run. The exit status is 1 when any experiment failed.
"""
from __future__ import annotations

import argparse
import csv
import ctypes
import fnmatch
import gc
import glob
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from PIL import Image, ImageDraw, ImageFont

from nst_pl.images import load_image

# Sheet layout (pixels). Public so that tests and callers can predict the sheet's size.
LABEL_WIDTH = 240
HEADER_HEIGHT = 24
DEFAULT_TILE = 160

CSV_FIELDS = [
    "experiment", "pair", "status", "extractor", "weights", "steps", "judge_content", "judge_style", "ssim",
    "wall_time_s", "peak_mem_mb", "reason",
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
    ssim: float = math.nan
    wall_time_s: float = math.nan
    peak_mem_mb: float = math.nan
    reason: str = ""
    # For the sheet, not the table: [3, h, w] tensors and {step: image}.
    content: Any = field(default=None, repr=False)
    style: Any = field(default=None, repr=False)
    snapshots: dict[int, Any] = field(default_factory=dict, repr=False)
    final: Any = field(default=None, repr=False)


# ------------------------------------------------------------------------------------------------ arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nst-pl compare",
        description="Run several nst-pl experiment configs on the same (content, style) pairs; write a contact sheet, "
        "a metrics table (CSV + Markdown) measured by one fixed judge network, and one TensorBoard run per experiment.",
        allow_abbrev=False,
    )
    p.add_argument("--options", metavar="YAML", help="a file of defaults for the options below (keys as the option "
                   "names, e.g. configs/compare_quick.yaml); command-line options win")
    p.add_argument("--configs", nargs="+", metavar="YAML", help="experiment configs (globs are expanded)")
    p.add_argument("--data.content", dest="content", nargs="+", help="content image(s)/folder(s) (default: each config's)")
    p.add_argument("--data.style", dest="style", nargs="+", help="style image(s)/folder(s) (default: each config's)")
    p.add_argument("--steps", type=int, help="optimisation steps of every experiment (default: each config's max_steps)")
    p.add_argument("--image_size", type=int, help="long side of the outputs in px (default: each config's)")
    p.add_argument("--snapshots", help="comma-separated steps to show on the sheet besides the final image, e.g. "
                   "1000,10000 (steps at or beyond the run's end are dropped)")
    p.add_argument("--out", help="output folder (default: out/compare)")
    p.add_argument("--judge_weights", help="judge VGG16 weights: imagenet (default), a local state-dict file, or null "
                   "(random: tests only)")
    p.add_argument("--judge_normalization", help="judge input normalisation: auto (default), imagenet, caffe, none")
    p.add_argument("--tile", type=int, help=f"side of one image cell on the sheet in px (default {DEFAULT_TILE})")
    p.add_argument("--override", nargs="+", action="extend", metavar="[PATTERN:]KEY=VALUE",
                   help="extra `nst-pl fit` option for every experiment, e.g. model.extractor.init_args.weights=null; "
                   "with PATTERN: (a glob on the experiment name) only for matching ones, e.g. "
                   "'alexnet*:model.extractor.init_args.weights=null'")
    return p


DEFAULTS = {
    "configs": None, "content": None, "style": None, "steps": None, "image_size": None, "snapshots": None,
    "out": "out/compare", "judge_weights": "imagenet", "judge_normalization": "auto", "tile": DEFAULT_TILE,
    "override": [],
}
# Keys accepted in an --options file (the long option names without dashes; data.* as written on the command line).
_FILE_KEYS = {"data.content": "content", "data.style": "style"}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    ns = parser.parse_args(list(argv))
    opts = dict(DEFAULTS)
    if ns.options:
        raw = yaml.safe_load(Path(ns.options).read_text()) or {}
        if not isinstance(raw, dict):
            parser.error(f"{ns.options}: expected a mapping of option names to values")
        for key, value in raw.items():
            key = _FILE_KEYS.get(key, key)
            if key not in DEFAULTS:
                parser.error(f"{ns.options}: unknown option {key!r}; valid: {', '.join(sorted(DEFAULTS))}")
            opts[key] = value
    for key in DEFAULTS:
        value = getattr(ns, key)
        if value is None:
            continue
        if key == "override":  # file overrides first, command line after: the later one wins in NSTCLI
            opts[key] = list(opts[key] or []) + list(value)
        else:
            opts[key] = value
    args = argparse.Namespace(**opts)
    if not args.configs:
        parser.error("give the experiment configs: --configs configs/experiments/*.yaml")
    args.configs = _expand(args.configs, parser)
    args.snapshots = _parse_snapshots(args.snapshots, parser)
    for key in ("content", "style"):
        value = getattr(args, key)
        setattr(args, key, [value] if isinstance(value, str) else value)
    if isinstance(args.judge_weights, str) and args.judge_weights.lower() in ("null", "none"):
        args.judge_weights = None
    for o in args.override:
        if "=" not in o:
            parser.error(f"--override {o!r}: expected KEY=VALUE or PATTERN:KEY=VALUE")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def _expand(patterns: Sequence[str] | str, parser: argparse.ArgumentParser) -> list[Path]:
    """Expand globs (the shell usually has, but an --options file or a quoted pattern has not)."""
    out: list[Path] = []
    for pat in [patterns] if isinstance(patterns, str) else patterns:
        hits = sorted(glob.glob(str(pat))) if glob.has_magic(str(pat)) else [str(pat)]
        if not hits:
            parser.error(f"--configs {pat!r} matches no file")
        out += [Path(h) for h in hits]
    missing = [str(p) for p in out if not p.is_file()]
    if missing:
        parser.error(f"config file(s) not found: {', '.join(missing)}")
    names = [p.stem for p in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        parser.error(f"two configs share the experiment name(s) {dupes} (a config's file name is its run's name)")
    return out


def _parse_snapshots(value: Any, parser: argparse.ArgumentParser) -> list[int]:
    if value in (None, ""):
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        steps = sorted({int(str(s).strip()) for s in items if str(s).strip()})
    except ValueError:
        parser.error(f"--snapshots {value!r}: expected comma-separated step numbers, e.g. 1000,10000")
    if any(s < 1 for s in steps):
        parser.error(f"--snapshots must be >= 1, got {steps}")
    return steps


def overrides_for(experiment: str, overrides: Sequence[str]) -> list[str]:
    """The `--KEY VALUE` arguments that apply to `experiment` ('PATTERN:' restricts one to matching names)."""
    out: list[str] = []
    for o in overrides:
        key, value = o.split("=", 1)
        if ":" in key:
            pattern, key = key.split(":", 1)
            if not fnmatch.fnmatch(experiment, pattern):
                continue
        out += [f"--{key.removeprefix('--')}", value]
    return out


# ------------------------------------------------------------------------------------------------ one run
class PeakMemory:
    """Peak memory of a block: CUDA -> torch.cuda.max_memory_allocated; CPU -> peak RSS above the RSS at entry,
    sampled every 20 ms from /proc/self/statm (torch's CPU allocations are invisible to tracemalloc)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.peak_mb = math.nan

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return self
        gc.collect()
        try:  # give freed heap back to the OS, so an earlier run's memory does not hide this run's growth
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        self._base = self._peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> bool:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._base) / 2**20
        return False


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # no /proc: fall back to the process high-water mark
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_experiment(config: Path, args: argparse.Namespace, judge, out: Path) -> list[Result]:
    """Run one config through NSTCLI, score its outputs, log the scores to its TensorBoard run."""
    from nst_pl.cli import NSTCLI, TRAINER_DEFAULTS
    from nst_pl.data import PairDataModule
    from nst_pl.module import StyleTransfer

    name = config.stem
    run_dir = out / "runs" / name
    if run_dir.exists():  # a rerun replaces the old run: two event files in one run would mix in TensorBoard
        shutil.rmtree(run_dir)
    every = reduce(math.gcd, args.snapshots) if args.snapshots else 0
    logger = {"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
              "init_args": {"save_dir": str(out / "runs"), "name": name, "version": ""}}
    cli_args = ["--config", str(config)]
    if args.content:
        cli_args += ["--data.content", _list_arg(args.content)]
    if args.style:
        cli_args += ["--data.style", _list_arg(args.style)]
    if args.image_size:
        cli_args += ["--data.image_size", str(args.image_size)]
    if args.steps:
        cli_args += ["--trainer.max_steps", str(args.steps)]
    cli_args += [
        "--image_logger.every_n_steps", str(every),
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger", yaml.safe_dump(logger, default_flow_style=True).strip(),
        "--trainer.enable_progress_bar", "false",
    ]
    cli_args += overrides_for(name, args.override)

    cuda = torch.cuda.is_available()
    argv0 = sys.argv
    try:
        # NSTCLI gets its arguments from `args`; an `nst-pl compare …` command line in sys.argv would only make
        # LightningCLI warn that both were given.
        sys.argv = sys.argv[:1]
        with PeakMemory(cuda) as mem:
            cli = NSTCLI(
                StyleTransfer, PairDataModule, trainer_defaults=TRAINER_DEFAULTS, seed_everything_default=0,
                save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False, run=False,
                args=cli_args, parser_kwargs={"exit_on_error": False},
            )
            model, trainer = cli.model, cli.trainer
            start = time.perf_counter()
            trainer.fit(model, datamodule=cli.datamodule)
            wall = time.perf_counter() - start
    except Exception as err:
        # Not SystemExit/KeyboardInterrupt: Lightning turns Ctrl-C and SIGTERM into SystemExit, and those must stop
        # the whole comparison (main() still writes the tables for the experiments done so far).
        return [Result(name, "", status="failed", reason=_reason(err))]
    finally:
        sys.argv = argv0
    try:
        return _score_and_log(name, args, judge, model, trainer, wall, mem.peak_mb)
    except Exception as err:  # a judge that cannot score this output must not stop the other experiments
        return [Result(name, "", status="failed", reason="scoring failed: " + _reason(err))]


def _score_and_log(name, args, judge, model, trainer, wall: float, peak_mb: float) -> list[Result]:
    results: list[Result] = []

    extractor = model.extractor
    weights = _short_weights(str(extractor.weights))
    log_dir = Path(trainer.log_dir)
    outputs = model.output_images()
    tb = trainer.logger.experiment if hasattr(trainer.logger, "experiment") else None
    for i, (pair, (h, w)) in enumerate(zip(model.pair_names, model.sizes)):
        content = model.content_images[i, :, :h, :w].cpu()
        styles = [s.cpu() for s in model.style_images[i]]
        score = judge.score(outputs[i], content, styles, model.style_mix[i].tolist())
        snaps = {}
        for s in args.snapshots:
            png = log_dir / "images" / pair / f"step_{s:06d}.png"
            if s < trainer.global_step and png.is_file():
                snaps[s] = load_image(png)
        results.append(Result(
            name, pair, extractor=type(extractor).__name__, weights=weights, steps=trainer.global_step,
            judge_content=score["content"], judge_style=score["style"], ssim=score["ssim"], wall_time_s=wall,
            peak_mem_mb=peak_mb, content=content, style=styles[0], snapshots=snaps, final=outputs[i],
        ))
    if tb is not None:
        # One run per experiment: the same tags in every run, so TensorBoard overlays them. Pair means first, then
        # each pair under its own tag when there are several.
        step = trainer.global_step
        for key, attr in (("content", "judge_content"), ("style", "judge_style"), ("ssim", "ssim")):
            tb.add_scalar(f"judge/{key}", sum(getattr(r, attr) for r in results) / len(results), step)
            if len(results) > 1:
                for r in results:
                    tb.add_scalar(f"judge/{key}/{r.pair}", getattr(r, attr), step)
        tb.add_scalar("compare/wall_time_s", wall, step)
        tb.add_scalar("compare/peak_mem_mb", peak_mb, step)
        tb.flush()
    return results


def _list_arg(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else yaml.safe_dump(list(values), default_flow_style=True).strip()


def _short_weights(weights: str) -> str:
    return weights if weights in ("imagenet", "random") else os.path.basename(weights)


def _reason(err: BaseException) -> str:
    """One line for the table: the error's first line, with a hint for weights that cannot be fetched."""
    from nst_pl.extractors import WeightsError

    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cause = err
    while cause is not None and not isinstance(cause, WeightsError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        text = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
        text += (" — run it with random weights (--override 'NAME*:model.extractor.init_args.weights=null') or a "
                 "local file (--override 'NAME*:model.extractor.init_args.weights=PATH')")
    else:
        text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------ outputs
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def write_tables(results: Sequence[Result], out: Path, judge_description: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in results:
            w.writerow([_fmt(getattr(r, k)) if isinstance(getattr(r, k), float) else getattr(r, k) for k in CSV_FIELDS])
    md_fields = ["experiment", "pair", "extractor", "weights", "steps", "judge_content", "judge_style", "ssim",
                 "wall_time_s", "peak_mem_mb"]
    headers = ["experiment", "pair", "extractor", "weights", "steps", "judge content ↓", "judge style ↓",
               "SSIM to content", "wall time (s)", "peak mem (MB)"]
    mem_note = ("peak torch.cuda.max_memory_allocated" if torch.cuda.is_available()
                else "peak RSS increase over the run (sampled every 20 ms)")
    lines = [
        f"Judge: {judge_description}; content = MSE at relu4_2, style = mean Gram MSE over relu1_1…relu5_1 "
        f"(absolute, not the experiments' own losses); memory = {mem_note}.",
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
    (out / "metrics.md").write_text("\n".join(lines) + "\n")


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


def _thumb(img: torch.Tensor, side: int) -> Image.Image:
    """[3, h, w] in [0, 1] -> a PIL image fitted (aspect kept) and centred in a side × side white square."""
    arr = (img.detach().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
    pic = Image.fromarray(arr)
    if max(pic.size) > side:
        pic.thumbnail((side, side), Image.Resampling.LANCZOS)
    elif max(pic.size) < side:  # small outputs are shown enlarged (nearest: the pixels stay visible as they are)
        scale = side / max(pic.size)
        pic = pic.resize((max(1, round(pic.width * scale)), max(1, round(pic.height * scale))), Image.Resampling.NEAREST)
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


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from nst_pl.judge import Judge

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = Judge(args.judge_weights, args.judge_normalization, device="cuda" if torch.cuda.is_available() else None)
    print(f"[compare] judge: {judge.description}; {len(args.configs)} experiment(s) -> {out}", flush=True)
    results: list[Result] = []
    interrupted: BaseException | None = None
    for k, config in enumerate(args.configs, 1):
        print(f"[compare] {k}/{len(args.configs)} {config.stem} …", flush=True)
        try:
            rs = run_experiment(config, args, judge, out)
        except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C / SIGTERM: keep what is done, then stop
            interrupted = err
            print(f"[compare] interrupted during {config.stem}: writing the results so far", flush=True)
            break
        for r in rs:
            if r.status == "ok":
                print(f"[compare]   {r.pair}: content {r.judge_content:.4g}  style {r.judge_style:.4g}  "
                      f"ssim {r.ssim:.3f}  {r.wall_time_s:.1f} s  {r.peak_mem_mb:.0f} MB", flush=True)
            else:
                print(f"[compare]   FAILED: {r.reason}", flush=True)
        results += rs
    _fill_failed_rows(results, args)
    write_tables(results, out, judge.description)
    make_sheet(results, args.snapshots, args.tile).save(out / "sheet.png", optimize=True)
    failed = [r.experiment for r in results if r.status != "ok"]
    print(f"[compare] wrote {out / 'sheet.png'}, {out / 'metrics.csv'}, {out / 'metrics.md'}; "
          f"TensorBoard: tensorboard --logdir {out / 'runs'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
          flush=True)
    if interrupted is not None:
        return 130
    return 1 if failed else 0


def _fill_failed_rows(results: list[Result], args: argparse.Namespace) -> None:
    """A failed experiment still shows the content and style of the first pair, so the sheet stays a grid."""
    ok = next((r for r in results if r.status == "ok"), None)
    for r in results:
        if r.status == "ok":
            continue
        if ok is not None:
            r.content, r.style = ok.content, ok.style
        elif args.content and args.style:
            try:
                size = args.image_size or 256
                from nst_pl.images import find_images

                r.content = load_image(find_images(args.content, what="content")[0], long_side=size)
                r.style = load_image(find_images(args.style, what="style")[0], long_side=size)
            except Exception:  # the sheet is still written, with empty cells
                pass


if __name__ == "__main__":
    sys.exit(main())
