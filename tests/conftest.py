"""Shared fixtures: tiny images, the offline weights (optional), and a small Trainer factory."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The offline VGG16 (Caffe convention) lies in ../shared/weights beside the checkout; tests that need it skip
# when it is absent. The product itself never looks there.
OFFLINE_VGG16 = REPO.parent / "shared" / "weights" / "vgg16_caffe_hed.pth"

os.environ.setdefault("PL_DISABLE_FORK", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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


@pytest.fixture
def pair_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A content folder with one photo-like image and a style folder with one stripes image."""
    content = tmp_path / "content"
    style = tmp_path / "style"
    make_image(content / "photo.png", (48, 40), seed=1)
    make_image(style / "paint.png", (40, 40), seed=2, kind="stripes")
    return content, style


@pytest.fixture
def offline_vgg16() -> Path:
    if not OFFLINE_VGG16.exists():
        pytest.skip("offline VGG16 weights (../shared/weights/vgg16_caffe_hed.pth) not present")
    return OFFLINE_VGG16


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims an enormous size (a classic decompression bomb probe)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def tiny_trainer(tmp_path: Path, max_steps: int = 3, callbacks=(), **kw):
    import pytorch_lightning as pl

    from nst_pl.cli import TRAINER_DEFAULTS

    args = dict(TRAINER_DEFAULTS)
    args.update(
        max_steps=max_steps, default_root_dir=str(tmp_path), accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_checkpointing=False, log_every_n_steps=1,
        callbacks=list(callbacks),
    )
    args.update(kw)
    return pl.Trainer(**args)
