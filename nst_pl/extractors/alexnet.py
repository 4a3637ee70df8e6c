"""AlexNet (Krizhevsky et al. 2012): the seed study's best-looking extractor."""

from __future__ import annotations

from typing import Any

import torchvision
from torch import nn

from .base import FeatureExtractor
from .vgg import build_features, features_state_dict


class AlexNet(FeatureExtractor):
    """AlexNet features: conv1, relu1, pool1, conv2, relu2, pool2, conv3, relu3, conv4, relu4, conv5, relu5,
    pool3. The first conv is 11x11 with stride 4, so inputs must be at least a few dozen pixels (see
    `min_input_size`). Weights "imagenet" = torchvision `AlexNet_Weights.IMAGENET1K_V1`."""

    weights_enum = torchvision.models.AlexNet_Weights
    key_hint = "a torchvision alexnet state dict (keys 'features.N.weight/bias') or its features only ('N.weight')"

    def _build_trunk(self) -> nn.Module:
        # torchvision's AlexNet keeps PyTorch's default conv init.
        return build_features(torchvision.models.alexnet, nn.Conv2d.reset_parameters)

    def _adapt_state_dict(self, sd: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return features_state_dict(sd)

    def _named_stages(self, trunk: nn.Module) -> list[tuple[str, nn.Module]]:
        stages: list[tuple[str, nn.Module]] = []
        conv = pool = 0
        for m in trunk:
            if isinstance(m, nn.Conv2d):
                conv += 1
                stages.append((f"conv{conv}", m))
            elif isinstance(m, nn.ReLU):
                stages.append((f"relu{conv}", nn.ReLU()))  # not in-place: conv{k} may be tapped too
            elif isinstance(m, nn.MaxPool2d):
                pool += 1
                stages.append((f"pool{pool}", m))
            else:
                raise TypeError(f"unexpected module in AlexNet features: {m}")
        return stages
