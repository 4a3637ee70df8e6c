"""The generated pictures outside the optimisation: where they start (`model.init`) and what a run outputs (the
averaged iterate, `model.palette_transfer` and `model.palette_match`, `model.style_strength`,
`model.preserve_color`).

    check_init(init)                                  # before the run's folder exists: an image file must be one
    image = initial_images(init, pair_images)         # [N, 3, H, W] in [0, 1]
    ...
    out = output_picture(averaged, photo, paintings, blend, palette_transfer=0.7, palette_match="distribution",
                         style_strength=1.0, preserve_color="none")          # one pair's result
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from nst_pl.color import match_color, painting_palette, transfer_luminance
from nst_pl.data import PairImages
from nst_pl.errors import ConfigError, ImageError
from nst_pl.image_io import find_images, load_image

# `model.init` values other than an image file.
INITS = ("content", "palette", "noise", "style")
PRESERVE_COLOR = ("none", "luminance", "histogram")
PALETTE_MATCH = ("covariance", "distribution")
# The module's options that `output_picture` applies (so they can change on resume).
OUTPUT_OPTIONS = ("palette_transfer", "palette_match", "style_strength", "preserve_color")


def _choices(values: tuple[str, ...]) -> str:
    """'a, b or c': the valid values as a refusal names them."""
    return f"{', '.join(values[:-1])} or {values[-1]}"


def check_output_options(
    ema_decay: float | None, style_strength: float, preserve_color: str, palette_transfer: float, palette_match: str
) -> None:
    """The options of the output (see `StyleTransfer`), each refused with its valid range."""
    if preserve_color not in PRESERVE_COLOR:
        raise ConfigError(f"unknown model.preserve_color {preserve_color!r}; choose {_choices(PRESERVE_COLOR)}")
    if palette_match not in PALETTE_MATCH:
        raise ConfigError(f"unknown model.palette_match {palette_match!r}; choose {_choices(PALETTE_MATCH)}")
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
        raise ConfigError(f"model.ema_decay must be between 0 and 1 (e.g. 0.95), got {ema_decay}")
    if not (0.0 <= style_strength <= 2.0):
        raise ConfigError(
            f"model.style_strength must be between 0 and 2 (1: the optimised image), got {style_strength}"
        )
    if not (0.0 <= palette_transfer <= 1.0):
        raise ConfigError(
            f"model.palette_transfer must be between 0 (the colours as optimised) and 1 (the painting's colours, "
            f"model.palette_match), got {palette_transfer}"
        )


def check_init(init: str) -> None:
    """`model.init` naming an image file: it must exist and be a file, checked before the run's folder exists."""
    if init in INITS:
        return
    try:
        if Path(init).expanduser().is_dir():
            raise ImageError(f"'{init}' is a folder")
        find_images(init, what="model.init")  # missing, a FIFO, a dangling link: says which
    except ImageError as err:
        raise ConfigError(f"model.init must be content, palette, noise, style or an image file; {err}") from None


def initial_images(init: str, images: PairImages) -> Tensor:
    """The start of every pair's picture, [N, 3, H, W]: the photo (`content`), the photo in the painting's colours
    with its own luminance (`palette`), uniform noise (`noise`), noise with the painting's colour mean and std
    (`style`), or an image file resized to the canvas."""
    content = images.content
    if init == "content":
        return content.clone()
    if init == "palette":
        pairs = zip(content, images.styles, images.blend)
        return torch.stack([painting_palette(photo, styles, blend) for photo, styles, blend in pairs])
    if init == "noise":
        return torch.rand_like(content)
    if init == "style":
        # Noise with each pair's (first) style image's per-channel colour mean and std.
        stats = [s[0].flatten(1) for s in images.styles]
        mean = torch.stack([s.mean(1) for s in stats])[:, :, None, None]  # [N, 3, 1, 1]
        std = torch.stack([s.std(1) for s in stats])[:, :, None, None]
        return (mean + std * torch.randn_like(content)).clamp(0, 1)
    img = load_image(init)
    h, w = content.shape[-2:]
    img = F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return img.expand_as(content).clone().clamp(0, 1)


def averaged_image(image: Tensor, image_ema: Tensor, ema_steps: int, ema_decay: float | None) -> Tensor:
    """The output before clamping: the bias-corrected EMA of the iterates when averaging is on and has started, else
    the raw iterate. Works on the module's tensors and on a checkpoint's `state_dict` entries alike."""
    if ema_decay and ema_steps > 0:
        # Bias correction: the EMA starts at zero, so divide by the weight the iterates have accumulated.
        return image_ema / (1 - ema_decay**ema_steps)
    return image


def carry_average(state: dict[str, Tensor], image: Tensor, saved_options: dict, ema_decay: float | None) -> None:
    """A checkpoint's `state_dict` made fit for this run's `image` parameter and `ema_decay`, in place: `ema_decay`
    may change on resume, and the average reached so far is carried over to the new decay (or dropped, or started
    when there was none)."""
    old_decay = saved_options.get("ema_decay", ema_decay)
    steps = int(state.get("ema_steps", torch.zeros(())))
    if not ema_decay:
        state["image_ema"] = torch.empty(0)
    elif "image_ema" not in state or state["image_ema"].shape != image.shape:
        state["image_ema"] = torch.zeros_like(image)
        state["ema_steps"] = torch.zeros((), dtype=torch.long)
    elif old_decay != ema_decay and steps > 0:
        average = averaged_image(state["image"], state["image_ema"], steps, old_decay)
        state["image_ema"] = average * (1 - ema_decay**steps)  # bias-corrected: the same average now


def towards_photo(output: Tensor, photo: Tensor, style_strength: float) -> Tensor:
    """`model.style_strength` applied to an output: photo + style_strength x (output - photo), clamped to [0, 1]."""
    return (photo + style_strength * (output - photo)).clamp(0, 1)


def output_picture(
    picture: Tensor,
    photo: Tensor,
    paintings: list[Tensor],
    blend: Tensor,
    *,
    palette_transfer: float,
    palette_match: str,
    style_strength: float,
    preserve_color: str,
) -> Tensor:
    """One pair's result from its (averaged, cropped) picture, its photo ([3, h, w] each), its paintings and their
    blend weights: `palette_transfer` (the picture's chrominance that far towards the paintings' colours: their
    colour mean and covariance, or with `palette_match: distribution` their distribution of chrominance; its
    luminance kept; not with `preserve_color`, which asks for the photo's colours), then
    `style_strength`, then `preserve_color` (`luminance`: the picture's luminance with the photo's chrominance;
    `histogram`: the picture's colour mean and covariance matched to the photo's)."""
    if palette_transfer > 0 and preserve_color == "none":
        paintings = [p.to(picture.device) for p in paintings]
        moved = painting_palette(picture, paintings, blend, distribution=palette_match == "distribution")
        picture = picture + palette_transfer * (moved - picture)
    if style_strength != 1.0:
        picture = towards_photo(picture, photo, style_strength)
    if preserve_color == "luminance":
        picture = transfer_luminance(picture, photo)
    elif preserve_color == "histogram":
        picture = match_color(picture, photo)
    return picture
