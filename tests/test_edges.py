"""The red team's cases (issue "Reliability 2"): weak messages end in one paragraph that names the option or file to
change (exit 2, no traceback, no run folder); faults at the edges of a run (a disk that fills before the first step,
TensorBoard's writer failing, a broken stdout) never lose the run; run folders are claimed atomically."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import (
    assert_clear_error,
    cli_fit_args,
    fail_tensorboard_writes,
    fail_writes,
    make_image,
    run_cli,
    subprocess_env,
)
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
        words = ("too elongated", "5000x1", "needs a short side of at least", "data.image_size", "Crop", "data.content")
        return cli_fit_args(strip, style, out, 2), words
    if case == "empty config":
        (root / "empty.yaml").write_text("")
        return cli_fit_args(content, style, out, 2, "--config", str(root / "empty.yaml")), ("empty.yaml", "is empty")
    if case == "tab in config":
        (root / "tab.yaml").write_text("model:\n\tstyle_weight: 3\n")
        args = cli_fit_args(content, style, out, 2, "--config", str(root / "tab.yaml"))
        return args, ("tab.yaml", "line 2", "tabs")
    if case == "empty style path":  # `--data.style "$STYLE"` with STYLE unset: not the current folder
        return cli_fit_args(content, "", out, 2), ("empty path", "style images", "data.style")
    if case == "unknown init":
        return cli_fit_args(content, style, out, 2, "--model.init", "noize"), ("model.init", "noise", "noize")
    raise AssertionError(case)


CASES = [
    "huge image_size",
    "negative max_pixels",
    "zero max_steps",
    "strip",
    "empty config",
    "tab in config",
    "empty style path",
    "unknown init",
]


@pytest.mark.parametrize("case", CASES)
def test_weak_messages_name_the_option_or_file(case, tmp_path, capsys):
    args, words = _case(tmp_path, case)
    code, err = run_cli(args, capsys)
    assert_clear_error(code, err, *words)
    assert not (tmp_path / "out" / "lightning_logs" / "version_0").exists()


def test_the_learning_rate_is_set_without_naming_the_optimizer_class(tmp_path):
    """What the divergence message says to lower, `--model.optimizer.init_args.lr`, works on the default Adam."""
    from nst_pl.fit import make_cli
    from nst_pl.module import default_optimizer

    content, style = _inputs(tmp_path)
    args = cli_fit_args(content, style, tmp_path / "out", 2, "--model.optimizer.init_args.lr", "0.003")[1:]
    cli = make_cli(args, run=False)
    optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == 0.003
    args = cli_fit_args(content, style, tmp_path / "out", 2, recipe=False)[1:]
    default = make_cli(args, run=False).model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    expected = default_optimizer([torch.nn.Parameter(torch.zeros(1))]).defaults["lr"]
    assert type(default) is torch.optim.Adam and default.defaults["lr"] == expected != 0.003


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


# Lightning's listing of the root, made stale on purpose in every process (rank 1 re-runs this file): it says
# version_0 is free although another run has just claimed it.
STALE_LISTING = """
import sys
from pytorch_lightning.loggers import TensorBoardLogger
TensorBoardLogger._get_next_version = lambda self: 0
from nst_pl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_ddp_run_claims_its_version_folder_on_rank_0_and_every_rank_uses_it(tmp_path):
    """Two gloo processes: rank 0 claims version_<k> with mkdir before Lightning starts rank 1; rank 1 writes (its
    checkpoint shard of the collective) into the folder rank 0 claimed, and no rank writes into the other run's."""
    content, style = _inputs(tmp_path)
    other = tmp_path / "out" / "lightning_logs" / "version_0"
    other.mkdir(parents=True)
    (other / "theirs.txt").write_text("another run's folder")
    script = tmp_path / "stale_listing.py"
    script.write_text(STALE_LISTING)
    args = cli_fit_args(content, style, tmp_path / "out", 2, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--verbose"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout  # really two ranks
    assert sorted(p.name for p in other.iterdir()) == ["theirs.txt"]  # the other run's folder is left alone
    runs = sorted(p.name for p in (tmp_path / "out" / "lightning_logs").iterdir())
    assert runs == ["version_0", "version_1"]  # one folder for both ranks
    run = tmp_path / "out" / "lightning_logs" / "version_1"
    assert _steps(run / "images" / "photo__paint") == [0, 1, 2]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()


def test_very_many_pairs_warn_and_a_documented_limit_refuses_more(tmp_path):
    from nst_pl.data import PairDataModule
    from nst_pl.errors import ConfigError

    contents = [make_image(tmp_path / "c" / f"{i:02d}.png", (8, 8), seed=i) for i in range(40)]
    styles = [make_image(tmp_path / "s" / f"{i:02d}.png", (8, 8), seed=i) for i in range(30)]
    with pytest.warns(UserWarning, match="1,200 pairs"):
        PairDataModule(content=str(tmp_path / "c"), style=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="data.max_pairs=1,000"):
        PairDataModule(content=[str(p) for p in contents], style=[str(p) for p in styles], max_pairs=1000)


# ------------------------------------------------------------------------------------- faults at the edges
def _inputs(root: Path) -> tuple[Path, Path]:
    content = make_image(root / "content" / "photo.png", (48, 40), seed=1)
    style = make_image(root / "style" / "paint.png", (40, 40), seed=2, kind="stripes")
    return content, style


def _run_folder(root: Path) -> Path:
    return root / "out" / "lightning_logs" / "version_0"


def _steps(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.png"))


def _disk_full_at(monkeypatch, where: str) -> tuple[str, ...]:
    """The disk fills at `where`, after the previous checks passed; returns words the error must contain."""
    import nst_pl.run_folder as run_folder
    from nst_pl.parser import NSTArgumentParser

    enospc = OSError(errno.ENOSPC, "No space left on device")
    if where == "probe":  # a truly full disk: creating the empty probe file works, its data block does not

        def fsync(fd):
            raise enospc

        monkeypatch.setattr(run_folder, "os", SimpleNamespace(**{**vars(os), "fsync": fsync}))  # the probe's only
        return "cannot write the output folder", "No space left", "Free some disk space"
    if where == "tensorboard":
        fail_tensorboard_writes(monkeypatch, 1)
        return "TensorBoard's event file", "No space left", "--trainer.default_root_dir"
    if where == "config.yaml":

        def save(self, *args, **kwargs):
            raise enospc

        monkeypatch.setattr(NSTArgumentParser, "save", save)
        return "config.yaml", "No space left", "free some disk space"
    if where == "step-0 images":
        fail_writes(monkeypatch, b"\x89PNG", 1)
        return "step_000000.png", "no space left", "free some disk space"
    raise AssertionError(where)


@pytest.mark.parametrize("where", ["probe", "tensorboard", "config.yaml", "step-0 images"])
def test_a_disk_that_is_full_before_the_first_step_is_a_clear_error(where, tmp_path, capsys, monkeypatch):
    content, style = _inputs(tmp_path)
    words = _disk_full_at(monkeypatch, where)
    code, err = run_cli(cli_fit_args(content, style, tmp_path / "out", 3), capsys)
    assert_clear_error(code, err, *words)
    assert "Exception in thread" not in err and "warning" not in err  # no traceback of TensorBoard's thread
    images = _run_folder(tmp_path) / "images" / "photo__paint"
    assert _steps(images) == []  # not a single step ran
    assert not list(tmp_path.rglob("*.ckpt"))


def test_tensorboard_failing_during_the_run_warns_once_and_the_run_finishes(tmp_path, capsys, monkeypatch):
    content, style = _inputs(tmp_path)
    fail_tensorboard_writes(monkeypatch, 5)  # after the first few events: the disk of the event file fills
    code, err = run_cli(cli_fit_args(content, style, tmp_path / "out", 4, "--trainer.log_every_n_steps", "1"), capsys)
    assert code == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err
    warning = "nst-pl: warning: TensorBoard's files in"
    assert err.count(warning) == 1 and "No space left on device" in err and "TensorBoard logging stops" in err
    run = _run_folder(tmp_path)
    assert _steps(run / "images" / "photo__paint") == [0, 1, 2, 3, 4]  # every image, the final one included
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4


class _GoneTerminal:
    """A console stream whose writes fail as a closed terminal's (EIO), a closed pipe's or a closed file's do."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, 0

    def write(self, text: str) -> int:
        self.calls += 1
        raise self.error

    def flush(self) -> None:
        raise self.error

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "error",
    [OSError(errno.EIO, "Input/output error"), BrokenPipeError(errno.EPIPE, "Broken pipe"), ValueError("closed")],
    ids=["EIO", "EPIPE", "closed"],
)
def test_safe_console_drops_the_output_of_a_stream_that_failed(error, capsys, monkeypatch):
    import sys

    from nst_pl.quiet import safe_console

    gone = _GoneTerminal(error)
    monkeypatch.setattr(sys, "stdout", gone)
    with safe_console():
        print("step 1/10")  # fails, and is reported once on stderr
        print("step 2/10")  # dropped without another write
        assert not sys.stdout.isatty()  # a progress bar is not drawn on it any more
        sys.stdout.flush()
    assert gone.calls == 1
    err = capsys.readouterr().err
    assert err.count("nst-pl: warning: cannot write to stdout") == 1 and str(error.args[-1]) in err
