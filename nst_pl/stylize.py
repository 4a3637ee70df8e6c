"""`nst-pl stylize CONTENT STYLE [-o OUT.png]` and `nst_pl.stylize(...)`: style transfer as a tool.

Both are an ordinary `nst-pl fit` run (built by `nst_pl.fit.make_cli`, with the same options, checks, run folder and
signal handling) whose defaults come from the bundled `vgg19` recipe, plus one step at the end: the result of every
pair is written to a named file (`-o`, results.py), and the Python call returns it as a PIL image.

This module loads without torch and Lightning (`import nst_pl` and `nst-pl --help` take a fraction of a second): the
checks that need neither (early_checks.py) answer first, then the run (stylize_cli.StylizeCLI) is imported.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from PIL import Image

from nst_pl.config_files import split_configs
from nst_pl.early_checks import check_run
from nst_pl.errors import ConfigError, NSTError
from nst_pl.quiet import quiet_run

DEFAULT_CONFIG = "vgg19"

USAGE = """usage: nst-pl stylize CONTENT STYLE [-o OUT] [--config NAME|PATH] [--verbose] [fit options …]

Stylise a photo with a painting: one command, one file.

  CONTENT, STYLE   an image file, a folder of images, or a list "[a.jpg, b.jpg]"; several images give one
                   result per (content, style) pair, named <content>__<style>.png
  -o, --output OUT the result: a file (OUT.png, .jpg, …; a name without an image type gets .png) for one
                   pair, a folder (OUT/) for several pairs (default: ./<content>__<style>.png for one pair,
                   ./stylized/ for several); checked before the run, which stops at once if it cannot be written
  --config NAME    a bundled recipe (vgg19 — the default —, alexnet, resnet) or a config file
  --verbose        show Lightning's messages and every warning (as does NST_PL_DEBUG=1)
  --force_precision true
                   keep --trainer.precision bf16-mixed (or 16-mixed) on a CPU without fast bfloat16 maths
                   (no AVX-512 or AMX), where it runs 10-100x slower; by default such a run uses 32-true

Every option of `nst-pl fit` works here too (`nst-pl fit --help` lists them), e.g.
  nst-pl stylize photo.jpg painting.jpg -o out.png --model.style_strength 0.7 --trainer.max_steps 300
  nst-pl stylize photo.jpg painting.jpg --trainer.precision bf16-mixed
The run folder (TensorBoard, checkpoints, config.yaml) is written as for `fit`, and its path printed.
"""


def _option_value(value: Any) -> str:
    """A Python value as a command-line value that jsonargparse reads back to the same value."""
    if isinstance(value, (str, PathLike)):
        return str(value)
    if isinstance(value, (list, tuple)):
        value = [str(v) if isinstance(v, PathLike) else v for v in value]
    return json.dumps(value)


def _split_command_line(argv: Sequence[str]) -> tuple[list[str], str | None, bool, list[str]]:
    """`CONTENT STYLE` (leading), `-o OUT`, `--verbose`; everything else is a `fit` option, in its order."""
    positional: list[str] = []
    output: str | None = None
    verbose = False
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-o", "--output"):
            if i + 1 >= len(args):
                raise ConfigError(f"{arg} needs a value: the result file (out.png) or folder")
            output, i = args[i + 1], i + 2
            continue
        if arg.startswith(("--output=", "-o=")):
            output = arg.split("=", 1)[1]
        elif arg == "--verbose":
            verbose = True
        elif not arg.startswith("-") and not rest and len(positional) < 2:
            positional.append(arg)
        else:
            rest.append(arg)
        i += 1
    return positional, output, verbose, rest


def command_line(content: str, style: str, rest: Sequence[str]) -> list[str]:
    """The `fit` command line of a stylize run: the recipe (vgg19 unless --config), the images, then the rest."""
    configs, rest = split_configs(rest)  # every --config first, so that the images and later options win over them
    return [
        "fit",
        *(configs or ["--config", DEFAULT_CONFIG]),
        "--data.content",
        content,
        "--data.style",
        style,
        *rest,
    ]


def main(argv: Sequence[str]) -> int:
    """`nst-pl stylize …` (cli.py turns NSTErrors into one paragraph and exit code 2)."""
    if any(a in ("-h", "--help") for a in argv):
        sys.stdout.write(USAGE)
        return 0
    positional, output, _, rest = _split_command_line(argv)
    if len(positional) != 2:
        raise ConfigError(
            "nst-pl stylize needs a content and a style image first: nst-pl stylize photo.jpg painting.jpg "
            "[-o out.png] [options] (nst-pl stylize --help)"
        )
    cli = _run(command_line(*positional, rest), output, write=True)
    if cli.trainer.is_global_zero:
        if cli.trainer.log_dir:
            print(f"nst-pl: run folder {cli.trainer.log_dir} (TensorBoard, checkpoints, config.yaml)")
        shown = cli.targets[0] if len(cli.targets) == 1 else f"{len(cli.targets)} images in {cli.targets[0].parent}"
        print(f"nst-pl: wrote {shown}")
    return 0


def stylize(
    content: str | PathLike | Image.Image | Sequence[str | PathLike | Image.Image],
    style: str | PathLike | Image.Image | Sequence[str | PathLike | Image.Image],
    output: str | PathLike | None = None,
    *,
    config: str | PathLike = DEFAULT_CONFIG,
    verbose: bool = False,
    **options: Any,
) -> Image.Image | list[Image.Image]:
    """Stylise `content` with `style`; the same run as `nst-pl stylize`, returned as PIL images.

    Args:
        content: A photo: a path or a PIL image; or a folder, or a list of them (one result per pair).
        style: A painting, in the same forms.
        output: Also write the result(s) here, as `nst-pl stylize -o` does (default: write no result file).
        config: A bundled recipe (`vgg19`, `alexnet`, `resnet`) or a config file.
        verbose: Show the progress bar, Lightning's messages and every warning.
        **options: Any `nst-pl fit` option: a section as a dict (`model={"style_weight": 10}`,
            `trainer={"max_steps": 300}`), a dotted name spelt with `__` (`model__style_weight=10`), or the plain
            name of a model, data or trainer option (`style_weight=10`, `image_size=256`, `max_steps=300`,
            `precision="bf16-mixed"`, `extractor={"class_path": ..., "init_args": {...}}`).

    Returns:
        The result as a PIL image (RGB, 8 bits); a list of them, in pair order, when there are several pairs.
        The run folder (TensorBoard, checkpoints, config.yaml) is written as for `nst-pl fit`.
    """
    args: list[str] = []
    for key, value in _flatten(options).items():
        args += [f"--{key}", _option_value(value)]
    if not verbose and "trainer.enable_progress_bar" not in _flatten(options):
        args += ["--trainer.enable_progress_bar", "false"]
    with tempfile.TemporaryDirectory(prefix="nst_pl_") as tmp:
        c, s = _as_paths(content, Path(tmp), "content"), _as_paths(style, Path(tmp), "style")
        argv = command_line(c, s, ["--config", str(config), *args])
        try:
            with quiet_run(verbose):
                cli = _run(argv, output, write=output is not None, exit_on_error=False)
        except SystemExit as exc:  # a stop by a signal: the run folder holds what was reached
            raise KeyboardInterrupt(f"the run was stopped (exit code {exc.code})") from None
        except NSTError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "ArgumentError":  # jsonargparse's: an option that does not parse
                raise ConfigError(str(exc)) from None
            raise
    images = cli.pictures()
    return images[0] if len(images) == 1 else images


def _run(argv: list[str], output: str | PathLike | None, *, write: bool, **kwargs: Any):
    """The stylize run of the `fit` command line `argv`: the checks that need neither torch nor Lightning first (a
    missing photo or an unwritable `-o` is answered in a second), then the libraries and the run (a StylizeCLI)."""
    check_run(argv, output, write=write)
    from nst_pl.stylize_cli import run_stylize

    return run_stylize(argv, output, write=write, **kwargs)


def _flatten(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword options as dotted `fit` option names (see `stylize`)."""
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("model", "data", "trainer", "image_logger", "checkpoint") and isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif "__" in key:
            flat[key.replace("__", ".")] = value
        elif key in ("seed_everything", "ckpt_path", "force_precision"):
            flat[key] = value
        else:
            from nst_pl.stylize_cli import option_section  # the classes' signatures: torch and Lightning

            section = option_section(key)
            if section is None:
                raise ConfigError(
                    f"stylize() got an unknown option {key!r}: give a model, data or trainer option "
                    "(style_weight=10, image_size=256, max_steps=300) or a dotted one spelt with '__' "
                    "(model__extractor__init_args__weights=None)"
                )
            flat[f"{section}.{key}"] = value
    return flat


def _as_paths(spec: Any, tmp: Path, what: str) -> str:
    """One `--data.content` value: a path as it is; PIL images saved losslessly into `tmp`; a list as JSON."""
    if isinstance(spec, (str, PathLike, Image.Image)):
        items, single = [spec], True
    else:
        items, single = list(spec), False
    paths = []
    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            path = tmp / what / f"{what}_{i}.png" if not single else tmp / what / f"{what}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            item.convert("RGB").save(path)
            item = path
        paths.append(str(item))
    return paths[0] if single else json.dumps(paths)
