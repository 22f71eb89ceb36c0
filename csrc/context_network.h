// The learned half of the pixel model: per channel, a small network that reads a sample's
// classical context (ClassicalPredictor::context: the causal window relative to the prediction,
// the blend's residuals there, the predictors' disagreements, the earlier channels' residuals)
// and gives a correction of the sample's mean, in eighths, and an offset of its scale index.
//
// Integers only, so every machine computes the same: a stack of fully connected layers with
// int16 weights and inputs, int32 sums, an arithmetic right shift per layer (a floor), and a
// clipped ReLU between layers. The bounds below keep every sum inside int32 whatever the
// weights (the bindings refuse weights beyond them), so no overflow can make two machines
// differ. Pairs of int16 products summed into int32 are what x86's multiply-add instructions
// do (pmaddwd): the network runs on them, as AVX2 where the processor has it.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "predictor.h"  // kContextSize

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define UNZ_X86 1
#else
#define UNZ_X86 0
#endif
// GCC and Clang compile AVX2 functions into a baseline build and say at run time whether the
// processor has AVX2; elsewhere (MSVC) the network runs as SSE2.
#if UNZ_X86 && (defined(__GNUC__) || defined(__clang__))
#define UNZ_TARGET_AVX2 __attribute__((target("avx2")))
#define UNZ_HAS_CPU_SUPPORTS 1
#else
#define UNZ_TARGET_AVX2
#define UNZ_HAS_CPU_SUPPORTS 0
#endif

namespace unz {

constexpr int kNetInputLimit = 2047;       // |context value| (eighths), clipped
constexpr int kNetActivationLimit = 2047;  // hidden values: ReLU, then clipped
constexpr int kNetWeightLimit = 8191;      // |weight|
constexpr int32_t kNetBiasLimit = 1 << 29;  // |bias|
constexpr int kNetMaxWidth = 64;           // widest layer: 2047 * 8191 * 64 < 2**30, plus the bias < 2**31
constexpr int kNetMaxLayers = 4;
constexpr int kNetOutputs = 2;             // mean correction (eighths), scale-index offset
constexpr int kNetMaxShift = 30;
// The outputs' range: a correction of up to 32 samples, an offset of up to 4 doublings.
constexpr int32_t kNetMaxCorrection = 256;
constexpr int32_t kNetMaxScaleOffset = 32;
static_assert(kContextSize <= kNetMaxWidth, "the context fits a layer's inputs");

// sums[o] += w[p][o][0] x[2p] + w[p][o][1] x[2p+1] over the pairs p of inputs, for every output
// o < outputs (a multiple of 8; w holds `outputs` pairs of weights per pair of inputs). Pairs of
// zero inputs (the ReLU's, mostly) are skipped. Every partial sum is within the bound of the
// whole (+-2**30), so any order of additions gives the same integers: the vector versions are
// the same function, faster.
inline void accumulate_scalar(const int16_t* w, const int16_t* x, int pairs, int outputs, int32_t* sums) {
  for (int p = 0; p < pairs; ++p) {
    const int32_t x0 = x[2 * p], x1 = x[2 * p + 1];
    if ((x0 | x1) == 0) continue;
    const int16_t* wp = w + static_cast<size_t>(p) * outputs * 2;
    for (int o = 0; o < outputs; ++o) sums[o] += wp[2 * o] * x0 + wp[2 * o + 1] * x1;
  }
}

#if UNZ_X86
// Both inputs of a pair in every 32-bit lane: what the multiply-add instructions pair with w.
inline int32_t input_pair(const int16_t* x, int p) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(x[2 * p])) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(x[2 * p + 1])) << 16));
}

inline void accumulate_sse2(const int16_t* w, const int16_t* x, int pairs, int outputs, int32_t* sums) {
  for (int p = 0; p < pairs; ++p) {
    const int32_t pair = input_pair(x, p);
    if (pair == 0) continue;
    const __m128i xx = _mm_set1_epi32(pair);
    const int16_t* wp = w + static_cast<size_t>(p) * outputs * 2;
    for (int o = 0; o < outputs; o += 4) {
      __m128i* s = reinterpret_cast<__m128i*>(sums + o);
      const __m128i wo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wp + 2 * o));
      _mm_storeu_si128(s, _mm_add_epi32(_mm_loadu_si128(s), _mm_madd_epi16(wo, xx)));
    }
  }
}

UNZ_TARGET_AVX2 inline void accumulate_avx2(const int16_t* w, const int16_t* x, int pairs, int outputs, int32_t* sums) {
  for (int p = 0; p < pairs; ++p) {
    const int32_t pair = input_pair(x, p);
    if (pair == 0) continue;
    const __m256i xx = _mm256_set1_epi32(pair);
    const int16_t* wp = w + static_cast<size_t>(p) * outputs * 2;
    for (int o = 0; o < outputs; o += 8) {
      __m256i* s = reinterpret_cast<__m256i*>(sums + o);
      const __m256i wo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 2 * o));
      _mm256_storeu_si256(s, _mm256_add_epi32(_mm256_loadu_si256(s), _mm256_madd_epi16(wo, xx)));
    }
  }
}
#endif

using Accumulate = void (*)(const int16_t*, const int16_t*, int, int, int32_t*);

// The accumulate functions this build and processor have, fastest first (tests compare them).
inline std::vector<std::pair<const char*, Accumulate>> accumulate_kernels() {
  std::vector<std::pair<const char*, Accumulate>> kernels;
#if UNZ_X86
#if UNZ_HAS_CPU_SUPPORTS
  if (__builtin_cpu_supports("avx2")) kernels.emplace_back("avx2", accumulate_avx2);
#endif
  kernels.emplace_back("sse2", accumulate_sse2);
#endif
  kernels.emplace_back("scalar", accumulate_scalar);
  return kernels;
}

class ContextNetwork {
 public:
  struct Layer {
    int inputs, outputs, shift;
    std::vector<int16_t> weights;  // [channel][pair of inputs][padded output][2]
    std::vector<int32_t> bias;     // [channel][output]
    int pairs() const { return (inputs + 1) / 2; }
    int padded_outputs() const { return (outputs + 7) / 8 * 8; }
    // Where weight (c, o, i) lies in `weights`.
    size_t index(int c, int o, int i) const {
      return ((static_cast<size_t>(c) * pairs() + i / 2) * padded_outputs() + o) * 2 + i % 2;
    }
  };

  explicit ContextNetwork(std::vector<Layer> layers, Accumulate accumulate = accumulate_kernels().front().second)
      : layers_(std::move(layers)), accumulate_(accumulate) {}

  // The mean correction (eighths) and scale-index offset of channel c's sample, from its
  // context (kContextSize values, eighths).
  void apply(int c, const int32_t* context, int32_t& correction, int32_t& scale_offset) const {
    alignas(32) int16_t in[kNetMaxWidth + 1];
    alignas(32) int32_t sums[kNetMaxWidth];
    for (int i = 0; i < kContextSize; ++i)
      in[i] = static_cast<int16_t>(std::clamp<int32_t>(context[i], -kNetInputLimit, kNetInputLimit));
    in[kContextSize] = 0;  // the last pair's second input, where the count is odd
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      const int outputs = layer.padded_outputs();
      std::fill(sums, sums + outputs, 0);
      accumulate_(layer.weights.data() + layer.index(c, 0, 0), in, layer.pairs(), outputs, sums);
      const int32_t* bias = layer.bias.data() + static_cast<size_t>(c) * layer.outputs;
      if (l + 1 == layers_.size()) {
        correction = std::clamp(shifted(bias[0] + sums[0], layer.shift), -kNetMaxCorrection, kNetMaxCorrection);
        scale_offset = std::clamp(shifted(bias[1] + sums[1], layer.shift), -kNetMaxScaleOffset, kNetMaxScaleOffset);
        return;
      }
      for (int o = 0; o < layer.outputs; ++o)
        in[o] = static_cast<int16_t>(std::clamp(shifted(bias[o] + sums[o], layer.shift), 0, kNetActivationLimit));
      in[layer.outputs] = 0;
    }
  }

 private:
  static int32_t shifted(int32_t v, int shift) { return v >> shift; }  // arithmetic: a floor

  std::vector<Layer> layers_;
  Accumulate accumulate_;
};

}  // namespace unz
