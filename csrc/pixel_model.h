// The sequential half of pillow-unz's pixel model: in raster order, each sample is predicted
// from its causal neighbours (for the second and third channel: of their difference to the mean
// of the channels before them) by an error-weighted blend of six classical predictors, corrected
// by the residuals of the channels already coded at that pixel, and coded with a discretized
// logistic whose scale comes from a learned table indexed by local activity.
//
// The network supplies, per pixel, a scale-index offset for every channel and the inter-channel
// coefficients (the `params` planes); the learned table supplies the scale for each activity
// context. Everything here is integer arithmetic, so encoder and decoder agree on every machine.
// pillow_unz/pixelmodel.py computes the same quantities, in parallel, for training.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "logistic.h"
#include "range_coder.h"

namespace unz {

// Bump on any change to what this file computes: it is part of every file's model id, so a
// file never decodes with a pixel model other than the one that coded it.
constexpr int kPixelModelRevision = 1;
constexpr int kNumPredictors = 6;
constexpr int kMaxPred8 = 255 * 8;
constexpr int kActivityBuckets = 16;
constexpr int kCrossBuckets = 4;
// Bucket edges of the activity A = 2|eN| + 2|eW| + |eNW| + |eNE| + |eNN| + |eWW| (errors of the
// final prediction, in 1/8 units), and of
// the cross-channel activity B = sum of |residuals| of the channels already coded at the pixel.
constexpr int32_t kActivityEdges[kActivityBuckets - 1] = {12,  17,  24,  34,  48,  68,  96, 136,
                                                          192, 272, 384, 543, 768, 1086, 1536};
constexpr int32_t kCrossEdges[kCrossBuckets - 1] = {16, 64, 192};
// Bucket edges of the spread of the four predictions (max - min, in 1/8 units): where they
// disagree, the sample is less predictable whatever the recent errors were.
constexpr int kSpreadBuckets = 6;
constexpr int32_t kSpreadEdges[kSpreadBuckets - 1] = {8, 24, 48, 96, 192};
constexpr int kBetaFracBits = 6;

template <int N>
inline int bucket(int32_t v, const int32_t (&edges)[N]) {
  int b = 0;
  while (b < N && v >= edges[b]) ++b;
  return b;
}

// 2**30 / s**2 for every error sum s a blend can meet (six neighbours' errors, twice those of
// up to three earlier channels, each at most 2040, plus 4): a table read instead of a division
// per predictor and sample.
constexpr int kMaxChannels = 4;
constexpr int kMaxErrorSum = (6 + 2 * (kMaxChannels - 1)) * kMaxPred8 + 4;
inline const std::vector<uint32_t>& inverse_squares() {
  static const std::vector<uint32_t> table = [] {
    std::vector<uint32_t> t(kMaxErrorSum + 1, 0);
    for (int64_t s = 1; s <= kMaxErrorSum; ++s) t[s] = static_cast<uint32_t>((int64_t{1} << 30) / (s * s));
    return t;
  }();
  return table;
}

// round(8 * log2(v)) for v >= 1, from the bit length and eight mantissa thresholds.
inline int log2_eighths(uint64_t v) {
  int e = 63;
  while (!(v >> e)) --e;
  const uint64_t m = e >= 15 ? v >> (e - 15) : v << (15 - e);
  int frac = 0;
  while (frac < 8 && m >= static_cast<uint64_t>(kLog8Thresholds[frac])) ++frac;
  return 8 * e + frac;
}

// Each context cell's scale adapts to the image: the learned scale counts as kAdaptPrior samples
// of mean absolute residual, the residuals already coded in the cell as themselves, and the
// index moves by the log ratio of the two estimates.
constexpr int kAdaptPrior = 32;
constexpr int kAdaptMaxStep = 64;  // at most 8 doublings either way
constexpr int kCells = kActivityBuckets * kCrossBuckets * kSpreadBuckets;
constexpr int kBiasPrior = 16;

inline int adapted_scale_step(int64_t residual_sum8, int64_t count, int base_index) {
  const int64_t prior = kPriorMad[base_index];  // in 1/128 sample; residual sums are in 1/8
  const int64_t ratio256 = ((16 * residual_sum8 + kAdaptPrior * prior) << 8) / ((count + kAdaptPrior) * prior);
  return std::clamp(log2_eighths(static_cast<uint64_t>(std::max<int64_t>(ratio256, 1))) - 64, -kAdaptMaxStep,
                    kAdaptMaxStep);
}

inline int clamp_pred(int64_t v) { return static_cast<int>(std::clamp<int64_t>(v, 0, kMaxPred8)); }

inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

// Number of network parameter planes for `channels` colour channels: a scale offset and an
// error-feedback coefficient each, plus one coefficient per (channel, earlier channel) pair.
inline int num_param_planes(int channels) { return 2 * channels + channels * (channels - 1) / 2; }

// planes: (C, H, W) samples, read when encoding, written when decoding.
// params: (P, H, W) network outputs, P = num_param_planes(C).
// scale_table: (C, kActivityBuckets, kCrossBuckets, kSpreadBuckets) learned base scale indices.
template <bool Decode, class Coder>
void code_pixels(Coder& coder, uint8_t* planes, int C, int H, int W, const int32_t* params,
                 const int32_t* scale_table) {
  const size_t plane = static_cast<size_t>(H) * W;
  // Error rows carry two zero columns on the left and one on the right; three rolling rows
  // (y-2, y-1, y) per channel hold |final error| and |error| of each predictor.
  constexpr int kPad = 2;
  const int stride = W + kPad + 1;
  const auto row_of = [&](std::vector<int32_t>& buf, size_t series, int y) {
    return buf.data() + (series * 3 + static_cast<size_t>(y % 3)) * stride + kPad;
  };
  std::vector<int32_t> err(static_cast<size_t>(C) * 3 * stride, 0);
  std::vector<int32_t> blend_err(static_cast<size_t>(C) * 3 * stride, 0);  // signed, of the blend
  std::vector<int32_t> sub_err(static_cast<size_t>(C) * kNumPredictors * 3 * stride, 0);
  std::vector<int32_t> residual(C);
  std::vector<int64_t> cell_sum(static_cast<size_t>(C) * kCells, 0), cell_count(static_cast<size_t>(C) * kCells, 0);
  std::vector<int64_t> cell_signed_sum(static_cast<size_t>(C) * kCells, 0);
  const uint32_t* inv_square = inverse_squares().data();

  for (int y = 0; y < H; ++y) {
    for (int x = 0; x < W; ++x) {
      const size_t at = static_cast<size_t>(y) * W + x;
      int32_t cross = 0;
      int32_t here_err[kNumPredictors] = {};  // each predictor's errors on the earlier channels here
      for (int c = 0; c < C; ++c) {
        uint8_t* img = planes + c * plane;
        // The first channel is predicted from its own neighbours; the others from the neighbours
        // of their difference to the mean of the channels before them, added to that mean here:
        // colour differences are smoother than the channels (camera noise and JPEG history sit
        // mostly in luma).
        const auto reference = [&](size_t i) {
          int sum = 0;
          for (int j = 0; j < c; ++j) sum += planes[j * plane + i];
          return c > 0 ? sum / c : 0;
        };
        const auto sample = [&](size_t i) { return img[i] - reference(i); };
        const int base = 8 * reference(at);
        const int w_ = x > 0 ? sample(at - 1) : (y > 0 ? sample(at - W) : (c > 0 ? 0 : 128));
        const int n_ = y > 0 ? sample(at - W) : w_;
        const int nw = (y > 0 && x > 0) ? sample(at - W - 1) : n_;
        const int ne = (y > 0 && x + 1 < W) ? sample(at - W + 1) : n_;
        const int pred[kNumPredictors] = {
            clamp_pred(base + 8 * (n_ + w_ - nw)), clamp_pred(base + 8 * w_),        clamp_pred(base + 8 * n_),
            clamp_pred(base + 8 * (w_ + ne - n_)), clamp_pred(base + 4 * (w_ + n_)), clamp_pred(base + 4 * (n_ + ne))};

        // Blend the predictors, each weighted by the inverse square of its recent error: at N, W,
        // NW, NE, WW and NN (rows above the image count as zero error), and twice its error on
        // the channels already coded at this pixel.
        int64_t num = 0, den = 0;
        for (int k = 0; k < kNumPredictors; ++k) {
          const size_t series = static_cast<size_t>(c) * kNumPredictors + k;
          const int32_t* e0 = row_of(sub_err, series, y);
          const int32_t* e1 = row_of(sub_err, series, y + 2);  // y - 1
          const int32_t* e2 = row_of(sub_err, series, y + 1);  // y - 2
          const int64_t sum = (y > 0 ? e1[x] + e1[x - 1] + e1[x + 1] : 0) + (y > 1 ? e2[x] : 0) +
                              e0[x - 1] + e0[x - 2] + 2 * here_err[k] + 4;
          const int64_t weight = inv_square[sum];
          num += weight * pred[k];
          den += weight;
        }
        const int64_t blend = num / den;
        // The blend's recent signed errors, fed back with a coefficient from the network.
        const int32_t* bc = row_of(blend_err, c, y);
        const int32_t* bp = row_of(blend_err, c, y + 2);
        const int64_t feedback = 2 * bc[x - 1] + (y > 0 ? 2 * bp[x] + bp[x - 1] + bp[x + 1] : 0);
        const int32_t gamma = params[static_cast<size_t>(C + c) * plane + at];
        int64_t mean8 = blend + floor_div(int64_t{gamma} * feedback, 8 << kBetaFracBits);
        // Residuals of the channels already coded at this pixel predict this one's.
        for (int j = 0; j < c; ++j) {
          const int32_t beta = params[static_cast<size_t>(2 * C + c * (c - 1) / 2 + j) * plane + at];
          mean8 += floor_div(int64_t{beta} * residual[j], 1 << kBetaFracBits);
        }
        const int m = clamp_pred(mean8);

        const int32_t* ec = row_of(err, c, y);
        const int32_t* ep = row_of(err, c, y + 2);
        const int32_t* epp = row_of(err, c, y + 1);
        const int32_t activity = 2 * ec[x - 1] + ec[x - 2] + (y > 0 ? 2 * ep[x] + ep[x - 1] + ep[x + 1] : 0) +
                                 (y > 1 ? epp[x] : 0);
        const int qa = bucket(activity, kActivityEdges);
        const int qb = c > 0 ? bucket(cross, kCrossEdges) : 0;
        const int spread = *std::max_element(pred, pred + kNumPredictors) - *std::min_element(pred, pred + kNumPredictors);
        const int qs = bucket(spread, kSpreadEdges);
        const size_t cell = static_cast<size_t>(c) * kCells + (qa * kCrossBuckets + qb) * kSpreadBuckets + qs;
        const int base_index = std::clamp(scale_table[cell], 0, kNumScales - 1);
        const int s = std::clamp(base_index + adapted_scale_step(cell_sum[cell], cell_count[cell], base_index) +
                                     params[static_cast<size_t>(c) * plane + at],
                                 0, kNumScales - 1);

        // Bias cancellation: the coded mean moves by the mean signed residual of the cell so far
        // (shrunk towards zero by kBiasPrior samples). Every other statistic uses the residual
        // of m, so the bias feeds nothing but itself.
        const int coded_mean = clamp_pred(m + floor_div(cell_signed_sum[cell], cell_count[cell] + kBiasPrior));
        const LogisticCdf cdf(coded_mean, s, 256);
        const int v = code_symbol<Decode>(coder, cdf, 256, img[at], cdf.mode());
        if constexpr (Decode) img[at] = static_cast<uint8_t>(v);

        residual[c] = 8 * v - m;
        cell_signed_sum[cell] += residual[c];
        cell_sum[cell] += std::abs(residual[c]);
        ++cell_count[cell];
        cross += std::abs(residual[c]);
        row_of(err, c, y)[x] = std::abs(residual[c]);
        row_of(blend_err, c, y)[x] = static_cast<int32_t>(8 * v - blend);
        for (int k = 0; k < kNumPredictors; ++k) {
          const int32_t e = std::abs(8 * v - pred[k]);
          row_of(sub_err, static_cast<size_t>(c) * kNumPredictors + k, y)[x] = e;
          here_err[k] += e;
        }
      }
    }
  }
}

}  // namespace unz
