"""nst_pl: neural style transfer with PyTorch Lightning.

    from nst_pl import stylize
    picture = stylize("photo.jpg", "painting.jpg", max_steps=300)   # a PIL image

The classes a run is made of are exported here too; `nst-pl` (cli.py) is the command line.

`import nst_pl` loads neither torch nor Lightning (~5 s here): the classes that need them are imported when first
used, so that `nst-pl --help` and the checks before a run answer at once (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nst_pl.errors import ConfigError, DivergedError, ImageError, NSTError, OutputError, WeightsError
from nst_pl.stylize import stylize

if TYPE_CHECKING:
    from nst_pl.data import PairDataModule
    from nst_pl.extractors import VGG16, VGG19, AlexNet, FeatureExtractor, ResNet50
    from nst_pl.module import StyleTransfer

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


def __getattr__(name: str) -> Any:
    if name == "StyleTransfer":
        from nst_pl.module import StyleTransfer as value
    elif name == "PairDataModule":
        from nst_pl.data import PairDataModule as value
    elif name in ("FeatureExtractor", "VGG16", "VGG19", "AlexNet", "ResNet50"):
        import nst_pl.extractors as extractors

        value = getattr(extractors, name)
    else:
        raise AttributeError(f"module 'nst_pl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
