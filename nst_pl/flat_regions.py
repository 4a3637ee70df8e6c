"""Smaller steps where the photo is flat (`model.flat_lr_factor`, `model.flat_step_shift`) or the loss barely pulls
(`model.gradient_floor`).

Adam moves every pixel by about its learning rate whatever the size of its gradient, so a night sky or a studio wall
takes the painting's texture and the optimiser's own jitter as readily as the photo's detailed parts do, and SSIM (a
flat region's structure) is lost there first. `step_map` scales each pixel's step by the photo's local contrast: 1
where the photo has detail, down to `flat_lr_factor` where it is flat (README, "Recipes", the eighth round).
`gradient_step_map` scales it by the pixel's own gradient: Adam's denominator held at or above `gradient_floor` × the
pair's mean, so a pixel the loss pulls weakly moves in proportion to its pull (the ninth round). The floor holds back
the step's detail: `regional_part`, the step averaged over a box, moves whole, so a dark photo still takes a pale
painting's colours (the tenth round); of its change of brightness only `gradient_floor_light` moves whole, the rest is
held back with the detail, so weakly pulled dark pixels keep more of the photo's light (the twelfth round).
`flat_step_shift` moves step from a mostly flat photo's flat regions to its detailed ones, as far as the painting has
flat regions of its own: under a Hokusai a night sky stays calm while the towers take the strokes, a Van Gogh's swirls
fill it, and a photo with little flat in it is left alone (the fifteenth and sixteenth rounds).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nst_pl.color import rgb_to_yiq
from nst_pl.image_io import resize_long_side

# The photo's contrast is measured on its copy at this long side (a smaller photo at its own size), so the map of a
# photo of 256 px or more covers the same regions at any size.
CONTRAST_SIDE = 256
CONTRAST_WINDOW = 5  # px of that copy: the window of the luminance's standard deviation
# A region whose luminance varies less than this (standard deviation; pixels in [0, 1]) counts as flat.
FLAT_BELOW = 0.02
# A painting with at least this share of flat pixels (by the same measure: a Hokusai sky) takes the whole
# `flat_step_shift`; a more textured one a part in proportion (The Starry Night, 2 % flat: 8 % of it).
FLAT_PAINTING_SHARE = 0.25
# A photo takes none of it up to the first share of flat pixels and all of it from the second (a night sky, 71 %), in
# proportion between: a photo with detail over half of it keeps its step (there the shift cost structure or style).
FLAT_PHOTO_SHARES = (0.5, 0.65)
# The shifted step's average, × (1 + this × the pair's shift): the flat regions slowed less than the shift alone would
# (a night sky still brightens to a pale painting's light) while the detail takes bolder steps.
SHIFT_GAIN = 0.5


def local_contrast(photo: Tensor) -> Tensor:
    """The standard deviation of the luminance (Y of YIQ) of `photo` [3, h, w] over a `CONTRAST_WINDOW` window of its
    copy at `CONTRAST_SIDE` px (or its own size, if smaller), brought back to h × w: [1, h, w]."""
    h, w = photo.shape[-2:]
    y = resize_long_side(rgb_to_yiq(photo.float()[None])[:, :1], min(CONTRAST_SIDE, max(h, w)))
    r = CONTRAST_WINDOW // 2
    mean = F.avg_pool2d(F.pad(y, (r, r, r, r), mode="replicate"), CONTRAST_WINDOW, 1)
    square = F.avg_pool2d(F.pad(y * y, (r, r, r, r), mode="replicate"), CONTRAST_WINDOW, 1)
    std = (square - mean * mean).clamp_min(0).sqrt()
    return F.interpolate(std, size=(h, w), mode="bilinear", align_corners=False)[0]


def flat_share(image: Tensor) -> float:
    """The share of the pixels of `image` [3, h, w] whose local contrast is below `FLAT_BELOW`: how flat it is."""
    return (local_contrast(image) < FLAT_BELOW).float().mean().item()


def pair_shifts(
    content: Tensor, sizes: Sequence[tuple[int, int]], styles: Sequence[Sequence[Tensor]], blend: Tensor, shift: float
) -> list[float]:
    """Each pair's part of `shift`: as far as its photo (over its real h × w) is flat, from `FLAT_PHOTO_SHARES`, and
    in proportion to its paintings' flat share (blended by their weights), all of it from `FLAT_PAINTING_SHARE` up."""
    low, high = FLAT_PHOTO_SHARES
    out = []
    for photo, (h, w), weights, paintings in zip(content, sizes, blend, styles):
        photo_part = min(1.0, max(0.0, (flat_share(photo[:, :h, :w]) - low) / (high - low)))
        share = sum(float(b) * flat_share(s) for b, s in zip(weights, paintings)) if photo_part else 0.0
        out.append(shift * photo_part * min(1.0, share / FLAT_PAINTING_SHARE))
    return out


def step_map(
    content: Tensor, sizes: Sequence[tuple[int, int]], factor: float, shifts: Sequence[float] | None = None
) -> Tensor:
    """Each pixel's step factor, [N, 1, H, W] like `content` (the photos on their common canvas): the photo's local
    contrast ÷ `FLAT_BELOW`, between `factor` and 1; with a pair's shift s (`pair_shifts`) × the same contrast
    between 1 − s and 1, divided by its mean over the photo and × (1 + `SHIFT_GAIN` × s): the step moved from its
    flat regions to its detail, the average step raised by a part of s (with `factor` 1; with both, their product).
    1 outside each photo's real h × w."""
    out = torch.ones(content.shape[0], 1, *content.shape[-2:], dtype=torch.float32, device=content.device)
    for i, (h, w) in enumerate(sizes):
        contrast = local_contrast(content[i, :, :h, :w]) / FLAT_BELOW
        pair_map = contrast.clamp(factor, 1.0)
        shift = shifts[i] if shifts else 0.0
        if shift > 0:
            shifted = contrast.clamp_(1 - shift, 1.0)  # in place: contrast is not needed after
            pair_map.mul_(shifted.mul_((1 + SHIFT_GAIN * shift) / shifted.mean()))
        out[i, :, :h, :w] = pair_map
    return out


def regional_part(step: Tensor, sizes: Sequence[tuple[int, int]], region: float, light: float = 1.0) -> Tensor:
    """`step` [N, C, H, W] averaged over a square box of `region` px per 256 px of each pair's long side (odd, at
    least 1; edges repeated), over each pair's real h × w; 0 outside it, and everywhere with `region` 0. Of its
    change of brightness (the mean over the channels) only `light` × is kept: the rest is left to the floor."""
    out = torch.zeros_like(step)
    if region <= 0:
        return out
    for i, (h, w) in enumerate(sizes):
        part = out[i, :, :h, :w]
        part.copy_(box_average(step[i, :, :h, :w], box_size(region, h, w)))
        if light < 1:
            part.sub_(part.mean(0, keepdim=True).mul_(1 - light))
    return out


def box_size(region: float, h: int, w: int) -> int:
    """The side of `regional_part`'s box for a pair of h × w px: `region` px per 256 px of its long side, odd."""
    return max(1, round(region * max(h, w) / 256)) | 1


def box_average(x: Tensor, k: int) -> Tensor:
    """`x` [C, h, w] averaged over k × k boxes (k odd, edges repeated), by running sums: the same few operations per
    pixel at any k (a plain average pool costs k² per pixel: tens of ms a step at 256 px). Summed in float32: half
    precision's running sums overflow or round away the step. The sums run in place: at most two copies of `x` at once
    (a print's step is large)."""
    r = k // 2
    sums = F.pad(x.float()[None], (r, r, r, r), mode="replicate")[0].cumsum_(-2)
    sums = F.pad(sums, (0, 0, 1, 0))
    sums = (sums[:, k:] - sums[:, :-k]).cumsum_(-1)
    sums = F.pad(sums, (1, 0))
    return (sums[..., k:] - sums[..., :-k]).div_(k * k).to(x.dtype)


def gradient_step_map(second_moment: Tensor, sizes: Sequence[tuple[int, int]], floor: float) -> Tensor:
    """Each pixel's step factor from Adam's `exp_avg_sq` [N, 3, H, W]: its gradient's root mean square ÷ (`floor` ×
    that of its pair's pixels on average), at most 1 (1 outside each pair's real h × w): Adam with its denominator
    held at or above `floor` × that mean (its ε aside). Adam's bias correction cancels in the ratio; so does the
    scale of the loss."""
    factor = second_moment.sqrt()  # the gradient's root mean square, made the factor in place
    for i, (h, w) in enumerate(sizes):
        pair = factor[i, :, :h, :w]
        # A pair without gradient (nothing to move) gets 0, not nan.
        pair.div_((floor * pair.mean()).clamp_min(torch.finfo(factor.dtype).tiny)).clamp_(max=1.0)
        factor[i, :, h:], factor[i, :, :, w:] = 1.0, 1.0  # the canvas's padding moves as Adam moves it
    return factor
