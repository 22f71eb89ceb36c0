// Online least squares in integer arithmetic: a linear predictor whose weights follow the
// recent statistics of an image, identical on every machine.
//
// The normal equations (moving averages of x x^T and x t over about 2**memory_bits samples) are
// solved by half a Gauss-Seidel sweep per prediction (the even weights, then the odd ones next
// time), started from the previous weights: the statistics change little from one sample to
// the next, so the weights stay as close to the solution as a full solve would keep them (on
// the eval photos the files differ by 0.1%), at a fraction of the cost.
#pragma once
#include <algorithm>
#include <cstdint>

#include "logistic.h"  // floor_shift

namespace unz {

template <int MaxInputs>
class OnlineLeastSquares {
 public:
  // The averages forget with a factor 1 - 2**-memory_bits per sample: the longer memory fits
  // an image's steady texture better, the shorter one follows its changes.
  static constexpr int kMemoryBits = 9;
  static constexpr int kMinMemoryBits = 6, kMaxMemoryBits = 14;
  static constexpr int kStatBits = 14;     // statistics in 2**-14 units of input * input
  static constexpr int kWeightBits = 16;   // weights in 2**-16
  static constexpr int64_t kWeightLimit = int64_t{16} << kWeightBits;
  static constexpr int64_t kRidge = 1;     // added to the diagonal: keeps every sweep defined

  // Inputs and targets are bounded by 2**12 in magnitude, so that no sum below can overflow
  // int64: statistics < 2**38, statistic * weight < 2**58, and at most 24 such products.
  static_assert(MaxInputs <= 24, "too many inputs");

  explicit OnlineLeastSquares(int inputs, int memory_bits = kMemoryBits) : n_(inputs), memory_bits_(memory_bits) {}

  // sum_i w_i x_i after a sweep over the normal equations, in 2**-kWeightBits units.
  int64_t predict(const int32_t* x) {
    for (int i = phase_; i < n_; i += 2) {
      int64_t rhs = cross_[i] * (int64_t{1} << kWeightBits);
      for (int j = 0; j < n_; ++j)
        if (j != i) rhs -= cov_[i][j] * weight_[j];
      weight_[i] = std::clamp(rhs / (cov_[i][i] + kRidge), -kWeightLimit, kWeightLimit);
    }
    phase_ ^= 1;
    int64_t sum = 0;
    for (int i = 0; i < n_; ++i) sum += weight_[i] * x[i];
    return sum;
  }

  // A sample's statistics come in two halves: its inputs' (x x^T), which a caller may add as soon
  // as it knows them, and its target's (x t); predict must not run between the two. The sample
  // counts 2**-down_weight times as much as others (0: fully).
  void update_inputs(const int32_t* x, int down_weight = 0) {
    for (int i = 0; i < n_; ++i)
      for (int j = i; j < n_; ++j)
        cov_[i][j] = cov_[j][i] = cov_[i][j] + towards(scaled(int64_t{x[i]} * x[j], down_weight) - cov_[i][j]);
  }
  void update_target(const int32_t* x, int32_t target, int down_weight = 0) {
    for (int i = 0; i < n_; ++i) cross_[i] += towards(scaled(int64_t{x[i]} * target, down_weight) - cross_[i]);
  }

 private:
  // A product in the statistics' units, weighed 2**-down_weight.
  static int64_t scaled(int64_t product, int down_weight) {
    const int bits = kStatBits - down_weight;
    return bits >= 0 ? product * (int64_t{1} << bits) : floor_shift(product, -bits);
  }
  // One step of a moving average: the difference / 2**memory_bits, rounded to nearest so that
  // the averages carry no drift.
  int64_t towards(int64_t difference) const {
    return floor_shift(difference + (int64_t{1} << (memory_bits_ - 1)), memory_bits_);
  }

  int n_, memory_bits_;
  int phase_ = 0;
  int64_t cov_[MaxInputs][MaxInputs] = {};
  int64_t cross_[MaxInputs] = {};
  int64_t weight_[MaxInputs] = {};
};

}  // namespace unz
