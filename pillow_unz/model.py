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
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import _coder
from .fixedpoint import DoubleConv, QConv2d, QConvTranspose2d, SelfAttention, quantize
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
        """Samples (B, C, H, W) in 0..255 -> y at the core (B, latent, h, w), not yet rounded."""
        h = self.stem.forward_in_bands((x - 127.5) / 64.0).relu_()
        for _ in range(num_levels(*x.shape[-2:])):
            h = self.down.forward_in_bands(h).relu_()
        return self.encode_core(h)

    def decode(self, z: torch.Tensor, height: int, width: int, rows: range | None = None) -> torch.Tensor:
        """z (B, latent, h, w) -> integer parameter planes (B, P, height, width) in the pixel
        model's units: scale steps for the offsets, 1/64 for the coefficients. With `rows`, only
        those rows of the planes (the same numbers as the full planes' rows)."""
        core = self.decode_core(z)
        levels = num_levels(height, width)
        rows = rows if rows is not None else range(height)
        # Below the core every output pixel depends on one pixel of each coarser level, so the
        # full-resolution path runs only over the core rows that `rows` need, in bands of them:
        # the same numbers, bounded memory.
        first, last = rows.start >> levels, ((rows.stop - 1) >> levels) + 1
        band_rows = max(1, (1 << 20) // max(1, core.shape[-1] << (2 * levels)))
        bands = []
        for top in range(first, last, band_rows):
            h = core[..., top : min(top + band_rows, last), :]
            for _ in range(levels):
                h = self.up(h).relu_()
            bands.append(self.head(h[..., :width]))
        skip = rows.start - (first << levels)
        planes = torch.cat(bands, dim=-2)[..., skip : skip + len(rows), :]
        units = quantize(planes * self.param_steps, 0, math.inf)
        return units.clamp(-self.param_limits, self.param_limits)

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
