"""Config files read before jsonargparse sees them, so that a YAML problem names the file and the fix.

jsonargparse reports an empty file as "Unexpected config:" and a YAML syntax error (a tab in the indentation) as
`in "<unicode string>", line 2, column 1`, without the file's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from nst_pl.errors import ConfigError


def config_paths(args: Sequence[str]) -> list[Path]:
    """The existing files given with `--config FILE` or `--config=FILE`; other values are left to jsonargparse."""
    paths = []
    for i, arg in enumerate(args):
        value = None
        if arg == "--config" and i + 1 < len(args):
            value = args[i + 1]
        elif isinstance(arg, str) and arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value and Path(value).expanduser().is_file():
            paths.append(Path(value).expanduser())
    return paths


def check_config_files(args: Sequence[str]) -> None:
    """Raise ConfigError naming the file for an empty config file or one that is not valid YAML."""
    for path in config_paths([str(a) for a in args]):
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
                f"the config file '{path}' is empty: write options in it (e.g. copy configs/vgg19.yaml) or drop "
                "--config"
            )
        if not isinstance(content, dict):
            raise ConfigError(
                f"the config file '{path}' holds a {type(content).__name__}, not a mapping of options such as "
                "`model:`, `data:`, `trainer:`; see configs/vgg19.yaml"
            )
