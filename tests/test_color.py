"""Tests for nst_pl.color (YIQ, luminance transfer, colour matching) and nst_pl.linalg (symmetric matrix powers)."""

from __future__ import annotations

import pytest
import torch

from nst_pl.color import (
    match_color,
    match_distribution,
    painting_palette,
    palette_distance,
    rgb_to_lab,
    rgb_to_yiq,
    transfer_luminance,
    yiq_to_rgb,
)
from nst_pl.linalg import sym_matrix_power


def test_yiq_round_trip():
    img = torch.rand(2, 3, 5, 7)
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(img)), img, atol=1e-6)
    grey = torch.full((3, 2, 2), 0.4)
    yiq = rgb_to_yiq(grey)
    assert torch.allclose(yiq[0], torch.full((2, 2), 0.4)) and yiq[1:].abs().max() < 1e-6


def test_transfer_luminance_keeps_content_chroma_and_output_luma():
    torch.manual_seed(0)
    # Mid-range values, so that the recombined image stays inside [0, 1] and the clamp changes nothing.
    output = 0.35 + 0.3 * torch.rand(2, 3, 16, 16)
    content = 0.45 + 0.1 * torch.rand(2, 3, 16, 16)
    result = transfer_luminance(output, content)
    assert result.shape == output.shape
    assert 0 <= result.min() and result.max() <= 1
    assert torch.allclose(rgb_to_yiq(result)[:, 1:], rgb_to_yiq(content)[:, 1:], atol=1e-5)
    assert torch.allclose(rgb_to_yiq(result)[:, 0], rgb_to_yiq(output)[:, 0], atol=1e-5)
    assert transfer_luminance(output[0], content[0]).shape == (3, 16, 16)


def coloured(seed: int, n: int, size: tuple[int, int]) -> torch.Tensor:
    """Random images with correlated channels and a colour cast: a real 3x3 covariance to match."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, *size, generator=g)
    mixing = torch.rand(3, 3, generator=g) * 0.5 + torch.eye(3) * 0.5
    mixed = torch.einsum("ij,njhw->nihw", mixing / mixing.sum(1, keepdim=True), base)
    cast = torch.rand(n, 3, 1, 1, generator=g) * 0.3
    return (0.15 + 0.7 * mixed * 0.8 + cast * 0.5).clamp(0, 1)


@pytest.mark.parametrize("batched", [True, False])
def test_match_color_matches_means_and_stds(batched):
    output = coloured(1, 2, (32, 40))
    reference = coloured(2, 2, (24, 20))  # different size from the output
    if not batched:
        output, reference = output[0], reference[0]
    result = match_color(output, reference)
    assert result.shape == output.shape and result.dtype == output.dtype
    dims = (-2, -1)
    assert torch.allclose(result.mean(dims), reference.mean(dims), atol=0.02)
    assert torch.allclose(result.std(dims), reference.std(dims), atol=0.02)
    assert not torch.allclose(output.mean(dims), reference.mean(dims), atol=0.02)  # the test has teeth


def test_match_color_flat_and_broadcast_reference():
    flat = torch.full((2, 3, 8, 8), 0.5)
    reference = coloured(3, 1, (8, 8))
    result = match_color(flat, reference)  # a flat image has a singular covariance: no NaN, just the mean
    assert torch.isfinite(result).all()
    assert torch.allclose(result.mean((-2, -1)), reference.mean((-2, -1)).expand(2, 3), atol=1e-3)
    assert match_color(flat, reference[0]).shape == flat.shape


def reference_match_color(output: torch.Tensor, reference: torch.Tensor, eps: float) -> torch.Tensor:
    """match_color as it was before the matrix power moved to nst_pl.linalg, for batched inputs."""

    def power(cov, p, e):
        vals, vecs = torch.linalg.eigh(cov)
        return vecs @ torch.diag_embed((vals.clamp_min(0.0) + e) ** p) @ vecs.transpose(-1, -2)

    x, r = output.flatten(2).double(), reference.flatten(2).double()
    xc, rc = x - x.mean(-1, keepdim=True), r - r.mean(-1, keepdim=True)
    cov_x, cov_r = xc @ xc.transpose(-1, -2) / xc.shape[-1], rc @ rc.transpose(-1, -2) / rc.shape[-1]
    result = power(cov_r, 0.5, 0.0) @ power(cov_x, -0.5, eps) @ xc + r.mean(-1, keepdim=True)
    return result.clamp(0.0, 1.0).reshape(output.shape).to(output.dtype)


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_match_color_unchanged_by_the_shared_matrix_power(eps):
    flat = torch.full((2, 3, 8, 8), 0.5)
    two_colours = flat.clone()
    two_colours[:, :, :4] = 0.9
    cases = [
        (coloured(4, 2, (20, 16)), coloured(5, 2, (12, 12))),
        (flat, coloured(6, 1, (8, 8))),
        (coloured(7, 2, (8, 8)), two_colours),
        (coloured(8, 1, (9, 9)).double(), coloured(9, 1, (5, 7))),
    ]
    for output, reference in cases:
        assert torch.equal(match_color(output, reference, eps), reference_match_color(output, reference, eps))


# ------------------------------------------------------------------------------------------------ linalg


def random_covariances(seed: int, n: int, c: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, c, 4 * c, generator=g, dtype=dtype)
    return features @ features.transpose(1, 2) / features.shape[-1]


def test_sym_matrix_power_roots():
    cov = random_covariances(0, 3, 5)
    root = sym_matrix_power(cov, 0.5)
    assert torch.allclose(root @ root, cov, atol=1e-10) and torch.allclose(root, root.transpose(1, 2))
    inv_root = sym_matrix_power(cov, -0.5)
    assert torch.allclose(inv_root @ cov @ inv_root, torch.eye(5, dtype=cov.dtype).expand(3, 5, 5), atol=1e-8)


def test_sym_matrix_power_floor_and_shift():
    cov = torch.diag(torch.tensor([4.0, 1e-9, -1e-7], dtype=torch.float64))  # rounding made one eigenvalue < 0
    assert torch.allclose(sym_matrix_power(cov, 0.5, floor=1e-4).diagonal(), torch.tensor([2.0, 1e-2, 1e-2]).double())
    shifted = sym_matrix_power(cov, -0.5, shift=1e-4).diagonal()
    assert torch.allclose(shifted, torch.tensor([(4 + 1e-4) ** -0.5, (1e-9 + 1e-4) ** -0.5, 100.0]).double())
    assert torch.isinf(sym_matrix_power(cov, -0.5)).any()  # neither knob: the ~0 eigenvalue blows up


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sym_matrix_power_sqrt_matches_the_wasserstein_formula_with_gradient(dtype):
    """floor=eps gives the Wasserstein loss's square root (eigenvalues clamped at eps, then sqrt), bit for bit."""
    cov = random_covariances(1, 2, 16, dtype)
    mine, theirs = cov.clone().requires_grad_(), cov.clone().requires_grad_()
    vals, vecs = torch.linalg.eigh(theirs)
    expected = vecs @ torch.diag_embed(vals.clamp_min(1e-8).sqrt()) @ vecs.transpose(-1, -2)
    result = sym_matrix_power(mine, 0.5, floor=1e-8)
    weights = torch.randn(cov.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    (result * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.equal(result, expected) and torch.equal(mine.grad, theirs.grad)


def test_rgb_to_lab_matches_reference_values():
    # CIE reference values (D65): white, black, sRGB red, and a mid grey (sRGB 0.5 -> L 53.39).
    rgb = torch.tensor([[1.0, 0.0, 1.0, 0.5], [1.0, 0.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.5]]).view(3, 1, 4)
    lab = rgb_to_lab(rgb)[:, 0].T
    expected = torch.tensor([[100.0, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [53.39, 0, 0]], dtype=torch.float64)
    assert torch.allclose(lab, expected, atol=0.02)


def test_palette_distance_sees_colours_not_places_and_not_size():
    painting = coloured(1, 1, (24, 32))[0]
    shuffled = painting.flatten(1)[:, torch.randperm(24 * 32)].view(3, 24, 32)  # the same pixels, elsewhere
    assert palette_distance(painting, painting) == 0.0
    assert palette_distance(shuffled, painting) == pytest.approx(0.0, abs=1e-9)
    twice = painting.repeat_interleave(2, -1).repeat_interleave(2, -2)  # the same palette at 4x the pixels
    assert palette_distance(twice, painting) < 0.5
    other = coloured(2, 1, (24, 32))[0]
    near, far = 0.8 * painting + 0.2 * other, 0.2 * painting + 0.8 * other
    assert 0 < palette_distance(near, painting) < palette_distance(far, painting) < palette_distance(other, painting)
    assert palette_distance(other, painting) == pytest.approx(palette_distance(painting, other), rel=1e-6)


def test_painting_palette_keeps_the_photos_luminance_and_takes_the_paintings_colours():
    photo = 0.3 + 0.4 * coloured(3, 1, (20, 20))[0]  # mid-range: no clamping
    painting = coloured(4, 1, (30, 30))[0]
    start = painting_palette(photo, [painting], torch.ones(1))
    assert torch.allclose(rgb_to_yiq(start)[0], rgb_to_yiq(photo)[0], atol=1e-4)  # every edge and shade kept
    assert palette_distance(start, painting) < palette_distance(photo, painting)
    # a blend of two paintings lands between the two single-painting starts
    other = coloured(5, 1, (30, 30))[0].flip(0)
    mid = painting_palette(photo, [painting, other], torch.tensor([0.5, 0.5]))
    a, b = painting_palette(photo, [painting], torch.ones(1)), painting_palette(photo, [other], torch.ones(1))
    assert palette_distance(mid, painting) < palette_distance(b, painting)
    assert palette_distance(mid, other) < palette_distance(a, other)


def sliced_w1(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean 1-D Wasserstein-1 distance of two equal-size 2-D point clouds over 32 directions."""
    angles = torch.linspace(0, torch.pi, 33, dtype=torch.float64)[:-1]
    dirs = torch.stack([angles.cos(), angles.sin()], 1)
    return float(((dirs @ a.double()).sort(1).values - (dirs @ b.double()).sort(1).values).abs().mean())


def test_match_distribution_gives_the_points_the_targets_distribution_with_its_weights():
    g = torch.Generator().manual_seed(0)
    points = 0.1 * torch.randn(2, 4000, generator=g, dtype=torch.float64)  # one round blob
    blobs = torch.tensor(
        [[-0.3, 0.3], [0.2, -0.1]], dtype=torch.float64
    )  # two clusters: 3 : 1 by weight, 1 : 1 in size
    target = torch.cat(
        [
            blobs[:, :1] + 0.03 * torch.randn(2, 3000, generator=g, dtype=torch.float64),
            blobs[:, 1:] + 0.03 * torch.randn(2, 3000, generator=g, dtype=torch.float64),
        ],
        1,
    )
    weights = torch.cat([torch.full((3000,), 0.75 / 3000), torch.full((3000,), 0.25 / 3000)]).double()
    moved = match_distribution(points, target, weights)
    assert moved.shape == points.shape
    nearest = (moved[:, None, :] - blobs[:, :, None]).norm(dim=0).argmin(0)  # [P]: the cluster each point joined
    assert 0.7 < float((nearest == 0).double().mean()) < 0.8
    reference = torch.cat([target[:, :3000], target[:, 3000:][:, :1000]], 1)  # the weighted target, 4000 points
    assert sliced_w1(moved, reference) < 0.1 * sliced_w1(points, reference)
    # Already the target's distribution: the points stay where they are (it is a transport, not a shuffle).
    again = match_distribution(reference, target, weights)
    assert float((again - reference).norm(dim=0).mean()) < 0.02


def test_painting_palette_with_distribution_takes_the_paintings_colours_not_just_their_mean():
    """A painting of two colours (red and blue patches): the mean-and-covariance step gives the photo a spread around
    their purple mean, the distribution gives it the reds and blues themselves; both keep the photo's luminance."""
    photo = 0.3 + 0.4 * coloured(3, 1, (32, 32))[0]
    painting = torch.empty(3, 32, 32)
    painting[:, :, :16] = torch.tensor([0.75, 0.3, 0.3])[:, None, None]
    painting[:, :, 16:] = torch.tensor([0.3, 0.35, 0.75])[:, None, None]
    painting += 0.02 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    linear = painting_palette(photo, [painting], torch.ones(1))
    matched = painting_palette(photo, [painting], torch.ones(1), distribution=True)
    for picture in (linear, matched):  # the luminance kept, but where a new colour leaves the RGB cube (clamped)
        assert float((rgb_to_yiq(picture)[0] - rgb_to_yiq(photo)[0]).abs().mean()) < 0.002
    assert palette_distance(matched, painting) < 0.7 * palette_distance(linear, painting)


def test_match_distribution_is_continuous_where_many_points_share_a_colour():
    """A flat region (one colour on 3/4 of the pixels) under a painting of two flat colours: rounding differences
    between its pixels (1e-13, as between thread counts or a resumed average) move none of them from one of the
    painting's colours to the other, so the same picture gives the same output file."""
    g = torch.Generator().manual_seed(0)
    flat = torch.full((2, 3000), 0.05, dtype=torch.float64)
    points = torch.cat([flat, 0.1 * torch.randn(2, 1000, generator=g, dtype=torch.float64)], 1)
    target = torch.cat([torch.full((2, 2000), -0.3), torch.full((2, 2000), 0.3)], 1).double()
    weights = torch.full((4000,), 1 / 4000, dtype=torch.float64)
    rounded = points.clone()
    rounded[:, :3000] += 1e-13 * torch.randn(2, 3000, generator=g, dtype=torch.float64)
    a, b = match_distribution(points, target, weights), match_distribution(rounded, target, weights)
    assert (a - b).abs().max() < 1e-6, (a - b).abs().max()
