"""Loss functions: values, float32 under autocast, finiteness with large activations."""

from __future__ import annotations

import pytest
import torch

from nst_pl import losses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gram_is_float32_and_finite_under_autocast_with_large_activations(dtype):
    # 2048² · 4096 positions ≈ 1.7e10 overflows fp16 (max 65504): the Gram must stay fp32.
    feats = torch.full((1, 4, 64, 64), 2048.0).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        g = losses.gram(feats)
        l = losses.gram_loss(feats, g * 0.5)
    assert g.dtype == torch.float32 and torch.isfinite(g).all()
    assert torch.allclose(g, torch.full_like(g, 2048.0**2 / 4))  # Σ over HW of 2048², / (C·H·W)
    assert l.dtype == torch.float32 and torch.isfinite(l).all() and (l > 0).all()


def test_gram_is_normalised_by_c_h_w():
    f = torch.randn(2, 3, 5, 7)
    flat = f.reshape(2, 3, 35)
    expected = flat @ flat.transpose(1, 2) / (3 * 35)
    assert torch.allclose(losses.gram(f), expected, atol=1e-6)
    # independent of image size for a statistically identical texture
    big = f.repeat(1, 1, 2, 2)
    assert torch.allclose(losses.gram(big), losses.gram(f), atol=1e-5)


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_losses_are_zero_on_target_and_positive_elsewhere(kind):
    torch.manual_seed(0)
    a, b = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6) * 2 + 1
    loss = losses.STYLE_LOSSES[kind]
    ta = loss.target(a)
    la = loss.loss(a, ta)
    lb = loss.loss(b, ta)
    assert la.abs().max() < 1e-3
    assert lb.shape == (2,) and (lb > 100 * la.abs().max() + 1e-3).all()


@pytest.mark.parametrize("kind", losses.STYLE_LOSSES)
def test_style_losses_have_gradients(kind):
    torch.manual_seed(0)
    loss = losses.STYLE_LOSSES[kind]
    target = loss.target(torch.randn(1, 8, 6, 6) + 1)
    x = torch.randn(1, 8, 5, 5, requires_grad=True)
    loss.loss(x, target).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_wasserstein_matches_closed_form_for_diagonal_gaussians():
    # For commuting (diagonal) covariances W2² = |Δμ|² + Σ (σ1 − σ2)²; the loss divides by C.
    torch.manual_seed(0)
    a = torch.randn(1, 2, 64, 64) * torch.tensor([1.0, 2.0])[None, :, None, None]
    b = torch.randn(1, 2, 64, 64) * torch.tensor([3.0, 0.5])[None, :, None, None] + 1.0
    got = losses.wasserstein_loss(b, losses.wasserstein_target(a)).item()
    sa = a.flatten(2).std(2, unbiased=False)[0]
    sb = b.flatten(2).std(2, unbiased=False)[0]
    mu = (b.flatten(2).mean(2) - a.flatten(2).mean(2))[0]
    expected = ((mu**2).sum() + ((sa - sb) ** 2).sum()).item() / 2
    assert got == pytest.approx(expected, rel=0.05)


def test_content_and_tv():
    x = torch.rand(2, 3, 8, 8)
    assert losses.content_loss(x, x).abs().max() == 0
    assert losses.total_variation(torch.ones(1, 3, 8, 8)).item() == 0
    assert losses.total_variation(torch.rand(1, 3, 8, 8)).item() > 0


def test_laplacian_is_zero_on_flat_and_linear_pictures_and_pools_first():
    from nst_pl.losses import laplacian, laplacian_pool

    yy, xx = torch.meshgrid(torch.linspace(0, 1, 20), torch.linspace(0, 1, 24), indexing="ij")
    ramp = (0.3 * yy + 0.5 * xx).expand(1, 3, 20, 24)
    assert laplacian(ramp, 1).shape == (1, 3, 18, 22) and laplacian(ramp, 2).shape == (1, 3, 8, 10)
    assert laplacian(ramp, 1).abs().max() < 1e-5 and laplacian(torch.full((1, 3, 9, 9), 0.4), 1).abs().max() < 1e-6
    dot = torch.zeros(1, 1, 5, 5)
    dot[..., 2, 2] = 1.0
    assert laplacian(dot, 1)[0, 0, 1, 1] == 4 and laplacian(dot, 1)[0, 0, 0, 1] == -1
    assert [laplacian_pool(s) for s in (64, 128, 256, 512, 1024)] == [1, 1, 2, 4, 8]
