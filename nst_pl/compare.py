"""`nst-pl compare`: run several experiment configs on the same pairs and put the results side by side.

    nst-pl compare --configs 'experiments/*' --data.content images/tubingen.jpg \
        --data.style style/starry_night.jpg --steps 300 --image_size 128 --snapshots 100,200 --out out/study \
        --judge_weights path/to/vgg16_caffe.pth --judge_normalization caffe \
        --override 'alexnet*:model.extractor.init_args.weights=null'

Each config is an ordinary `nst-pl fit` config; they run one after the other in this process, each built by
`nst_pl.fit.make_cli` like `nst-pl fit` (so every option, link, forced callback, check and signal handling of
`nst-pl fit` applies), each into its own TensorBoard run `<out>/runs/<experiment>/` (`tensorboard --logdir
<out>/runs` compares them). Then every output is scored by the same judges (`nst_pl.judge.Judge`): a fixed VGG16
(content and style losses), the independent style gain of a network that no experiment optimises (optional extra
`pip install nst-pl[judge]`; without it the column is empty and one warning says so), and SSIM to the photo (RGB and
luminance). `<out>/` receives (report.py):

- `sheet.png`: one row per experiment (and pair), columns content, style, the output at each snapshot step, final;
- `metrics.csv`, `metrics.md`: judge content loss, judge style loss, style gain, SSIM (RGB, luminance) to the
  content, palette distance to the painting, steps, wall time, peak memory, and for failed experiments the reason;
- scalars `judge/content`, `judge/style`, `judge/style_gain`, `judge/ssim`, `judge/ssim_luminance`,
  `judge/palette` (and `compare/wall_time_s`, `compare/peak_mem_mb`) in each experiment's TensorBoard run.

A failing experiment (weights that cannot be downloaded, a bad option, a diverged loss) is recorded as failed with
its reason; the others still run. The exit status is 1 when any experiment failed. Ctrl-C / SIGTERM stop the
whole comparison after the running experiment saved its images and checkpoint (as `nst-pl fit` does); the tables
and the sheet are still written for the experiments done so far, and the exit status is 130 / 143.
"""

from __future__ import annotations

import argparse
import ctypes
import fnmatch
import gc
import glob
import math
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from functools import reduce
from pathlib import Path
from typing import Any, NoReturn

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from nst_pl.config_files import bundled_matches
from nst_pl.errors import OutputError, WeightsError, debug, error_paragraph
from nst_pl.fit import make_cli
from nst_pl.image_io import find_images, load_image
from nst_pl.judge import Judge
from nst_pl.report import DEFAULT_TILE, Result, write_sheet, write_tables


# ------------------------------------------------------------------------------------------------ arguments
class CompareParser(ArgumentParser):
    """Option errors as one short paragraph (exit 2), as `nst-pl fit` reports them."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or debug():
            super().error(message, ex)
        sys.stderr.write(error_paragraph(message, "compare"))
        self.exit(2)


class OptionsFile(ActionConfigFile):
    """`--options FILE`: defaults for the options, read by jsonargparse like `fit --config`.

    One liberty over a plain config file: a single value where the command line takes several (`data.content:
    photo.jpg`) is read as a list of one, as it was before options files were parsed by jsonargparse.
    """

    def __call__(self, parser, cfg, values, option_string=None):
        path = Path(values)
        if not path.is_file():
            parser.error(
                f"--options {values}: file not found (a YAML file of options, e.g. nst_pl/configs/compare_quick.yaml)"
            )
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            parser.error(f"--options {values}: not a readable YAML file ({' '.join(str(err).split())})")
        if not isinstance(raw, dict):
            parser.error(f"--options {values}: expected a mapping of option names to values")
        for key in _MANY_VALUES:
            if isinstance(raw.get(key), str):
                raw[key] = [raw[key]]
        self.apply_config(parser, cfg, self.dest, yaml.safe_dump(raw))


# Options that take several values on the command line (`--configs a.yaml b.yaml`).
_MANY_VALUES = ("configs", "data.content", "data.style", "override")


def build_parser() -> CompareParser:
    p = CompareParser(
        prog="nst-pl compare",
        description="Run several nst-pl experiment configs on the same (content, style) pairs; write a contact sheet, "
        "a metrics table (CSV + Markdown) measured by one fixed judge network, and one TensorBoard run per experiment.",
        allow_abbrev=False,
    )
    p.add_argument(
        "--options",
        action=OptionsFile,
        help="a YAML file of defaults for the options below (keys as the "
        "option names, e.g. nst_pl/configs/compare_quick.yaml); the command line wins, and its --override values "
        "are added after the file's",
    )
    p.add_argument("--configs", type=str, nargs="+", help="experiment configs (globs are expanded)")
    p.add_argument("--data.content", type=str, nargs="+", help="content image(s)/folder(s) (default: each config's)")
    p.add_argument("--data.style", type=str, nargs="+", help="style image(s)/folder(s) (default: each config's)")
    p.add_argument(
        "--steps", type=int | None, help="optimisation steps of every experiment (default: each config's max_steps)"
    )
    p.add_argument("--image_size", type=int | None, help="long side of the outputs in px (default: each config's)")
    p.add_argument(
        "--snapshots",
        type=int | list[int] | str | None,
        help="comma-separated steps to show on the "
        "sheet besides the final image, e.g. 1000,10000 (steps at or beyond the run's end are dropped)",
    )
    p.add_argument("--out", type=str, default="out/compare", help="output folder")
    p.add_argument(
        "--judge_weights",
        type=str | None,
        default="imagenet",
        help="judge VGG16 weights: imagenet, a local state-dict file, or null (random: tests only)",
    )
    p.add_argument(
        "--judge_normalization", type=str, default="auto", help="judge input normalisation: auto, imagenet, caffe, none"
    )
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="side of one image cell on the sheet in px")
    # "extend": each --override adds to the list, after those of an --options file given before it.
    p.add_argument(
        "--override",
        type=str,
        nargs="+",
        action="extend",
        default=[],
        metavar="[PATTERN:]KEY=VALUE",
        help="extra `nst-pl fit` option for every experiment, e.g. model.extractor.init_args.weights=null; "
        "with PATTERN: (a glob on the experiment name) only for matching ones, e.g. "
        "'alexnet*:model.extractor.init_args.weights=null'",
    )
    return p


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = build_parser()
    argv = list(argv)
    # The options file holds defaults: read it first, wherever it stands, so that the command line wins.
    for k, arg in enumerate(argv):
        if arg == "--options" and k + 1 < len(argv):
            argv = argv[k : k + 2] + argv[:k] + argv[k + 2 :]
            break
        if arg.startswith("--options="):
            argv = [arg] + argv[:k] + argv[k + 1 :]
            break
    cfg = parser.parse_args(argv)
    args = argparse.Namespace(
        configs=cfg.configs,
        content=cfg.data.content,
        style=cfg.data.style,
        steps=cfg.steps,
        image_size=cfg.image_size,
        snapshots=cfg.snapshots,
        out=cfg.out,
        judge_weights=cfg.judge_weights,
        judge_normalization=cfg.judge_normalization,
        tile=cfg.tile,
        override=list(cfg.override or []),
    )
    if not args.configs:
        parser.error("give the experiment configs: --configs 'experiments/*'")
    args.configs = _expand(args.configs, parser)
    args.snapshots = _parse_snapshots(args.snapshots, parser)
    if isinstance(args.judge_weights, str) and args.judge_weights.lower() in ("null", "none"):
        args.judge_weights = None
    for o in args.override:
        if "=" not in o:
            parser.error(f"--override {o!r}: expected KEY=VALUE or PATTERN:KEY=VALUE")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    return args


def _expand(patterns: Sequence[str], parser: ArgumentParser) -> list[Path]:
    """Expand globs (the shell usually has, but an --options file or a quoted pattern has not)."""
    out: list[Path] = []
    for pat in patterns:
        hits = sorted(glob.glob(str(pat))) if glob.has_magic(str(pat)) else [str(pat)]
        if not hits or not glob.has_magic(str(pat)) and not Path(pat).exists():
            # A bundled recipe's name or pattern (`experiments/*`, `alexnet`), from any folder.
            hits = bundled_matches(str(pat)) or hits
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


def _parse_snapshots(value: Any, parser: ArgumentParser) -> list[int]:
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

    def __enter__(self) -> PeakMemory:
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


def run_experiment(config: Path, args: argparse.Namespace, judge: Judge, out: Path) -> list[Result]:
    """Run one config like `nst-pl fit` (make_cli), score its outputs, log the scores to its TensorBoard run.

    Ctrl-C / SIGTERM during the run end in SystemExit(130 / 143) from NSTCLI.fit, after the run saved its images
    and a checkpoint; they are not failures of this experiment but stop the comparison, so they propagate.
    """
    name = config.stem
    run_dir = out / "runs" / name
    if run_dir.exists():  # a rerun replaces the old run: two event files in one run would mix in TensorBoard
        shutil.rmtree(run_dir)
    every = reduce(math.gcd, args.snapshots) if args.snapshots else 0
    logger = {
        "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(out / "runs"), "name": name, "version": ""},
    }
    cli_args = ["fit", "--config", str(config)]
    if args.content:
        cli_args += ["--data.content", _list_arg(args.content)]
    if args.style:
        cli_args += ["--data.style", _list_arg(args.style)]
    if args.image_size:
        cli_args += ["--data.image_size", str(args.image_size)]
    if args.steps:
        cli_args += ["--trainer.max_steps", str(args.steps)]
    cli_args += [
        "--image_logger.every_n_steps",
        str(every),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger",
        yaml.safe_dump(logger, default_flow_style=True).strip(),
        "--trainer.enable_progress_bar",
        "false",
    ]
    cli_args += overrides_for(name, args.override)

    cuda = torch.cuda.is_available()
    argv0 = sys.argv
    try:
        # The CLI gets its arguments from `args`; an `nst-pl compare …` command line in sys.argv would only make
        # LightningCLI warn that both were given.
        sys.argv = sys.argv[:1]
        with PeakMemory(cuda) as mem:
            cli = make_cli(cli_args, exit_on_error=False)
    except Exception as err:
        # Not SystemExit/KeyboardInterrupt: those stop the whole comparison (main() still writes the tables for
        # the experiments done so far).
        return [Result(name, "", status="failed", reason=_reason(err))]
    finally:
        sys.argv = argv0
    try:
        return _score_and_log(name, args, judge, cli.model, cli.trainer, cli.fit_seconds, mem.peak_mb)
    except Exception as err:  # a judge that cannot score this output must not stop the other experiments
        return [Result(name, "", status="failed", reason="scoring failed: " + _reason(err))]


def _score_and_log(name, args, judge, model, trainer, wall: float, peak_mb: float) -> list[Result]:
    results: list[Result] = []

    extractor = model.objective.extractor
    pairs = model.pair_images
    weights = _short_weights(str(extractor.weights))
    log_dir = Path(trainer.log_dir)
    outputs = model.output_images()
    tb = trainer.logger.experiment if hasattr(trainer.logger, "experiment") else None
    for i, (pair, (h, w)) in enumerate(zip(pairs.names, pairs.sizes)):
        content = pairs.content[i, :, :h, :w].cpu()
        styles = [s.cpu() for s in pairs.styles[i]]
        score = judge.score(outputs[i], content, styles, pairs.blend[i].tolist())
        snaps = {}
        for s in args.snapshots:
            png = log_dir / "images" / pair / f"step_{s:06d}.png"
            if s < trainer.global_step and png.is_file():
                snaps[s] = load_image(png)
        results.append(
            Result(
                name,
                pair,
                extractor=type(extractor).__name__,
                weights=weights,
                steps=trainer.global_step,
                judge_content=score["content"],
                judge_style=score["style"],
                style_gain=score["style_gain"],
                ssim=score["ssim"],
                ssim_luminance=score["ssim_luminance"],
                palette=score["palette"],
                wall_time_s=wall,
                peak_mem_mb=peak_mb,
                content=content,
                style=styles[0],
                snapshots=snaps,
                final=outputs[i],
            )
        )
    if tb is not None:
        # One run per experiment: the same tags in every run, so TensorBoard overlays them. Pair means first, then
        # each pair under its own tag when there are several.
        step = trainer.global_step
        for key, attr in JUDGE_SCALARS:
            values = [getattr(r, attr) for r in results]
            if any(math.isnan(v) for v in values):  # the style gain without the [judge] extra: nothing to plot
                continue
            tb.add_scalar(f"judge/{key}", sum(values) / len(values), step)
            if len(results) > 1:
                for r, v in zip(results, values):
                    tb.add_scalar(f"judge/{key}/{r.pair}", v, step)
        tb.add_scalar("compare/wall_time_s", wall, step)
        tb.add_scalar("compare/peak_mem_mb", peak_mb, step)
        tb.flush()
    return results


# TensorBoard tag under judge/ -> Result field.
JUDGE_SCALARS = (
    ("content", "judge_content"),
    ("style", "judge_style"),
    ("style_gain", "style_gain"),
    ("ssim", "ssim"),
    ("ssim_luminance", "ssim_luminance"),
    ("palette", "palette"),
)


def _list_arg(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else yaml.safe_dump(list(values), default_flow_style=True).strip()


def _short_weights(weights: str) -> str:
    return weights if weights in ("imagenet", "random") else os.path.basename(weights)


def _reason(err: BaseException) -> str:
    """One line for the table: the error's first line, with a hint for weights that cannot be fetched."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cause = err
    while cause is not None and not isinstance(cause, WeightsError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        text = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
        text += (
            " — run it with random weights (--override 'NAME*:model.extractor.init_args.weights=null') or a "
            "local file (--override 'NAME*:model.extractor.init_args.weights=PATH')"
        )
    else:
        text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; 0 when every experiment ran, 1 when one failed, 130 / 143 when a signal stopped it.

    Option errors exit 2 here; other user errors (judge weights that cannot be read, an output folder that cannot
    be written) are NSTErrors, which cli.main turns into one paragraph and exit 2.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"cannot write the output folder '{out}': {err.strerror or err}. Choose a writable location with --out DIR"
        ) from None
    judge = Judge(args.judge_weights, args.judge_normalization, device="cuda" if torch.cuda.is_available() else None)
    print(
        f"[compare] judges: {judge.description}; style gain: {judge.style_gain_judge or _NO_GAIN}; "
        f"{len(args.configs)} experiment(s) -> {out}",
        flush=True,
    )
    results: list[Result] = []
    stopped_with: int | None = None
    for k, config in enumerate(args.configs, 1):
        print(f"[compare] {k}/{len(args.configs)} {config.stem} …", flush=True)
        try:
            rs = run_experiment(config, args, judge, out)
        except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C / SIGTERM: keep what is done, then stop
            # NSTCLI.fit exits 130 (Ctrl-C) or 143 (SIGTERM); a Ctrl-C outside the training loop is 130.
            code = err.code if isinstance(err, SystemExit) else None
            stopped_with = code if isinstance(code, int) and code >= 128 else 130
            print(f"[compare] interrupted during {config.stem}: writing the results so far", flush=True)
            break
        for r in rs:
            if r.status == "ok":
                print(
                    f"[compare]   {r.pair}: content {r.judge_content:.4g}  style {r.judge_style:.4g}  "
                    f"style gain {_num(r.style_gain)}  ssim {r.ssim:.3f} (luminance {r.ssim_luminance:.3f})  "
                    f"palette {r.palette:.2f}  "
                    f"{r.wall_time_s:.1f} s  {r.peak_mem_mb:.0f} MB",
                    flush=True,
                )
            else:
                print(f"[compare]   FAILED: {r.reason}", flush=True)
        results += rs
    _fill_failed_rows(results, args)
    write_tables(results, out, judge.description, judge.style_gain_judge)
    sheet = write_sheet(results, args.snapshots, out, args.tile)
    failed = [r.experiment for r in results if r.status != "ok"]
    print(
        f"[compare] wrote {sheet}, {out / 'metrics.csv'}, {out / 'metrics.md'}; "
        f"TensorBoard: tensorboard --logdir {out / 'runs'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    if stopped_with is not None:
        return stopped_with
    return 1 if failed else 0


_NO_GAIN = "not measured (pip install nst-pl[judge])"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


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
                r.content = load_image(find_images(args.content, what="content")[0], long_side=size)
                r.style = load_image(find_images(args.style, what="style")[0], long_side=size)
            except Exception:  # the sheet is still written, with empty cells
                pass


if __name__ == "__main__":
    sys.exit(main())
