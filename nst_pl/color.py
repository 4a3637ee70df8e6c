"""Colour: RGB <-> YIQ, and the two ways to give a stylised image back the photo's colours.

`transfer_luminance` keeps the photo's chrominance exactly; `match_color` matches its colour statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nst_pl.linalg import sym_matrix_power

__all__ = [
    "color_stats",
    "match_color",
    "match_distribution",
    "palette_distance",
    "painting_palette",
    "rgb_to_lab",
    "rgb_to_yiq",
    "transfer_luminance",
    "yiq_to_rgb",
]

# FCC NTSC RGB -> YIQ, the space of Gatys et al. (2016), "Preserving Color in Neural Artistic Style Transfer".
_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=torch.float64,
)
# The exact inverse (not the rounded textbook one), so that yiq_to_rgb(rgb_to_yiq(x)) == x to float precision.
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _apply_color_matrix(img: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    if img.dim() < 3 or img.shape[-3] != 3:
        raise ValueError(f"expected [..., 3, H, W], got shape {tuple(img.shape)}")
    m = matrix.to(device=img.device, dtype=img.dtype if img.is_floating_point() else torch.float32)
    return torch.einsum("ij,...jhw->...ihw", m, img)


def rgb_to_yiq(img: torch.Tensor) -> torch.Tensor:
    """RGB ``[..., 3, H, W]`` -> YIQ (Y luminance in [0, 1]; I, Q chrominance, signed)."""
    return _apply_color_matrix(img, _RGB_TO_YIQ)


def yiq_to_rgb(img: torch.Tensor) -> torch.Tensor:
    """YIQ ``[..., 3, H, W]`` -> RGB (not clamped)."""
    return _apply_color_matrix(img, _YIQ_TO_RGB)


def transfer_luminance(output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Keeps the content's colours: the output's luminance with the content's chrominance.

    This is the luminance-only transfer of Gatys et al. (2016), "Preserving Color in Neural Artistic Style
    Transfer", applied after the optimisation as neural-style's ``-original_colors`` does: Y from ``output``,
    I and Q from ``content``.

    Args:
        output: The stylised image, ``[..., 3, H, W]``.
        content: The content photo, same shape.

    Returns:
        The recoloured image, same shape, clamped to ``[0, 1]``.
    """
    if output.shape != content.shape:
        raise ValueError(f"output {tuple(output.shape)} and content {tuple(content.shape)} must have the same shape")
    y = rgb_to_yiq(output)[..., :1, :, :]  # [..., 1, H, W]
    iq = rgb_to_yiq(content.to(output.dtype))[..., 1:, :, :]  # [..., 2, H, W]
    return yiq_to_rgb(torch.cat([y, iq], dim=-3)).clamp(0.0, 1.0)


def match_color(output: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Linear colour transfer: gives ``output`` the per-channel mean and 3x3 colour covariance of ``reference``.

    ``x' = A (x - mu_out) + mu_ref`` with ``A = Cov_ref^(1/2) Cov_out^(-1/2)``. Gatys et al. (2016) apply this to
    the *style* image before the optimisation; here it is applied to the *output*, with the content photo as the
    reference, to bring back the photo's colours after stylisation.

    Of the matrices with ``A Cov_out A^T = Cov_ref``, we take the one built from *symmetric* square roots
    (eigendecomposition), the "image analogies" variant of the paper, rather than the Cholesky one: it does not
    depend on the order of the R, G, B channels and rotates colours the least. The statistics are computed in
    float64, because covariances of [0, 1] pixels are small and their inverse square root amplifies rounding.

    Args:
        output: ``[N, 3, H, W]`` or ``[3, H, W]``.
        reference: ``[N, 3, h, w]``, ``[1, 3, h, w]`` or ``[3, h, w]``; may differ from ``output`` in size.
        eps: Added to the covariance eigenvalues, so flat images do not divide by zero.

    Returns:
        The recoloured output, shape and dtype of ``output``, clamped to ``[0, 1]``.
    """
    if output.dim() not in (3, 4) or output.shape[-3] != 3 or reference.dim() not in (3, 4) or reference.shape[-3] != 3:
        raise ValueError(
            f"expected [N, 3, H, W] or [3, H, W] images, got {tuple(output.shape)} and {tuple(reference.shape)}"
        )
    unbatched = output.dim() == 3
    out = output.unsqueeze(0) if unbatched else output
    ref = reference.unsqueeze(0) if reference.dim() == 3 else reference
    if ref.shape[0] not in (1, out.shape[0]):
        raise ValueError(f"reference batch {ref.shape[0]} must be 1 or match the output batch {out.shape[0]}")

    x = out.flatten(2).double()  # [N, 3, H*W]
    mu_r, cov_r = color_stats(ref.to(x.device))
    result = _linear_transfer(x, mu_r, cov_r, eps).clamp(0.0, 1.0).reshape(out.shape).to(output.dtype)
    return result[0] if unbatched else result


def color_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image colour mean [N, 3, 1] and 3x3 covariance [N, 3, 3] of ``[N, 3, H, W]`` images, in float64."""
    x = images.flatten(2).double()
    mu = x.mean(-1, keepdim=True)
    xc = x - mu
    return mu, xc @ xc.transpose(-1, -2) / xc.shape[-1]


def _linear_transfer(x: torch.Tensor, mu_r: torch.Tensor, cov_r: torch.Tensor, eps: float) -> torch.Tensor:
    """Pixels ``x`` [N, 3, P] (float64) moved to the colour mean ``mu_r`` and covariance ``cov_r``, not clamped."""
    mu_x = x.mean(-1, keepdim=True)  # [N, 3, 1]
    xc = x - mu_x
    cov_x = xc @ xc.transpose(-1, -2) / xc.shape[-1]  # [N, 3, 3]
    # eps (added to every eigenvalue) keeps the inverse square root finite for flat or two-colour images.
    transform = sym_matrix_power(cov_r, 0.5) @ sym_matrix_power(cov_x, -0.5, shift=eps)  # [N, 3, 3]
    return transform @ xc + mu_r


def painting_palette(
    picture: torch.Tensor,
    paintings: list[torch.Tensor],
    weights: torch.Tensor,
    distribution: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The picture in the paintings' colours, with its own luminance: `model.init: palette` (the photo) and
    `model.palette_transfer` (the result).

    The picture's pixels get the colour mean and covariance of the paintings' pixels (of their blend, `weights`), as
    `match_color` does; with `distribution` their chrominance (I, Q of YIQ) then takes the paintings' whole
    distribution of chrominance (`match_distribution`: which colours, and how often). Then its luminance (Y) is put
    back, so the picture keeps every edge and shade and only its chrominance moves to the painting's.

    Args:
        picture: ``[3, H, W]`` in [0, 1].
        paintings: the pair's style images, ``[3, h, w]`` each.
        weights: ``[K]`` blend weights (sum 1).
    """
    stats = [color_stats(p[None]) for p in paintings]
    w = weights.double().to(picture.device)
    mu = sum(wk * m for wk, (m, _) in zip(w, stats))  # the blend's pixels: a mixture of the paintings' pixels
    second = sum(wk * (c + m @ m.transpose(-1, -2)) for wk, (m, c) in zip(w, stats))
    cov = second - mu @ mu.transpose(-1, -2)
    moved = _linear_transfer(picture[None].flatten(2).double(), mu, cov, eps).reshape(1, *picture.shape)
    y = rgb_to_yiq(picture[None].double())[:, :1]
    iq = rgb_to_yiq(moved)[:, 1:]
    if distribution:
        targets = [rgb_to_yiq(p.double())[1:].flatten(1) for p in paintings]  # [2, pixels] each
        target_weights = [torch.full_like(t[0], float(wk) / t.shape[1]) for t, wk in zip(targets, w)]
        matched = match_distribution(iq[0].flatten(1), torch.cat(targets, 1), torch.cat(target_weights))
        iq = matched.reshape(iq.shape)
    return yiq_to_rgb(torch.cat([y, iq], dim=1))[0].clamp(0.0, 1.0).to(picture.dtype)


def match_distribution(points: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, passes: int = 16):
    """2-D points ``[2, P]`` moved so that their distribution is the target points' ``[2, Q]`` (weighted by
    ``weights`` ``[Q]``): sliced optimal transport (Pitié et al. 2005, "N-dimensional probability density function
    transfer"). Each pass turns both clouds by an angle and maps each axis monotonically onto the target's (256
    quantiles to 256, linear between); the angles step by the golden ratio, so they spread evenly.

    The passes are fitted on about 4096 points of each cloud (every n-th) and applied to a 128 x 128 grid over the
    points' range, which each point then reads bilinearly: one lookup per pixel (one CPU thread: 0.06 s at 256 px,
    0.7 s at 4096 px, where moving every pixel exactly took 0.35 s and 57 s; palette distances within 0.04 of it).
    """
    points = points.double()  # one float64 copy (none for float64 input): a print-size picture's is large
    sample = points[:, :: max(1, points.shape[1] // 4096)]
    every = max(1, target.shape[1] // 4096)
    target, weights = target.double()[:, ::every], weights.double()[::every]
    lo, hi = points.amin(1), points.amax(1)
    axes = [torch.linspace(float(a), float(b), 128, dtype=torch.float64, device=points.device) for a, b in zip(lo, hi)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="xy")).reshape(2, -1)  # [2, 128 * 128]: x along the rows
    ranks = torch.linspace(0.0, 1.0, 256, dtype=torch.float64, device=points.device)
    # The knots spread by up to ±1/512: a colour that many pixels share (flat, clipped) becomes a ramp instead of a
    # step, so pixels on it cannot jump between two of the painting's colours on a rounding difference.
    spread = (torch.arange(sample.shape[1], dtype=torch.float64, device=points.device) * 0.618034 % 1 - 0.5) / 256
    for k in range(passes):
        angle = (k * (math.sqrt(5) - 1) / 2) % 1 * math.pi / 2  # in [0, pi/2): a turn by pi/2 swaps the axes
        c, s = math.cos(angle), math.sin(angle)
        turn = torch.tensor([[c, -s], [s, c]], dtype=torch.float64, device=points.device)
        moved, turned_target = turn @ torch.cat([sample, grid], 1), turn @ target
        for axis in range(2):
            knots = _quantiles(moved[axis, : sample.shape[1]] + spread, None, ranks)
            moved[axis] = _interpolate(moved[axis], knots, _quantiles(turned_target[axis], weights, ranks))
        sample, grid = (turn.T @ moved).split([sample.shape[1], grid.shape[1]], 1)
    where = (points - lo[:, None]) / (hi - lo).clamp_min(1e-12)[:, None] * 2 - 1  # [-1, 1] on the grid
    lookup = F.grid_sample(grid.reshape(1, 2, 128, 128), where.T[None, None], align_corners=True)  # [1, 2, 1, P]
    return lookup[0, :, 0]


def _quantiles(values: torch.Tensor, weights: torch.Tensor | None, ranks: torch.Tensor) -> torch.Tensor:
    """The (weighted) distribution of ``values``: its quantiles at ``ranks`` in [0, 1], 0 the least, 1 the most."""
    v, order = values.sort()
    if weights is None:
        return v[(ranks * (v.numel() - 1)).round().long()]
    cdf = weights[order].cumsum(0)
    idx = torch.searchsorted(cdf, ranks * cdf[-1])
    return v[idx.clamp(max=v.numel() - 1)]


def _interpolate(x: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The piecewise linear map through (knots, values) at ``x`` (knots rising), flat beyond the ends."""
    idx = torch.searchsorted(knots, x).clamp(1, knots.numel() - 1)
    lo, hi = knots[idx - 1], knots[idx]
    t = ((x - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    return values[idx - 1] + t * (values[idx] - values[idx - 1])


# sRGB (D65) -> CIE XYZ, and the D65 white point: the CIELAB of colour science (IEC 61966-2-1, CIE 15).
_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)


def rgb_to_lab(img: torch.Tensor) -> torch.Tensor:
    """sRGB ``[..., 3, H, W]`` in [0, 1] -> CIELAB (L in [0, 100], a and b about ±100), float64."""
    rgb = img.double().clamp(0.0, 1.0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)  # undo the sRGB gamma
    xyz = _apply_color_matrix(linear, _RGB_TO_XYZ) / _D65_WHITE.to(img.device).view(3, 1, 1)
    eps, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), (kappa * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def palette_distance(image: torch.Tensor, painting: torch.Tensor, directions: int = 64, levels: int = 256) -> float:
    """How far the colours of ``image`` are from those of ``painting``, in CIELAB units (ΔE-like), 0 = same palette.

    The sliced Wasserstein distance of their pixel distributions: the mean over fixed directions in CIELAB of the
    1-D Wasserstein-1 distance between the projected pixels (`levels` quantiles each). It needs no network, ignores
    where the colours are (only which colours, how often), and compares pictures of any two sizes.

    Args:
        image: ``[3, H, W]`` (or ``[1, 3, H, W]``) in [0, 1].
        painting: ``[3, h, w]`` (or ``[1, 3, h, w]``) in [0, 1].
    """
    lab = [rgb_to_lab(x.reshape(3, *x.shape[-2:])).flatten(1) for x in (image, painting)]  # [3, pixels] each
    gen = torch.Generator().manual_seed(0)  # the same directions for every call: distances compare across calls
    dirs = torch.randn(directions, 3, generator=gen, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)  # [D, 3]
    quantiles = []
    for x in lab:
        projected = (dirs @ x.cpu()).sort(dim=1).values  # [D, pixels]
        at = torch.linspace(0, projected.shape[1] - 1, levels).round().long()  # nearest-rank quantiles
        quantiles.append(projected[:, at])  # [D, levels]
    return float((quantiles[0] - quantiles[1]).abs().mean())
