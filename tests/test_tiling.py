"""Print size (issue 12): tiled steps give the untiled loss and gradient; tiles own every feature position once.

Tiny pictures (64 x 80 px) with tiles of 32-50 px, so that every picture is cut into 4-9 tiles whose halos overlap;
random weights: exactness does not depend on the weights' values.
"""

from __future__ import annotations

import pytest
import torch

from nst_pl.data import PairImages
from nst_pl.errors import ConfigError
from nst_pl.extractors import VGG16, VGG19, ResNet50
from nst_pl.objective import Objective
from nst_pl.tiling import grid_step, plan_tiles

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 64, 80
# A pooled content layer and style layers at strides 1, 2 and 4: tiles must align with every grid.
LAYERS = dict(content_layers=["relu2_2"], style_layers=["relu1_1", "relu2_1", "relu3_1"])


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG16(weights=None)


def _pairs(k: int = 1, dtype=torch.float32) -> PairImages:
    """Two pairs on one canvas (the second photo is padded: its real size is smaller), with k styles each."""
    g = torch.Generator().manual_seed(0)
    content = torch.rand(2, 3, H, W, generator=g, dtype=dtype)
    styles = [[torch.rand(3, 48 + 4 * i, 60 - 6 * j, generator=g, dtype=dtype) for i in range(k)] for j in range(2)]
    blend = torch.tensor([[0.7, 0.3], [0.4, 0.6]])[:, :k] if k == 2 else torch.ones(2, 1)
    return PairImages(content, styles, blend, ["a", "b"], [(H, W), (50, W)])


def _step(extractor, tile_size, dtype=torch.float32, k=1, autocast=False, **kw):
    """The terms and the image's gradient of one evaluation at a fixed random picture."""
    objective = Objective(extractor, **{**LAYERS, "tv_weight": 0.5, **kw}, tile_size=tile_size)
    objective.bind(_pairs(k, dtype))
    image = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1), dtype=dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        terms = objective(image, torch.arange(2), 0)
        terms["total"].sum().backward()
    return {k: v.detach() for k, v in terms.items()}, image.grad, objective


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ---------------------------------------------------------------------------------------------- geometry
def test_reach_is_read_from_the_network():
    """VGG19 to relu5_1 looks 156 px wide (70 back, 85 ahead) at stride 16; ResNet-50's layer4 427 px at 32
    (its residual branches joined by torch.fx)."""
    rows, cols = VGG19(weights=None).reach(["relu5_1"])["relu5_1"]
    assert rows == cols and (rows.stride, rows.lo, rows.hi) == (16, -70, 85)
    layer4 = ResNet50(weights=None).reach(["layer4"])["layer4"][0]
    assert (layer4.stride, layer4.hi - layer4.lo + 1) == (32, 427)


@pytest.mark.parametrize("size, tile", [((64, 80), 32), ((61, 97), 36), ((200, 45), 50)])
def test_tiles_own_every_feature_position_once(vgg, size, tile):
    layers = [*LAYERS["content_layers"], *LAYERS["style_layers"]]
    reach, shapes = vgg.reach(layers), vgg.feature_shapes(size, layers)
    tiles = plan_tiles(size, tile, reach, shapes)
    assert len(tiles) > 1
    step = grid_step(reach)
    for layer in layers:
        count = torch.zeros(shapes[layer][1:], dtype=torch.long)
        for t in tiles:
            count[t.whole(layer)] += 1
            assert t.rows.start % step == 0 and t.cols.start % step == 0  # on every layer's grid
            assert t.rows.core_stop - t.rows.core_start <= tile + step  # cores about tile_size
        assert (count == 1).all(), layer


# ------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("style_loss", ["gram", "mean_std"])
@pytest.mark.parametrize("tile", [32, 36])  # 32 divides 64 x 80, 36 divides neither side
def test_tiled_gradient_equals_untiled(vgg, style_loss, tile):
    """Content, style (relative, per-layer weights) and TV over two pairs on a padded canvas: same loss terms and
    gradient to float rounding."""
    kw = dict(style_loss=style_loss, style_layer_weights=[1.0, 2.0, 0.5])
    ref_terms, ref, _ = _step(vgg, None, **kw)
    terms, grad, objective = _step(vgg, tile, **kw)
    assert len(objective.tiles((H, W))) >= 4
    assert _rel(grad, ref) < 1e-4
    for key, value in ref_terms.items():
        torch.testing.assert_close(terms[key], value, rtol=1e-5, atol=1e-9, msg=key)


def test_tiled_gradient_with_blended_styles_absolute_losses_and_no_content(vgg):
    kw = dict(content_layers=[], relative_losses=False, k=2)
    ref_terms, ref, _ = _step(vgg, None, **kw)
    terms, grad, _ = _step(vgg, 40, **kw)
    assert _rel(grad, ref) < 1e-4
    torch.testing.assert_close(terms["total"], ref_terms["total"], rtol=1e-5, atol=0)


def test_wasserstein_tiled_gradient_is_exact_in_float64_and_as_close_as_rounding_allows_in_float32():
    """The Gaussian W2 loss is ill-conditioned when covariances are nearly singular (random weights, dead
    channels): float32 rounding of the statistics alone moves its gradient by ~1e-3. In float64 the tiled
    gradient is the untiled one; in float32 it is as close to the float64 gradient as the untiled float32 one."""
    torch.manual_seed(0)
    net = VGG16(weights=None).double()
    kw = dict(style_loss="wasserstein")
    _, exact, _ = _step(net, None, torch.float64, **kw)
    _, tiled64, _ = _step(net, 32, torch.float64, **kw)
    assert _rel(tiled64, exact) < 1e-8
    net.float()
    _, untiled32, _ = _step(net, None, **kw)
    _, tiled32, _ = _step(net, 32, **kw)
    assert _rel(tiled32, exact) < 2 * _rel(untiled32, exact) + 1e-5


def test_bf16_autocast_tiled_gradient_matches_untiled(vgg):
    """Under bf16 autocast the features are bf16 and the statistics float32 in both: the gradients agree to the
    precision of bf16 activations."""
    kw = dict(content_layers=["relu1_1"], style_layers=["relu1_1"])  # bf16 convolutions: ~5 s to relu2_1 on CPU
    _, ref, _ = _step(vgg, None, autocast=True, **kw)
    _, grad, _ = _step(vgg, 36, autocast=True, **kw)
    _, fp32, _ = _step(vgg, None, **kw)
    assert _rel(grad, ref) < 2e-2
    assert torch.nn.functional.cosine_similarity(grad.flatten(), fp32.flatten(), dim=0) > 0.99


def test_evaluating_without_grad_gives_the_loss(vgg):
    ref_terms, _, objective = _step(vgg, None)
    objective = Objective(vgg, **LAYERS, tv_weight=0.5, tile_size=32)
    objective.bind(_pairs())
    image = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        terms = objective(image, torch.arange(2), 0)
    torch.testing.assert_close(terms["total"], ref_terms["total"], rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------ options
def test_coarse_phases_smaller_than_a_tile_are_not_tiled(vgg):
    objective = Objective(vgg, **LAYERS, scales=[40], scale_steps=[3], tile_size=48)
    objective.bind(_pairs(), max_steps=10)
    assert [objective.tiled(s) for s in (0, 2, 3, 9)] == [False, False, True, True]


@pytest.mark.parametrize("tile", [8, 0, 40.5])
def test_a_tile_size_below_the_networks_stride_is_a_clear_error(vgg, tile):
    with pytest.raises(ConfigError, match="model.tile_size must be a whole number of pixels of at least 16"):
        Objective(vgg, content_layers=[], style_layers=["relu5_1"], tile_size=tile)


def test_tiles_refuse_activation_smoothing():
    with pytest.raises(ConfigError, match="smoothing"):
        Objective(VGG16(weights=None, smoothing=1.0), **LAYERS, tile_size=64)
