"""Frozen CNN feature extractors with human layer names.

A `FeatureExtractor` is a torchvision network cut into an ordered list of named stages (`conv1_1`, `relu1_1`,
`pool1`, …). `extractor(x, layers)` normalises an RGB image in [0, 1], runs the stages in order, collects the
requested taps and stops after the deepest one. Subclasses (vgg.py, alexnet.py, resnet.py) only say
how to build the torchvision trunk and how to name its stages.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlparse

import torch
import torch.fx
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from nst_pl.errors import ConfigError, WeightsError

# Statistics the weights were trained with, for RGB input in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe convention (offline VGG16, see its README): RGB in 0..255 minus the per-channel mean
# (122.67892, 116.66877, 104.00699), i.e. for x in [0, 1]: (x - mean) / (1/255).
CAFFE_MEAN = (0.48109, 0.45752, 0.40787)
CAFFE_STD = (1 / 255, 1 / 255, 1 / 255)
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "caffe": (CAFFE_MEAN, CAFFE_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


@dataclass(frozen=True)
class Reach:
    """Where a feature position looks along one axis: position o of the map depends on input pixels
    o·stride + lo … o·stride + hi (both ends included; pixels outside the image are the convolutions' padding)."""

    stride: int = 1
    lo: int = 0
    hi: int = 0

    def then(self, kernel: int, stride: int, padding: int, dilation: int = 1) -> Reach:
        """The reach after a sliding window (convolution or pooling) applied to this map."""
        return Reach(
            self.stride * stride,
            self.lo - padding * self.stride,
            self.hi + (dilation * (kernel - 1) - padding) * self.stride,
        )

    def union(self, other: Reach) -> Reach:
        """The reach of a sum of two maps (a residual connection)."""
        if other.stride != self.stride:
            raise ValueError(f"branches with strides {self.stride} and {other.stride} cannot be added")
        return Reach(self.stride, min(self.lo, other.lo), max(self.hi, other.hi))


def swag(features: Tensor, temperature: float = 1.0) -> Tensor:
    """Activation smoothing of Wang, Li & Vasconcelos, CVPR 2021 ("SWAG", arXiv 2104.05623).

    The paper applies a softmax over *all* activations of a layer (every channel and position), which raises
    the entropy of the peaky feature maps that residual networks produce; its reference code
    (github.com/peiwang062/swag, ``softmax3d``) divides by a temperature T first (T = 1 in its released runs).

    Departures, and why:
      * per image: the reference flattens the whole batch into one softmax (it ran with batch size 1); here
        each image of a batch is independent, so pairs in one batch do not interact.
      * scale: a softmax over C·H·W entries is ~1/(C·H·W) per entry (~1e-6), so Grams are ~1e-12 and the
        reference needs a style weight of 1e17. We multiply by C·H·W, so the smoothed map has mean exactly 1
        whatever the layer or image size: losses stay O(1) and fp16/bf16 never see subnormals. For a fixed
        layer and size this is a constant factor, i.e. only a rescaling of the loss weights.
      * precision: computed in float32 (a sum of 1e5–1e6 exponentials); autocast does the same for softmax.

    Args:
        features: Feature map ``[N, C, H, W]``.
        temperature: T > 0; larger T gives a flatter (higher-entropy) map.

    Returns:
        ``C·H·W · softmax(features / T)`` over each image's C·H·W entries, float32, shape ``[N, C, H, W]``.
    """
    n = features[0].numel()
    z = features.float().flatten(1) / temperature  # [N, C*H*W]
    return (torch.softmax(z, dim=1) * n).view(features.shape)


class FeatureExtractor(nn.Module):
    """Base class: a frozen torchvision CNN that returns named intermediate feature maps.

    Subclasses define `weights_enum`, `_build_trunk` and `_named_stages` (and `_adapt_state_dict` when a
    file's keys need mapping onto the trunk's).
    """

    weights_enum: ClassVar[type[WeightsEnum]]
    default_weights: ClassVar[str] = "IMAGENET1K_V1"
    # How a usable state-dict file looks, for error messages.
    key_hint: ClassVar[str] = ""

    def __init__(
        self,
        weights: str | None = "imagenet",
        normalization: str = "auto",
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        smoothing: float | dict[str, float] | None = None,
    ) -> None:
        """
        Args:
            weights: "imagenet" (torchvision's IMAGENET1K_V1 weights, downloaded once to the torch.hub cache),
                another member name of the architecture's torchvision weights enum (e.g. "IMAGENET1K_V2"),
                a path to a local state-dict file (full torchvision model or features only), or null for
                random initialisation (tests).
            normalization: Input statistics: "imagenet", "caffe" (RGB 0..255 minus the mean pixel),
                "none", or "auto" (the statistics of the chosen torchvision weights; "imagenet" otherwise).
            mean: Per-channel RGB mean for input in [0, 1]; with `std`, overrides `normalization`.
            std: Per-channel RGB std for input in [0, 1]; with `mean`, overrides `normalization`.
            smoothing: Activation smoothing (SWAG, Wang et al. CVPR 2021) of the returned features: a
                temperature T for every tap, a mapping layer -> T for some taps, or null for none.
        """
        super().__init__()
        trunk = self._build_trunk()
        member = self._weights_member(weights)
        self.weights = self._load_weights(trunk, weights, member)  # short description, for repr
        stages = self._named_stages(trunk)
        self.stages = nn.ModuleList(m for _, m in stages)
        # Tap name -> index of the stage whose output it is. Aliases (ResNet "layer1" = its last block) share
        # the index of their target and come right after it, so the list order is the depth order.
        self._tap_stage: dict[str, int] = {}
        aliases = self._aliases()
        for i, (name, _) in enumerate(stages):
            self._tap_stage[name] = i
            self._tap_stage.update({a: i for a, target in aliases.items() if target == name})
        self._valid = list(self._tap_stage)

        self.normalization, mean_, std_ = self._resolve_normalization(normalization, mean, std, member)
        self.register_buffer("mean", torch.tensor(mean_).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_).view(1, 3, 1, 1), persistent=False)
        if getattr(self, "_caffe_weights", False) and max(std_) > 0.05:  # the Caffe std is 1/255 ≈ 0.004
            rank_zero_warn(
                f"{self._name}: the weights {self.weights!r} look like the Caffe VGG16 (trained on 0..255 pixels minus "
                f"the mean pixel) but the normalization is {self.normalization!r}: set `normalization: caffe` "
                "(model.extractor.init_args.normalization), else the features are "
                f"~{sum(std_) / 3 * 255:.0f}x weaker than in training"
            )
        self.smoothing = self._resolve_smoothing(smoothing)

        self._min_sides: dict[int, int] = {}  # deepest stage -> smallest input side, computed on first use
        self._reach: list[tuple[Reach, Reach]] | None = None  # per stage, (rows, columns); computed on first use
        self._meta: nn.ModuleList | None = None
        self.requires_grad_(False)
        self.eval()

    # ----------------------------------------------------------------------------------- subclass hooks
    def _build_trunk(self) -> nn.Module:
        """The torchvision network (random init) whose state-dict keys local weight files must match."""
        raise NotImplementedError(f"{self._name} is a base class: use VGG19, VGG16, AlexNet or ResNet50")

    def _named_stages(self, trunk: nn.Module) -> list[tuple[str, nn.Module]]:
        """The trunk as ordered (name, module) stages; ReLUs at taps must not be in-place."""
        raise NotImplementedError

    def _aliases(self) -> dict[str, str]:
        """Extra tap names for the output of an existing stage: {alias: stage name}."""
        return {}

    def _adapt_state_dict(self, sd: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Map a loaded state dict onto the trunk's keys; returns (dict, prefix the file used)."""
        return sd, ""

    # ------------------------------------------------------------------------------------------ public
    @property
    def valid_layers(self) -> list[str]:
        """Every tap name, ordered by depth."""
        return list(self._valid)

    def layer_index(self, name: str) -> int:
        """Depth rank of a tap name (position in `valid_layers`), for sorting."""
        self._check_names([name])
        return self._valid.index(name)

    def min_input_size(self, layers: Iterable[str] | None = None) -> int:
        """Smallest side (pixels) for which every stage up to the deepest of `layers` (default: every stage) has an
        output of at least 1x1. Applies to height and width separately."""
        last = len(self.stages) - 1 if layers is None else self._last_stage(self._sorted(layers))
        if last not in self._min_sides:
            self._min_sides[last] = self._min_side_for(last)
        return self._min_sides[last]

    def reach(self, layers: Iterable[str]) -> dict[str, tuple[Reach, Reach]]:
        """Each layer's (rows, columns) `Reach`: its total stride and the input pixels one position depends on.

        Read from the network's structure, stage by stage (torch.fx for stages with branches, such as ResNet's
        blocks), not from a table: tiled steps (objective.py) size their halos and align their tiles with it.
        """
        if self._reach is None:
            rows = cols = Reach()
            self._reach = []
            for stage in self.stages:
                rows, cols = _reach_through(stage, rows, 0), _reach_through(stage, cols, 1)
                self._reach.append((rows, cols))
        names = self._sorted(layers)
        return {n: self._reach[self._tap_stage[n]] for n in names}

    def feature_shapes(self, size: tuple[int, int], layers: Iterable[str]) -> dict[str, tuple[int, int, int]]:
        """(channels, h, w) of each layer's map for an input of `size` = (h, w), from a run on meta tensors."""
        names = self._sorted(layers)
        wanted = {self._tap_stage[n]: n for n in names}
        x = torch.empty(1, 3, *size, device="meta")
        out: dict[int, tuple[int, int, int]] = {}
        for i, stage in enumerate(self._meta_stages()[: self._last_stage(names) + 1]):
            x = stage(x)
            if i in wanted:
                out[i] = tuple(x.shape[1:])
        return {n: out[self._tap_stage[n]] for n in names}

    def activation_bytes(self, size: tuple[int, int], layers: Iterable[str]) -> tuple[int, int]:
        """For a float32 input of `size` (batch 1) run up to the deepest of `layers`: the bytes that autograd keeps
        for the backward (activations, max-pooling indices; not the weights), and the largest stage output. From a
        run on meta tensors, for memory estimates."""
        stages = self._meta_stages()[: self._last_stage(self._sorted(layers)) + 1]
        weights = {id(p) for p in stages.parameters()}
        saved: dict[int, Tensor] = {}  # by identity: a ReLU's output is saved by the ReLU and by the next conv

        def pack(t: Tensor) -> Tensor:
            if id(t) not in weights:
                saved[id(t)] = t
            return t

        largest = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = torch.empty(1, 3, *size, device="meta", requires_grad=True)
            for stage in stages:
                x = stage(x)
                largest = max(largest, x.numel() * x.element_size())
        return sum(t.numel() * t.element_size() for t in saved.values()), largest

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Features of `x` at the taps `layers`.

        Args:
            x: RGB images in [0, 1], ``[N, 3, H, W]``. Gradients flow back to `x`.
            layers: Tap names from `valid_layers`, in any order; duplicates are ignored.

        Returns:
            {tap name: feature map ``[N, C, h, w]``} in depth order; smoothed taps are float32.
        """
        names = self._sorted(layers)
        last = self._last_stage(names)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self._name}: expected RGB images [N, 3, H, W], got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size(names):
            raise ValueError(
                f"{self._name}: input {x.shape[-2]}x{x.shape[-1]} is too small for layer {names[-1]!r}; "
                f"height and width must be at least {self.min_input_size(names)} px"
            )
        wanted: dict[int, list[str]] = {}
        for name in names:
            wanted.setdefault(self._tap_stage[name], []).append(name)

        x = (x - self.mean) / self.std
        feats: dict[str, Tensor] = {}
        # Run only up to the deepest requested stage: everything after it is wasted work on the hot path.
        for i, stage in enumerate(self.stages[: last + 1]):
            x = stage(x)
            for name in wanted.get(i, ()):
                feats[name] = x
        if self.smoothing:
            feats = {n: swag(f, self.smoothing[n]) if n in self.smoothing else f for n, f in feats.items()}
        return feats

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Always stays in eval mode: Lightning calls `.train()` on the whole model, but a frozen extractor
        must keep BatchNorm on its running statistics (the seed study's ResNet ran in train mode by mistake)."""
        return super().train(False)

    def __repr__(self) -> str:
        # Short on purpose: printing 40 stages helps no one; the layer list is what a user needs to see.
        smoothing = self.smoothing if self.smoothing else None
        return f"{self._name}(weights={self.weights!r}, normalization={self.normalization!r}, smoothing={smoothing})"

    # ---------------------------------------------------------------------------------------- helpers
    @property
    def _name(self) -> str:
        return type(self).__name__

    @property
    def _valid_str(self) -> str:
        return ", ".join(self._valid)

    def _check_names(self, names: Iterable[str]) -> None:
        bad = [n for n in names if n not in self._tap_stage]
        if bad:
            which = ", ".join(repr(n) for n in bad)
            raise ConfigError(
                f"unknown layer{'s' if len(bad) > 1 else ''} {which} for {self._name}; valid layers: {self._valid_str}"
            )

    def _sorted(self, layers: Iterable[str]) -> list[str]:
        names = [layers] if isinstance(layers, str) else list(layers)
        if not names:
            raise ConfigError(f"{self._name}: give at least one layer; valid layers: {self._valid_str}")
        self._check_names(names)
        return sorted(set(names), key=self._valid.index)

    def _last_stage(self, sorted_names: list[str]) -> int:
        return self._tap_stage[sorted_names[-1]]

    def _meta_stages(self) -> nn.ModuleList:
        # Shapes come from the network itself, run on meta tensors (no arithmetic), so every kind of layer counts.
        # The copy swaps every weight for a meta tensor, so it costs no memory.
        if self._meta is None:
            tensors = [*self.stages.parameters(), *self.stages.buffers()]
            # float32 whatever the network's dtype: the probes below run float32 meta tensors.
            memo = {
                id(t): torch.empty_like(t, device="meta", dtype=torch.float32 if t.is_floating_point() else t.dtype)
                for t in tensors
            }
            stages = copy.deepcopy(self.stages, memo)
            for m in stages.modules():  # hooks that users put on the real network must not see these runs
                m._forward_hooks.clear()
                m._forward_pre_hooks.clear()
            # A plain attribute, not a submodule: it must stay out of state_dict, .to() and the module tree.
            object.__setattr__(self, "_meta", stages)
        return self._meta

    def _min_side_for(self, last_stage: int) -> int:
        stages = self._meta_stages()[: last_stage + 1]

        def fits(side: int) -> bool:
            x = torch.empty(1, 3, side, side, device="meta")
            try:
                for stage in stages:
                    x = stage(x)
                    if min(x.shape[-2:]) < 1:
                        return False
            except RuntimeError:  # torch refuses a kernel larger than its (padded) input
                return False
            return True

        high = 1
        while not fits(high):  # doubling, then bisection: few runs whatever the answer
            if high >= 1 << 14:
                raise RuntimeError(f"{self._name}: no input size up to {high} px reaches stage {last_stage}")
            high *= 2
        low = high // 2 + 1 if high > 1 else 1
        while low < high:
            mid = (low + high) // 2
            low, high = (low, mid) if fits(mid) else (mid + 1, high)
        return low

    def _resolve_normalization(
        self,
        normalization: str,
        mean: tuple[float, float, float] | None,
        std: tuple[float, float, float] | None,
        member: WeightsEnum | None,
    ) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
        if (mean is None) != (std is None):
            raise ConfigError(f"{self._name}: give both `mean` and `std`, or neither")
        if mean is not None and std is not None:
            if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
                raise ConfigError(f"{self._name}: mean/std need 3 values (RGB), std > 0; got {mean}, {std}")
            return "custom", tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if normalization == "auto":
            if member is not None:  # the statistics these torchvision weights were trained with
                t = member.transforms()
                return f"auto ({member})", tuple(t.mean), tuple(t.std)
            return "auto (imagenet)", IMAGENET_MEAN, IMAGENET_STD
        if normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"{self._name}: unknown normalization {normalization!r}; "
                f"choose one of: auto, {', '.join(NORMALIZATIONS)} (or give mean and std)"
            )
        return (normalization, *NORMALIZATIONS[normalization])

    def _resolve_smoothing(self, smoothing: float | Mapping[str, float] | None) -> dict[str, float]:
        if smoothing is None:
            return {}
        temps = dict(smoothing) if isinstance(smoothing, Mapping) else dict.fromkeys(self._valid, smoothing)
        self._check_names(temps)
        for name, t in temps.items():
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or not math.isfinite(t):
                raise ConfigError(f"{self._name}: smoothing temperature for {name!r} must be > 0, got {t!r}")
        return {n: float(t) for n, t in temps.items()}

    # ---------------------------------------------------------------------------------------- weights
    def _weights_member(self, weights: str | os.PathLike | None) -> WeightsEnum | None:
        """The torchvision weights enum member that `weights` names, or None (random init or a file)."""
        if not isinstance(weights, str):
            return None
        enum = self.weights_enum
        name = self.default_weights if weights == "imagenet" else weights.removeprefix(enum.__name__ + ".")
        return enum[name] if name in enum.__members__ else None

    def _load_weights(self, trunk: nn.Module, weights: str | os.PathLike | None, member: WeightsEnum | None) -> str:
        if weights is None:
            return "random"
        if member is not None:
            sd, source = self._download(member), str(member)
        elif isinstance(weights, (str, os.PathLike)):
            sd, source = self._read_file(Path(weights)), os.fspath(weights)
        else:
            raise ConfigError(f"{self._name}: weights must be a string or None, got {type(weights).__name__}")
        guess = guess_architecture(sd)
        sd, prefix = self._adapt_state_dict(sd)
        self._check_and_load(trunk, sd, prefix, source, guess)
        self._caffe_weights = looks_like_caffe_vgg16(trunk)
        return "imagenet" if weights == "imagenet" else source

    def _download(self, member: WeightsEnum) -> dict[str, Any]:
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
                f"{self._name}: could not get torchvision weights {member} ({type(e).__name__}: {e}).{corrupt}\n"
                f"torchvision wanted {url}\n"
                f"cached as {cached}\n"
                f"Fix: download that file on a machine with internet access and put it at the path above "
                f"(TORCH_HOME moves the cache), or pass a local state dict with `weights: /path/to/state_dict.pth` "
                f"(YAML: model.extractor.init_args.weights), or `weights: null` for random weights."
            ) from e

    def _read_file(self, path: Path) -> dict[str, Any]:
        path = path.expanduser()
        if not path.is_file():
            choices = ", ".join(["imagenet", *self.weights_enum.__members__])
            raise WeightsError(
                f"{self._name}: weights file not found: {path} (absolute: {path.absolute()}). `weights` takes "
                f"one of {choices}, a path to a state-dict file, or null for random weights."
            )
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle, zip and weights_only errors all mean "not a plain state dict"
            raise WeightsError(f"{self._name}: could not read {path} as a state dict: {e}") from e
        # Tolerate the two common wrappers: {"state_dict": {...}} and DDP's "module." prefix.
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise WeightsError(f"{self._name}: {path} holds a {type(obj).__name__}, not a state dict")
        if obj and all(k.startswith("module.") for k in obj):
            obj = {k.removeprefix("module."): v for k, v in obj.items()}
        return dict(obj)

    def _check_and_load(
        self, trunk: nn.Module, sd: Mapping[str, Any], prefix: str, source: str, guess: str | None = None
    ) -> None:
        """Load `sd` into `trunk` or raise a WeightsError naming the missing and mismatched keys, and the
        architecture the file looks like (`guess`, from `guess_architecture`) when it is another one."""
        expected = trunk.state_dict()
        # BatchNorm's counter is unused in eval mode and absent from old checkpoints.
        missing = [prefix + k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
        mismatched = [
            f"{prefix + k} (file {tuple(sd[k].shape) if isinstance(sd[k], Tensor) else type(sd[k]).__name__}, "
            f"{self._name} {tuple(v.shape)})"
            for k, v in expected.items()
            if k in sd and not (isinstance(sd[k], Tensor) and sd[k].shape == v.shape)
        ]
        if missing or mismatched:
            parts = [f"{len(missing)} missing key(s): {_few(missing)}"] if missing else []
            parts += [f"{len(mismatched)} shape mismatch(es): {_few(mismatched)}"] if mismatched else []
            hint = ""
            if guess in _ARCH_NAMES and guess != f"nst_pl.extractors.{self._name}":
                hint = f" This looks like {_ARCH_NAMES[guess]} state dict: use {guess} (model.extractor.class_path)."
            elif guess and guess not in _ARCH_NAMES:
                hint = f" This looks like the state dict of {guess}."
            elif guess is None and sd:
                hint = " The file does not look like a torchvision VGG, AlexNet or ResNet state dict."
            raise WeightsError(
                f"{self._name}: weights {source!r} do not fit this architecture; " + "; ".join(parts) + ". "
                f"Expected {self.key_hint}.{hint}"
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


def _pair(value, axis: int) -> int:
    return value[axis] if isinstance(value, (tuple, list)) else value


def _reach_through(module: nn.Module, reach: Reach, axis: int) -> Reach:
    """`reach` after `module`: a sliding window (anything with kernel_size and stride: convolutions, pooling)
    widens it; a sequence composes; a module with branches is traced with torch.fx and its branches are joined
    where they meet; any other leaf (ReLU, BatchNorm, …) acts on each position alone."""
    if hasattr(module, "kernel_size") and hasattr(module, "stride"):
        kernel, stride = _pair(module.kernel_size, axis), _pair(module.stride or module.kernel_size, axis)
        dilation = _pair(getattr(module, "dilation", 1), axis)
        padding = getattr(module, "padding", 0)
        if isinstance(padding, str):  # Conv2d's "valid" / "same" (stride 1)
            padding = 0 if padding == "valid" else dilation * (kernel - 1) // 2
        return reach.then(kernel, stride, _pair(padding, axis), dilation)
    children = list(module.children())
    if not children:
        return reach
    if isinstance(module, nn.Sequential):
        for child in children:
            reach = _reach_through(child, reach, axis)
        return reach
    graph = torch.fx.symbolic_trace(module).graph
    at: dict[torch.fx.Node, Reach] = {}
    for node in graph.nodes:
        inputs = [at[a] for a in node.all_input_nodes if a in at]
        if node.op == "placeholder":
            at[node] = reach
        elif node.op == "output":
            return inputs[0]
        elif inputs:
            joined = inputs[0]
            for other in inputs[1:]:
                joined = joined.union(other)
            at[node] = (
                _reach_through(module.get_submodule(node.target), joined, axis) if node.op == "call_module" else joined
            )
    raise ValueError(f"{type(module).__name__}: no output found when tracing it")


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", … ({len(items) - n} more)" if len(items) > n else "")
