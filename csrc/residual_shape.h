// The shape of a sample's distribution, adapted to the image. The discretized logistic of the
// pixel model says how likely each value is; the sample is coded as a chain of binary decisions
// (is it the likeliest value; if not, above or below it; how far: a bucket of powers of two,
// then halves within it), and each decision's probability, the logistic's, is refined by
// adaptive probability maps (APMs, as in PAQ): tables over the logistic's odds, per kind of
// decision and small context, that learn how often a decision went each way when the logistic
// gave those odds. They learn what a logistic of the right mean and scale still gets wrong in
// this image: tails, peaks, and biases that the context cells' bias cancellation does not see.
//
// Integers only (tables of 12-bit and 16-bit probabilities, integer logarithms, interpolation
// and updates), so that every machine refines the same probabilities.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "logistic.h"
#include "predictor.h"  // RollingRows
#include "range_coder.h"

namespace unz {

// The logistic 4096 / (1 + e^(-d / 256)) of d in [-2047, 2047], interpolated between 33 integer
// points (PAQ's squash).
constexpr int squash12(int d) {
  constexpr int kPoints[33] = {1,    2,    3,    6,    10,   16,   27,   45,   73,   120,  194,
                               310,  488,  747,  1101, 1546, 2047, 2549, 2994, 3348, 3607, 3785,
                               3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094};
  if (d > 2047) return 4095;
  if (d < -2047) return 1;
  const int w = d & 127, i = (d >> 7) + 16;
  return (kPoints[i] * (128 - w) + kPoints[i + 1] * w + 64) >> 7;
}

// log2(1 + m / 256) in 256ths, m < 256, by repeated squaring in integers (exact everywhere).
struct Log2Table {
  int16_t of[256];
};
constexpr Log2Table log2_table() {
  Log2Table t{};
  for (int m = 0; m < 256; ++m) {
    uint64_t x = (256 + m) << 8;  // 1 + m / 256 in 2**-16
    int bits = 0;
    for (int i = 0; i < 8; ++i) {
      x = x * x >> 16;
      bits <<= 1;
      if (x >= (1u << 17)) {
        x >>= 1;
        bits |= 1;
      }
    }
    t.of[m] = static_cast<int16_t>(bits);
  }
  return t;
}
inline constexpr Log2Table kLog2 = log2_table();

// log2(x) in 256ths, 0 < x < 2**24.
inline int log2_256(uint32_t x) {
  const int e = highest_bit(x);
  const uint32_t m = e >= 8 ? (x >> (e - 8)) & 255 : (x << (8 - e)) & 255;
  return 256 * e + kLog2.of[m];
}

// A map node's learning rate after n updates: 2**16 / (n + 1.5), n up to kMapMaxCount.
constexpr int kMapMaxCount = 255;
struct MapRates {
  int32_t of[kMapMaxCount + 1];
};
constexpr MapRates map_rates() {
  MapRates r{};
  for (int n = 0; n <= kMapMaxCount; ++n) r.of[n] = (1 << 17) / (2 * n + 3);
  return r;
}
inline constexpr MapRates kMapRates = map_rates();

// One adaptive probability map: per context, 33 nodes over the logistic's odds, each a
// 16-bit probability of a 1 that moves towards what happens at rate 1 / (updates + 1.5), down
// to 1 / 256.5 (the image's recent statistics, not its whole history).
class ProbabilityMap {
 public:
  explicit ProbabilityMap(size_t contexts) : nodes_(contexts * kNodes) {
    for (size_t c = 0; c < contexts; ++c)
      for (int j = 0; j < kNodes; ++j) nodes_[c * kNodes + j].p = static_cast<uint16_t>(squash12((j << kStepBits) - 2048) * 16);
  }

  // The refined 16-bit probability of a 1 at odds st (-2047 .. 2047, in 256ths of a natural
  // logarithm: squash12's domain); update() follows.
  int refine(int st, size_t context) {
    const int at = st + 2048;  // 1 .. 4095
    const int w = at & ((1 << kStepBits) - 1);
    const Node* node = &nodes_[context * kNodes + (at >> kStepBits)];
    nearest_ = node + (w >> (kStepBits - 1)) - nodes_.data();
    return (node[0].p * ((1 << kStepBits) - w) + node[1].p * w) >> kStepBits;
  }

  void update(int bit) {
    Node& node = nodes_[nearest_];
    node.p = static_cast<uint16_t>(node.p + floor_shift(int64_t{(bit ? 65535 : 0) - node.p} * kMapRates.of[node.n], 16));
    if (node.n < kMapMaxCount) ++node.n;
  }

 private:
  static constexpr int kStepBits = 7;  // nodes every 2**kStepBits of the odds
  static constexpr int kNodes = (4096 >> kStepBits) + 1;
  struct Node {
    uint16_t p, n;  // side by side: a refinement reads, and its update writes, one cache line
  };
  std::vector<Node> nodes_;
  size_t nearest_ = 0;
};

// The binary decisions of an 8-bit sample under a logistic, each refined by three maps: by the
// channel and the scale; by the channel, the local activity and the predicted level; by the
// channel and the signs of the residuals at W, at N and of the channel coded before at the pixel.
class ResidualShape {
 public:
  static constexpr int kScaleBuckets = kNumScales / 8;
  static constexpr int kActivityBuckets = 8;  // of the pixel model's 16, two at a time
  static constexpr int kLevels = 8;
  static constexpr int kSignPatterns = 27;

  // A band of rows of W samples of C channels.
  ResidualShape(int C, int W)
      : by_scale_(static_cast<size_t>(C) * kScaleBuckets * kMapped),
        by_activity_(static_cast<size_t>(C) * kActivityBuckets * kLevels * kMapped),
        by_signs_(static_cast<size_t>(C) * kSignPatterns * kMapped), signs_(C, W) {}

  // Sample (c, y, x) of value v (decoding: the value it decodes, returned) under `cdf` (256
  // symbols) of scale index s, with its activity bucket qa (0 .. 15) and level (0 .. 7) as
  // contexts; record() follows with its final residual.
  template <bool Decode, class Coder>
  int code(Coder& coder, const LogisticCdf& cdf, int v, int c, int y, int x, int s, int qa, int level) {
    // The sign classes of the residuals at W, at N and of the channel before at the pixel (1
    // where there is none).
    const int sign_w = x > 0 ? signs_.row(c, y)[x - 1] : 1, sign_n = y > 0 ? signs_.row(c, y + 2)[x] : 1;
    const int sign_before = c > 0 ? signs_.row(c - 1, y)[x] : 1;
    scale_context_ = (static_cast<size_t>(c) * kScaleBuckets + std::min(s / 8, kScaleBuckets - 1)) * kMapped;
    activity_context_ = ((static_cast<size_t>(c) * kActivityBuckets + qa / 2) * kLevels + level) * kMapped;
    signs_context_ = (static_cast<size_t>(c) * kSignPatterns + (sign_w * 3 + sign_n) * 3 + sign_before) * kMapped;
    const int mode = cdf.mode();
    const uint32_t below = cdf(mode), above = kProbTotal - cdf(mode + 1);
    if (decide<Decode>(coder, v == mode, kProbTotal - below - above, below + above, kIsMode)) return mode;
    bool up = v > mode;
    if (below > 0 && above > 0) up = decide<Decode>(coder, up, above, below, kAbove);
    else up = above > 0;
    // The distance k >= 1 on that side, at most K. edge(a): the probability of a distance below
    // a on that side, plus the other side's and the mode's (so that edge(b) - edge(a) is the
    // probability of a <= k < b, and edge(K + 1) is kProbTotal). One evaluation a decision.
    const int K = up ? 255 - mode : mode, k = std::abs(v - mode);
    const auto edge = [&](int a) { return up ? cdf(mode + a) : kProbTotal - cdf(mode - a + 1); };
    int lo = 1, bucket = 0;
    uint32_t at_lo = up ? kProbTotal - above : kProbTotal - below, past_hi = kProbTotal;
    for (;; ++bucket) {  // bucket j holds 2**j .. 2**(j+1) - 1
      const int hi = std::min(2 * lo - 1, K);
      if (hi == K) break;
      const uint32_t past = edge(hi + 1);
      if (decide<Decode>(coder, k <= hi, past - at_lo, kProbTotal - past, kBucket + std::min(bucket, 7))) {
        past_hi = past;
        break;
      }
      lo = hi + 1;
      at_lo = past;
    }
    int hi = std::min(2 * lo - 1, K);
    for (int kind = kFirstHalf + std::min(bucket, 7); lo < hi; kind = kLaterHalf) {
      const int mid = (lo + hi + 1) / 2;
      const uint32_t at_mid = edge(mid);
      if (decide<Decode>(coder, k >= mid, past_hi - at_mid, at_mid - at_lo, kind)) {
        lo = mid;
        at_lo = at_mid;
      } else {
        hi = mid - 1;
        past_hi = at_mid;
      }
    }
    return up ? mode + lo : mode - lo;
  }

  // The final residual (in eighths) of sample (c, y, x), for its neighbours' contexts: its sign
  // class (within half a sample of the mean: 1).
  void record(int c, int y, int x, int32_t residual) {
    signs_.row(c, y)[x] = residual > 4 ? 2 : residual < -4 ? 0 : 1;
  }

 private:
  // The kinds of decision; all but the later halves (close to even odds, and nothing to learn
  // there: measured) have maps of their own.
  static constexpr int kIsMode = 0, kAbove = 1, kBucket = 2, kFirstHalf = 10, kLaterHalf = 18, kMapped = 18;

  // A decision that is 1 with the logistic's probability part / (part + rest) (both > 0),
  // refined; encoding codes `bit`, decoding returns the decoded one. The maps read the odds in
  // the logistic domain, from the logarithms of both (no division).
  template <bool Decode, class Coder>
  int decide(Coder& coder, int bit, uint32_t part, uint32_t rest, int kind) {
    const int st = static_cast<int>(std::clamp<int64_t>(floor_shift(int64_t{log2_256(part) - log2_256(rest)} * 355, 9), -2047, 2047));
    const bool mapped = kind < kMapped;
    // A quarter the logistic's, three quarters the maps' mean; never quite 0 or 1.
    uint32_t p = squash12(st) * 16;
    if (mapped) {
      const int refined = (by_scale_.refine(st, scale_context_ + kind) + by_activity_.refine(st, activity_context_ + kind) +
                           by_signs_.refine(st, signs_context_ + kind)) / 3;
      p = (p + 3 * refined) >> 2;
    }
    p = std::clamp<uint32_t>(p, 32, kProbTotal - 32);
    if constexpr (Decode) bit = coder.decode_bit(p);
    else coder.encode_bit(bit, p);
    if (mapped) {
      by_scale_.update(bit);
      by_activity_.update(bit);
      by_signs_.update(bit);
    }
    return bit;
  }

  ProbabilityMap by_scale_, by_activity_, by_signs_;
  size_t scale_context_ = 0, activity_context_ = 0, signs_context_ = 0;
  RollingRows<> signs_;      // the sign class of each final residual
};

}  // namespace unz
