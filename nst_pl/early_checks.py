"""The checks of a run that need neither torch nor Lightning, made before either is imported (that takes ~5 s here),
so that a mistake is answered in a second, in the order a user fixes them:

1. the config files: found (a bundled name or a file), YAML, a mapping of options;
2. the inputs: every content and style image found and decoded, and the pairs formed (pairs.list_pairs);
3. the outputs: `-o`'s folder and the run's folders can be written (a probe file, removed at once);
4. the options that are numbers (weights, learning rate): finite and not negative, each named as such.

Then the run starts as before and makes all of its own checks too (the options when they are parsed, the weights
when the extractor is built, the memory before the first step). What the run's options will be is read here from the
config files and the command line in jsonargparse's order (each `--config` file where it stands, a later `--key
value` over an earlier one), for the keys checked here only. A key that is set in a way not read here (a whole
`--data` section, `--data.content+ x`) is left to the run's own checks: this is the fast way to an answer, not the
only check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import yaml

from nst_pl.config_files import check_config_files, config_values, resolve_configs
from nst_pl.errors import ConfigError
from nst_pl.pairs import list_pairs
from nst_pl.results import check_output
from nst_pl.run_folder import check_writable

# Set on the command line or in a config in a way not read here: left to the run's own checks.
UNKNOWN = object()

# The options that are numbers (or lists of numbers) to keep finite and >= 0: what each is, a value to suggest.
NUMBERS = {
    "model.content_weight": ("the content weight", "1"),
    "model.style_weight": ("the style weight", "2500"),
    "model.tv_weight": ("the total-variation weight", "0"),
    "model.laplacian_weight": ("the Laplacian term's weight", "4.5"),
    "model.coarse_luminance_weight": ("the luminance term's weight", "30"),
    "model.palette_transfer": ("the palette transfer", "0.7"),
    "model.flat_lr_factor": ("the step factor of the photo's flat regions", "1"),
    "model.flat_step_shift": ("the step moved from the photo's flat regions to its detail", "0.7"),
    "model.gradient_floor": ("the floor of Adam's denominator", "1"),
    "model.gradient_floor_region": ("the box of the step's part that moves whole", "33"),
    "model.gradient_floor_light": ("the share of the regional brightening that moves whole", "0.5"),
    "model.content_layer_weights": ("each layer's weight", "[1.0]"),
    "model.style_layer_weights": ("each layer's weight", "[1.0, 1.0, 1.0, 1.0, 1.0]"),
    "model.optimizer.init_args.lr": ("the learning rate", "0.06"),
    "data.style_blend": ("each style's weight", "[0.7, 0.3]"),
}
# The `data` options that pairs.list_pairs takes, and their types (another type is the parser's to report).
DATA = {
    "content": (str, list),
    "style": (str, list),
    "pairing": (str,),
    "style_blend": (list, type(None)),
    "image_size": (int,),
    "style_size": (int, type(None)),
    "max_pixels": (int,),
    "max_pairs": (int,),
}
PATHS = ("data.content", "data.style", "trainer.default_root_dir", "checkpoint.dirpath")
OUTPUTS = ("trainer.default_root_dir", "trainer.logger", "checkpoint.dirpath")
KEYS = tuple(dict.fromkeys([*(f"data.{key}" for key in DATA), *OUTPUTS, *NUMBERS]))
# These flags print something and exit without a run: nothing to check.
NO_RUN = ("-h", "--help", "--print_config")


def check_run(args: Sequence[str], output: str | PathLike | None = None, *, write: bool = False) -> None:
    """Check the `nst-pl fit` command line `args` (and, with `write`, `nst-pl stylize`'s `-o output`) as the module
    doc says; raise the NSTError of the first problem. Imports neither torch nor Lightning."""
    args = resolve_configs([str(a) for a in args])
    check_config_files(args)
    if any(a in NO_RUN or a.startswith("--print_config=") for a in args):
        return
    options = read_options(args)
    data = _data_options(options)
    if data is not None:
        pairs, _ = list_pairs(**data, decode=True)
        if write:
            check_output(output, [p.name for p in pairs])
    root = options.get("trainer.default_root_dir", ".")
    if "trainer.logger" not in options and root is not UNKNOWN:
        check_writable(Path(str(root or ".")).expanduser() / "lightning_logs")
    folder = options.get("checkpoint.dirpath")
    if folder and folder is not UNKNOWN:
        check_writable(Path(str(folder)).expanduser())
    for key, (what, example) in NUMBERS.items():
        if options.get(key, UNKNOWN) is not UNKNOWN:
            check_number(key, options[key], what, example)


def check_number(option: str, value: Any, what: str, example: str) -> None:
    """Refuse a NaN, infinite or negative number (or one in a list of numbers), naming it as such: jsonargparse reads
    neither `nan` nor `inf` as a float, and answers them with a page about union types."""
    for item in value if isinstance(value, list) else [value]:
        number = _as_number(item)
        if number is None or (math.isfinite(number) and number >= 0):
            continue
        if math.isnan(number):
            problem = "not a number (nan)"
        elif math.isinf(number):
            problem = "infinite"
        else:
            problem = f"negative ({item})"
        problem = f"holds a value that is {problem}" if isinstance(value, list) else f"is {problem}"
        raise ConfigError(f"{option} {problem}: {what} must be a finite number >= 0; set e.g. --{option} {example}")


def _as_number(value: Any) -> float | None:
    """A float for a number as the command line or YAML spells it (`1e-3`, `nan`, `.nan`, `-inf`), else None."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _data_options(options: dict[str, Any]) -> dict[str, Any] | None:
    """The `data` options for list_pairs, or None when the images are not given, or an option is not read here or
    not of its type (the parser reports that)."""
    data = {key: options[f"data.{key}"] for key in DATA if f"data.{key}" in options}
    if not {"content", "style"} <= data.keys():
        return None
    for key, value in data.items():
        if not isinstance(value, DATA[key]) or isinstance(value, bool):
            return None
        if key in ("content", "style") and isinstance(value, list) and not all(isinstance(v, str) for v in value):
            return None
    if data.get("style_blend") is not None:  # numbers as the command line spells them (`nan` is one)
        data["style_blend"] = [_as_number(w) for w in data["style_blend"]]
        if None in data["style_blend"]:
            return None
    return data


def read_options(args: Sequence[str]) -> dict[str, Any]:
    """The value of each of KEYS that `args` (after `resolve_configs`) give, as the parser will read it; UNKNOWN
    where that cannot be told here. Keys that nothing sets are absent."""
    values: dict[str, Any] = {}
    configs = {i: value for i, prefix, value in config_values(args) for i in ((i,) if prefix else (i - 1, i))}
    i = 0
    while i < len(args):
        if i in configs:
            _merge_file(values, configs[i])
            i += 1 if args[i].startswith("--config=") else 2
            continue
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            continue
        key, eq, value = arg[2:].partition("=")
        if key in KEYS:
            if not eq:
                # argparse reads a token that starts with "-" as the next option, unless it is a negative number.
                value = args[i] if i < len(args) else "-"
                value, i = (UNKNOWN, i) if value.startswith("-") and _as_number(value) is None else (value, i + 1)
            values[key] = _command_line_value(key, value)
        for other in KEYS:
            if other.startswith(f"{key}.") or key.startswith((f"{other}.", f"{other}+")):
                values[other] = UNKNOWN  # a whole section, a nested key or an append
    return values


def _command_line_value(key: str, value: Any) -> Any:
    """A command-line string as the parser reads it: YAML (`32` is a number, `[a.jpg, b.jpg]` a list, `null`),
    except that a path stays the string it is (`2024` names a file)."""
    if not isinstance(value, str):
        return value
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if key in PATHS and not (loaded is None or isinstance(loaded, list)):
        return value
    return loaded


def _merge_file(values: dict[str, Any], path: str) -> None:
    """Lay the keys that the config file `path` sets over `values` (check_config_files has read the file)."""
    try:
        content = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        content = None
    if not isinstance(content, dict):  # an inline YAML string: not read here
        values.update(dict.fromkeys(KEYS, UNKNOWN))
        return
    for key in KEYS:
        node = content
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            values[key] = node
            continue
        # Stopped at a section given as a value (`optimizer: torch.optim.SGD`), or at a class whose own arguments may
        # replace the ones set so far: not read here. A section without the key leaves the key as it was.
        if not isinstance(node, dict) or "class_path" in node:
            values[key] = UNKNOWN
