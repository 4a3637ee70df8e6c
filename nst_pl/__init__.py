"""nst_pl: neural style transfer with PyTorch Lightning.

    from nst_pl import stylize
    picture = stylize("photo.jpg", "painting.jpg", max_steps=300)   # a PIL image

The classes a run is made of are exported here too; `nst-pl` (cli.py) is the command line.
"""

from nst_pl.data import PairDataModule
from nst_pl.errors import ConfigError, DivergedError, ImageError, NSTError, OutputError, WeightsError
from nst_pl.extractors import VGG16, VGG19, AlexNet, FeatureExtractor, ResNet50
from nst_pl.module import StyleTransfer
from nst_pl.stylize import stylize

__all__ = [
    "stylize",
    "StyleTransfer",
    "PairDataModule",
    "FeatureExtractor",
    "VGG16",
    "VGG19",
    "AlexNet",
    "ResNet50",
    "NSTError",
    "ConfigError",
    "ImageError",
    "WeightsError",
    "OutputError",
    "DivergedError",
]
