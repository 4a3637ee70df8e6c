"""VGG-16 / VGG-19 (Simonyan & Zisserman 2014): the classic Gatys et al. feature extractors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torchvision
from torch import nn

from .base import FeatureExtractor


def features_state_dict(sd: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Accept a full torchvision model state dict (`features.N.weight`, classifier keys ignored) or a
    features-only one (`N.weight`). Returns the features-only dict and the prefix the file used."""
    if any(k.startswith("features.") for k in sd):
        return {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}, "features."
    return sd, ""


def build_features(builder: Callable[..., nn.Module], init: Callable[[nn.Conv2d], None]) -> nn.Sequential:
    """`builder().features` with torchvision's random init, without ever allocating the classifier.

    The VGG classifier alone is 120M parameters (~3 s to initialise on CPU); building on the meta device and
    materialising only `.features` keeps construction fast.
    """
    with torch.device("meta"):
        features = builder(weights=None).features
    features = features.to_empty(device="cpu")
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            init(m)
    return features


def _vgg_init(conv: nn.Conv2d) -> None:
    # What torchvision's VGG.__init__ does for its convolutions.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


class _VGG(FeatureExtractor):
    """VGG `features` with names conv{b}_{i}, relu{b}_{i} and pool{b} (block b, conv i within the block)."""

    builder: ClassVar[Callable[..., nn.Module]]

    def _build_trunk(self) -> nn.Module:
        return build_features(type(self).builder, _vgg_init)

    def _adapt_state_dict(self, sd: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return features_state_dict(sd)

    def _named_stages(self, trunk: nn.Module) -> list[tuple[str, nn.Module]]:
        stages: list[tuple[str, nn.Module]] = []
        block, i = 1, 1
        for m in trunk:
            if isinstance(m, nn.Conv2d):
                stages.append((f"conv{block}_{i}", m))
            elif isinstance(m, nn.ReLU):
                # torchvision's ReLUs are in-place: they would overwrite a tapped conv output.
                stages.append((f"relu{block}_{i}", nn.ReLU()))
                i += 1
            elif isinstance(m, nn.MaxPool2d):
                stages.append((f"pool{block}", m))
                block, i = block + 1, 1
            else:
                raise TypeError(f"unexpected module in VGG features: {m}")
        return stages


class VGG19(_VGG):
    """VGG-19 features: conv1_1 … relu5_4, pool5 (Gatys et al. use relu1_1–relu5_1 for style, relu4_2 for
    content). Weights "imagenet" = torchvision `VGG19_Weights.IMAGENET1K_V1`."""

    builder = torchvision.models.vgg19
    weights_enum = torchvision.models.VGG19_Weights
    key_hint = "a torchvision vgg19 state dict (keys 'features.N.weight/bias') or its features only ('N.weight')"


class VGG16(_VGG):
    """VGG-16 features: conv1_1 … relu5_3, pool5. Weights "imagenet" = torchvision
    `VGG16_Weights.IMAGENET1K_V1`; "IMAGENET1K_FEATURES" is torchvision's Caffe-converted variant (with
    normalization "auto" it gets the Caffe statistics it expects)."""

    builder = torchvision.models.vgg16
    weights_enum = torchvision.models.VGG16_Weights
    key_hint = "a torchvision vgg16 state dict (keys 'features.N.weight/bias') or its features only ('N.weight')"
