"""Matrix powers of symmetric positive semi-definite matrices (covariances).

One implementation for the colour transfer (`color.match_color`) and the Wasserstein style loss (`losses`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sym_matrix_power"]


def sym_matrix_power(mat: Tensor, power: float, *, floor: float = 0.0, shift: float = 0.0) -> Tensor:
    """``mat ** power`` for symmetric PSD matrices ``[..., C, C]``, through the eigendecomposition (``eigh``).

    Each eigenvalue ``v`` becomes ``(max(v, floor) + shift) ** power``. Rounding can make the eigenvalues of a
    singular covariance slightly negative, and a negative power of ~0 is infinite: the two knobs say how a caller
    keeps them finite. ``floor=eps`` lifts only the tiny eigenvalues to ``eps`` (the Wasserstein loss);
    ``floor=0, shift=eps`` regularises every eigenvalue alike (the colour transfer).

    Args:
        mat: Symmetric matrices ``[..., C, C]``; only the lower triangle is read.
        power: The exponent, e.g. ``0.5`` (square root) or ``-0.5`` (inverse square root).
        floor: Eigenvalues below this are raised to it.
        shift: Added to every eigenvalue after the floor.

    Returns:
        ``[..., C, C]``, symmetric, dtype of ``mat``.
    """
    vals, vecs = torch.linalg.eigh(mat)
    vals = vals.clamp_min(floor) + shift
    # sqrt rather than ** 0.5: the same values, but the Wasserstein loss's gradient stays bit-for-bit what it was
    # (sqrt's backward works from its output, pow's from its input).
    scaled = vals.sqrt() if power == 0.5 else vals**power  # [..., C]
    return vecs @ torch.diag_embed(scaled) @ vecs.transpose(-1, -2)
