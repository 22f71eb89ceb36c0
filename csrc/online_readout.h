// The context network, tuned to the image while it is coded: a linear readout of the network's
// hidden layers, learnt sample by sample (normalized least mean squares, which the decoder
// repeats on the samples it decodes), adds to the network's mean correction. The network was
// trained on every photo at once; the readout learns what its features say about this one.
//
// Integers only, int32 throughout: weights in 2**-24 eighths per unit of a hidden value, read
// in 2**-14 (the sum of their products with up to kNetMaxHidden hidden values stays within
// int32 whatever they are), one integer division per sample for the normalization, floors
// everywhere. Every machine learns the same weights, in any order of the additions, and the
// compiler is free to put the loops in vector registers.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "context_network.h"
#include "logistic.h"  // floor_div
#include "simd.h"

namespace unz {

// The readout's loops over the features, where its time goes: the sum of the weights (read
// in 2**-(24 - ReadShift)) times the features; and the update w[i] += (step * f[i]) >>
// StepShift within +-limit. Compiled for the baseline and, where the compiler can, for AVX2 (the
// same integers: the vector forms of the same operations).
template <int ReadShift>
UNZ_ALWAYS_INLINE int32_t weighted_sum(const int32_t* w, const int16_t* f, int n) {
  int32_t sum = 0;
  for (int i = 0; i < n; ++i) sum += (w[i] >> ReadShift) * f[i];
  return sum;
}
template <int StepShift>
UNZ_ALWAYS_INLINE void move_weights(int32_t* w, const int16_t* f, int n, int32_t step, int32_t limit) {
  for (int i = 0; i < n; ++i) w[i] = std::clamp(w[i] + ((step * f[i]) >> StepShift), -limit, limit);
}
template <int ReadShift>
UNZ_TARGET_AVX2 int32_t weighted_sum_avx2(const int32_t* w, const int16_t* f, int n) {
  return weighted_sum<ReadShift>(w, f, n);
}
template <int StepShift>
UNZ_TARGET_AVX2 void move_weights_avx2(int32_t* w, const int16_t* f, int n, int32_t step, int32_t limit) {
  move_weights<StepShift>(w, f, n, step, limit);
}

class OnlineReadout {
 public:
  static constexpr int kWeightFracBits = 24;
  static constexpr int kReadShift = 10;              // weights are read in 2**-(24 - 10)
  static constexpr int32_t kWeightLimit = 1 << 22;   // a quarter eighth per unit (measured: below 0.07)
  static constexpr int32_t kErrorLimit = 4;          // residuals count up to half a sample either way
  static constexpr int kStepBits = 27;               // the step: 2**-5 of the normalized error, below
  static constexpr int kStepShift = 8;
  static constexpr int32_t kNormFloor = 1 << 13;     // added to |features|**2: small features, small steps
  // |weight read| <= 2**12, |feature| <= 2**11: the products' sum is within int32.
  static_assert((kWeightLimit >> kReadShift) * int64_t{kNetActivationLimit + 1} * kNetMaxHidden < (int64_t{1} << 31));

  // `contexts` readouts (the coder's: two a channel), from zero.
  explicit OnlineReadout(int contexts) : weights_(static_cast<size_t>(contexts) * kNetMaxHidden, 0) {}

  // The correction (eighths) of a sample from its n hidden values (each 0 ..
  // kNetActivationLimit) by the readout of its context; learn() follows with its residual.
  int32_t correction(int context, const int16_t* features, int n) {
    features_ = features;
    n_ = n;
    w_ = weights_.data() + static_cast<size_t>(context) * kNetMaxHidden;
    const int32_t sum = has_avx2() ? weighted_sum_avx2<kReadShift>(w_, features, n) : weighted_sum<kReadShift>(w_, features, n);
    return std::clamp<int32_t>(sum >> (kWeightFracBits - kReadShift), -kNetMaxCorrection, kNetMaxCorrection);
  }

  // Moves the weights against the residual (eighths) of the mean that correction() went into:
  // by error / (kNormFloor + |features|**2) / 32 times each feature.
  void learn(int32_t residual) {
    const int16_t* features = features_;  // locals: the stores to w cannot alias them, so the loops vectorize
    int32_t* w = w_;
    const int n = n_;
    int32_t norm = kNormFloor;  // <= 2**13 + 192 * 2047**2 < 2**31
    for (int i = 0; i < n; ++i) norm += features[i] * features[i];
    // |step| <= 4 * 2**27 / 2**13 = 2**16, |step * feature| < 2**27. (A product, not <<, which
    // C++17 leaves undefined for negative values.)
    const int32_t step = static_cast<int32_t>(
        floor_div(int64_t{std::clamp(residual, -kErrorLimit, kErrorLimit)} * (int64_t{1} << kStepBits), norm));
    if (has_avx2()) return move_weights_avx2<kStepShift>(w, features, n, step, kWeightLimit);
    move_weights<kStepShift>(w, features, n, step, kWeightLimit);
  }

 private:
  std::vector<int32_t> weights_;  // [context][feature]
  const int16_t* features_ = nullptr;
  int n_ = 0;
  int32_t* w_ = nullptr;
};

}  // namespace unz
