"""Extractor weights: which weights a `weights` value names, getting them (torchvision's download cache or a local
file), loading them with a message that names what does not fit, and recognising what they are.

    member = weights_member(VGG16, "imagenet")            # torchvision's enum member, or None (a file, random)
    description = load_weights(extractor, trunk, "vgg16.pth", member)

`guess_architecture` tells from a state dict's keys and shapes which network it is (for the error when a file does
not fit); `looks_like_caffe_vgg16` recognises the Caffe VGG16 by its first filters (for the normalisation warning).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from nst_pl.errors import ConfigError, WeightsError


def weights_member(cls: type, weights: str | os.PathLike | None) -> WeightsEnum | None:
    """The member of `cls.weights_enum` (an extractor class) that `weights` names, or None (random init or a file)."""
    if not isinstance(weights, str):
        return None
    enum = cls.weights_enum
    name = cls.default_weights if weights == "imagenet" else weights.removeprefix(enum.__name__ + ".")
    return enum[name] if name in enum.__members__ else None


def load_weights(
    extractor: Any, trunk: nn.Module, weights: str | os.PathLike | None, member: WeightsEnum | None
) -> str:
    """Load `weights` into the extractor's `trunk` (its `_adapt_state_dict` maps a file's keys); returns the short
    description that the extractor's repr shows. A WeightsError says what is missing, what does not fit and what the
    file looks like."""
    name = type(extractor).__name__
    if weights is None:
        return "random"
    if member is not None:
        sd, source = _download(name, member), str(member)
    elif isinstance(weights, (str, os.PathLike)):
        sd, source = _read_file(name, Path(weights), extractor.weights_enum), os.fspath(weights)
    else:
        raise ConfigError(f"{name}: weights must be a string or None, got {type(weights).__name__}")
    guess = guess_architecture(sd)
    sd, prefix = extractor._adapt_state_dict(sd)
    _check_and_load(name, extractor.key_hint, trunk, sd, prefix, source, guess)
    return "imagenet" if weights == "imagenet" else source


def _download(name: str, member: WeightsEnum) -> dict[str, Any]:
    url = member.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    try:
        # Looked up on torch.hub at call time (not imported by name) so tests can monkeypatch it.
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        corrupt = " The cached file exists but could not be read: delete it and retry." if cached.exists() else ""
        raise WeightsError(
            f"{name}: could not get torchvision weights {member} ({type(e).__name__}: {e}).{corrupt}\n"
            f"torchvision wanted {url}\n"
            f"cached as {cached}\n"
            f"Fix: download that file on a machine with internet access and put it at the path above "
            f"(TORCH_HOME moves the cache), or pass a local state dict with `weights: /path/to/state_dict.pth` "
            f"(YAML: model.extractor.init_args.weights), or `weights: null` for random weights."
        ) from e


def _read_file(name: str, path: Path, enum: type[WeightsEnum]) -> dict[str, Any]:
    path = path.expanduser()
    if not path.is_file():
        choices = ", ".join(["imagenet", *enum.__members__])
        raise WeightsError(
            f"{name}: weights file not found: {path} (absolute: {path.absolute()}). `weights` takes "
            f"one of {choices}, a path to a state-dict file, or null for random weights."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors all mean "not a plain state dict"
        raise WeightsError(f"{name}: could not read {path} as a state dict: {e}") from e
    # Tolerate the two common wrappers: {"state_dict": {...}} and DDP's "module." prefix.
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{name}: {path} holds a {type(obj).__name__}, not a state dict")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return dict(obj)


def _check_and_load(
    name: str, key_hint: str, trunk: nn.Module, sd: Mapping[str, Any], prefix: str, source: str, guess: str | None
) -> None:
    """Load `sd` into `trunk` or raise a WeightsError naming the missing and mismatched keys, and the
    architecture the file looks like (`guess`, from `guess_architecture`) when it is another one."""
    expected = trunk.state_dict()
    # BatchNorm's counter is unused in eval mode and absent from old checkpoints.
    missing = [prefix + k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{prefix + k} (file {tuple(sd[k].shape) if isinstance(sd[k], Tensor) else type(sd[k]).__name__}, "
        f"{name} {tuple(v.shape)})"
        for k, v in expected.items()
        if k in sd and not (isinstance(sd[k], Tensor) and sd[k].shape == v.shape)
    ]
    if missing or mismatched:
        parts = [f"{len(missing)} missing key(s): {_few(missing)}"] if missing else []
        parts += [f"{len(mismatched)} shape mismatch(es): {_few(mismatched)}"] if mismatched else []
        hint = ""
        if guess in _ARCH_NAMES and guess != f"nst_pl.extractors.{name}":
            hint = f" This looks like {_ARCH_NAMES[guess]} state dict: use {guess} (model.extractor.class_path)."
        elif guess and guess not in _ARCH_NAMES:
            hint = f" This looks like the state dict of {guess}."
        elif guess is None and sd:
            hint = " The file does not look like a torchvision VGG, AlexNet or ResNet state dict."
        raise WeightsError(
            f"{name}: weights {source!r} do not fit this architecture; " + "; ".join(parts) + ". "
            f"Expected {key_hint}.{hint}"
        )
    trunk.load_state_dict({k: sd.get(k, v) for k, v in expected.items()})


# `guess_architecture`'s answers that are one of ours, as the error message names them.
_ARCH_NAMES = {
    "nst_pl.extractors.VGG16": "a VGG16",
    "nst_pl.extractors.VGG19": "a VGG19",
    "nst_pl.extractors.AlexNet": "an AlexNet",
    "nst_pl.extractors.ResNet50": "a ResNet-50",
}
# Conv layers of the torchvision VGGs (3x3 kernels only) by count.
_VGG_BY_CONVS = {8: "VGG11", 10: "VGG13", 13: "VGG16", 16: "VGG19"}
_RESNET_BY_BLOCKS = {(2, 2, 2, 2): "18", (3, 4, 6, 3): "34/50", (3, 4, 23, 3): "101", (3, 8, 36, 3): "152"}


def guess_architecture(sd: Mapping[str, Any]) -> str | None:
    """The architecture a state dict looks like, from its keys and shapes: `nst_pl.extractors.VGG16` (…) when it is
    one of ours, a plain description ("a ResNet-18 (not supported) …") when it is another, None when unknown."""
    keys = [k.removeprefix("module.") for k in sd]
    if any(k.startswith("layer1.0.") for k in keys):  # torchvision ResNet
        blocks = tuple(len({k.split(".")[1] for k in keys if k.startswith(f"layer{i}.")}) for i in range(1, 5))
        bottleneck = any(k.startswith("layer1.0.conv3.") for k in keys)
        depth = _RESNET_BY_BLOCKS.get(blocks, "?")
        if depth == "34/50":
            depth = "50" if bottleneck else "34"
        return "nst_pl.extractors.ResNet50" if depth == "50" else f"a ResNet-{depth} (not supported: use ResNet50)"
    convs = [v for k, v in sd.items() if isinstance(v, Tensor) and v.ndim == 4 and k.endswith("weight")]
    if not convs:
        return None
    if tuple(convs[0].shape[-2:]) == (11, 11) and len(convs) == 5:
        return "nst_pl.extractors.AlexNet"
    if all(tuple(c.shape[-2:]) == (3, 3) for c in convs) and len(convs) in _VGG_BY_CONVS:
        name = _VGG_BY_CONVS[len(convs)]
        batch_norm = any(k.endswith("running_mean") for k in keys)
        if name in ("VGG16", "VGG19") and not batch_norm:
            return f"nst_pl.extractors.{name}"
        return f"a {name}{' with batch norm' if batch_norm else ''} (not supported: use VGG16 or VGG19)"
    return None


# Caffe-convention weights: why a fingerprint and not a statistic. A ReLU network is (nearly) scale-homogeneous: the
# Caffe VGG16, trained on 0..255 pixels, has first-layer weights of the same magnitude as ImageNet-convention ones
# (measured on the offline Caffe VGG16: conv1_1 std 0.18; torchvision's random init 0.058; torchvision's ImageNet
# VGG16 conv1_1 values are of the same order, ±0.5) and negligible biases, so it runs as well on ImageNet-normalised
# input, only ~57x (0.225 * 255) weaker. Magnitudes cannot tell the two conventions apart; the weights can be
# recognised. These are the first 8 filters of the Caffe ImageNet VGG16's conv1_1 (summed over the colour channels,
# so RGB and BGR ports match), the network behind torchvision's VGG16 IMAGENET1K_FEATURES and most Caffe ports.
_CAFFE_VGG16_CONV1 = (
    1.336, 1.069, -0.207, 0.83, 0.115, -1.099, -0.148, -0.769, -1.127, -0.037, 0.033, 0.028, -0.029, 0.063, 0.022,
    -0.032, 0.031, 0.009, 0.122, 0.004, -0.35, 0.491, 0.454, -0.269, 0.045, -0.012, -0.393, 1.07, 0.779, 0.915,
    0.268, -1.131, -0.155, -0.024, -1.248, -0.479, -0.267, 0.616, 0.59, -0.551, 0.588, 0.521, -0.799, -0.401,
    -0.292, 0.067, 0.017, 0.089, 0.033, 0.008, 0.008, 0.042, 0.063, 0.038, 0.215, -0.362, -0.554, 0.463, -0.174,
    -0.481, 0.542, 0.309, 0.042, 0.25, 0.544, 0.556, -0.55, -0.277, 0.317, -0.649, -0.456, 0.131,
)  # fmt: skip


def looks_like_caffe_vgg16(trunk: nn.Module) -> bool:
    """True when the first conv's first 8 filters are the Caffe VGG16's (cosine similarity > 0.9; an independently
    trained or random network is near 0: its filters come in another order)."""
    conv = next((m for m in trunk.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None or tuple(conv.weight.shape) != (64, 3, 3, 3):
        return False
    mine = conv.weight.detach()[:8].float().sum(1).flatten()
    ref = torch.tensor(_CAFFE_VGG16_CONV1)
    return bool(torch.nn.functional.cosine_similarity(mine, ref, dim=0) > 0.9)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", … ({len(items) - n} more)" if len(items) > n else "")
