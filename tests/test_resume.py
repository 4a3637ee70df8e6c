"""Resume with `--ckpt_path`: the command line is what runs, options that cannot change are refused, and every bad
checkpoint is a one-paragraph error before anything is written (README, "Checkpoints and resume")."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import assert_clear_error, cli_fit_args, make_image, run_cli
from PIL import Image

from nst_pl.cli import main


def fit_args(root: Path, out: str, steps: int = 2, *extra: str) -> list[str]:
    return cli_fit_args(root / "content" / "photo.png", root / "style" / "paint.png", root / out, steps, *extra)


pytestmark = pytest.mark.usefixtures("one_thread")


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One finished 2-step run (Adam, EMA 0.9): <root>/first/lightning_logs/version_0/checkpoints/last.ckpt."""
    root = tmp_path_factory.mktemp("resume")
    make_image(root / "content" / "photo.png", (48, 40), seed=1)
    make_image(root / "style" / "paint.png", (40, 40), seed=2, kind="stripes")
    try:
        main(fit_args(root, "first", 2))
    except SystemExit as exc:
        assert not exc.code, exc
    return root


def ckpt_of(root: Path, out: str = "first", version: int = 0) -> Path:
    return root / out / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt"


def versions(root: Path, out: str) -> list[str]:
    logs = root / out / "lightning_logs"
    return sorted(p.name for p in logs.iterdir()) if logs.exists() else []


# ------------------------------------------------------------------------- 1. resume semantics
def test_resume_applies_the_options_of_the_command_line(base, tmp_path, capsys):
    out = f"safe-{tmp_path.name}"
    args = fit_args(base, out, 3, "--ckpt_path", str(ckpt_of(base)))
    args += ["--model.style_weight", "77", "--model.preserve_color", "luminance"]
    args += ["--model.optimizer", "torch.optim.Adam", "--model.optimizer.lr", "0.05"]
    code, err = run_cli(args, capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("nst-pl: warning:") and "changed options" in line]
    assert len(notes) == 1 and "model.style_weight: 3.0 in the checkpoint, 77.0 now" in notes[0], err
    run_dir = base / out / "lightning_logs" / "version_0"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["style_weight"] == 77.0 and config["model"]["preserve_color"] == "luminance"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    assert ckpt["hyper_parameters"]["style_weight"] == 77.0
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 0.05  # not the checkpoint's 0.007
    assert ckpt["optimizer_states"][0]["state"][0]["step"] == 3  # Adam's moments were carried on


def test_resume_from_an_older_checkpoint_names_the_options_it_did_not_have(base, tmp_path, capsys):
    """A checkpoint saved before an option existed: the run goes on with the option's value now, and says so."""
    ckpt = torch.load(ckpt_of(base), weights_only=False)
    del ckpt["hyper_parameters"]["coarse_luminance_weight"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    code, err = run_cli(fit_args(base, f"old-{tmp_path.name}", 3, "--ckpt_path", str(old)), capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "changed options" in line]
    assert len(notes) == 1 and "model.coarse_luminance_weight: not in the checkpoint (an older nst-pl)" in notes[0]
    assert "model.style_weight" not in notes[0]  # the options it had are compared as before


def test_resume_with_another_ema_decay_keeps_the_average(base, tmp_path, capsys):
    out = f"ema-{tmp_path.name}"
    # max_steps = the checkpoint's step: nothing to train, the images of step 2 are written again.
    code, err = run_cli(fit_args(base, out, 2, "--ckpt_path", str(ckpt_of(base)), "--model.ema_decay", "0.5"), capsys)
    assert code == 0, err
    before = read_png(base / "first" / "lightning_logs" / "version_0" / "images" / "photo__paint" / "step_000002.png")
    after = read_png(base / out / "lightning_logs" / "version_0" / "images" / "photo__paint" / "step_000002.png")
    # The same picture; the EMA's carry-over differs from the saved average in float rounding, which the output's
    # colour step (palette_match: distribution, fitted to all of a picture's colours) may turn into a level or two.
    assert np.abs(before - after).max() <= 2 and np.abs(before - after).mean() < 0.05
    code, err = run_cli(fit_args(base, f"noema-{tmp_path.name}", 3, "--ckpt_path", str(ckpt_of(base)),
                             "--model.ema_decay", "null"), capsys)  # fmt: skip
    assert code == 0, err


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--model.style_layers", "[relu1_1]"], ["model.style_layers: ['relu1_1', 'relu2_1'] in the checkpoint"]),
        (["--data.image_size", "40"], ["the images", "data.image_size", "(1, 3, 27, 32) in the checkpoint"]),
        (["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.1"], ["torch.optim.sgd.SGD now"]),
        (["--model.optimizer", "torch.optim.LBFGS", "--model.optimizer.max_iter", "1"], ["LBFGS now"]),
        (
            ["--model.extractor", "nst_pl.extractors.VGG16", "--model.extractor.init_args.weights", "null"],
            ["model.extractor", "VGG19 in the checkpoint"],
        ),
    ],
    ids=["layers", "image size", "SGD", "LBFGS", "extractor"],
)
def test_options_that_cannot_change_on_resume_are_refused_before_any_write(base, tmp_path, capsys, extra, words):
    out = f"fixed-{tmp_path.name}"
    code, err = run_cli(fit_args(base, out, 3, "--ckpt_path", str(ckpt_of(base)), *extra), capsys)
    assert_clear_error(code, err, "cannot change on resume", *words, "config.yaml", "without --ckpt_path")
    assert versions(base, out) == []  # no run folder, config, image or checkpoint
    assert "optimizer" in words[0] or "KeyError" not in err


def test_every_differing_option_is_named_in_one_paragraph(base, tmp_path, capsys):
    extra = ["--model.content_layers", "[relu1_1]", "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "1"]
    code, err = run_cli(fit_args(base, "many", 3, "--ckpt_path", str(ckpt_of(base)), *extra), capsys)
    assert_clear_error(code, err, "model.content_layers: ['relu2_1'] in the checkpoint, ['relu1_1'] now", "SGD now")


# ------------------------------------------------------------------------- 2. bad checkpoints
def _bad_checkpoint(base: Path, tmp_path: Path, case: str) -> tuple[str, tuple[str, ...]]:
    good = ckpt_of(base).read_bytes()
    path = tmp_path / "bad.ckpt"
    if case == "typo":
        return str(tmp_path / "lats.ckpt"), ("lats.ckpt", "does not exist")
    if case == "empty":
        path.write_bytes(b"")
        return str(path), ("is empty",)
    if case == "truncated":
        path.write_bytes(good[: len(good) // 2])
        return str(path), ("not a readable checkpoint",)
    if case == "text":
        path.write_text("model: 1\n")
        return str(path), ("not a readable checkpoint",)
    if case == "best":
        return "best", ("'best'", "names no file")
    if case == "folder":
        return str(base / "first" / "lightning_logs" / "version_0"), ("is a folder", "last.ckpt")
    if case == "unsafe pickle":
        torch.save({"state_dict": {"image": torch.zeros(1, 3, 4, 4)}, "x": Path("/")}, path)
        return str(path), ("safe loader refuses",)
    if case == "not nst":
        torch.save({"state_dict": {"weight": torch.zeros(3)}, "global_step": 1}, path)
        return str(path), ("not an nst-pl checkpoint", "no generated images")
    if case == "fifo":
        os.mkfifo(path)
        return str(path), ("not a regular file",)
    if case == "pickle of a list":
        path.write_bytes(pickle.dumps([1, 2]))
        return str(path), ("bad.ckpt",)
    raise AssertionError(case)


BAD_CASES = ["typo", "empty", "truncated", "text", "best", "folder", "unsafe pickle", "not nst", "fifo"]
BAD_CASES += ["pickle of a list"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_a_bad_checkpoint_is_a_clear_error_before_anything_is_written(base, tmp_path, capsys, case):
    ckpt, words = _bad_checkpoint(base, tmp_path, case)
    code, err = run_cli(fit_args(base, f"bad-{tmp_path.name}", 3, "--ckpt_path", ckpt), capsys)
    assert_clear_error(code, err, "--ckpt_path", *words, "last.ckpt")
    assert not (base / f"bad-{tmp_path.name}").exists()  # not even the output root
