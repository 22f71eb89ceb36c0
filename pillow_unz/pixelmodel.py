"""The pixel model of csrc/pixel_model.h, computed for all pixels at once for training.

With the true image at hand (teacher forcing) every causal quantity the C++ coder derives pixel by
pixel can be computed in parallel. The classical prediction depends on the pixels alone and comes
from the coder's own code (csrc/predictor.h), run once per image; the network's error feedback,
the activity contexts and the per-cell running statistics use the same integer formulas here.
Only the probability differs slightly: float sigmoids instead of the coder's interpolated table (tests/test_pixelmodel.py holds the two within 1%).
This is the coder without a statistics key (tools.NO_KEY): training learns what every key shares,
and the keys' second stage of statistics adapts to each image on top.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import _coder

MAX_PRED8 = 255 * 8
PROB_ONE = 2**_coder.PROB_BITS
ACTIVITY_EDGES = torch.tensor(_coder.ACTIVITY_EDGES, dtype=torch.int64)
CROSS_EDGES = torch.tensor(_coder.CROSS_EDGES, dtype=torch.int64)
SPREAD_EDGES = torch.tensor(_coder.SPREAD_EDGES, dtype=torch.int64)
TABLE_SHAPE = (len(ACTIVITY_EDGES) + 1, len(CROSS_EDGES) + 1, len(SPREAD_EDGES) + 1)
NUM_CELLS = TABLE_SHAPE[0] * TABLE_SHAPE[1] * TABLE_SHAPE[2]
PRIOR_MAD = torch.tensor(_coder.PRIOR_MAD, dtype=torch.int64)
LOG8_THRESHOLDS = torch.tensor(_coder.LOG8_THRESHOLDS, dtype=torch.int64)
BETA_ONE = 2**_coder.BETA_FRAC_BITS


def scale_of(index: torch.Tensor) -> torch.Tensor:
    """The logistic scale of a scale index (csrc/tables.h: kInvScale)."""
    return torch.exp2(index / 8 + _coder.SCALE_LOG2_MIN)


def _floor(t: torch.Tensor) -> torch.Tensor:
    """floor, with the gradient of the identity."""
    return t + (torch.floor(t) - t).detach()


def _causal_sum(e: torch.Tensor, weights: tuple[int, int, int, int, int, int]) -> torch.Tensor:
    """weights . (e[N], e[W], e[NW], e[NE], e[WW], e[NN]) with zeros outside the image;
    e: (..., H, W)."""
    h, w = e.shape[-2:]
    p = F.pad(e, (2, 1, 2, 0))  # two rows above, two columns left, one right
    neighbours = (p[..., 1 : h + 1, 2 : w + 2], p[..., 2:, 1 : w + 1], p[..., 1 : h + 1, 1 : w + 1],
                  p[..., 1 : h + 1, 3:], p[..., 2:, :w], p[..., :h, 2 : w + 2])
    return sum(k * n for k, n in zip(weights, neighbours) if k)


def classical_prediction(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """csrc/predictor.h for every sample of x (B, C, H, W) int64: the prediction before the
    network's correction, the spread of the difference predictors, and the blend's signed errors
    summed over the causal neighbours (2N + 2W + NW + NE), all in eighths, int64. They depend on
    the pixels alone, so training computes them once per image, with the coder's own code."""
    planes = x.to(torch.uint8).cpu().numpy()
    threads = torch.get_num_threads()
    out = torch.from_numpy(np.stack([_coder.classical_predictions(np.ascontiguousarray(p), threads) for p in planes], 1))
    mean8, spread, feedback = out.long().to(x.device)
    return mean8, spread, feedback


def discretized_logistic_bits(
    x: torch.Tensor, mean8: torch.Tensor, scale: torch.Tensor, num_symbols: int = 256
) -> torch.Tensor:
    """Code length in bits of symbols x under the coder's renormalised discretized logistic
    (csrc/logistic.h): mean in eighths, every symbol given at least one count."""
    mean = mean8.double() / 8
    s = scale.double()
    lower = torch.sigmoid((x.double() - 0.5 - mean) / s)
    upper = torch.sigmoid((x.double() + 0.5 - mean) / s)
    s0 = torch.sigmoid((-0.5 - mean) / s)
    span = torch.sigmoid((num_symbols - 0.5 - mean) / s) - s0
    mass = (upper - lower) / span * (PROB_ONE - num_symbols) + 1
    return torch.log2(PROB_ONE / mass)


Classical = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def pixel_contexts(
    x: torch.Tensor, params: torch.Tensor, classical: Classical | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every sample of x (B, C, H, W) int64, with network parameter planes `params`
    (B, P, H, W): the prediction in eighths (differentiable in the feedback coefficients), the
    flat index of its cell in each channel's scale table of shape TABLE_SHAPE, and the
    magnitude of its residual (int64, in eighths).
    `classical` is classical_prediction(x), which training computes once per image."""
    c_total = x.shape[1]
    prediction, spread, feedback = classical_prediction(x) if classical is None else classical
    device = x.device
    qs = torch.bucketize(spread, SPREAD_EDGES.to(device), right=True)
    means, cells, magnitudes = [], [], []
    cross = torch.zeros_like(x[:, 0])
    for c in range(c_total):
        # params are in the coder's units: coefficients in 1/BETA_ONE
        mean8 = prediction[:, c].to(params.dtype) + _floor(params[:, c_total + c] * feedback[:, c] / (8 * BETA_ONE))
        mean8 = mean8.clamp(0, MAX_PRED8)
        magnitude = (8 * x[:, c] - mean8).detach().abs().long()
        magnitudes.append(magnitude)
        activity = _causal_sum(magnitude, (2, 2, 1, 1, 1, 1))
        qa = torch.bucketize(activity, ACTIVITY_EDGES.to(device), right=True)
        qb = torch.bucketize(cross, CROSS_EDGES.to(device), right=True) if c > 0 else torch.zeros_like(qa)
        cells.append((qa * TABLE_SHAPE[1] + qb) * TABLE_SHAPE[2] + qs[:, c])
        means.append(mean8)
        cross = cross + magnitude
    return torch.stack(means, 1), torch.stack(cells, 1), torch.stack(magnitudes, 1)


def _log2_eighths(v: torch.Tensor) -> torch.Tensor:
    """round(8 * log2(v)) for int64 v >= 1, computed as csrc/pixel_model.h does."""
    e = torch.floor(torch.log2(v.double())).long()
    mantissa = torch.where(e >= 15, v >> (e - 15).clamp(min=0), v << (15 - e).clamp(min=0))
    return 8 * e + (mantissa.unsqueeze(-1) >= LOG8_THRESHOLDS.to(v.device)).sum(-1)


def running_cell_sums(cells: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For every sample (B, H, W): the count of the earlier samples (in raster order) of the
    same image and cell, and the sum of each of `values` over them. One sort serves all."""
    batch = cells.shape[0]
    key = (torch.arange(batch, device=cells.device).view(-1, 1, 1) * NUM_CELLS + cells).flatten()
    order = torch.argsort(key, stable=True)  # stable: raster order within each cell
    sorted_key = key[order]
    index = torch.arange(key.numel(), device=key.device)
    first = torch.ones_like(sorted_key, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    start = torch.cummax(torch.where(first, index, 0), 0).values
    counts = torch.empty_like(index)
    counts[order] = index - start
    results = [counts.view_as(cells)]
    for v in values:
        sorted_values = v.flatten()[order]
        before = torch.cumsum(sorted_values, 0) - sorted_values
        sums = torch.empty_like(before)
        sums[order] = before - before[start]
        results.append(sums.view_as(cells))
    return tuple(results)


def adapted_scale_step(counts: torch.Tensor, sums: torch.Tensor, base_index: torch.Tensor) -> torch.Tensor:
    """csrc/pixel_model.h's adapted_scale_step for every sample of one channel (B, H, W), from
    the running count and sum of residual magnitudes of its cell."""
    prior = PRIOR_MAD.to(counts.device)[base_index]
    ratio = ((16 * sums + _coder.ADAPT_PRIOR * prior) << 8) // ((counts + _coder.ADAPT_PRIOR) * prior)
    step = _log2_eighths(ratio.clamp(min=1)) - 64
    return step.clamp(-_coder.ADAPT_MAX_STEP, _coder.ADAPT_MAX_STEP)


def cell_bias(counts: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """csrc/pixel_model.h's bias cancellation for one channel (B, H, W): the running mean signed
    residual of its cell, shrunk towards zero by BIAS_PRIOR samples (sums: float64, exact
    integers, differentiable)."""
    return _floor(sums / (counts + _coder.BIAS_PRIOR))


def pixel_bits(x: torch.Tensor, params: torch.Tensor, scale_table: torch.Tensor, classical: Classical | None = None) -> torch.Tensor:
    """Bits of every sample of x (B, C, H, W) under the pixel model, with the scale-index table
    (C, *TABLE_SHAPE); returns (B, C, H, W)."""
    c_total = x.shape[1]
    mean8, cells, magnitudes = pixel_contexts(x, params, classical)
    table = scale_table.reshape(c_total, -1)
    indexes, coded_means = [], []
    for c in range(c_total):
        # Differentiable: the bias cancellation answers a shift of the predictions in a cell by
        # shifting back, and the gradient must know it (a network trained without it kept
        # moving its corrections, which the cancellation kept undoing, until they were noise).
        signed = 8 * x[:, c].double() - mean8[:, c].double()
        counts, magnitude_sums, signed_sums = running_cell_sums(cells[:, c], magnitudes[:, c], signed)
        base = table[c][cells[:, c]].clamp(0, _coder.NUM_SCALES - 1)
        step = adapted_scale_step(counts, magnitude_sums, base.detach().long())
        indexes.append((base + step + params[:, c]).clamp(0, _coder.NUM_SCALES - 1))
        coded_means.append((mean8[:, c] + cell_bias(counts, signed_sums).to(mean8.dtype)).clamp(0, MAX_PRED8))
    return discretized_logistic_bits(x, torch.stack(coded_means, 1), scale_of(torch.stack(indexes, 1)))


def latent_bits(z: torch.Tensor, scale_index: torch.Tensor, z_max: int) -> torch.Tensor:
    """Bits of z (B, L, h, w) under its zero-mean logistic prior with per-channel scale index."""
    scale = scale_of(scale_index.view(1, -1, 1, 1)).expand_as(z)
    mean8 = torch.full_like(z, 8 * z_max)
    return discretized_logistic_bits(z + z_max, mean8, scale, 2 * z_max + 1)
