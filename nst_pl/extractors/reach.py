"""Network reach: where a feature position looks in the input, read from the network's structure.

Tiled steps (tiling.py) size their halos and align their tiles with it; `FeatureExtractor.reach` gives it per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx
from torch import nn


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


def _pair(value, axis: int) -> int:
    return value[axis] if isinstance(value, (tuple, list)) else value


def reach_through(module: nn.Module, reach: Reach, axis: int) -> Reach:
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
            reach = reach_through(child, reach, axis)
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
                reach_through(module.get_submodule(node.target), joined, axis) if node.op == "call_module" else joined
            )
    raise ValueError(f"{type(module).__name__}: no output found when tracing it")
