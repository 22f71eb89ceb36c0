// The classical half of pillow-unz's pixel model: the prediction of every sample from the samples
// coded before it, which depends on the pixels alone. The coder (pixel_model.h) runs it sample
// by sample; training runs the same code over whole images once (bindings: classical_predictions).
//
// A sample is predicted by an error-weighted blend of eleven predictors:
// - six classical ones (N+W-NW, W, N, W+NE-N, (W+N)/2, (N+NE)/2) of the channel's difference to
//   the floor mean of the channels coded before it at the pixel (colour differences are smoother
//   than the channels: camera noise and JPEG history sit mostly in luma);
// - for the second and later channels, the first four again on the plain channel: where the
//   channels do not move together, the blend turns to these;
// - an online least-squares predictor over up to twelve causal neighbours and the gradients of
//   the earlier channels at the pixel, which learns the image's own correlations as it goes.
// Each is weighted by the inverse square of its recent error (at N, W, NW, NE, WW, NN, plus twice
// its error on the channels already coded at the pixel); the least-squares predictor's error
// counts half. A second online least-squares fit then predicts the blend's residual from the
// residuals of the earlier channels at the pixel.
//
// Samples have 8 bits (uint8_t) or 9 to 16 (uint16_t, `bits` of them used): the arithmetic is
// the same, in units of the sample, with the error sums and the least-squares statistics
// rescaled so that their tables and integers keep their range (inverse_squares, OnlineLeastSquares).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "least_squares.h"
#include "logistic.h"

namespace unz {

constexpr int kMaxChannels = 4;
constexpr int kMaxPred8 = 255 * 8;  // of 8-bit samples
constexpr int kMaxBits = 16;
// Samples of more than 8 bits: the blend's error sums are taken in units of 12-bit samples.
constexpr int kWideErrorBits = 12;
constexpr int kDifferencePredictors = 6;
constexpr int kPlainPredictors = 4;
constexpr int kLeastSquaresPredictor = kDifferencePredictors + kPlainPredictors;
constexpr int kNumPredictors = kLeastSquaresPredictor + 1;
// Causal neighbours (dy, dx) of the least-squares predictor, besides W, which it is centred on.
constexpr int kNeighbourInputs = 11;
constexpr int kNeighbourOffsets[kNeighbourInputs][2] = {{1, 0},  {1, 1},  {1, -1}, {0, 2},  {2, 0}, {2, -1},
                                                          {1, 2},  {2, 1},  {1, -2}, {2, 2},  {2, -2}};
// The smoother channels after the first take the first eight neighbours only (0.1% larger on the
// eval photos, 20% faster), and the gradients of the mean of the earlier channels: here minus
// W, N and NW.
constexpr int kLaterChannelNeighbours = 8;
constexpr int kGradientInputs = 3;
constexpr int kMaxInputs = kNeighbourInputs;
static_assert(kLaterChannelNeighbours + kGradientInputs <= kMaxInputs, "inputs");

constexpr int kDefaultFitMemory = OnlineLeastSquares<kMaxInputs>::kMemoryBits;

inline int clamp_pred(int64_t v, int max8 = kMaxPred8) { return static_cast<int>(std::clamp<int64_t>(v, 0, max8)); }

// 2**30 / s**2 (2**40 / s**2 for samples of more than 8 bits) for every error sum s a blend can
// meet (six neighbours' errors, twice those of up to three earlier channels, each at most eight
// times the largest sample, plus 4): a table read instead of a division per predictor and sample.
template <int Bits, int NumeratorBits>
inline const std::vector<uint64_t>& inverse_squares() {
  static const std::vector<uint64_t> table = [] {
    const int64_t max_sum = (6 + 2 * (kMaxChannels - 1)) * 8 * ((int64_t{1} << Bits) - 1) + 4;
    std::vector<uint64_t> t(max_sum + 1, 0);
    for (int64_t s = 1; s <= max_sum; ++s) t[s] = static_cast<uint64_t>((int64_t{1} << NumeratorBits) / (s * s));
    return t;
  }();
  return table;
}

// Per-sample values of the last three rows (y-2, y-1, y) of several series, `Lanes` values per
// sample side by side, with two zero columns on the left and one on the right; rows above the
// image (or band) read as zeros.
template <int Lanes = 1>
class RollingRows {
 public:
  RollingRows(size_t series, int W) : stride_(static_cast<size_t>(W + kPad + 1) * Lanes), data_(series * 3 * stride_, 0) {}
  // Row y's values: sample x's lanes start at [x * Lanes].
  int32_t* row(size_t series, int y) { return data_.data() + (series * 3 + static_cast<size_t>(y % 3)) * stride_ + kPad * Lanes; }
  // wN N + wW W + wNW NW + wNE NE + wNN NN + wWW WW of the values around (y, x) (one lane).
  int32_t causal_sum(size_t series, int y, int x, int wN, int wW, int wNW, int wNE, int wNN, int wWW) {
    static_assert(Lanes == 1, "one value per sample");
    const int32_t* here = row(series, y);
    const int32_t* up = row(series, y + 2);    // y - 1
    const int32_t* up2 = row(series, y + 1);   // y - 2
    return wN * up[x] + wW * here[x - 1] + wNW * up[x - 1] + wNE * up[x + 1] + wNN * up2[x] + wWW * here[x - 2];
  }
  // N + W + NW + NE + NN + WW around (y, x) of every lane at once (vector additions).
  void causal_sums(size_t series, int y, int x, int32_t* out) {
    const int32_t* here = row(series, y) + x * Lanes;
    const int32_t* up = row(series, y + 2) + x * Lanes;   // y - 1
    const int32_t* up2 = row(series, y + 1) + x * Lanes;  // y - 2
    for (int k = 0; k < Lanes; ++k)
      out[k] = up[k] + here[k - Lanes] + up[k - Lanes] + up[k + Lanes] + up2[k] + here[k - 2 * Lanes];
  }

 private:
  static constexpr int kPad = 2;
  size_t stride_;
  std::vector<int32_t> data_;
};

// The predictors' |errors| of a sample lie side by side, so that the blend sums the six causal
// neighbours of all of them at once: kNumPredictors lanes, rounded up to whole vectors.
constexpr int kErrorLanes = 12;
static_assert(kErrorLanes >= kNumPredictors, "a lane per predictor");

// The causal window of ClassicalPredictor::context, (dy, dx): the samples whose blend residuals
// the rolling rows still hold (two rows up, two columns left, one right).
constexpr int kWindow = 10;
constexpr int kWindowOffsets[kWindow][2] = {{0, -1},  {0, -2},  {-1, -2}, {-1, -1}, {-1, 0},
                                            {-1, 1},  {-2, -2}, {-2, -1}, {-2, 0},  {-2, 1}};
constexpr int kNarrowContextSize = 2 * kWindow + kNumPredictors + 2 + (kMaxChannels - 1);
// The window's outer ring, further left and right in the rows the window reads: a network may
// read it too, after the rest (networks of kNarrowContextSize inputs do not).
constexpr int kOuterWindow = 4;
constexpr int kOuterOffsets[kOuterWindow][2] = {{0, -3}, {-1, -3}, {-1, 2}, {-2, 2}};
constexpr int kContextSize = kNarrowContextSize + 2 * kOuterWindow;

struct Prediction {
  int32_t mean8;     // in eighths of a sample, not yet clamped
  int32_t spread;    // max - min of the six difference predictors, in eighths
  int32_t feedback;  // 2 W + 2 N + NW + NE of the blend's signed errors, in eighths
};

template <class Sample = uint8_t>
class ClassicalPredictor {
 public:
  // planes: C planes of rows of W samples of `bits` bits, plane_stride apart; read only at
  // samples already coded. The least-squares fits take their inputs and targets divided by
  // 2**input_shift and clipped to their bound (never, for 8-bit samples): the encoder shifts
  // by as much as the image's variations exceed those of an 8-bit photograph. fit_memory: the
  // memory of the neighbours' fits (OnlineLeastSquares), a choice of the encoder per band; the
  // residual fit keeps the default.
  ClassicalPredictor(const Sample* planes, size_t plane_stride, int C, int W, int bits = 8, int input_shift = 0,
                     int fit_memory = kDefaultFitMemory)
      : planes_(planes), W_(W), plane_(plane_stride), max8_(8 * ((1 << bits) - 1)), origin_(1 << (bits - 1)),
        error_shift_(std::max(0, bits - kWideErrorBits)), input_shift_(input_shift), fit_memory_(fit_memory), robust_(bits > 8),
        inverse_squares_(bits > 8 ? inverse_squares<kWideErrorBits, 40>().data() : inverse_squares<8, 30>().data()),
        sub_err_(C, W), blend_err_(C, W), reference_(C, W), difference_(C, W) {
    for (int c = 0; c < C; ++c) {
      neighbours_.emplace_back(c > 0 ? kLaterChannelNeighbours + kGradientInputs : kNeighbourInputs, fit_memory);
      residual_fit_.emplace_back(c);
    }
  }

  int fit_memory() const { return fit_memory_; }

  // Sample (c, y, x), calls in coding order (pixel by pixel, or each row channel by channel:
  // code_pixels): it reads channel c before (y, x) and channels 0..c-1 at (y, x) and before,
  // nothing else; update(c, y, x) follows before the next call.
  Prediction predict(int c, int y, int x) {
    const size_t at = static_cast<size_t>(y) * W_ + x;
    const Sample* img = planes_ + c * plane_;
    // The channel's differences to the reference (the floor mean of the earlier channels) at
    // the causal neighbours, kept in rows by update(); the reference here, kept for the
    // neighbours' gradients.
    const int32_t* diff = difference_.row(c, y);
    const int32_t* diff_up = difference_.row(c, y + 2);  // y - 1
    int32_t* ref = reference_.row(c, y);
    ref[x] = reference(c, at);
    const int origin = c > 0 ? 0 : origin_;  // where a sample has no neighbour at all
    base_ = 8 * ref[x];
    const int w_ = x > 0 ? diff[x - 1] : (y > 0 ? diff_up[x] : origin);
    const int n_ = y > 0 ? diff_up[x] : w_;
    const int nw = (y > 0 && x > 0) ? diff_up[x - 1] : n_;
    const int ne = (y > 0 && x + 1 < W_) ? diff_up[x + 1] : n_;
    const int pw = x > 0 ? img[at - 1] : (y > 0 ? img[at - W_] : origin_);
    const int pn = y > 0 ? img[at - W_] : pw;
    const int pnw = (y > 0 && x > 0) ? img[at - W_ - 1] : pn;
    const int pne = (y > 0 && x + 1 < W_) ? img[at - W_ + 1] : pn;

    // Least-squares inputs, centred on W: the neighbours (beyond the borders, the nearest causal
    // sample), then the gradients of the earlier channels' mean here.
    centre_ = w_;
    int n_inputs = 0;
    for (int k = 0; k < (c > 0 ? kLaterChannelNeighbours : kNeighbourInputs); ++k) {
      const auto& d = kNeighbourOffsets[k];
      const int yy = std::max(y - d[0], 0);
      const int xx = std::clamp(x - d[1], 0, W_ - 1);
      int v;
      if (yy < y || xx < x) v = difference_.row(c, yy)[xx];
      else v = w_;  // (0, x) itself or to its right on the first row
      inputs_[n_inputs++] = fit_value(v - w_);
    }
    if (c > 0) {
      const int32_t* ref_up = reference_.row(c, y + 2);  // y - 1
      inputs_[n_inputs++] = x > 0 ? fit_value(ref[x] - ref[x - 1]) : 0;
      inputs_[n_inputs++] = y > 0 ? fit_value(ref[x] - ref_up[x]) : 0;
      inputs_[n_inputs++] = y > 0 && x > 0 ? fit_value(ref[x] - ref_up[x - 1]) : 0;
    }
    fitted_ = neighbours_[c].predict(inputs_.data()) * (int64_t{1} << input_shift_);
    constexpr int kBits = OnlineLeastSquares<kMaxInputs>::kWeightBits;

    const auto clamp = [&](int64_t v) { return clamp_pred(v, max8_); };
    pred_ = {clamp(base_ + 8 * (n_ + w_ - nw)), clamp(base_ + 8 * w_),
             clamp(base_ + 8 * n_),             clamp(base_ + 8 * (w_ + ne - n_)),
             clamp(base_ + 4 * (w_ + n_)),      clamp(base_ + 4 * (n_ + ne)),
             clamp(8 * (pn + pw - pnw)),        clamp(8 * pw),
             clamp(8 * pn),                     clamp(8 * (pw + pne - pn)),
             clamp(base_ + 8 * w_ + floor_shift(8 * fitted_ + (int64_t{1} << (kBits - 1)), kBits))};

    // Each predictor's errors at the causal neighbours, plus twice its errors on the channels
    // already coded at the pixel.
    int64_t num = 0, den = 0;
    alignas(16) int32_t sums[kErrorLanes];
    sub_err_.causal_sums(c, y, x, sums);
    for (int j = 0; j < c; ++j) {
      const int32_t* here = sub_err_.row(j, y) + x * kErrorLanes;
      for (int k = 0; k < kErrorLanes; ++k) sums[k] += 2 * here[k];
    }
    for (int k = 0; k < kNumPredictors; ++k) {
      // On the first channel the plain predictors are the difference ones.
      if (c == 0 && k >= kDifferencePredictors && k < kLeastSquaresPredictor) continue;
      int64_t sum = floor_shift(sums[k], error_shift_) + 4;
      if (k == kLeastSquaresPredictor) sum = sum / 2 + 1;
      const int64_t weight = static_cast<int64_t>(inverse_squares_[sum]);
      num += weight * pred_[k];
      den += weight;
    }
    blend_ = static_cast<int32_t>(num / den);

    // The blend's residual, predicted from the earlier channels' blend residuals here.
    int64_t correction = 0;
    for (int j = 0; j < c; ++j) residual_inputs_[j] = fit_value(blend_err_.row(j, y)[x]);
    if (c > 0)
      correction = floor_shift(residual_fit_[c].predict(residual_inputs_.data()) * (int64_t{1} << input_shift_) +
                                   (int64_t{1} << (kBits - 1)),
                               kBits);
    correction_ = static_cast<int32_t>(correction);
    // The fits' statistics of their inputs do not depend on the sample: added now, they are
    // worked out beside the network's vector instructions. (Wide samples weigh them by the
    // fit's miss: update adds them.)
    if (!robust_) add_input_statistics(c, 0);

    const int32_t feedback = blend_err_.causal_sum(c, y, x, 2, 2, 1, 1, 0, 0);
    const int spread = *std::max_element(pred_.begin(), pred_.begin() + kDifferencePredictors) -
                       *std::min_element(pred_.begin(), pred_.begin() + kDifferencePredictors);
    spread_ = spread;
    return {static_cast<int32_t>(blend_ + correction), spread, feedback};
  }

  // The context the learned part of the model reads at sample (c, y, x), between predict and
  // update, in eighths: the causal window's samples relative to the prediction (in the channel's
  // difference domain), the blend's signed residuals there, each predictor's disagreement with
  // the blend, the residual fit's correction, the spread, and the blend residuals of the earlier
  // channels at this pixel; then, of `inputs` (kNarrowContextSize or kContextSize) values, the
  // outer ring's samples and residuals. Outside the image (or band), window entries are zero.
  void context(int c, int y, int x, int32_t* out, int inputs = kContextSize) {
    // Rows y, y - 1 and y - 2 of both series (the rolling rows' y + 2 and y + 1 are y - 1 and
    // y - 2), looked up once: the window reads each row several times.
    const int32_t* diff[3] = {difference_.row(c, y), difference_.row(c, y + 2), difference_.row(c, y + 1)};
    const int32_t* err[3] = {blend_err_.row(c, y), blend_err_.row(c, y + 2), blend_err_.row(c, y + 1)};
    const int32_t offset = base_ - blend_;
    const auto window = [&](const int (*offsets)[2], int n, int32_t* samples) {  // then n residuals
      for (int k = 0; k < n; ++k) {
        const int up = -offsets[k][0], xx = x + offsets[k][1];
        const bool inside = y >= up && xx >= 0 && xx < W_;
        samples[k] = inside ? 8 * diff[up][xx] + offset : 0;
        samples[n + k] = inside ? err[up][xx] : 0;
      }
    };
    window(kWindowOffsets, kWindow, out);
    if (inputs > kNarrowContextSize) window(kOuterOffsets, kOuterWindow, out + kNarrowContextSize);
    int32_t* rest = out + 2 * kWindow;
    for (int k = 0; k < kNumPredictors; ++k) rest[k] = pred_[k] - blend_;
    if (c == 0) std::fill(rest + kDifferencePredictors, rest + kLeastSquaresPredictor, 0);
    rest[kNumPredictors] = correction_;
    rest[kNumPredictors + 1] = spread_;
    for (int j = 0; j < kMaxChannels - 1; ++j) rest[kNumPredictors + 2 + j] = j < c ? blend_err_.row(j, y)[x] : 0;
  }

  void update(int c, int y, int x) {
    const int v = planes_[c * plane_ + static_cast<size_t>(y) * W_ + x];
    difference_.row(c, y)[x] = v - base_ / 8;
    for (int k = 0; k < kNumPredictors; ++k) sub_err_.row(c, y)[x * kErrorLanes + k] = std::abs(8 * v - pred_[k]);
    const int32_t residual = 8 * v - blend_;
    blend_err_.row(c, y)[x] = residual;
    const int64_t target = v - base_ / 8 - centre_;  // the sample's difference, relative to W
    int down_weight = 0;
    if (robust_) {  // samples the fit missed by far more than it usually does count less (steps, edges)
      constexpr int kBits = OnlineLeastSquares<kMaxInputs>::kWeightBits;
      const int64_t miss = std::abs(target * (int64_t{1} << kBits) - fitted_) >> (kBits - 4);  // in 1/16
      int64_t& usual = fit_miss_[c];
      while (down_weight < 24 && miss > (2 * usual + 32) << down_weight) ++down_weight;
      down_weight *= 2;  // as the squares of the miss: the statistics are of squares
      usual += floor_shift(miss - usual, 5);
    }
    if (robust_) add_input_statistics(c, down_weight);
    neighbours_[c].update_target(inputs_.data(), fit_value(target), down_weight);
    if (c > 0) residual_fit_[c].update_target(residual_inputs_.data(), fit_value(residual));
  }

 private:
  // The least-squares fits' statistics of the sample's inputs (the residual fit's never weighed down).
  void add_input_statistics(int c, int down_weight) {
    neighbours_[c].update_inputs(inputs_.data(), down_weight);
    if (c > 0) residual_fit_[c].update_inputs(residual_inputs_.data());
  }

  // The floor mean of channels 0..c-1 at sample index i (0 for the first channel).
  int reference(int c, size_t i) const {
    int sum = 0;
    for (int j = 0; j < c; ++j) sum += planes_[j * plane_ + i];
    switch (c) {  // constant divisors: no division instruction
      case 0: return 0;
      case 1: return sum;
      case 2: return sum / 2;
      case 3: return sum / 3;
      default: return sum / c;
    }
  }

  // An input or target of the least-squares fits, within OnlineLeastSquares's bound.
  int32_t fit_value(int64_t v) const { return static_cast<int32_t>(std::clamp<int64_t>(floor_shift(v, input_shift_), -kFitLimit, kFitLimit)); }
  static constexpr int kFitLimit = (1 << 12) - 1;

  const Sample* planes_;
  int W_;
  size_t plane_;
  int max8_, origin_;  // the largest prediction (eighths); a first sample's
  int error_shift_, input_shift_;  // of the blend's error sums, and of the least-squares inputs
  int fit_memory_;  // of the neighbours' fits
  bool robust_;  // down-weight the least-squares fit's big misses (samples of more than 8 bits)
  const uint64_t* inverse_squares_;
  RollingRows<kErrorLanes> sub_err_;  // |error| of each predictor
  RollingRows<> blend_err_;  // signed error of the blend
  RollingRows<> reference_;  // each channel's reference at each pixel
  RollingRows<> difference_;  // each sample minus its channel's reference
  std::vector<OnlineLeastSquares<kMaxInputs>> neighbours_;
  std::vector<OnlineLeastSquares<kMaxChannels - 1>> residual_fit_;
  // State of the sample between predict and update.
  std::array<int, kNumPredictors> pred_{};
  std::array<int32_t, kMaxInputs> inputs_{};
  std::array<int32_t, kMaxChannels> residual_inputs_{};
  int base_ = 0, centre_ = 0;
  int32_t blend_ = 0, correction_ = 0, spread_ = 0;
  int64_t fitted_ = 0;  // the least-squares prediction, in 2**-kWeightBits
  std::array<int64_t, kMaxChannels> fit_miss_{};  // its usual miss per channel, in 1/16
};

}  // namespace unz
