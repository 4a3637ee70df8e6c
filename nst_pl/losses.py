"""Loss terms for optimisation-based style transfer: small pure functions.

Every function takes features as produced by the extractor (possibly bf16/fp16 under autocast) and computes in
float32 with autocast disabled: a Gram matrix of fp16 activations overflows to inf even when cast with `.float()`
*inside* autocast, because autocast re-casts the matmul's inputs to fp16.

Shapes: features are [N, C, H, W]; N is the number of pairs being optimised together. Every loss returns one value
per pair, [N], so that a caller can weight, shard or sum pairs without re-deriving the reduction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nst_pl.linalg import sym_matrix_power


def _fp32(x: Tensor) -> Tensor:
    return x.float()


class fp32_region:
    """Disable autocast on cpu and cuda so the enclosed maths runs in float32."""

    def __enter__(self):
        self._ctx = [torch.autocast(device_type="cpu", enabled=False)]
        if torch.cuda.is_available():
            self._ctx.append(torch.autocast(device_type="cuda", enabled=False))
        for c in self._ctx:
            c.__enter__()
        return self

    def __exit__(self, *exc):
        for c in reversed(self._ctx):
            c.__exit__(*exc)
        return False


def gram(features: Tensor) -> Tensor:
    """Gram matrix normalised by the number of positions and channels: G = F Fᵀ / (C·H·W).

    Departure from Gatys et al. (who use the raw F Fᵀ and divide the loss by 4·C²·(H·W)²): normalising the Gram
    itself keeps its scale independent of the image size, so a style image of another size than the content (and
    coarse-to-fine optimisation) compare like with like. With this normalisation the per-layer loss below is the
    mean of squared Gram differences.

    Args:
        features: [N, C, H, W] activations.

    Returns:
        [N, C, C] float32 Gram matrices.
    """
    with fp32_region():
        n, c, h, w = features.shape
        f = _fp32(features).reshape(n, c, h * w)  # [N, C, HW]
        return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)  # [N, C, C]


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between feature maps, per pair: [N]."""
    with fp32_region():
        return (_fp32(features) - _fp32(target)).pow(2).flatten(1).mean(1)


def gram_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """Mean squared difference between the Gram of `features` and a target Gram [N, C, C], per pair: [N]."""
    with fp32_region():
        return (gram(features) - target_gram.float()).pow(2).flatten(1).mean(1)


def mean_std(features: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over positions: ([N, C], [N, C]) in float32."""
    with fp32_region():
        f = _fp32(features).flatten(2)  # [N, C, HW]
        return f.mean(2), (f.var(2, unbiased=False) + eps).sqrt()


def mean_std_loss(features: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
    """Squared error of per-channel mean and std (what AdaIN matches; Huang & Belongie 2017), per pair: [N]."""
    with fp32_region():
        mu, sd = mean_std(features)
        return (mu - target[0]).pow(2).mean(1) + (sd - target[1]).pow(2).mean(1)


def gaussian_fit(features: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Mean [N, C] and covariance [N, C, C] of the features, in float32."""
    with fp32_region():
        n, c, h, w = features.shape
        f = _fp32(features).reshape(n, c, h * w)
        mu = f.mean(2)
        fc = f - mu.unsqueeze(2)
        cov = torch.bmm(fc, fc.transpose(1, 2)) / (h * w)
        return mu, cov + eps * torch.eye(c, device=f.device)


def wasserstein_target(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Precompute (mean, covariance, sqrt(covariance)) of the style features for `wasserstein_loss`."""
    mu, cov = gaussian_fit(features)
    with fp32_region():
        return mu, cov, sym_matrix_power(cov.double(), 0.5, floor=1e-8).float()


def wasserstein_loss(features: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Squared 2-Wasserstein distance between Gaussian fits of the features and of the style, per pair: [N].

    W2² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₂^½ Σ₁ Σ₂^½)^½),
    the Gaussian closed form (e.g. Kolkin et al. 2019 and crowsonkb/style-transfer-pytorch use this family of
    losses). Divided by C so its scale matches the other per-channel-averaged losses. The matrix square root goes
    through `eigh`, whose gradient is stable as long as eigenvalues are distinct; the covariance carries a small ridge
    (eps·I) for that reason.
    """
    mu_t, cov_t, sqrt_t = target
    mu, cov = gaussian_fit(features)
    with fp32_region():
        c = cov.shape[-1]
        mean_term = (mu - mu_t).pow(2).sum(1)
        cross = sym_matrix_power(sqrt_t @ cov @ sqrt_t, 0.5, floor=1e-8)
        cov_term = (
            cov.diagonal(dim1=-2, dim2=-1).sum(-1)
            + cov_t.diagonal(dim1=-2, dim2=-1).sum(-1)
            - 2 * cross.diagonal(dim1=-2, dim2=-1).sum(-1)
        )
        return (mean_term + cov_term.clamp_min(0)) / c


def gram_scale(target: Tensor) -> Tensor:
    """Mean square of Gram targets, per pair: [N]."""
    return target.pow(2).flatten(1).mean(1)


def mean_std_scale(target: tuple[Tensor, Tensor]) -> Tensor:
    return target[0].pow(2).mean(1) + target[1].pow(2).mean(1)


def wasserstein_scale(target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    # The loss is |Δμ|² + tr(…) over C, so its natural size is (|μ|² + tr Σ) / C.
    mu, cov, _ = target
    return (mu.pow(2).sum(1) + cov.diagonal(dim1=-2, dim2=-1).sum(-1)) / mu.shape[1]


@dataclass(frozen=True)
class StyleLoss:
    """One kind of style loss: the statistics of the painting, the loss against them, and their size.

    `target(features)` -> statistics (a tensor or tuple of tensors with a leading pair dimension);
    `loss(features, target)` -> [N]; `scale(target)` -> [N], the denominator of the relative loss.
    """

    target: Callable[[Tensor], Any]
    loss: Callable[[Tensor, Any], Tensor]
    scale: Callable[[Any], Tensor]


STYLE_LOSSES: dict[str, StyleLoss] = {
    "gram": StyleLoss(gram, gram_loss, gram_scale),
    "mean_std": StyleLoss(mean_std, mean_std_loss, mean_std_scale),
    "wasserstein": StyleLoss(wasserstein_target, wasserstein_loss, wasserstein_scale),
}


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels, per image: [N]."""
    with fp32_region():
        x = _fp32(image)
        dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).flatten(1).mean(1)
        dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).flatten(1).mean(1)
        return dh + dw
