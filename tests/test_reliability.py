"""Reliability through the real entry point: bad input gets a one-paragraph error, faults lose nothing (issue 5).

Every test drives `nst_pl.cli.main` (in-process) or `python -m nst_pl.cli` (a subprocess, where signals and exit
codes matter) with tiny images and random weights. The subprocess runs are started once per module, in the
background, as soon as the module starts (see `runs`): each costs ~10 s of imports, and they overlap with the
in-process tests instead of adding up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
import yaml
from helpers import REPO, assert_clear_error, cli_fit_args, fail_writes, make_image, png_header_claiming
from helpers import run_cli as run
from PIL import Image

from nst_pl import image_io
from nst_pl.checkpoint_io import AtomicCheckpointIO
from nst_pl.cli import main, user_errors
from nst_pl.data import PairDataModule
from nst_pl.errors import ImageError, OutputError
from nst_pl.extractors import EXTRACTORS, VGG19, FeatureExtractor
from nst_pl.fit import NSTCLI
from nst_pl.module import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, StyleTransfer
from nst_pl.objective import _layer_weights
from nst_pl.pictures import OUTPUT_OPTIONS, averaged_image, output_picture

pytestmark = pytest.mark.usefixtures("one_thread")
ORIGINAL_WRITE_ALL = image_io._write_all
PNG_MAGIC = b"\x89PNG"
CKPT_MAGIC = b"PK"  # torch.save writes a zip archive
# A progress line on stdout at every tenth of the run (stdout is not a terminal), and the final line.
PRINTED_PROGRESS = ("--trainer.enable_progress_bar", "true")


# ------------------------------------------------------------------------------------------------------ helpers
def _input_files(root: Path) -> tuple[Path, Path]:
    return root / "content" / "photo.png", root / "style" / "paint.png"


def inputs(root: Path) -> tuple[Path, Path]:
    content, style = _input_files(root)
    return make_image(content, (48, 40), seed=1), make_image(style, (40, 40), seed=2, kind="stripes")


def fit_args(
    root: Path, content, style, steps: int = 2, size: int = 32, *extra: str, shallow: bool = True
) -> list[str]:
    return cli_fit_args(content, style, root / "out", steps, *extra, size=size, shallow=shallow)


def run_dir(root: Path, version: int = 0) -> Path:
    return root / "out" / "lightning_logs" / f"version_{version}"


def png_steps(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in folder.glob("step_*.png"))


def read_png(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        im.load()  # a truncated file fails here
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def load_ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def no_stray_files(root: Path) -> None:
    """Nothing half-written under a visible name: every PNG decodes, every checkpoint loads, no temp file is left."""
    for png in root.rglob("*.png"):
        read_png(png)
    for ckpt in root.rglob("*.ckpt"):
        load_ckpt(ckpt)
    assert not [p for p in root.rglob("*.tmp")]


# ------------------------------------------------------------------------------- subprocess runs (background)
# Kills the process with SIGKILL in the middle of writing its N-th checkpoint: half of the bytes are out, the
# rename has not happened. This is the worst moment for a non-atomic writer.
KILL_DURING_CHECKPOINT = r"""
import os, signal, sys
import nst_pl.image_io as image_io
original, count = image_io._write_all, [0]
def write_all(fd, data):
    if bytes(data[:2]) == b"PK":  # a checkpoint (torch.save's zip), not a PNG
        count[0] += 1
        if count[0] == int(os.environ["NST_TEST_KILL_AT"]):
            original(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    original(fd, data)
image_io._write_all = write_all
from nst_pl.cli import main
args, sys.argv = sys.argv[1:], sys.argv[:1]
main(args)
"""


# Every PNG write takes NST_TEST_PNG_DELAY seconds: the step-0 images of many pairs take long enough to signal the
# run in the middle of them (as 40 000 pairs would without the delay).
SLOW_PNG_WRITES = r"""
import os, sys, time
import nst_pl.image_io as image_io
original = image_io._write_all
def write_all(fd, data):
    if bytes(data[:4]) == b"\x89PNG":
        time.sleep(float(os.environ["NST_TEST_PNG_DELAY"]))
    original(fd, data)
image_io._write_all = write_all
from nst_pl.cli import main
args, sys.argv = sys.argv[1:], sys.argv[:1]
main(args)
"""


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


class Background:
    """A `python -m nst_pl.cli` subprocess; a thread sends `sig` once `ready` exists, then collects the output.

    stdout: "pipe" (read by the test), "/dev/full" (every write fails with ENOSPC) or "closed" (a pipe whose reading
    end is closed at once, as by `| head -c 10`: every write fails with EPIPE)."""

    def __init__(
        self,
        argv: list[str],
        root: Path,
        sig: int | None = None,
        ready: str = "",
        env: dict | None = None,
        stdout: str = "pipe",
    ):
        self.root = root
        environment = dict(os.environ, PYTHONPATH=str(REPO), PL_DISABLE_FORK="1", OMP_NUM_THREADS="1", **(env or {}))
        environment.pop("NST_PL_DEBUG", None)
        with open(os.devnull if stdout != "/dev/full" else "/dev/full", "w") as full:
            self.proc = subprocess.Popen(
                argv,
                cwd=root,
                env=environment,
                stdout=full if stdout == "/dev/full" else subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a Ctrl-C on the test terminal does not reach it
                # A test runner started in the background (`cmd &`, nohup) ignores SIGINT / SIGHUP, and a child
                # inherits ignored signals: give the scenarios the default dispositions a terminal run has.
                preexec_fn=_default_signals,
            )
        if stdout == "closed":
            self.proc.stdout.close()
            self.proc.stdout = None
        self.sig, self.ready, self.err, self.signalled_at = sig, ready, "", None
        self.thread = threading.Thread(target=self._drive, daemon=True)
        self.thread.start()

    def _drive(self) -> None:
        # Generous: ~10 scenario processes start at once beside the module's own fits; on 2 busy cores their
        # imports alone have taken minutes (a 240 s deadline killed two signalled runs on a loaded CI).
        deadline = time.monotonic() + 540
        if self.sig is not None:
            while self.proc.poll() is None and time.monotonic() < deadline:
                if list(self.root.rglob(self.ready)):
                    self.proc.send_signal(self.sig)
                    self.signalled_at = time.monotonic()
                    break
                time.sleep(0.05)
        try:
            self.out, self.err = self.proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by its handle
            self.out, self.err = self.proc.communicate()
        self.ended_at = time.monotonic()

    def result(self) -> tuple[int, str]:
        self.thread.join()
        return self.proc.returncode, self.err


@pytest.fixture(scope="module", autouse=True)
def runs(tmp_path_factory):
    """Start every subprocess scenario now; the tests at the end of the module collect their results."""
    started = {}
    for name, sig in (("sigterm", signal.SIGTERM), ("sigint", signal.SIGINT)):
        root = tmp_path_factory.mktemp(name)
        content, style = inputs(root)
        argv = [
            sys.executable,
            "-m",
            "nst_pl.cli",
            *fit_args(root, content, style, 100_000),
            "--checkpoint.every_n_train_steps",
            "0",
        ]  # the only checkpoint is the one saved on the way out
        started[name] = Background(argv, root, sig, ready="step_000001.png")
    root = tmp_path_factory.mktemp("sigkill")
    content, style = inputs(root)
    argv = [
        sys.executable,
        "-c",
        KILL_DURING_CHECKPOINT,
        *fit_args(root, content, style, 50),
        "--checkpoint.every_n_train_steps",
        "1",
    ]
    started["sigkill"] = Background(argv, root, env={"NST_TEST_KILL_AT": "3"})
    root = tmp_path_factory.mktemp("sighup")  # the terminal (or ssh session) of the run was closed
    content, style = inputs(root)
    argv = [sys.executable, "-m", "nst_pl.cli", *fit_args(root, content, style, 100_000)]
    started["sighup"] = Background(argv, root, signal.SIGHUP, ready="step_000001.png")
    # stdout on a full device; a pipe closed early (`| head -c 10`); started without one (`>&-`)
    for console in ("/dev/full", "closed", ">&-"):
        root = tmp_path_factory.mktemp("stdout")
        content, style = inputs(root)
        argv = [sys.executable, "-m", "nst_pl.cli", *fit_args(root, content, style, 4, 32, *PRINTED_PROGRESS)]
        if console == ">&-":
            argv = ["sh", "-c", 'exec "$0" "$@" >&-', *argv]
        started[console] = Background(argv, root, stdout="pipe" if console == ">&-" else console)
    root = tmp_path_factory.mktemp("many_pairs")
    for i in range(8):
        make_image(root / "content" / f"c{i}.png", (16, 16), seed=i)
    for i in range(5):
        make_image(root / "style" / f"s{i}.png", (16, 16), seed=10 + i, kind="stripes")
    argv = [sys.executable, "-c", SLOW_PNG_WRITES, *fit_args(root, root / "content", root / "style", 5, 16)]
    started["many_pairs"] = Background(
        argv, root, signal.SIGTERM, ready="step_000000.png", env={"NST_TEST_PNG_DELAY": "0.2"}
    )
    root = tmp_path_factory.mktemp("terminal")
    content, style = inputs(root)
    argv = [sys.executable, "-m", "nst_pl.cli", *fit_args(root, root / "no such photo.jpg", style)]
    started["terminal"] = Background(argv, root)
    yield started
    for bg in started.values():
        if bg.proc.poll() is None:
            bg.proc.kill()
        bg.thread.join()


# ---------------------------------------------------------------------------------------------- 1. images
def _bad_input(root: Path, case: str) -> tuple[Path, tuple[str, ...]]:
    folder = root / "bad"
    folder.mkdir()
    if case == "missing":
        return root / "nowhere" / "photo.jpg", ("content image not found", "nowhere", "check the spelling")
    if case == "empty folder":
        (folder / "notes.txt").write_text("not an image")
        return folder, ("no content images in folder", "put images there")
    if case == "corrupt":
        good = make_image(root / "good.png")
        (folder / "photo.png").write_bytes(good.read_bytes()[:60])  # truncated PNG
        return folder / "photo.png", ("photo.png", "not a readable image", "re-export or re-download")
    if case == "not an image":
        (folder / "photo.jpg").write_text("hello, I am a text file")
        return folder / "photo.jpg", ("photo.jpg", "not a readable image")
    if case == "enormous":
        (folder / "bomb.png").write_bytes(png_header_claiming(100_000, 100_000))  # 10 gigapixels claimed
        return folder / "bomb.png", ("100000x100000", "megapixels", "downscale it first")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "empty folder", "corrupt", "not an image", "enormous"])
def test_bad_content_image_is_a_one_paragraph_error(case, tmp_path, capsys):
    _, style = inputs(tmp_path)
    content, words = _bad_input(tmp_path, case)
    code, err = run(fit_args(tmp_path, content, style), capsys)
    assert_clear_error(code, err, *words)
    assert not list(tmp_path.rglob("*.ckpt")) and not list((tmp_path / "out").rglob("*.png"))


@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_image_too_small_for_the_deepest_layer_names_the_minimum(name, tmp_path, capsys):
    content, style = inputs(tmp_path)
    cls = EXTRACTORS[name]
    # The shipped config of this extractor (its layers), if there is one; else StyleTransfer's default layers.
    fit_configs = [(p, yaml.safe_load(p.read_text())) for p in sorted((REPO / "nst_pl" / "configs").glob("*.yaml"))]
    shipped = [
        p
        for p, raw in fit_configs
        if "model" in raw  # compare_*.yaml hold compare options, not a fit
        and raw["model"]["extractor"]["class_path"].endswith(f".{cls.__name__}")
    ]
    config = shipped[0] if shipped else None
    model = yaml.safe_load(config.read_text())["model"] if config else {}  # else: StyleTransfer's default layers
    extractor = cls(weights=None)
    layers = [*model.get("content_layers", DEFAULT_CONTENT_LAYERS), *model.get("style_layers", DEFAULT_STYLE_LAYERS)]
    minimum = extractor.min_input_size(layers)
    if minimum == 1:
        pytest.skip(f"no input is too small for {cls.__name__}: its padded convolutions keep every stage >= 1 px")
    # The photo's long side at the minimum, so its short side falls just below: too small, not elongated.
    with Image.open(content) as im:
        short = round(minimum * min(im.size) / max(im.size))
    args = fit_args(tmp_path, content, style, 2, minimum, shallow=False)
    args[1:1] = ["--config", str(config)] if config else []  # the shipped layers of this extractor, then our overrides
    args[args.index("--model.extractor") + 1] = f"nst_pl.extractors.{cls.__name__}"
    code, err = run(args, capsys)
    assert short < minimum  # the case really is too small
    assert_clear_error(code, err, f"{short} px is too small", cls.__name__, f"at least {minimum} px", "data.image_size")


def test_debug_env_shows_the_full_traceback(tmp_path, capsys, monkeypatch):
    _, style = inputs(tmp_path)
    monkeypatch.setenv("NST_PL_DEBUG", "1")
    with pytest.raises(ImageError, match="content image not found"):
        main(fit_args(tmp_path, tmp_path / "missing.jpg", style))


def test_genuine_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    # A ValueError that Python raises on a line of ours (min() of an empty list) is a bug, not a message.
    content, style = inputs(tmp_path)
    original = PairDataModule.setup

    def broken_setup(self, stage=None):
        original(self, stage)
        self.images.sizes = []

    monkeypatch.setattr(PairDataModule, "setup", broken_setup)
    with pytest.raises(ValueError, match="empty"):
        main(fit_args(tmp_path, content, style))
    # The rule behind it: our NSTErrors are messages; anything else (Python's, torch's) is a bug.
    with pytest.raises(ValueError) as ours:
        _layer_weights([1.0], ["relu1_1", "relu2_1"], "style")
    assert isinstance(ours.value, user_errors())
    with pytest.raises(RuntimeError) as bug:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    assert not isinstance(bug.value, user_errors())


# ---------------------------------------------------------------------------------------------- 2. config
CONFIG_ERRORS = {
    "unknown extractor": (
        ["--model.extractor", "nst_pl.extractors.VGG99"],
        ["VGG99", "Valid extractors", "nst_pl.extractors.VGG19", "nst_pl.extractors.ResNet50"],
    ),
    "unknown layer": (["--model.style_layers", "[relu1_1, relu9_9]"], ["'relu9_9'", "valid layers", "relu5_1"]),
    "negative style weight": (["--model.style_weight", "-1"], ["model.style_weight", ">= 0"]),
    "zero layer weights": (["--model.style_layer_weights", "[0, 0, 0, 0, 0]"], ["model.style_layer_weights"]),
    "zero image size": (["--data.image_size", "0"], ["data.image_size", "positive"]),
    "negative learning rate": (
        ["--model.optimizer", "torch.optim.Adam", "--model.optimizer.init_args.lr", "-1"],
        ["model.optimizer", "learning rate"],
    ),
    "negative save period": (["--image_logger.every_n_steps", "-1"], ["image_logger.every_n_steps", ">= 0"]),
    "style_blend length": (["--data.style_blend", "[0.5, 0.5]"], ["data.style_blend", "2 value", "1 style"]),
    "value starting with -": (["--data.content", "-photo.jpg"], ["--data.content", "--data.content=-photo.jpg"]),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_bad_config_is_a_one_paragraph_error(case, tmp_path, capsys):
    content, style = inputs(tmp_path)
    extra, words = CONFIG_ERRORS[case]
    code, err = run(fit_args(tmp_path, content, style, 2, 32, *extra), capsys)
    assert_clear_error(code, err, *words)
    assert "--trainer.accelerator" not in err  # no 60-line usage dump
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("option", ["--trainer.default_root_dir", "--checkpoint.dirpath"])
def test_unwritable_output_folder_fails_before_any_work(option, tmp_path, capsys, monkeypatch):
    # Tests run as root, which ignores permission bits: a folder below a regular FILE can never be created.
    content, style = inputs(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    calls = []
    monkeypatch.setattr(PairDataModule, "setup", lambda self, stage=None: calls.append("setup"))
    code, err = run(fit_args(tmp_path, content, style, 2, 32, option, str(blocker / "out")), capsys)
    assert_clear_error(code, err, "cannot write the output folder", "a_file", "--trainer.default_root_dir")
    assert calls == []  # failed before loading a single image, let alone the first step


# --------------------------------------------------------------------------------------------- 3. weights
def test_no_network_names_the_file_and_the_local_alternative(tmp_path, capsys, monkeypatch):
    content, style = inputs(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    args = fit_args(tmp_path, content, style)
    args[args.index("--model.extractor.init_args.weights") + 1] = "imagenet"
    code, err = run(args, capsys)
    url = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
    assert_clear_error(code, err, url, "torch_home", "weights: /path/to/state_dict.pth", "weights: null")


def test_local_weights_that_do_not_fit_name_the_keys(tmp_path, capsys):
    content, style = inputs(tmp_path)
    wrong = tmp_path / "alexnet_like.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11), "features.0.bias": torch.zeros(64)}, wrong)
    args = fit_args(tmp_path, content, style)
    args[args.index("--model.extractor.init_args.weights") + 1] = str(wrong)
    code, err = run(args, capsys)
    assert_clear_error(
        code,
        err,
        "do not fit",
        "missing key",
        "features.2.weight",
        "shape mismatch",
        "features.0.weight (file (64, 3, 11, 11), VGG19 (64, 3, 3, 3))",
    )


# -------------------------------------------------------------------------------------------- 4. numerics
class _NaNGradient(torch.autograd.Function):
    """Identity forward (finite loss), NaN backward: the case where the pixels would turn NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


def _poison_extractor(monkeypatch, after: int, how: str) -> None:
    """From the (after+1)-th training evaluation on, VGG19's features are inf (`loss`) or have NaN gradients."""
    calls = [0]

    def forward(self, x, layers):
        feats = FeatureExtractor.forward(self, x, layers)
        if not torch.is_grad_enabled():  # the targets, computed once under no_grad
            return feats
        calls[0] += 1
        if calls[0] <= after:
            return feats
        if how == "loss":
            return {k: f * float("inf") for k, f in feats.items()}
        return {k: _NaNGradient.apply(f) for k, f in feats.items()}

    monkeypatch.setattr(VGG19, "forward", forward)


def ckpt_output(ckpt: dict, root: Path) -> torch.Tensor:
    """The first pair's output image as the checkpoint holds it: the bias-corrected EMA when averaging is on, through
    the module's own output step with the run's options (photo and painting of `inputs(root)`, loaded at the canvas's
    long side as the data module does)."""
    state, options = ckpt["state_dict"], ckpt["hyper_parameters"]
    image = averaged_image(
        state["image"], state.get("image_ema"), int(state.get("ema_steps", 0)), options.get("ema_decay")
    )[0].clamp(0, 1)
    photo, painting = (image_io.load_image(p, long_side=max(image.shape[-2:])) for p in _input_files(root))
    return output_picture(image, photo, [painting], torch.ones(1), **{k: options[k] for k in OUTPUT_OPTIONS})


@pytest.mark.parametrize("how", ["loss", "gradient"])
def test_non_finite_loss_stops_with_the_last_finite_image_kept(how, tmp_path, capsys, monkeypatch):
    content, style = inputs(tmp_path)
    k = 2
    _poison_extractor(monkeypatch, after=k, how=how)
    code, err = run(fit_args(tmp_path, content, style, 6), capsys)
    assert_clear_error(code, err, f"{how} became", f"at step {k}", "diverged", "model.optimizer.init_args.lr")
    run_ = run_dir(tmp_path)
    # Images of every finite step and nothing after the failure; all of them decode.
    assert png_steps(run_ / "images" / "photo__paint") == list(range(k + 1))
    no_stray_files(tmp_path)
    # The checkpoint written on the way out holds the last finite image, not a NaN one.
    ckpt = load_ckpt(run_ / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == k
    image = ckpt["state_dict"]["image"][0]
    assert torch.isfinite(image).all()
    last_png = read_png(run_ / "images" / "photo__paint" / f"step_{k:06d}.png")
    assert (ckpt_output(ckpt, tmp_path) - last_png).abs().max() <= 1 / 255 + 1e-6


# ---------------------------------------------------------------------------------------------- 5. faults
def test_full_disk_during_a_periodic_png_save_warns_and_continues(tmp_path, capsys, monkeypatch):
    content, style = inputs(tmp_path)
    fail_writes(monkeypatch, PNG_MAGIC, 3, 3)  # the 3rd PNG: step 2
    code, err = run(fit_args(tmp_path, content, style, 4), capsys)
    assert code == 0, err
    warning = "nst-pl: warning: step 2: could not save the images, the run continues"
    assert warning in err and "no space left" in err.split(warning)[1].splitlines()[0]
    assert png_steps(run_dir(tmp_path) / "images" / "photo__paint") == [0, 1, 3, 4]
    no_stray_files(tmp_path)


def test_full_disk_at_the_final_save_is_an_error_and_resuming_writes_the_result(tmp_path, capsys, monkeypatch):
    content, style = inputs(tmp_path)
    fail_writes(monkeypatch, PNG_MAGIC, 3)  # every PNG from step 2 on
    code, err = run(fit_args(tmp_path, content, style, 3), capsys)
    assert "nst-pl: warning: step 2: could not save" in err
    assert_clear_error(code, err, "step_000003.png", "no space left", "free some disk space")
    first = run_dir(tmp_path)
    assert png_steps(first / "images" / "photo__paint") == [0, 1]
    ckpt = first / "checkpoints" / "last.ckpt"
    assert load_ckpt(ckpt)["global_step"] == 3  # the result is in the checkpoint written on the way out
    no_stray_files(tmp_path)
    monkeypatch.setattr(image_io, "_write_all", ORIGINAL_WRITE_ALL)  # space was freed
    code, err = run(fit_args(tmp_path, content, style, 3, 32, "--ckpt_path", str(ckpt)), capsys)
    assert code == 0, err
    assert png_steps(run_dir(tmp_path, 1) / "images" / "photo__paint") == [3]
    assert "the checkpoint is at step 3 and trainer.max_steps is 3: no step runs" in err  # said, not silent
    assert "dirpath has changed" not in err  # Lightning's note on every resume into a new version folder


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    content, style = inputs(tmp_path)
    fail_writes(monkeypatch, CKPT_MAGIC, 2)  # every checkpoint after the first
    code, err = run(fit_args(tmp_path, content, style, 4, 32, "--checkpoint.every_n_train_steps", "1"), capsys)
    assert_clear_error(code, err, "checkpoint not saved", ".ckpt", "no space left", "left untouched")
    assert load_ckpt(run_dir(tmp_path) / "checkpoints" / "last.ckpt")["global_step"] == 1
    no_stray_files(tmp_path)


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    cli = NSTCLI(
        StyleTransfer,
        PairDataModule,
        run=False,
        auto_configure_optimizers=False,
        args=fit_args(tmp_path, *inputs(tmp_path))[1:],
    )
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    io_ = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io_.save_checkpoint({"global_step": 1, "x": torch.ones(1000)}, path)
    fail_writes(monkeypatch, CKPT_MAGIC, 1)
    with pytest.raises(OutputError, match="no space left"):
        io_.save_checkpoint({"global_step": 2, "x": torch.zeros(1000)}, path)
    assert load_ckpt(path)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file either


# ------------------------------------------------------------------------------------------ 6. hostile input
HOSTILE = {
    "my photo.png": "my_photo",
    "ünï 写真.png": "ünï_写真",
    "a;b&c|d$(e)`f`'g\"h.png": "a_b_c_d_e_f_g_h",
    "[x] {y}: #1.png": "x_y_1",
    "~tilde.png": "tilde",
    "-dash.png": "dash",
}
HOSTILE_STYLE = "st [y]: *.png"


def test_hostile_file_names_run_end_to_end(tmp_path, capsys):
    for i, name in enumerate(HOSTILE):
        make_image(tmp_path / "content" / name, (40, 32), seed=i)
    style = make_image(tmp_path / "style" / HOSTILE_STYLE, (32, 32), seed=9, kind="stripes")
    code, err = run(fit_args(tmp_path, tmp_path / "content", style, 1), capsys)
    assert code == 0, err
    folders = run_dir(tmp_path) / "images"
    assert sorted(p.name for p in folders.iterdir()) == sorted(f"{stem}__st_y" for stem in HOSTILE.values())
    for folder in folders.iterdir():
        assert png_steps(folder) == [0, 1]


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_file_names_on_the_command_line(name, tmp_path, monkeypatch):
    # Relative names typed in the images' folder: jsonargparse must not read "[x] {y}: #1.png" as YAML, nor
    # Python "~tilde.png" as a home folder. A name starting with "-" needs the "--option=value" form.
    make_image(tmp_path / name, (40, 32))
    style = make_image(tmp_path / "s" / "paint.png", (32, 32), kind="stripes")
    monkeypatch.chdir(tmp_path)
    args = fit_args(tmp_path, name, style)[1:]
    i = args.index("--data.content")
    args[i : i + 2] = [f"--data.content={name}"]
    cli = NSTCLI(StyleTransfer, PairDataModule, run=False, auto_configure_optimizers=False, args=args)
    assert [p.content for p in cli.datamodule.pairs] == [Path(name)]
    assert [p.name for p in cli.datamodule.pairs] == [f"{HOSTILE[name]}__paint"]


def test_duplicate_contents_get_distinct_stable_pair_names(tmp_path, capsys):
    a = make_image(tmp_path / "a" / "photo.png", (48, 40), seed=1)
    b = make_image(tmp_path / "b" / "photo.png", (48, 40), seed=5)
    style = make_image(tmp_path / "style" / "paint.png", (40, 40), seed=2, kind="stripes")
    contents = json.dumps([str(a), str(b), str(a)])
    code, err = run(fit_args(tmp_path, contents, style, 1), capsys)
    assert code == 0, err
    out = run_dir(tmp_path) / "images"
    expected = ["photo__paint", "photo__paint-2", "photo__paint-3"]
    assert sorted(p.name for p in out.iterdir()) == expected
    first = {n: read_png(out / n / "step_000000.png") for n in expected}
    assert torch.equal(first["photo__paint"], first["photo__paint-3"])  # the same photo twice
    assert not torch.equal(first["photo__paint"], first["photo__paint-2"])  # another photo, same file name
    # Stable: the same list gives the same names, in the same order, every time.
    again = NSTCLI(
        StyleTransfer,
        PairDataModule,
        run=False,
        auto_configure_optimizers=False,
        args=fit_args(tmp_path, contents, style, 1)[1:],
    )
    assert [p.name for p in again.datamodule.pairs] == expected


# ----------------------------------------------------------------------- subprocess results (started at import)
def test_error_in_a_real_terminal_is_one_paragraph(runs):
    code, err = runs["terminal"].result()
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-2].startswith("nst-pl: error: content image not found:") and "no such photo.jpg" in lines[-2]
    assert lines[-1] == "(set NST_PL_DEBUG=1 to see the full traceback)"
    assert len(lines) <= 4, err  # at most Lightning's "Seed set to 0" besides our paragraph


@pytest.mark.parametrize("name,code,how", [("sigterm", 143, "SIGTERM"), ("sigint", 130, "Ctrl-C")])
def test_signal_saves_images_and_a_checkpoint_then_exits_non_zero(runs, name, code, how):
    bg = runs[name]
    rc, err = bg.result()
    assert bg.signalled_at is not None, f"the run never reached its first step: {err[-2000:]}"
    assert rc == code, err[-3000:]
    assert "Traceback" not in err
    match = re.search(rf"nst-pl: stopped by {re.escape(how)}.* at step (\d+): .*--ckpt_path '([^']+)'", err)
    assert match, err[-3000:]
    step, ckpt_path = int(match.group(1)), Path(match.group(2))
    assert step >= 1
    images = bg.root / "out" / "lightning_logs" / "version_0" / "images" / "photo__paint"
    assert png_steps(images)[-1] == step  # the images of the step reached
    ckpt = load_ckpt(ckpt_path)
    assert ckpt_path.name == "last.ckpt" and ckpt["global_step"] == step
    # No extra `epoch=0-step=N.ckpt` beside it, and no garbled "An KeyboardInterrupt was raised …" line.
    assert sorted(p.name for p in ckpt_path.parent.iterdir()) == ["last.ckpt"]
    assert "was raised with message" not in err and "saved checkpoint to" not in err
    assert ckpt["optimizer_states"][0]["state"]  # Adam's moments: the run can continue exactly
    image = ckpt["state_dict"]["image"][0]
    assert torch.isfinite(image).all()
    if name == "sigterm":  # handled at a step boundary: the checkpoint and the last PNG show the same image
        assert (ckpt_output(ckpt, bg.root) - read_png(images / f"step_{step:06d}.png")).abs().max() <= 1 / 255 + 1e-6
    no_stray_files(bg.root)


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_and_resume_works(runs, capsys):
    bg = runs["sigkill"]
    rc, err = bg.result()
    assert rc == -signal.SIGKILL, err[-3000:]  # killed in the middle of its 3rd checkpoint write
    first = bg.root / "out" / "lightning_logs" / "version_0"
    ckpt = first / "checkpoints" / "last.ckpt"
    assert load_ckpt(ckpt)["global_step"] == 2  # the previous complete checkpoint, not half of the new one
    for png in first.rglob("*.png"):
        read_png(png)  # every PNG is complete
    leftovers = [p.name for p in (first / "checkpoints").iterdir() if p.name != "last.ckpt"]
    assert all(n.startswith(".last.ckpt.") and n.endswith(".tmp") for n in leftovers)  # hidden, never loaded
    assert png_steps(first / "images" / "photo__paint") == [0, 1, 2, 3]

    content, style = bg.root / "content" / "photo.png", bg.root / "style" / "paint.png"
    code, err = run(fit_args(bg.root, content, style, 4, 32, "--ckpt_path", str(ckpt)), capsys)
    assert code == 0, err
    second = bg.root / "out" / "lightning_logs" / "version_1"
    assert png_steps(second / "images" / "photo__paint") == [2, 3, 4]  # continues from step 2, not from 0
    step2 = "images/photo__paint/step_000002.png"
    assert torch.equal(read_png(first / step2), read_png(second / step2))  # the restored image
    assert load_ckpt(second / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_sighup_saves_images_and_a_checkpoint_then_exits_129(runs):
    bg = runs["sighup"]
    rc, err = bg.result()
    assert bg.signalled_at is not None, f"the run never reached its first step: {err[-2000:]}"
    assert rc == 129, err[-3000:]  # 128 + SIGHUP, not killed by the signal's default action with nothing saved
    assert "Traceback" not in err
    match = re.search(r"stopped by SIGHUP \(the terminal was closed\) at step (\d+): .*--ckpt_path '([^']+)'", err)
    assert match, err[-3000:]
    step, ckpt_path = int(match.group(1)), Path(match.group(2))
    assert load_ckpt(ckpt_path)["global_step"] == step >= 1
    assert png_steps(run_dir(bg.root) / "images" / "photo__paint")[-1] == step
    no_stray_files(bg.root)


@pytest.mark.parametrize("console", ["/dev/full", "closed", ">&-"])
def test_a_broken_stdout_drops_the_output_and_the_run_finishes(runs, console):
    bg = runs[console]
    rc, err = bg.result()
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err
    if console == ">&-":  # closed on purpose: nothing to report
        assert "cannot write to stdout" not in err
    else:
        reason = "No space left on device" if console == "/dev/full" else "Broken pipe"
        assert err.count(f"nst-pl: warning: cannot write to stdout ({reason})") == 1, err[-3000:]
    run = run_dir(bg.root)
    assert png_steps(run / "images" / "photo__paint") == [0, 1, 2, 3, 4]  # every image, the final one included
    assert load_ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert list(run.glob("events.out.tfevents.*")) and (run / "config.yaml").is_file()
    no_stray_files(bg.root)


def test_sigterm_while_the_step_0_images_of_many_pairs_are_written_stops_between_two_files(runs):
    """40 pairs whose PNGs take 0.2 s each (8 s for step 0, then as much for every later step): SIGTERM right after
    the first PNG stops the writing between two files, and the run ends with a checkpoint instead of finishing the
    40 images, a step and 40 more."""
    bg = runs["many_pairs"]
    rc, err = bg.result()
    assert bg.signalled_at is not None, f"the run never wrote an image: {err[-2000:]}"
    assert rc == 143, err[-3000:]
    assert "Traceback" not in err and "nst-pl: stopped by SIGTERM at step 0" in err, err[-3000:]
    images = run_dir(bg.root) / "images"
    written = list(images.rglob("step_*.png"))
    assert 1 <= len(written) < 40 and all(p.name == "step_000000.png" for p in written)
    ckpt = load_ckpt(run_dir(bg.root) / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 0 and ckpt["state_dict"]["image"].shape[0] == 40  # every pair's image
    # No timing claim beyond "it ended": the count of PNGs above shows where it stopped; the interpreter's own exit
    # takes seconds on a loaded machine.
    assert bg.ended_at - bg.signalled_at < 60, bg.ended_at - bg.signalled_at
    no_stray_files(bg.root)
