"""Fixed-point layers: one code path that trains in float32 and decodes exactly in float64.

Every activation is rounded to a multiple of 2**-ACT_BITS and every weight to 2**-WEIGHT_BITS,
both bounded, so in float64 each product and each partial sum is a dyadic number far below 2**53
and therefore exact: a convolution gives the same bits whatever the summation order, thread
count, BLAS, oneDNN setting or device. The only inexact operations, division and square root,
are correctly rounded by IEEE 754 on every machine and are immediately rounded to the grid.
Softmax uses an integer table of 2**(-d/8) instead of exp, which libm would round differently.
In training, rounding passes gradients straight through.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACT_BITS = 6
ACT_LIMIT = 256.0
WEIGHT_BITS = 8
WEIGHT_LIMIT = 8.0

# round(2**16 * 2**(-r/8)), r = 0..7: softmax weights are these shifted right by d // 8.
_EXP2_BASE = (65536, 60097, 55109, 50535, 46341, 42495, 38968, 35734)
_EXP2_STEPS = 128
EXP2_TABLE = [_EXP2_BASE[d % 8] >> (d // 8) for d in range(_EXP2_STEPS)]


def quantize(x: torch.Tensor, bits: int, limit: float) -> torch.Tensor:
    """Round to the nearest multiple of 2**-bits (halves up), clamped to [-limit, limit]."""
    scale = 2.0**bits
    q = x * scale  # one new tensor, then in place: this runs on every activation
    q.add_(0.5).floor_().div_(scale).clamp_(-limit, limit)
    return x + (q - x).detach() if x.requires_grad else q


def qact(x: torch.Tensor) -> torch.Tensor:
    return quantize(x, ACT_BITS, ACT_LIMIT)


def qweight(w: torch.Tensor) -> torch.Tensor:
    return quantize(w, WEIGHT_BITS, WEIGHT_LIMIT)


def qbias(b: torch.Tensor | None) -> torch.Tensor | None:
    return None if b is None else quantize(b, ACT_BITS + WEIGHT_BITS, ACT_LIMIT)


class QConv2d(nn.Conv2d):
    """Conv2d with fixed-point weights and output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qact(self._conv_forward(x, qweight(self.weight), qbias(self.bias)))

    def forward_in_bands(self, x: torch.Tensor, max_pixels: int = 1 << 19) -> torch.Tensor:
        """forward() over bands of output rows, each with the input rows it reads: the same
        numbers (the arithmetic is exact), with PyTorch's im2col buffer bounded by max_pixels
        positions instead of the whole image's."""
        (kh, _), (sh, _), (ph, pw) = self.kernel_size, self.stride, self.padding
        height = x.shape[-2]
        out_height = (height + 2 * ph - kh) // sh + 1
        rows = max(1, max_pixels // max(1, x.shape[-1]))
        weight, bias = qweight(self.weight), qbias(self.bias)
        if rows >= out_height:
            return self(x.to(weight.dtype))

        def band(top: int, bottom: int) -> torch.Tensor:
            first, last = top * sh - ph, (bottom - 1) * sh - ph + kh  # the input rows output rows [top, bottom) read
            rows_in = x[..., max(0, first) : min(height, last), :].to(weight.dtype)  # (x may be stored narrower)
            rows_in = F.pad(rows_in, (0, 0, max(0, -first), max(0, last - height)))
            return qact(F.conv2d(rows_in, weight, bias, self.stride, (0, pw)))

        return in_row_bands(out_height, rows, band)


def in_row_bands(out_rows: int, step: int, band: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """Rows [0, out_rows) of a result computed `step` rows at a time by band(top, bottom). Outside
    autograd each band goes straight into the result, so that the bands and their concatenation
    are never in memory together (in training, torch.cat)."""
    parts, out = [], None
    for top in range(0, out_rows, step):
        bottom = min(top + step, out_rows)
        part = band(top, bottom)
        if part.requires_grad:
            parts.append(part)
            continue
        if out is None:
            out = part.new_empty((*part.shape[:-2], out_rows, part.shape[-1]))
        out[..., top:bottom, :] = part
    return torch.cat(parts, dim=-2) if parts else out


class QConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d with fixed-point weights and output, for kernel == stride, no padding.

    Each input pixel then owns its own block of outputs, so the layer is a 1x1 convolution to
    C_out x k x k channels and a pixel shuffle: the same sums, computed faster than PyTorch's
    transposed convolution does in float64."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int) -> None:
        if kernel_size != stride:
            raise ValueError("QConvTranspose2d needs kernel_size == stride")
        super().__init__(cin, cout, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.stride[0]
        w = qweight(self.weight).permute(1, 2, 3, 0).reshape(-1, self.in_channels, 1, 1)
        b = qbias(self.bias).repeat_interleave(k * k)
        return qact(F.pixel_shuffle(F.conv2d(x, w, b), k))


class RMSNorm(nn.Module):
    """RMS normalisation over channels with a learned gain; exact sums, correctly rounded sqrt."""

    def __init__(self, channels: int, eps: float = 2.0**-6) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # sum / n rather than mean(): devices differ in whether mean multiplies by 1/n.
        ms = (x * x).sum(dim=1, keepdim=True) / x.shape[1]
        rms = torch.sqrt(ms + self.eps)
        return qact(x * qweight(self.gain).view(1, -1, 1, 1) / rms)


class DoubleConv(nn.Sequential):
    """(3x3 conv, RMSNorm, ReLU) twice."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            QConv2d(cin, cout, 3, padding=1, bias=False), RMSNorm(cout), nn.ReLU(),
            QConv2d(cout, cout, 3, padding=1, bias=False), RMSNorm(cout), nn.ReLU(),
        )


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions, with a residual connection.

    Scores are rounded to eighths of a binary logarithm and turned into weights with
    EXP2_TABLE, so the softmax is integer arithmetic; the weighted mean is one exact sum and one
    correctly rounded division.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.qkv = QConv2d(channels, 3 * channels, 1)
        self.out = QConv2d(channels, channels, 1)
        self.register_buffer("exp2_table", torch.tensor(EXP2_TABLE, dtype=torch.float64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).chunk(3, dim=1)  # (b, c, hw) each
        scores = torch.einsum("bci,bcj->bij", q, k) * 2.0**-3  # in binary-log units
        gap = scores.amax(dim=2, keepdim=True).detach() - scores
        steps = torch.floor(gap * 8 + 0.5).clamp(0, _EXP2_STEPS - 1).detach()
        weights = self.exp2_table.to(x.dtype)[steps.long()]
        if x.requires_grad:  # straight through the table to 2**(16 - gap)
            soft = torch.exp2(16 - gap)
            weights = soft + (weights - soft).detach()
        mixed = torch.einsum("bij,bcj->bci", weights, v) / weights.sum(dim=2).unsqueeze(1)
        return x + self.out(qact(mixed).view(b, c, h, w))
