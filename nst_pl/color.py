"""Colour: RGB <-> YIQ, and the two ways to give a stylised image back the photo's colours.

`transfer_luminance` keeps the photo's chrominance exactly; `match_color` matches its colour statistics.
"""

from __future__ import annotations

import torch

from nst_pl.linalg import sym_matrix_power

__all__ = ["match_color", "rgb_to_yiq", "transfer_luminance", "yiq_to_rgb"]

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
    r = ref.flatten(2).double().to(x.device)  # [N or 1, 3, h*w]
    mu_x, mu_r = x.mean(-1, keepdim=True), r.mean(-1, keepdim=True)  # [N, 3, 1]
    xc, rc = x - mu_x, r - mu_r
    cov_x = xc @ xc.transpose(-1, -2) / xc.shape[-1]  # [N, 3, 3]
    cov_r = rc @ rc.transpose(-1, -2) / rc.shape[-1]
    # eps (added to every eigenvalue) keeps the inverse square root finite for flat or two-colour images.
    transform = sym_matrix_power(cov_r, 0.5) @ sym_matrix_power(cov_x, -0.5, shift=eps)  # [N, 3, 3]
    result = (transform @ xc + mu_r).clamp(0.0, 1.0).reshape(out.shape).to(output.dtype)
    return result[0] if unbatched else result
