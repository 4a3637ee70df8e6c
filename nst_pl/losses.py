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
import torch.nn.functional as F
from torch import Tensor

from nst_pl.color import rgb_to_yiq
from nst_pl.linalg import sym_matrix_power


def _fp32(x: Tensor) -> Tensor:
    # At least float32: half precision goes up, float64 (the exactness tests of tiled steps) stays.
    return x if x.dtype == torch.float64 else x.float()


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


def content_sums(features: Tensor, target: Tensor) -> Tensor:
    """Sum of squared errors between feature maps, per pair: [N] (`content_loss` times the map's size)."""
    with fp32_region():
        return (_fp32(features) - _fp32(target)).pow(2).flatten(1).sum(1)


def gram_compare(stat: Tensor, target_gram: Tensor) -> Tensor:
    """Mean squared difference between two Gram matrices [N, C, C], per pair: [N]."""
    with fp32_region():
        return (_fp32(stat) - _fp32(target_gram)).pow(2).flatten(1).mean(1)


def gram_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """Mean squared difference between the Gram of `features` and a target Gram [N, C, C], per pair: [N]."""
    return gram_compare(gram(features), target_gram)


def mean_std(features: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation over positions: ([N, C], [N, C]) in float32."""
    with fp32_region():
        f = _fp32(features).flatten(2)  # [N, C, HW]
        return f.mean(2), (f.var(2, unbiased=False) + eps).sqrt()


def mean_std_compare(stat: tuple[Tensor, Tensor], target: tuple[Tensor, Tensor]) -> Tensor:
    with fp32_region():
        mu, sd = stat
        return (mu - target[0]).pow(2).mean(1) + (sd - target[1]).pow(2).mean(1)


def mean_std_loss(features: Tensor, target: tuple[Tensor, Tensor]) -> Tensor:
    """Squared error of per-channel mean and std (what AdaIN matches; Huang & Belongie 2017), per pair: [N]."""
    return mean_std_compare(mean_std(features), target)


def gaussian_fit(features: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Mean [N, C] and covariance [N, C, C] of the features, in float32."""
    with fp32_region():
        n, c, h, w = features.shape
        f = _fp32(features).reshape(n, c, h * w)
        mu = f.mean(2)
        fc = f - mu.unsqueeze(2)
        cov = torch.bmm(fc, fc.transpose(1, 2)) / (h * w)
        return mu, cov + eps * torch.eye(c, device=f.device)


def wasserstein_of_fit(fit: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """(mean, covariance, sqrt(covariance)) of a Gaussian fit: the target `wasserstein_compare` needs."""
    mu, cov = fit
    with fp32_region():
        return mu, cov, sym_matrix_power(cov.double(), 0.5, floor=1e-8).to(cov.dtype)


def wasserstein_target(features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Precompute (mean, covariance, sqrt(covariance)) of the style features for `wasserstein_loss`."""
    return wasserstein_of_fit(gaussian_fit(features))


def wasserstein_compare(fit: tuple[Tensor, Tensor], target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Squared 2-Wasserstein distance between a Gaussian fit (mean, covariance) and the style's, over C: [N]."""
    mu_t, cov_t, sqrt_t = target
    mu, cov = fit
    with fp32_region():
        mu, cov = _fp32(mu), _fp32(cov)
        c = cov.shape[-1]
        mean_term = (mu - mu_t).pow(2).sum(1)
        # tr(M^½) is the sum of the square roots of M's eigenvalues. Through the eigenvalues alone, the gradient is
        # V f'(Λ) Vᵀ, free of the 1/(λi − λj) of the eigenvectors' backward, which is 0·inf = NaN when a map has
        # several dead channels (equal eigenvalues).
        cross = torch.linalg.eigvalsh(sqrt_t @ cov @ sqrt_t).clamp_min(1e-8).sqrt().sum(-1)
        cov_term = cov.diagonal(dim1=-2, dim2=-1).sum(-1) + cov_t.diagonal(dim1=-2, dim2=-1).sum(-1) - 2 * cross
        return (mean_term + cov_term.clamp_min(0)) / c


def wasserstein_loss(features: Tensor, target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Squared 2-Wasserstein distance between Gaussian fits of the features and of the style, per pair: [N].

    W2² = |μ₁ − μ₂|² + tr(Σ₁ + Σ₂ − 2 (Σ₂^½ Σ₁ Σ₂^½)^½),
    the Gaussian closed form (e.g. Kolkin et al. 2019 and crowsonkb/style-transfer-pytorch use this family of
    losses). Divided by C so its scale matches the other per-channel-averaged losses. The matrix square root
    goes through the eigenvalues only (`eigvalsh`); the covariance carries a small ridge (eps·I). With rank-deficient
    covariances (fewer positions than channels, dead channels) the square root near 0 makes the loss ill-conditioned:
    float rounding of the statistics then moves the gradient by up to a few per cent.
    """
    return wasserstein_compare(gaussian_fit(features), target)


# ------------------------------------------------------------------------------- statistics as sums (tiled steps)
# Every statistic above is a function of sums over positions, so a picture cut into tiles gets the whole picture's
# statistic by adding the tiles' sums. `*_sums` give a map's sums in float32 ([N, …] each); `*_of_sums` turn sums
# over `count` positions back into the statistic (in the sums' dtype: the objective adds them in float64, because
# E[f²] − E[f]² cancels digits that float32 does not have).


def gram_sums(features: Tensor) -> tuple[Tensor]:
    with fp32_region():
        n, c = features.shape[:2]
        f = _fp32(features).reshape(n, c, -1)
        return (torch.bmm(f, f.transpose(1, 2)),)


def gram_of_sums(sums: tuple[Tensor], count: int) -> Tensor:
    return sums[0] / (sums[0].shape[-1] * count)


def moment_sums(features: Tensor) -> tuple[Tensor, Tensor]:
    with fp32_region():
        f = _fp32(features).flatten(2)
        return f.sum(2), f.pow(2).sum(2)


def mean_std_of_sums(sums: tuple[Tensor, Tensor], count: int, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    mu = sums[0] / count
    return mu, (sums[1] / count - mu.pow(2)).clamp_min(0).add(eps).sqrt()


def fit_sums(features: Tensor) -> tuple[Tensor, Tensor]:
    with fp32_region():
        n, c = features.shape[:2]
        f = _fp32(features).reshape(n, c, -1)
        return f.sum(2), torch.bmm(f, f.transpose(1, 2))


def fit_of_sums(sums: tuple[Tensor, Tensor], count: int, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    mu = sums[0] / count
    cov = sums[1] / count - mu.unsqueeze(2) * mu.unsqueeze(1)
    return mu, cov + eps * torch.eye(mu.shape[1], device=mu.device, dtype=mu.dtype)


def gram_scale(target: Tensor) -> Tensor:
    """Mean square of Gram targets, per pair: [N]."""
    return target.pow(2).flatten(1).mean(1)


def mean_std_scale(target: tuple[Tensor, Tensor]) -> Tensor:
    return target[0].pow(2).mean(1) + target[1].pow(2).mean(1)


def wasserstein_scale(target: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    # The loss is |Δμ|² + tr(…) over C, so its natural size is (|μ|² + tr Σ) / C.
    mu, cov, _ = target
    return (mu.pow(2).sum(1) + cov.diagonal(dim1=-2, dim2=-1).sum(-1)) / mu.shape[1]


def _same(stat: Any) -> Any:
    return stat


@dataclass(frozen=True)
class StyleLoss:
    """One kind of style loss: the statistic of a feature map, the loss against the painting's, and its size.

    `stat(features)` -> the statistic (a tensor or tuple of tensors with a leading pair dimension);
    `compare(stat, target)` -> [N]; `target_of(stat)` -> what `compare` takes as the painting's side;
    `scale(target)` -> [N], the denominator of the relative loss; `sums(features)` and `of_sums(sums, count)`: the
    statistic as sums over positions, for tiled steps.
    """

    stat: Callable[[Tensor], Any]
    compare: Callable[[Any, Any], Tensor]
    scale: Callable[[Any], Tensor]
    sums: Callable[[Tensor], tuple[Tensor, ...]]
    of_sums: Callable[[tuple[Tensor, ...], int], Any]
    target_of: Callable[[Any], Any] = _same

    def target(self, features: Tensor) -> Any:
        """The painting's statistics, as `loss` takes them."""
        return self.target_of(self.stat(features))

    def loss(self, features: Tensor, target: Any) -> Tensor:
        """[N]: the loss of `features` against `target`."""
        return self.compare(self.stat(features), target)


STYLE_LOSSES: dict[str, StyleLoss] = {
    "gram": StyleLoss(gram, gram_compare, gram_scale, gram_sums, gram_of_sums),
    "mean_std": StyleLoss(mean_std, mean_std_compare, mean_std_scale, moment_sums, mean_std_of_sums),
    "wasserstein": StyleLoss(
        gaussian_fit, wasserstein_compare, wasserstein_scale, fit_sums, fit_of_sums, wasserstein_of_fit
    ),
}


def variation_sums(image: Tensor, rows: slice, cols: slice) -> tuple[Tensor, Tensor]:
    """Sums of squared differences between the pixels of rows x cols and their lower / right neighbours, per
    image: ([N], [N]). A pixel without that neighbour in `image` (the last row or column) adds nothing."""
    with fp32_region():
        x = _fp32(image)
        h, w = x.shape[-2:]
        r0, r1, _ = rows.indices(h)
        c0, c1, _ = cols.indices(w)
        down = x[:, :, r0 + 1 : min(r1, h - 1) + 1, c0:c1] - x[:, :, r0 : min(r1, h - 1), c0:c1]
        right = x[:, :, r0:r1, c0 + 1 : min(c1, w - 1) + 1] - x[:, :, r0:r1, c0 : min(c1, w - 1)]
        return down.pow(2).flatten(1).sum(1), right.pow(2).flatten(1).sum(1)


def variation_of_sums(down: Tensor, right: Tensor, size: tuple[int, int]) -> Tensor:
    """`total_variation` of an image of `size` from its `variation_sums` over the whole image."""
    h, w = size
    return down / (3 * (h - 1) * w) + right / (3 * h * (w - 1))


def total_variation(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels, per image: [N]."""
    with fp32_region():
        x = _fp32(image)
        dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).flatten(1).mean(1)
        dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).flatten(1).mean(1)
        return dh + dw


def laplacian(image: Tensor, pool: int) -> Tensor:
    """The Laplacian of `image` [N, C, H, W] average-pooled `pool` x `pool`: [N, C, H // pool - 2, W // pool - 2].

    Li et al. (2017), "Laplacian-Steered Neural Style Transfer": edges and fine shading, the structure of a photo that
    a deep content layer (relu4_1 sees 8 x 8 px cells) lets the style loss overwrite.
    """
    with fp32_region():
        x = _fp32(image)
        if pool > 1:
            x = F.avg_pool2d(x, pool)
        # A pixel against its four neighbours, by slices: 17x faster on CPU than a 3 x 3 conv2d of one channel.
        centre = x[..., 1:-1, 1:-1]
        return 4 * centre - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]


def laplacian_pool(long_side: int) -> int:
    """The pooling of the Laplacian term for a picture of `long_side` px (its full size, at every view): 2 px per
    256 px, so that pictures of any size keep structure of the same size relative to themselves. (Measured at 256 px:
    2 px at every view kept more structure per style than 1 px, 4 px, or a pooling that shrinks with the view.)"""
    return max(1, round(long_side / 128))


def laplacian_loss(image: Tensor, target: Tensor, pool: int) -> Tensor:
    """Mean squared difference between the Laplacian of `image` and `target` (the photo's `laplacian` at the same
    `pool`), per image: [N]."""
    with fp32_region():
        return (laplacian(image, pool) - target).pow(2).flatten(1).mean(1)


# Cells along the long side of the luminance layout: large patches of light and dark, not shapes or edges.
LUMINANCE_CELLS = 32
# The least spread of a layout that is standardised in full: a flatter picture's pattern counts for less, not more.
LUMINANCE_MIN_STD = 0.03


def luminance_layout(image: Tensor, cells: int = LUMINANCE_CELLS) -> Tensor:
    """The pattern of light and dark of `image` [N, 3, H, W]: its luminance averaged over a grid of `cells` cells along
    its long side (square cells, the same grid relative to the picture at any size), less its mean and divided by its
    spread, so that the overall brightness and contrast do not count: [N, 1, h, w]."""
    with fp32_region():
        y = rgb_to_yiq(_fp32(image))[:, :1]
        h, w = y.shape[-2:]
        grid = F.adaptive_avg_pool2d(y, (max(1, round(h * cells / max(h, w))), max(1, round(w * cells / max(h, w)))))
        mean = grid.mean((1, 2, 3), keepdim=True)
        return (grid - mean) / grid.std((1, 2, 3), keepdim=True, unbiased=False).clamp_min(LUMINANCE_MIN_STD)


def luminance_loss(image: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference between the luminance layout of `image` and `target` (the photo's), per image: [N]: 0 for
    the same pattern of light and dark, 2 for an unrelated one (2 − 2 × their correlation), 1 for a flat picture."""
    with fp32_region():
        return (luminance_layout(image) - target).pow(2).flatten(1).mean(1)
