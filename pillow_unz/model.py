"""The pillow-unz network: a UNet-shaped autoencoder whose decoder turns the coded bottleneck z
into per-pixel parameters of the pixel model (pillow_unz/pixelmodel.py, csrc/pixel_model.h).

Encoder: a stem convolution, then one shared stride-2 convolution applied as many times as it
takes to bring the image within CORE x CORE (so one set of weights serves every size), then
DoubleConv and self-attention at the core, down to `latent` channels: y, rounded to z.
Decoder: DoubleConv, self-attention and DoubleConv at the core, then one shared ConvTranspose2d
applied as many times back up to full size, and a 1x1 head: per pixel and channel, a scale-index
offset and an error-feedback coefficient. The decoder is built from pillow_unz.fixedpoint
layers, so it runs exactly in float64.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _coder
from .fixedpoint import DoubleConv, QConv2d, QConvTranspose2d, SelfAttention, in_row_bands, qact, qbias, qweight, quantize
from .pixelmodel import TABLE_SHAPE

CORE = 16
Z_MAX = 31  # z is clamped to [-Z_MAX, Z_MAX] and coded as 2 * Z_MAX + 1 symbols
OFFSET_LIMIT = 2.0  # per-pixel scale offsets, in binary-log units (16 scale steps)
SCALE_STEPS = 8  # scale indices per doubling: scale = 2**(index / 8 + SCALE_LOG2_MIN)
BETA_LIMIT = 2.0  # feedback coefficients


def num_levels(height: int, width: int) -> int:
    """How many stride-2 steps bring an image of this size within CORE x CORE."""
    levels = 0
    while max(height, width) > CORE:
        height, width = (height + 1) // 2, (width + 1) // 2
        levels += 1
    return levels


def num_param_planes(channels: int) -> int:
    """Per channel a scale offset and an error-feedback coefficient (csrc/pixel_model.h)."""
    return _coder.num_param_planes(channels)


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 3
    width: int = 32  # channels at the core
    up_width: int = 8  # channels of the full-resolution path
    latent: int = 8  # channels of z

    def to_dict(self) -> dict:
        return asdict(self)


def _scale_index(log_scale: torch.Tensor) -> torch.Tensor:
    """Binary-log scales -> indices of the coder's scale table (csrc/tables.h)."""
    return quantize(SCALE_STEPS * (log_scale - _coder.SCALE_LOG2_MIN), 0, _coder.NUM_SCALES - 1).clamp(min=0)


class UnzNet(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, wd, up, lat = config.channels, config.width, config.up_width, config.latent
        self.stem = QConv2d(c, up, 3, padding=1)
        self.down = QConv2d(up, up, 3, stride=2, padding=1)
        self.encode_core = nn.Sequential(
            QConv2d(up, wd, 1), DoubleConv(wd, wd), SelfAttention(wd), QConv2d(wd, lat, 1)
        )
        self.decode_core = nn.Sequential(
            QConv2d(lat, wd, 3, padding=1), DoubleConv(wd, wd), SelfAttention(wd), DoubleConv(wd, wd),
            QConv2d(wd, up, 1),
        )
        self.up = QConvTranspose2d(up, up, 2, stride=2)
        self.head = QConv2d(up, num_param_planes(c), 1)
        # The head speaks binary logs of scale offsets and plain coefficients; the pixel model
        # takes scale steps and 1/64ths, within bounds.
        coefficient_one = 2**_coder.BETA_FRAC_BITS
        steps = [SCALE_STEPS] * c + [coefficient_one] * (num_param_planes(c) - c)
        limits = [OFFSET_LIMIT * SCALE_STEPS] * c + [BETA_LIMIT * coefficient_one] * (num_param_planes(c) - c)
        self.register_buffer("param_steps", torch.tensor(steps, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("param_limits", torch.tensor(limits, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        # Learned entropy model, as binary logarithms of logistic scales: z's per channel, and the
        # pixel model's per channel and context cell (activity, cross-channel, spread buckets).
        self.z_log_scale = nn.Parameter(torch.ones(lat))
        self.log_scale_table = nn.Parameter(torch.zeros(c, *TABLE_SHAPE))
        self._init_head()

    def _init_head(self) -> None:
        # Start from the plain pixel model: no scale offsets, no error feedback.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples (B, C, H, W) in 0..255, of any dtype (uint8 for coding: no full-size float
        copy) -> y at the core (B, latent, h, w), not yet rounded."""
        levels = num_levels(*x.shape[-2:])
        if levels == 0:
            return self.encode_core(self._stem_rows(x, 0, x.shape[-2]))
        h = self._first_level(x)
        for _ in range(levels - 1):
            h = self.down.forward_in_bands(h).relu_()
        return self.encode_core(h.to(self.stem.weight.dtype))

    def _stem_rows(self, x: torch.Tensor, first: int, last: int) -> torch.Tensor:
        """The stem's (ReLU'd) output rows [first, last), from input rows [first - 1, last + 1):
        zeros beyond the image, as the stem's padding."""
        lo, hi = max(first - 1, 0), min(last + 1, x.shape[-2])
        dtype = self.stem.weight.dtype
        band = F.pad((x[..., lo:hi, :].to(dtype) - 127.5) / 64.0, (0, 0, lo - (first - 1), (last + 1) - hi))
        return qact(F.conv2d(band, qweight(self.stem.weight), qbias(self.stem.bias), padding=(0, 1))).relu_()

    def _first_level(self, x: torch.Tensor) -> torch.Tensor:
        """The first down step's (ReLU'd) output, computed over bands of its rows, each from the
        stem rows it reads: the full-resolution activations exist a band at a time (the same
        numbers: the arithmetic is exact). In float64 it is kept in float32, which holds the
        activations' grid (multiples of 2**-6 below 2**8) exactly."""
        height = x.shape[-2]
        weight, bias = qweight(self.down.weight), qbias(self.down.bias)
        store = torch.float32 if weight.dtype == torch.float64 and not torch.is_grad_enabled() else weight.dtype

        def band(top: int, bottom: int) -> torch.Tensor:  # output rows [top, bottom) read stem rows [2 top - 1, 2 bottom)
            lo, hi = max(2 * top - 1, 0), min(2 * bottom, height)
            stem = F.pad(self._stem_rows(x, lo, hi), (0, 0, lo - (2 * top - 1), 2 * bottom - hi))
            return qact(F.conv2d(stem, weight, bias, stride=2, padding=(0, 1))).relu_().to(store)

        return in_row_bands((height + 1) // 2, max(1, (1 << 18) // max(1, x.shape[-1])), band)

    def decode(self, z: torch.Tensor, height: int, width: int, rows: range | None = None) -> torch.Tensor:
        """z (B, latent, h, w) -> integer parameter planes (B, P, height, width) in the pixel
        model's units: scale steps for the offsets, 1/64 for the coefficients. With `rows`, only
        those rows of the planes (the same numbers as the full planes' rows)."""
        return torch.cat([planes for _, planes in self.decode_chunks(z, height, width, rows)], dim=-2)

    def decode_chunks(
        self, z: torch.Tensor, height: int, width: int, rows: range | None = None
    ) -> Iterator[tuple[range, torch.Tensor]]:
        """decode(), as (rows, their planes) for consecutive chunks of about 2**17 pixels."""
        core = self.decode_core(z)
        levels = num_levels(height, width)
        rows = rows if rows is not None else range(height)
        # Below the core every output pixel depends on one pixel of each coarser level, so the
        # full-resolution path runs over chunks of output rows, each computed from the rows of
        # every level above it alone: the same numbers, in bounded memory.
        chunk = max(1, (1 << 17) // (core.shape[-1] << levels))
        for top in range(rows.start, rows.stop, chunk):
            part = range(top, min(top + chunk, rows.stop))
            planes = self._up_rows(core, levels, part)[..., :width]
            units = quantize(planes * self.param_steps, 0, math.inf)
            yield part, units.clamp(-self.param_limits, self.param_limits)

    def _up_rows(self, core: torch.Tensor, levels: int, rows: range) -> torch.Tensor:
        """The head's output rows `rows` at full resolution (2**levels times the core's), cropped
        at every level to the rows they descend from."""
        def needed(level: int) -> range:  # rows of `level` (0: the core) that `rows` descend from
            shift = levels - level
            return range(rows.start >> shift, ((rows.stop - 1) >> shift) + 1)

        h = core[..., needed(0).start : needed(0).stop, :]
        for level in range(1, levels + 1):
            h = self.up(h).relu_()
            skip = needed(level).start - 2 * needed(level - 1).start
            h = h[..., skip : skip + len(needed(level)), :]
        return self.head(h)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of z for an image of this size."""
        for _ in range(num_levels(height, width)):
            height, width = (height + 1) // 2, (width + 1) // 2
        return self.config.latent, height, width

    def parameter_planes(self, height: int, width: int, rows: range) -> np.ndarray:
        """The decoder half, in float64 from z = 0 (files carry no z: it was zero on every image
        the shipped models coded): integer planes (P, len(rows), width), identical on every machine."""
        z = torch.zeros((1, *self.latent_shape(height, width)), dtype=torch.float64, device=self.head.weight.device)
        params = np.empty((num_param_planes(self.config.channels), len(rows), width), np.int32)
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=False):
            for part, planes in self.decode_chunks(z, height, width, rows):
                params[:, part.start - rows.start : part.stop - rows.start] = planes[0].cpu().numpy()
        return params

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """z: the encoder's y rounded to integers in [-Z_MAX, Z_MAX] (straight through in training)."""
        return quantize(self.encode(x), 0, Z_MAX)

    def z_scale_index(self) -> torch.Tensor:
        return _scale_index(self.z_log_scale)

    def scale_table_index(self) -> torch.Tensor:
        return _scale_index(self.log_scale_table)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (z, params) with z rounded straight-through."""
        z = self.latent(x)
        return z, self.decode(z, *x.shape[-2:])
