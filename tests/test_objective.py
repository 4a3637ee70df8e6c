"""The objective alone (objective.py): no Lightning, no data module, a random VGG16 on 32 px pictures."""

from __future__ import annotations

import pytest
import torch
from helpers import SHALLOW, TEST_OBJECTIVE, make_objective

from nst_pl.data import PairImages
from nst_pl.errors import ConfigError
from nst_pl.extractors import VGG16
from nst_pl.objective import Objective

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 32, 40


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG16(weights=None)


def pairs(n: int = 2, styles: int = 1, blend=None) -> PairImages:
    g = torch.Generator().manual_seed(0)
    content = torch.rand(n, 3, H, W, generator=g)
    paintings = [[torch.rand(3, 36, 30, generator=g) for _ in range(styles)] for _ in range(n)]
    blend = torch.tensor(blend, dtype=torch.float32) if blend is not None else torch.ones(n, styles) / styles
    return PairImages(content, paintings, blend, [f"p{i}" for i in range(n)], [(H, W)] * n)


def image(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(1))


def test_terms_are_one_value_per_pair_and_the_total_weighs_them(vgg):
    objective = make_objective(vgg, content_weight=2.0, style_weight=5.0, tv_weight=0.5)
    objective.bind(pairs())
    terms = objective(image(), torch.arange(2))
    assert set(terms) == set(objective.term_names())
    assert all(v.shape == (2,) for v in terms.values())
    torch.testing.assert_close(terms["total"], 2.0 * terms["content"] + 5.0 * terms["style"] + 0.5 * terms["tv"])
    # Each pair against its own targets: the second pair alone gives the second pair's terms.
    alone = objective(image()[1:], torch.tensor([1]))
    torch.testing.assert_close(alone["total"], terms["total"][1:])


def test_the_photo_itself_has_no_content_loss_and_a_smaller_view_has_its_own_targets(vgg):
    objective = make_objective(vgg)
    data = pairs()
    objective.bind(data)
    at_full = objective(data.content, torch.arange(2))
    assert at_full["content"].abs().max() < 1e-6
    coarse = objective(data.content, torch.arange(2), size=(16, 20))
    assert coarse["content"].abs().max() < 1e-6  # the photo's view against the view's targets
    assert set(objective._targets) == {(H, W), (16, 20)}  # once per view size
    objective(image(), torch.arange(2), size=(16, 20))
    assert set(objective._targets) == {(H, W), (16, 20)}


@pytest.mark.parametrize("relative", [True, "shared"])
def test_relative_losses_divide_by_the_targets_mean_square(vgg, relative):
    raw = make_objective(vgg, relative_losses=False)
    rel = make_objective(vgg, relative_losses=relative)
    for objective in (raw, rel):
        objective.bind(pairs())
    a, b = raw(image(), torch.arange(2)), rel(image(), torch.arange(2))
    l1, l2 = (f"style/{layer}" for layer in SHALLOW["style_layers"])
    ratio = (b[l1] / b[l2]) / (a[l1] / a[l2])
    if relative == "shared":  # one number for every style layer: the raw proportions between layers are kept
        torch.testing.assert_close(ratio, torch.ones(2))
    else:  # each layer by its own: the proportions change
        assert (ratio - 1).abs().min() > 1e-3


def test_a_blend_of_one_painting_is_that_painting(vgg):
    two = pairs(n=1, styles=2, blend=[[1.0, 0.0]])
    one = PairImages(two.content, [[two.styles[0][0]]], torch.ones(1, 1), two.names, two.sizes)
    a, b = make_objective(vgg), make_objective(vgg)
    a.bind(two)
    b.bind(one)
    torch.testing.assert_close(a(image(1), torch.arange(1))["total"], b(image(1), torch.arange(1))["total"])


def test_no_content_layers_is_texture_synthesis_without_a_content_forward(vgg, monkeypatch):
    objective = make_objective(vgg, content_layers=[])
    objective.bind(pairs())
    calls = []
    real = vgg.forward
    monkeypatch.setattr(vgg, "forward", lambda x, layers: calls.append(list(layers)) or real(x, layers))
    terms = objective(image(), torch.arange(2))
    assert terms["content"].abs().max() == 0
    assert calls == [SHALLOW["style_layers"]] * 3  # each pair's painting, then the image: no forward of the photo


def test_options_are_keywords_and_bad_values_are_one_clear_error(vgg):
    with pytest.raises(TypeError):
        Objective(vgg, ["relu2_1"], ["relu1_1"])  # a reorder must not silently swap options
    for bad, words in (
        ({"style_weight": -1.0}, "model.style_weight"),
        ({"tv_weight": float("nan")}, "model.tv_weight"),
        ({"style_loss": "gramm"}, "model.style_loss"),
        ({"relative_losses": "yes"}, "model.relative_losses"),
        ({"style_layers": []}, "model.style_layers is empty"),
        ({"style_layer_weights": [1.0]}, "one weight per layer"),
        ({"content_layers": ["relu9_9"]}, "unknown layer"),
    ):
        with pytest.raises(ConfigError, match=words):
            Objective(vgg, **{**TEST_OBJECTIVE, **bad})


def test_a_view_too_small_for_the_layers_names_the_option(vgg):
    objective = make_objective(vgg, style_layers=["relu1_1", "relu5_1"])
    with pytest.raises(ConfigError, match="model.scales"):
        objective.bind(pairs(), smallest_view=8)  # a first coarse scale of 8 px cannot reach relu5_1
    objective.bind(pairs())  # the full size can


def test_the_laplacian_term_holds_the_photos_structure_relative_to_its_own(vgg):
    objective = make_objective(vgg, laplacian_weight=3.0)
    data = pairs()
    objective.bind(data)
    at_photo = objective(data.content, torch.arange(2))
    assert at_photo["laplacian"].abs().max() < 1e-6  # the photo has its own structure
    flat_picture = data.content.mean((2, 3), keepdim=True).expand_as(data.content)
    flat = objective(flat_picture, torch.arange(2))
    half = objective(0.5 * (data.content + flat_picture), torch.arange(2))
    # relative to the photo's Laplacian energy: a flat picture (no structure at all) scores 1, half the contrast 1/4
    torch.testing.assert_close(flat["laplacian"], torch.ones(2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(half["laplacian"], torch.full((2,), 0.25), rtol=1e-4, atol=1e-6)
    total = half["content"] + objective.style_weight * half["style"] + 3.0 * half["laplacian"]
    torch.testing.assert_close(half["total"], total)
    without = make_objective(vgg, laplacian_weight=0.0)
    without.bind(data)
    assert without(flat_picture, torch.arange(2))["laplacian"].abs().max() == 0
    # a coarse view is held to the structure of the photo's view
    assert objective(data.content, torch.arange(2), size=(16, 20))["laplacian"].abs().max() < 1e-6


def test_the_luminance_term_holds_the_photos_light_and_dark_at_the_coarse_views_only(vgg):
    objective = make_objective(vgg, coarse_luminance_weight=2.0)
    # Smooth photos larger than the layout's grid (a coarse view of 96 x 120 px: cells of 3.75 px), as real ones are.
    rows, cols = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 160), indexing="ij")
    content = torch.stack([torch.stack([rows, cols, (6 * rows * cols + k).sin() * 0.5 + 0.5]) for k in (0, 2)])
    data = PairImages(content, [[torch.rand(3, 64, 64)]] * 2, torch.ones(2, 1), ["a", "b"], [(128, 160)] * 2)
    objective.bind(data)
    idx, view = torch.arange(2), (96, 120)
    assert objective(data.content, idx, size=view)["luminance"].abs().max() < 1e-6  # the photo's own layout
    # standardised layouts: a flat picture scores 1, and the overall brightness and contrast are free
    for lighter in (0.5 * data.content + 0.4, 0.8 * data.content):
        assert objective(lighter, idx, size=view)["luminance"].max() < 1e-4
    luma = (data.content * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1, keepdim=True)
    grey = luma.mean((2, 3), keepdim=True).expand_as(data.content)
    coarse = objective(grey, idx, size=view)
    torch.testing.assert_close(coarse["luminance"], torch.ones(2), rtol=2e-2, atol=0)
    total = coarse["content"] + objective.style_weight * coarse["style"] + 2.0 * coarse["luminance"]
    torch.testing.assert_close(coarse["total"], total)
    # colour and fine detail move it little: the photo recoloured (its own luminance) scores near 0, and the grey
    # picture with detail within each cell (a checkerboard of ±0.1) stays near 1
    swapped = data.content[:, [2, 0, 1]]
    recoloured = swapped - (swapped * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(1, keepdim=True) + luma
    assert objective(recoloured, idx, size=view)["luminance"].max() < 1e-4
    checker = 0.1 * ((torch.arange(128)[:, None] + torch.arange(160)) % 2 * 2 - 1)
    torch.testing.assert_close(objective(grey + checker, idx, size=view)["luminance"], torch.ones(2), rtol=0.05, atol=0)
    # the full-size phase is free to move the light and dark
    full = objective(grey, idx)
    assert full["luminance"].abs().max() == 0
    torch.testing.assert_close(full["total"], full["content"] + objective.style_weight * full["style"])


def test_a_negative_laplacian_weight_is_refused(vgg):
    with pytest.raises(ConfigError, match="model.laplacian_weight"):
        make_objective(vgg, laplacian_weight=-1.0)
