"""Frozen CNN feature extractors with human layer names.

A `FeatureExtractor` is a torchvision network cut into an ordered list of named stages (`conv1_1`, `relu1_1`,
`pool1`, …). `extractor(x, layers)` normalises an RGB image in [0, 1], runs the stages in order, collects the
requested taps and stops after the deepest one. Subclasses (vgg.py, alexnet.py, resnet.py) only say
how to build the torchvision trunk and how to name its stages.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from nst_pl.errors import ConfigError

from .reach import Reach, reach_through
from .weights import load_weights, looks_like_caffe_vgg16, weights_member

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
        member = weights_member(type(self), weights)
        self.weights = load_weights(self, trunk, weights, member)  # short description, for repr
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

        self.normalization, mean_, std_ = normalization_stats(self._name, normalization, mean, std, member)
        self.register_buffer("mean", torch.tensor(mean_).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_).view(1, 3, 1, 1), persistent=False)
        if weights is not None and max(std_) > 0.05 and looks_like_caffe_vgg16(trunk):  # Caffe's std: 1/255
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
                rows, cols = reach_through(stage, rows, 0), reach_through(stage, cols, 1)
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
        # A plain attribute, not a submodule: it must stay out of state_dict, .to() and the module tree.
        if self._meta is None:
            object.__setattr__(self, "_meta", _meta_copy(self.stages))
        return self._meta

    def _min_side_for(self, last_stage: int) -> int:
        side = _smallest_side(self._meta_stages()[: last_stage + 1])
        if side is None:
            raise RuntimeError(f"{self._name}: no input size up to 16384 px reaches stage {last_stage}")
        return side

    def _resolve_smoothing(self, smoothing: float | Mapping[str, float] | None) -> dict[str, float]:
        if smoothing is None:
            return {}
        temps = dict(smoothing) if isinstance(smoothing, Mapping) else dict.fromkeys(self._valid, smoothing)
        self._check_names(temps)
        for name, t in temps.items():
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or not math.isfinite(t):
                raise ConfigError(f"{self._name}: smoothing temperature for {name!r} must be > 0, got {t!r}")
        return {n: float(t) for n, t in temps.items()}


def normalization_stats(
    name: str,
    normalization: str,
    mean: tuple[float, float, float] | None,
    std: tuple[float, float, float] | None,
    member: WeightsEnum | None,
) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """(description, mean, std) of the input statistics that an extractor's options ask for (see its Args)."""
    if (mean is None) != (std is None):
        raise ConfigError(f"{name}: give both `mean` and `std`, or neither")
    if mean is not None and std is not None:
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"{name}: mean/std need 3 values (RGB), std > 0; got {mean}, {std}")
        return "custom", tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if normalization == "auto":
        if member is not None:  # the statistics these torchvision weights were trained with
            t = member.transforms()
            return f"auto ({member})", tuple(t.mean), tuple(t.std)
        return "auto (imagenet)", IMAGENET_MEAN, IMAGENET_STD
    if normalization not in NORMALIZATIONS:
        raise ConfigError(
            f"{name}: unknown normalization {normalization!r}; "
            f"choose one of: auto, {', '.join(NORMALIZATIONS)} (or give mean and std)"
        )
    return (normalization, *NORMALIZATIONS[normalization])


def _meta_copy(stages: nn.ModuleList) -> nn.ModuleList:
    """The stages with every weight swapped for a float32 meta tensor: shapes come from the network itself (every
    kind of layer counts), run without arithmetic and without memory."""
    tensors = [*stages.parameters(), *stages.buffers()]
    memo = {
        id(t): torch.empty_like(t, device="meta", dtype=torch.float32 if t.is_floating_point() else t.dtype)
        for t in tensors
    }
    copied = copy.deepcopy(stages, memo)
    for m in copied.modules():  # hooks that users put on the real network must not see these runs
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    return copied


def _smallest_side(stages: nn.ModuleList, limit: int = 1 << 14) -> int | None:
    """The smallest square input side (up to `limit`) for which every stage has an output of at least 1x1."""

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
        if high >= limit:
            return None
        high *= 2
    low = high // 2 + 1 if high > 1 else 1
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid + 1, high)
    return low
