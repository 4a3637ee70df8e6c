"""The red team's weak messages (issue "Reliability 2"): each ends in one paragraph that names the option or file to
change, exit 2, no traceback, and no run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_clear_error, cli_fit_args, make_image, run_cli
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")


def _case(root: Path, case: str) -> tuple[list[str], tuple[str, ...]]:
    content = make_image(root / "content" / "photo.png", (56, 40), seed=1)
    style = make_image(root / "style" / "paint.png", (40, 40), seed=2, kind="stripes")
    out = root / "out"
    if case == "huge image_size":
        return cli_fit_args(content, style, out, 2, size=100_000), ("photo.png", "data.image_size", "smaller")
    if case == "negative max_pixels":
        return cli_fit_args(content, style, out, 2, "--data.max_pixels", "-1"), ("data.max_pixels", "-1")
    if case == "zero max_steps":
        return cli_fit_args(content, style, out, 0), ("trainer.max_steps", "is 0")
    if case == "strip":
        strip = root / "strip.png"
        Image.fromarray(np.full((1, 5000, 3), 128, np.uint8)).save(strip)
        return cli_fit_args(strip, style, out, 2), ("too elongated", "5000", "Crop", "data.content")
    if case == "empty config":
        (root / "empty.yaml").write_text("")
        return cli_fit_args(content, style, out, 2, "--config", str(root / "empty.yaml")), ("empty.yaml", "is empty")
    if case == "tab in config":
        (root / "tab.yaml").write_text("model:\n\tstyle_weight: 3\n")
        args = cli_fit_args(content, style, out, 2, "--config", str(root / "tab.yaml"))
        return args, ("tab.yaml", "line 2", "tabs")
    raise AssertionError(case)


CASES = ["huge image_size", "negative max_pixels", "zero max_steps", "strip", "empty config", "tab in config"]


@pytest.mark.parametrize("case", CASES)
def test_weak_messages_name_the_option_or_file(case, tmp_path, capsys):
    args, words = _case(tmp_path, case)
    code, err = run_cli(args, capsys)
    assert_clear_error(code, err, *words)
    if case != "strip":  # the layer sizes are checked in the module's setup, once the run's folder exists
        assert not (tmp_path / "out" / "lightning_logs" / "version_0").exists()


def test_concurrent_runs_into_one_root_get_distinct_version_folders(tmp_path, capsys, monkeypatch):
    """The race, made deterministic: this run lists the root at the moment another run (version_0) has just
    claimed its folder, so Lightning's listing says 'version_0' is free."""
    from pytorch_lightning.loggers import TensorBoardLogger

    content = make_image(tmp_path / "content" / "photo.png", (48, 40), seed=1)
    style = make_image(tmp_path / "style" / "paint.png", (40, 40), seed=2, kind="stripes")
    other = tmp_path / "out" / "lightning_logs" / "version_0"
    other.mkdir(parents=True)
    monkeypatch.setattr(TensorBoardLogger, "_get_next_version", lambda self: 0)
    code, err = run_cli(cli_fit_args(content, style, tmp_path / "out", 1), capsys)
    assert code == 0, err
    assert list(other.iterdir()) == []  # the other run's folder is left alone
    assert (tmp_path / "out" / "lightning_logs" / "version_1" / "images" / "photo__paint" / "step_000001.png").is_file()


def test_very_many_pairs_warn_and_a_documented_limit_refuses_more(tmp_path):
    from nst_pl.data import PairDataModule
    from nst_pl.errors import ConfigError

    contents = [make_image(tmp_path / "c" / f"{i:02d}.png", (8, 8), seed=i) for i in range(40)]
    styles = [make_image(tmp_path / "s" / f"{i:02d}.png", (8, 8), seed=i) for i in range(30)]
    with pytest.warns(UserWarning, match="1,200 pairs"):
        PairDataModule(content=str(tmp_path / "c"), style=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="data.max_pairs=1,000"):
        PairDataModule(content=[str(p) for p in contents], style=[str(p) for p in styles], max_pairs=1000)
