"""Config lookup: what a `--config` value names, and config files read before jsonargparse sees them.

- A `--config` value is a YAML file, or the name of a bundled recipe (`vgg19`, `alexnet.yaml`,
  `experiments/vgg19_1_all_conv_content_averaged`): the recipes ship inside the package (`nst_pl/configs/`, which the
  repository's top-level `configs/` points to), so `--config vgg19` works from any folder after a plain install, and
  `--config configs/resnet.yaml` names the bundled file wherever no such file exists.
- Config files are read first, so that a YAML problem names the file and the fix: jsonargparse reports an empty file
  as "Unexpected config:" and a syntax error (a tab in the indentation) as `in "<unicode string>", line 2, column 1`,
  without the file's name.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from nst_pl.errors import ConfigError

# The shipped recipes (package data).
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
# `configs/NAME.yaml`, the repository's spelling, names a bundled recipe outside the repository too.
TOP_LEVEL = "configs/"
# How to get a recipe to start a file from, wherever nst-pl is installed.
PRINT_RECIPE = "`nst-pl fit --config vgg19 --print_config > my.yaml` writes the default recipe"


def bundled_configs() -> list[str]:
    """The names `--config` accepts besides paths: `vgg19`, `experiments/vgg19_1_all_conv_content_averaged` …"""
    return sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.rglob("*.yaml"))


def bundled_list() -> str:
    """Every bundled recipe for a message, each folder's together: `alexnet, vgg19, …; experiments/: a, b, …`."""
    folders: dict[str, list[str]] = {}
    for name in bundled_configs():
        folder, _, stem = name.rpartition("/")
        folders.setdefault(folder, []).append(stem)
    groups = sorted(folders.items())
    return "; ".join(f"{folder + '/: ' if folder else ''}{', '.join(names)}" for folder, names in groups)


def _bundled_name(value: str) -> str:
    """`configs/alexnet.yaml`, `alexnet.yaml` and `alexnet` all name the bundled `alexnet`."""
    name = value.removeprefix(TOP_LEVEL)
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def resolve_config(value: str) -> str:
    """A `--config` value: an existing file as it is, else a bundled recipe's name (`vgg19`, `alexnet.yaml`)."""
    if not isinstance(value, str) or Path(value).expanduser().exists():
        return value
    name = _bundled_name(value)
    bundled = CONFIGS_DIR / f"{name}.yaml"
    if name and bundled.is_file():
        return str(bundled)
    # Anything that is not a plain name or path (an inline YAML string) goes to jsonargparse as it is.
    if all(c.isalnum() or c in "._-/~\\" for c in value):
        raise ConfigError(
            f"--config {value}: no such file and no bundled recipe of that name; bundled: {bundled_list()}"
        )
    return value


def bundled_matches(pattern: str) -> list[str]:
    """The bundled recipes that a name or glob (`experiments/*`, `alexnet`) names, as paths; [] for none."""
    return sorted(glob.glob(str(CONFIGS_DIR / f"{_bundled_name(str(pattern))}.yaml")))


def config_values(args: Sequence[str]) -> Iterator[tuple[int, str, str]]:
    """(index, prefix, value) of each `--config VALUE` (prefix "") and `--config=VALUE` (prefix "--config=") of a
    command line: `args[index]` is `prefix + value`."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            yield i + 1, "", args[i + 1]
        elif isinstance(arg, str) and arg.startswith("--config="):
            yield i, "--config=", arg[len("--config=") :]


def resolve_configs(args: Sequence[str]) -> list[str]:
    """The command line with every `--config` value resolved (`resolve_config`)."""
    out = list(args)
    for i, prefix, value in config_values(out):
        out[i] = prefix + resolve_config(value)
    return out


def split_configs(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the `--config` arguments, every other argument), each in its order."""
    at = {i for i, prefix, _ in config_values(args) for i in ((i,) if prefix else (i - 1, i))}
    return [a for i, a in enumerate(args) if i in at], [a for i, a in enumerate(args) if i not in at]


def check_config_files(args: Sequence[str]) -> None:
    """Raise ConfigError naming the file for an empty config file or one that is not valid YAML."""
    values = (Path(value).expanduser() for _, _, value in config_values([str(a) for a in args]) if value)
    for path in (p for p in values if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read the config file '{path}': {err}") from None
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            line = text.splitlines()[mark.line] if mark is not None and mark.line < len(text.splitlines()) else ""
            tab = " (YAML does not allow tabs for indentation: use spaces)" if "\t" in line else ""
            message = f"the config file '{path}' is not valid YAML{where}: {problem}{tab}; fix that line"
            raise ConfigError(message) from None
        if content is None:
            raise ConfigError(
                f"the config file '{path}' is empty: write options in it ({PRINT_RECIPE}) or drop --config"
            )
        if not isinstance(content, dict):
            raise ConfigError(
                f"the config file '{path}' holds a {type(content).__name__}, not a mapping of options such as "
                f"`model:`, `data:`, `trainer:`; {PRINT_RECIPE}"
            )
