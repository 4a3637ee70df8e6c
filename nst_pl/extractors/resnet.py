"""ResNet-50 (He et al. 2016). Residual features are peaky (low entropy) and stylise poorly with plain Gram
losses; `smoothing` (SWAG, Wang et al. CVPR 2021) is the published fix."""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn

from .base import FeatureExtractor


class ResNet50(FeatureExtractor):
    """ResNet-50 without avgpool/fc. Taps: conv1 (before BatchNorm), bn1, relu, maxpool, then every
    bottleneck block layerS.B (layer1.0 … layer4.2) and each stage name layer1 … layer4, which is the output
    of that stage's last block. BatchNorm always uses its running statistics. Weights "imagenet" = torchvision
    `ResNet50_Weights.IMAGENET1K_V1` ("IMAGENET1K_V2" also works)."""

    weights_enum = torchvision.models.ResNet50_Weights
    key_hint = (
        "a torchvision resnet50 state dict (keys 'conv1.weight', 'bn1.*', 'layer1.0.conv1.weight', …; fc ignored)"
    )
    _blocks = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}

    def _build_trunk(self) -> nn.Module:
        # Meta device, then materialise: skips the (unused) fc allocation; the init is torchvision's.
        with torch.device("meta"):
            net = torchvision.models.resnet50(weights=None)
        net.avgpool, net.fc = nn.Identity(), nn.Identity()  # not part of the extractor, nor of its keys
        net = net.to_empty(device="cpu")
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # weight 1, bias 0, and fresh running statistics
        return net

    def _adapt_state_dict(self, sd: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {k: v for k, v in sd.items() if not k.startswith("fc.")}, ""

    def _named_stages(self, trunk: nn.Module) -> list[tuple[str, nn.Module]]:
        stages: list[tuple[str, nn.Module]] = [
            ("conv1", trunk.conv1),
            ("bn1", trunk.bn1),
            ("relu", nn.ReLU()),  # torchvision's is in-place and would overwrite a tapped bn1
            ("maxpool", trunk.maxpool),
        ]
        # Inside a block the in-place ReLUs only touch the block's own temporaries, never its input or a
        # previous block's (tapped) output, so the blocks are used as they are.
        for stage in self._blocks:
            stages += [(f"{stage}.{i}", block) for i, block in enumerate(getattr(trunk, stage))]
        return stages

    def _aliases(self) -> dict[str, str]:
        return {stage: f"{stage}.{n - 1}" for stage, n in self._blocks.items()}
