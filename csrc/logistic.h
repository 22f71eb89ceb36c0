// Discretized logistic CDFs computed from integers only, so that every machine derives the
// same table from the same (mean, scale index) pair.
#pragma once
#include <algorithm>
#include <cstdint>
#if defined(_MSC_VER)
#include <intrin.h>
#endif

#include "range_coder.h"
#include "tables.h"

namespace unz {

// Fixed point of the logistic argument t: t * 2**kTShift.
constexpr int kTShift = 14;
constexpr int kMeanFracBits = 3;  // means are given in units of 1/8 symbol

// The floor of v / 2**bits, negative v too. C++20 defines >> of a negative value as exactly
// that (an arithmetic shift); C++17 leaves it to the compiler, so check that it does the same.
// Without a branch: these shifts sit in the inner loops, where the sign is a coin toss.
static_assert((int64_t{-5} >> 1) == -3, "the compiler's >> must be an arithmetic shift");
inline int64_t floor_shift(int64_t v, int bits) { return v >> bits; }
inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

// The index of the highest set bit of v >= 1: one instruction, where a loop down from bit 63
// cost 7% of the pixel model's time.
inline int highest_bit(uint64_t v) {
#if defined(_MSC_VER)
  unsigned long index;
  _BitScanReverse64(&index, v);
  return static_cast<int>(index);
#else
  return 63 - __builtin_clzll(v);
#endif
}

// 2**24 * sigmoid(t), t in fixed point, linearly interpolated between table entries.
inline int64_t sigmoid_fx(int64_t t) {
  constexpr int64_t lim = int64_t{kSigmoidRange} << kTShift;
  constexpr int step_bits = kTShift - 6;  // 64 entries per unit of t
  static_assert((1 << (kTShift - step_bits)) == kSigmoidStepsPerUnit, "table step");
  if (t <= -lim) return kSigmoid[0];
  if (t >= lim) return kSigmoid[kSigmoidEntries - 1];
  const int64_t u = t + lim;
  const int64_t i = u >> step_bits;
  const int64_t f = u & ((1 << step_bits) - 1);
  return kSigmoid[i] + (((kSigmoid[i + 1] - kSigmoid[i]) * f) >> step_bits);
}

// The CDF over symbols 0..num_symbols-1 of a logistic with mean mean8 / 8 (mean8 / 2**mean_bits
// if given) and scale 2**(scale_index / 8 + kScaleLog2Min), renormalised to the symbol range,
// every symbol given at least one of the kProbTotal counts.
class LogisticCdf {
 public:
  LogisticCdf(int32_t mean8, int scale_index, int num_symbols, int mean_bits = kMeanFracBits)
      : mean8_(mean8), inv_scale_(kInvScale[scale_index]), n_(num_symbols), mean_bits_(mean_bits) {
    s0_ = boundary(0);
    const int64_t span = boundary(n_) - s0_;
    // (boundary - s0) * multiplier >> 32 spreads the free counts over the symbols: one division
    // per distribution, none per evaluation. (boundary - s0) <= span keeps it below 2**48.
    multiplier_ = span > 0 ? (static_cast<uint64_t>(kProbTotal - n_) << 32) / static_cast<uint64_t>(span) : 0;
  }

  // The likeliest symbol: where a search for the decoded symbol should start.
  int mode() const {
    return static_cast<int>(std::clamp<int64_t>((int64_t{mean8_} + (1 << (mean_bits_ - 1))) >> mean_bits_, 0, n_ - 1));
  }

  uint32_t operator()(int k) const {
    if (k <= 0) return 0;
    if (k >= n_) return kProbTotal;
    if (multiplier_ == 0) return static_cast<uint32_t>((int64_t{k} * kProbTotal) / n_);
    return static_cast<uint32_t>(k + ((static_cast<uint64_t>(boundary(k) - s0_) * multiplier_) >> 32));
  }

 private:
  // sigmoid at k - 1/2, the lower edge of symbol k
  int64_t boundary(int k) const {
    const int64_t d = (int64_t{k} << mean_bits_) - (int64_t{1} << (mean_bits_ - 1)) - mean8_;
    return sigmoid_fx(floor_shift(d * inv_scale_, kInvScaleOneLog2 + mean_bits_ - kTShift));
  }

  int32_t mean8_;
  int64_t inv_scale_;
  int n_, mean_bits_;
  int64_t s0_ = 0;
  uint64_t multiplier_ = 0;
};

}  // namespace unz
