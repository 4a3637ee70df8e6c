"""Frozen feature extractors for style transfer: `get_extractor("vgg19", weights=...)`, or from YAML
`class_path: nst_pl.extractors.VGG19` with `init_args`."""

from __future__ import annotations

from typing import Any

from nst_pl.errors import ConfigError, WeightsError

from .alexnet import AlexNet
from .base import FeatureExtractor
from .resnet import ResNet50
from .vgg import VGG16, VGG19

EXTRACTORS: dict[str, type[FeatureExtractor]] = {
    "vgg19": VGG19,
    "vgg16": VGG16,
    "alexnet": AlexNet,
    "resnet50": ResNet50,
}


def get_extractor(name: str, **kwargs: Any) -> FeatureExtractor:
    """Build a registered extractor by name.

    Args:
        name: One of the keys of `EXTRACTORS` (case-insensitive).
        **kwargs: Passed to the extractor's constructor (weights, normalization, mean, std, smoothing).

    Raises:
        ConfigError: If the name is not registered.
    """
    try:
        cls = EXTRACTORS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown extractor {name!r}; valid names: {', '.join(EXTRACTORS)}") from None
    return cls(**kwargs)


__all__ = ["EXTRACTORS", "AlexNet", "FeatureExtractor", "ResNet50", "VGG16", "VGG19", "WeightsError", "get_extractor"]
