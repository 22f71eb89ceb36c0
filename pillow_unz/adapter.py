"""Per-image LoRA adapters: their exact merge into a model, and their coding in the ADPT chunk.

An adapter changes some of the decoder's fixed-point layers (pillow_unz.fixedpoint): a layer's
weight W, seen as a matrix of W.shape[0] rows, gains the low-rank product B @ A, with A
(rank, W[0].numel()) and B (W.shape[0], rank), and its bias, if it has one, gains a shift; all
are integer multiples of 2**-WEIGHT_BITS. The sums are exact in float64, and the layer rounds
them to its grids as it rounds any weight, so the adapted model computes the same numbers on
every machine. Training (finetune/lora.py) runs the
same lora_delta, straight through the rounding.

Only the decoder half of the network is adapted: the encoder's output, z, is stored in the file,
so the encoder may change freely, but the decoder must be rebuilt by whoever opens the file.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import _coder, coder, pixelmodel
from .fixedpoint import WEIGHT_BITS, quantize
from .model import UnzNet

FACTOR_LIMIT = 127  # |entries| of A, B and the shift, in steps of 2**-WEIGHT_BITS
MAX_RANK = 32
DECODER_MODULES = ("decode_core", "up", "head")


@dataclass
class LayerAdapter:
    name: str  # the adapted module's path in UnzNet, e.g. "head"
    a: np.ndarray  # (rank, fan-in) int32, in steps of 2**-WEIGHT_BITS
    b: np.ndarray  # (rows, rank) int32
    shift: np.ndarray | None = None  # (bias size,) int32, for layers with a bias

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    def factors(self) -> list[np.ndarray]:
        """A, B and the shift, in the order they are stored."""
        return [self.a, self.b] + ([] if self.shift is None else [self.shift])


Adapter = list[LayerAdapter]  # one plane group's; empty: that group's model is not adapted


def adaptable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The decoder's convolutions, attention projections included, by module path."""
    return {
        name: module
        for name, module in model.named_modules()
        if name.split(".")[0] in DECODER_MODULES and isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
    }


def factor_shapes(layer: nn.Module, rank: int) -> list[tuple[int, ...]]:
    """Shapes of A, B and (for a layer with a bias) the shift of a rank-`rank` adapter."""
    weight = layer.weight
    shapes = [(rank, weight[0].numel()), (weight.shape[0], rank)]
    return shapes + ([] if layer.bias is None else [tuple(layer.bias.shape)])


def max_rank(layer: nn.Module) -> int:
    """Ranks above a layer's smaller side add nothing but bits."""
    return min(MAX_RANK, layer.weight.shape[0], layer.weight[0].numel())


def quantize_factor(t: torch.Tensor) -> torch.Tensor:
    """A, B or a shift rounded to the grid and bounds they are stored with (gradients pass
    straight through)."""
    return quantize(t, WEIGHT_BITS, FACTOR_LIMIT / 2**WEIGHT_BITS)


def lora_delta(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """B @ A shaped as `weight`, with A and B on their grid: exact in float64 (each product is a
    multiple of 2**-16 below 2**-2, at most MAX_RANK of them summed)."""
    return (quantize_factor(b) @ quantize_factor(a)).view_as(weight)


def apply(model: UnzNet, adapter: Adapter) -> UnzNet:
    """A float64 copy of `model` with the adapter merged into its weights and biases."""
    adapted = copy.deepcopy(model).double()
    layers = adaptable_layers(adapted)
    for layer in adapter:
        module = layers[layer.name]
        a, b, *shift = (torch.from_numpy(f.astype(np.float64) / 2**WEIGHT_BITS).to(module.weight.device) for f in layer.factors())
        with torch.no_grad():
            module.weight += lora_delta(module.weight, a, b)
            if shift:
                module.bias += quantize_factor(shift[0])
    return adapted


def best_scale_index(values: np.ndarray) -> int:
    """The scale index under which encode_centered codes `values` in the fewest bits: every
    possible value's code length under every scale (pixelmodel.latent_bits, the coder's own
    model), weighted by how often it occurs."""
    counts = np.bincount(np.asarray(values).ravel() + FACTOR_LIMIT, minlength=2 * FACTOR_LIMIT + 1)
    symbols = torch.arange(-FACTOR_LIMIT, FACTOR_LIMIT + 1).expand(_coder.NUM_SCALES, -1)
    bits = pixelmodel.latent_bits(symbols[None, :, None], torch.arange(_coder.NUM_SCALES), FACTOR_LIMIT)[0, :, 0]
    return int((bits * torch.from_numpy(counts).double()).sum(1).argmin())


# ADPT payload (docs/FORMAT.md): per plane group, the number of adapted layers, then per layer
# its name (length, ASCII), its rank, and the scale index of each of its factors; then one
# range-coded stream of every factor, in that order.


def encode(adapters: list[Adapter]) -> bytes:
    head, values, scales = bytearray(), [], []
    for adapter in adapters:
        head.append(len(adapter))
        for layer in adapter:
            name = layer.name.encode("ascii")
            head += bytes([len(name)]) + name + bytes([layer.rank])
            for factor in layer.factors():
                scale = best_scale_index(factor)
                head.append(scale)
                values.append(factor.ravel())
                scales.append(np.full(factor.size, scale, dtype=np.int32))
    if not values:
        return bytes(head)
    return bytes(head) + coder.encode_centered(np.concatenate(values), np.concatenate(scales), FACTOR_LIMIT)


def decode(payload: bytes, models: list[UnzNet]) -> list[Adapter]:
    """The adapters of an ADPT payload, one per plane group, group i coded with models[i];
    ValueError for anything that does not fit those models."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(payload):
            raise ValueError("adapter chunk is truncated")
        pos += n
        return payload[pos - n : pos]

    layouts = []  # per group, per layer: (name, [(shape, scale index) per factor])
    for model in models:
        layers, group = adaptable_layers(model), []
        for _ in range(take(1)[0]):
            name = take(take(1)[0]).decode("ascii", errors="replace")
            if name not in layers or any(name == g[0] for g in group):
                raise ValueError(f"adapter names no adaptable layer, or one twice: {name!r}")
            rank = take(1)[0]
            if not 1 <= rank <= max_rank(layers[name]):
                raise ValueError(f"adapter rank {rank} does not fit layer {name!r}")
            shapes = factor_shapes(layers[name], rank)
            group.append((name, list(zip(shapes, take(len(shapes))))))
        layouts.append(group)
    factors = [f for group in layouts for _, layer_factors in group for f in layer_factors]
    if not factors:
        if pos != len(payload):
            raise ValueError("adapter chunk has trailing bytes")
        return [[] for _ in models]
    if max(scale for _, scale in factors) >= _coder.NUM_SCALES:
        raise ValueError("adapter scale index out of range")
    sizes = [math.prod(shape) for shape, _ in factors]
    scales = np.repeat(np.array([scale for _, scale in factors], dtype=np.int32), sizes)
    flat = iter(np.split(coder.decode_centered(payload[pos:], scales, FACTOR_LIMIT), np.cumsum(sizes)[:-1]))
    return [
        [LayerAdapter(name, *(next(flat).reshape(shape) for shape, _ in layer_factors)) for name, layer_factors in group]
        for group in layouts
    ]
