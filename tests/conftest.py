"""pytest's set-up for the suite: the environment (no fork, at most two threads) and the shared fixtures. The helpers
that test modules import are in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("PL_DISABLE_FORK", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from helpers import OFFLINE_VGG16, make_image  # noqa: E402  (after PL_DISABLE_FORK is set)


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs gain nothing from intra-op threads, and when other jobs load the two cores, OpenMP threads
    that spin-wait for each other make a 32 px ResNet forward ~40x slower (measured: 0.03 s -> 1.2 s).
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
