"""The context network of the learned photo tool (csrc/context_network.h), as the integers the
coder runs: per channel, fully connected layers over each sample's classical context (its first
NARROW_CONTEXT_SIZE values, or all CONTEXT_SIZE with the window's outer ring), with int16
weights, int32 biases and a right shift per layer; ReLU clipped to NET_ACTIVATION_LIMIT between
layers. Its two outputs correct the sample's mean (eighths) and offset its scale index.

The weights file stores a model's networks under "<model>.net<k>.": w<l> (C, out, in) int16,
b<l> (C, out) int32 and `shifts` (layers,) int32. `outputs` computes what the coder computes,
exactly, with numpy: for training (finetune/context.py) and tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _coder

Layer = tuple[np.ndarray, np.ndarray, int]  # weights (C, out, in) int16, bias (C, out) int32, shift


@dataclass(frozen=True)
class ContextNetwork:
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        layers = self.layers
        if not 1 <= len(layers) <= _coder.NET_MAX_LAYERS:
            raise ValueError(f"context network: 1 to {_coder.NET_MAX_LAYERS} layers")
        channels, width = layers[0][0].shape[0], self.inputs
        if width not in (_coder.NARROW_CONTEXT_SIZE, _coder.CONTEXT_SIZE):
            raise ValueError("context network: its first layer reads the context, narrow or whole")
        for w, b, shift in layers:
            out = w.shape[1]
            if (w.dtype != np.int16 or b.dtype != np.int32 or w.shape != (channels, out, width) or b.shape != (channels, out)
                    or not 1 <= out <= _coder.NET_MAX_WIDTH or not 0 <= shift <= _coder.NET_MAX_SHIFT):
                raise ValueError("context network: layer shapes, types or shifts do not fit")
            if np.abs(w.astype(np.int32)).max() > _coder.NET_WEIGHT_LIMIT or np.abs(b.astype(np.int64)).max() > _coder.NET_BIAS_LIMIT:
                raise ValueError("context network: weights out of range")
            width = out
        if width != 2:
            raise ValueError("context network: the last layer gives two outputs")

    @property
    def channels(self) -> int:
        return self.layers[0][0].shape[0]

    @property
    def inputs(self) -> int:
        """How much of the context it reads: the first NARROW_CONTEXT_SIZE values, or all."""
        return self.layers[0][0].shape[2]

    def coder_layers(self) -> list[Layer]:
        """The layers as _coder.encode_pixels and decode_pixels take them."""
        return [(np.ascontiguousarray(w), np.ascontiguousarray(b), int(s)) for w, b, s in self.layers]

    def outputs(self, context: np.ndarray) -> np.ndarray:
        """What the coder computes for contexts (CONTEXT_SIZE, C, ...) (classical_contexts):
        (C, 2, ...) int64, the mean corrections (eighths) and the scale-index offsets."""
        # In float64, exactly: every sum is an integer under 2**31 (inputs and activations at most
        # 2**11, weights 2**13, 64 of them, biases 2**29), and the shift a division by a power of
        # two; float64 products run on BLAS, int64 ones do not (20 times slower).
        _, c, *rest = context.shape
        x = np.clip(context[: self.inputs].reshape(self.inputs, c, -1), -_coder.NET_INPUT_LIMIT, _coder.NET_INPUT_LIMIT)
        x = x.astype(np.float64)
        out = []
        for ch in range(c):
            v = x[:, ch].T
            for i, (w, b, shift) in enumerate(self.layers):
                v = np.floor((v @ w[ch].T.astype(np.float64) + b[ch]) / (1 << shift))
                if i + 1 < len(self.layers):
                    v = np.clip(v, 0, _coder.NET_ACTIVATION_LIMIT)
            v = v.astype(np.int64)
            out.append(np.stack([np.clip(v[:, 0], -_coder.NET_MAX_CORRECTION, _coder.NET_MAX_CORRECTION),
                                 np.clip(v[:, 1], -_coder.NET_MAX_SCALE_OFFSET, _coder.NET_MAX_SCALE_OFFSET)]))
        return np.stack(out).reshape(c, 2, *rest)

    def to_tensors(self, prefix: str) -> dict[str, np.ndarray]:
        tensors = {f"{prefix}shifts": np.array([s for _, _, s in self.layers], np.int32)}
        for i, (w, b, _) in enumerate(self.layers):
            tensors[f"{prefix}w{i}"], tensors[f"{prefix}b{i}"] = w, b
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], prefix: str) -> ContextNetwork:
        shifts = tensors[f"{prefix}shifts"]
        return cls(tuple((np.ascontiguousarray(tensors[f"{prefix}w{i}"]), np.ascontiguousarray(tensors[f"{prefix}b{i}"]),
                          int(s)) for i, s in enumerate(shifts)))
