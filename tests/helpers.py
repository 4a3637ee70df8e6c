"""Shared test helpers, defined once: tiny images, the offline weights (optional), shallow layers and the tests'
recipe, a small Trainer and fit, the CLI in-process, faults to inject, subprocess environments. Test modules import
them (`from helpers import ...`), never each other; the fixtures are in conftest.py."""

from __future__ import annotations

import errno
import functools
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# Optional test material (the offline VGG16 in Caffe convention, a few photos) lies in ../shared beside the
# checkout; tests that need it skip when it is absent. The product itself never looks there.
SHARED = REPO.parent / "shared"
OFFLINE_VGG16 = SHARED / "weights" / "vgg16_caffe_hed.pth"

os.environ.setdefault("PL_DISABLE_FORK", "1")

import pytorch_lightning as pl  # noqa: E402  (after PL_DISABLE_FORK is set)

# Shallow layers keep a step cheap on a shared CPU; the behaviour under test does not depend on the depth.
SHALLOW = dict(content_layers=["relu2_1"], style_layers=["relu1_1", "relu2_1"])
# The same layers as command-line arguments: ("--model.content_layers", "[relu2_1]", ...).
SHALLOW_CLI = tuple(arg for key, layers in SHALLOW.items() for arg in (f"--model.{key}", f"[{', '.join(layers)}]"))
# The loss and step settings the tests' thresholds were measured with (StyleTransfer's defaults before they became
# the vgg19 recipe's); what these tests check does not depend on them. `fit` and `cli_fit_args` use them.
TEST_LOSSES = dict(style_weight=3.0, relative_losses=True, laplacian_weight=0.0, coarse_luminance_weight=0.0)
TEST_RECIPE = dict(
    **TEST_LOSSES,
    ema_decay=0.9,
    gradient_floor=0.0,
    flat_step_shift=0.0,
    optimizer=functools.partial(torch.optim.Adam, lr=0.007),
)
# Every keyword of `Objective` (it has no defaults: StyleTransfer holds them), for tests of the objective alone.
TEST_OBJECTIVE = dict(
    **SHALLOW,
    content_layer_weights=None,
    style_layer_weights=None,
    content_weight=1.0,
    tv_weight=0.0,
    style_loss="gram",
    tile_size=None,
    **TEST_LOSSES,
)
TEST_RECIPE_CLI = (
    *("--model.style_weight", "3.0", "--model.relative_losses", "true", "--model.laplacian_weight", "0"),
    *("--model.coarse_luminance_weight", "0"),
    *("--model.ema_decay", "0.9", "--model.flat_step_shift", "0"),
    *("--model.optimizer.init_args.lr", "0.007"),
)


def make_image(path: Path, size=(48, 40), seed: int = 0, kind: str = "smooth") -> Path:
    """Write a small RGB test picture: smooth gradients + blobs (content-like) or stripes (style-like)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    if kind == "stripes":
        base = np.stack([np.sin(xx * 40 + c) for c in range(3)], -1) * 0.5 + 0.5
        base = base * 0.7 + 0.3 * rng.random((h, w, 3))
    else:
        base = np.stack([xx, yy, 1 - xx * yy], -1)
        for _ in range(3):
            cy, cx = rng.random(2)
            base += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) * 30)[..., None] * rng.random(3)
        base = base / base.max()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((base * 255).clip(0, 255).astype(np.uint8)).save(path)
    return path


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims an enormous size (a classic decompression bomb probe)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def make_objective(extractor, **options):
    """An `Objective` on `extractor` with TEST_OBJECTIVE's options, `options` over them."""
    from nst_pl.objective import Objective

    return Objective(extractor, **{**TEST_OBJECTIVE, **options})


def tiny_trainer(tmp_path: Path, max_steps: int = 3, callbacks=(), **kw):
    from nst_pl.trainer import TRAINER_DEFAULTS

    args = dict(TRAINER_DEFAULTS)
    args.update(
        max_steps=max_steps,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        callbacks=list(callbacks),
    )
    args.update(kw)
    return pl.Trainer(**args)


class LossRecorder(pl.Callback):
    """Keeps every step's logged metrics (`trainer.callback_metrics`) as floats."""

    def __init__(self):
        self.values: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append({k: float(v) for k, v in trainer.callback_metrics.items()})


class StopAt(pl.Callback):
    """Ends the run after `step` steps although max_steps is larger (an interrupted run)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def fit(root, content, style, max_steps=3, model_kw=None, data_kw=None, callbacks=(), ckpt_path=None, **trainer_kw):
    """A seeded StyleTransfer on an untrained VGG16 with SHALLOW layers and TEST_RECIPE, fitted on 48 px images by
    `tiny_trainer` (resumed from `ckpt_path` if given)."""
    from nst_pl.data import PairDataModule
    from nst_pl.extractors import VGG16
    from nst_pl.module import StyleTransfer

    torch.manual_seed(0)
    model = StyleTransfer(VGG16(weights=None), **{**SHALLOW, **TEST_RECIPE, **(model_kw or {})})
    data = PairDataModule(content=str(content), style=str(style), **{"image_size": 48, **(data_kw or {})})
    trainer = tiny_trainer(root, max_steps=max_steps, callbacks=callbacks, **trainer_kw)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model, data, trainer


def fit_to_last_ckpt(root, content, style, max_steps, model_kw, callbacks=(), ckpt_path=None):
    """`fit` that saves last.ckpt at its end only: (model, the path of last.ckpt)."""
    from nst_pl.callbacks import LastCheckpoint

    ckpt = LastCheckpoint(every_n_train_steps=1000, save_last=True, save_top_k=0)
    model, *_ = fit(
        root,
        content,
        style,
        max_steps,
        model_kw,
        callbacks=[ckpt, *callbacks],
        ckpt_path=ckpt_path,
        enable_checkpointing=True,
    )
    return model, ckpt.last_model_path


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold the same step, images and optimizer state, bitwise."""
    assert a["global_step"] == b["global_step"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    sa, sb = a["optimizer_states"][0]["state"][0], b["optimizer_states"][0]["state"][0]
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --------------------------------------------------------------------------------------------------- the CLI in-process
def cli_fit_args(
    content,
    style,
    out,
    steps: int = 2,
    *extra: str,
    size: int = 32,
    shallow: bool = True,
    config: Path | None = None,
    extractor: str | None = None,
    devices: int | None = 1,
    quiet: bool = True,
    log_every: int | None = None,
    images_every: int | None = 1,
    recipe: bool = True,
) -> list[str]:
    """`nst-pl fit` arguments for a tiny CPU run on random weights: `config`'s extractor, else `extractor` (VGG19 by
    default), SHALLOW layers (or the config's), no progress bar (`quiet`), PNGs every `images_every` steps. Without a
    config, TEST_RECIPE's options (`recipe`; False: the module's defaults). An option set to None is left to the
    config or the defaults; `extra` comes last, so it overrides the rest."""
    if extractor is None and config is None:
        extractor = "nst_pl.extractors.VGG19"
    return [
        "fit",
        *(("--config", str(config)) if config is not None else ()),  # first: the options below override it
        *(("--model.extractor", extractor) if extractor is not None else ()),  # the class before its init_args
        "--model.extractor.init_args.weights",
        "null",
        *(SHALLOW_CLI if shallow else ()),
        *(TEST_RECIPE_CLI if recipe and config is None else ()),
        "--data.content",
        str(content),
        "--data.style",
        str(style),
        "--data.image_size",
        str(size),
        "--trainer.max_steps",
        str(steps),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.accelerator",
        "cpu",
        *(("--trainer.devices", str(devices)) if devices is not None else ()),
        *(("--trainer.enable_progress_bar", "false") if quiet else ()),
        *(("--trainer.log_every_n_steps", str(log_every)) if log_every is not None else ()),
        *(("--image_logger.every_n_steps", str(images_every)) if images_every is not None else ()),
        *extra,
    ]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run `nst-pl` in-process: (exit code, stderr)."""
    from nst_pl.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, capsys.readouterr().err


def assert_clear_error(code: int, err: str, *words: str) -> str:
    """Exit code 2, no traceback, and one `nst-pl: error:` paragraph that contains every word."""
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("nst-pl: error:") == 1, err
    paragraph = err[err.index("nst-pl: error:") :]
    for word in words:
        assert word in paragraph, f"{word!r} not in {paragraph!r}"
    assert len(paragraph.strip().splitlines()) <= 8, paragraph
    return paragraph


# ------------------------------------------------------------------------------------------------ faults
def fail_writes(monkeypatch, magic: bytes, fail_from: int, fail_to: int | None = None) -> list[int]:
    """A full disk for nst-pl's own files: the n-th atomic write of a file starting with `magic` (the PNG signature,
    b"PK" for checkpoints) writes half of its bytes and fails with ENOSPC, for fail_from <= n <= fail_to."""
    import nst_pl.image_io as image_io

    original, seen = image_io._write_all, []

    def write_all(fd, data):
        if bytes(data[: len(magic)]) == magic:
            seen.append(len(data))
            if fail_from <= len(seen) and (fail_to is None or len(seen) <= fail_to):
                original(fd, data[: len(data) // 2])
                raise OSError(errno.ENOSPC, "No space left on device")
        original(fd, data)

    monkeypatch.setattr(image_io, "_write_all", write_all)
    return seen


def fail_tensorboard_writes(monkeypatch, fail_from: int) -> None:
    """A full disk for TensorBoard's event file: from its n-th write on (TensorBoard opens, appends to and closes
    the file for every record, in a background thread), each write fails with ENOSPC."""
    from tensorboard.compat.tensorflow_stub.io import gfile

    original, count = gfile.LocalFileSystem._write, [0]

    def write(self, filename, content, mode):
        count[0] += 1
        if count[0] >= fail_from:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, filename, content, mode)

    monkeypatch.setattr(gfile.LocalFileSystem, "_write", write)


def without_onnxruntime(monkeypatch) -> None:
    """As if the [judge] extra were not installed: `import onnxruntime` fails."""
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)


# ------------------------------------------------------------------------------------------ subprocesses
# Rendezvous variables that an in-process `strategy: ddp` run (tests/test_cli.py runs the ddp recipe on 1 device) may
# leave set: a DDP child started with them would collide with that run's store.
RENDEZVOUS_VARIABLES = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for an `nst-pl` subprocess of this checkout: one thread, no fork, no stale rendezvous."""
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARIABLES and k != "NST_PL_DEBUG"}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        PL_DISABLE_FORK="1",
        **extra,
    )
    return env
