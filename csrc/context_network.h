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
// do (pmaddwd, and vpdpwssd, which adds them in too): the network runs on them, as AVX-512
// VNNI or AVX2 where the processor has it.
#pragma once
#include <algorithm>
#include <cstring>
#include <cstdint>
#include <utility>
#include <vector>

#include "predictor.h"  // kContextSize
#include "simd.h"

namespace unz {

constexpr int kNetInputLimit = 2047;       // |context value| (eighths), clipped
constexpr int kNetActivationLimit = 2047;  // hidden values: ReLU, then clipped
constexpr int kNetWeightLimit = 8191;      // |weight|
constexpr int32_t kNetBiasLimit = 1 << 29;  // |bias|
constexpr int kNetMaxWidth = 64;           // widest layer: 2047 * 8191 * 64 < 2**30, plus the bias < 2**31
constexpr int kNetMaxLayers = 4;
constexpr int kNetOutputs = 2;             // mean correction (eighths), scale-index offset
constexpr int kNetMaxShift = 30;
constexpr int kNetMaxHidden = (kNetMaxLayers - 1) * kNetMaxWidth;  // the hidden layers' outputs, all of them
// The outputs' range: a correction of up to 32 samples, an offset of up to 4 doublings.
constexpr int32_t kNetMaxCorrection = 256;
constexpr int32_t kNetMaxScaleOffset = 32;
static_assert(kContextSize <= kNetMaxWidth, "the context fits a layer's inputs");

// The kernels compute one layer of one channel:
//   out[o] = clamp((bias[o] + sum_i w[o][i] x[i]) >> shift, low, kNetActivationLimit)
// for every output o < outputs (a multiple of 16, the padding's weights and bias zero), with w
// holding `outputs` pairs of weights per pair of inputs. Every partial sum is within the bound of
// the whole (+-2**30), so any order of additions gives the same integers: the vector versions
// are the same function, faster. They take every pair of inputs, zero or not: skipping the
// ReLU's zeros costs more in bookkeeping and mispredicted branches than it saves.
using LayerKernel = void (*)(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs, int outputs,
                             int shift, int low, int16_t* out);

inline int16_t activation(int32_t sum, int shift, int low) {
  return static_cast<int16_t>(std::clamp<int32_t>(sum >> shift, low, kNetActivationLimit));  // >>: a floor
}

inline void layer_scalar(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs, int outputs, int shift,
                         int low, int16_t* out) {
  int32_t sums[kNetMaxWidth];
  std::copy(bias, bias + outputs, sums);
  for (int p = 0; p < pairs; ++p) {
    const int32_t x0 = x[2 * p], x1 = x[2 * p + 1];
    const int16_t* wp = w + static_cast<size_t>(p) * outputs * 2;
    for (int o = 0; o < outputs; ++o) sums[o] += wp[2 * o] * x0 + wp[2 * o + 1] * x1;
  }
  for (int o = 0; o < outputs; ++o) out[o] = activation(sums[o], shift, low);
}

// The last layer's kernels: its few outputs would leave vectors of outputs nearly empty, so its
// weights lie in a row per output (`pairs` pairs of inputs, a multiple of 8, the padding's
// weights zero) and each output is a dot product of its row with the inputs, which compilers
// put in multiply-adds (pmaddwd) of the baseline or of AVX2. The same bounds hold, so these too
// give the same integers in any order.
UNZ_ALWAYS_INLINE void rows_scalar(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs, int outputs,
                                   int shift, int low, int16_t* out) {
  for (int o = 0; o < outputs; ++o) {
    int32_t sum = bias[o];
    for (int i = 0; i < 2 * pairs; ++i) sum += w[static_cast<size_t>(o) * 2 * pairs + i] * x[i];
    out[o] = activation(sum, shift, low);
  }
}

#if UNZ_X86
// Both inputs of a pair in every 32-bit lane: what the multiply-add instructions pair with w.
// (x86 is little-endian: the first input is the low half, as the instructions pair them.)
inline int32_t input_pair(const int16_t* x, int p) {
  int32_t pair;
  std::memcpy(&pair, x + 2 * p, sizeof pair);
  return pair;
}

// SSE2, the baseline of x86-64: four sums at a time, kept in memory.
inline void layer_sse2(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs, int outputs, int shift,
                       int low, int16_t* out) {
  alignas(16) int32_t sums[kNetMaxWidth];
  std::copy(bias, bias + outputs, sums);
  for (int p = 0; p < pairs; ++p) {
    const __m128i xx = _mm_set1_epi32(input_pair(x, p));
    const int16_t* wp = w + static_cast<size_t>(p) * outputs * 2;
    for (int o = 0; o < outputs; o += 4) {
      __m128i* s = reinterpret_cast<__m128i*>(sums + o);
      const __m128i wo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wp + 2 * o));
      _mm_store_si128(s, _mm_add_epi32(_mm_load_si128(s), _mm_madd_epi16(wo, xx)));
    }
  }
  for (int o = 0; o < outputs; ++o) out[o] = activation(sums[o], shift, low);
}

// AVX2 keeps the sums of all the outputs in registers (Vectors of 8) from the bias to the
// activations: one instantiation per width, its loops over the vectors unrolled.
template <int Vectors>
UNZ_TARGET_AVX2 inline void layer_avx2_registers(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs,
                                                 int shift, int low, int16_t* out) {
  __m256i acc[Vectors];
  for (int v = 0; v < Vectors; ++v) acc[v] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8 * v));
  for (int p = 0; p < pairs; ++p) {
    const __m256i xx = _mm256_set1_epi32(input_pair(x, p));
    const int16_t* wp = w + static_cast<size_t>(p) * Vectors * 16;
    for (int v = 0; v < Vectors; ++v)
      acc[v] = _mm256_add_epi32(
          acc[v], _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + 16 * v)), xx));
  }
  const __m128i count = _mm_cvtsi32_si128(shift);
  const __m256i lo = _mm256_set1_epi32(low), hi = _mm256_set1_epi32(kNetActivationLimit);
  for (int v = 0; v < Vectors; v += 2) {
    const __m256i a = _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(acc[v], count), lo), hi);
    const __m256i b = _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(acc[v + 1], count), lo), hi);
    // packs works within 128-bit lanes: the permutation puts the 16 values back in order
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * v), packed);
  }
}

UNZ_TARGET_AVX2 inline void layer_avx2(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs, int outputs,
                                       int shift, int low, int16_t* out) {
  switch (outputs / 16) {
    case 1: return layer_avx2_registers<2>(w, bias, x, pairs, shift, low, out);
    case 2: return layer_avx2_registers<4>(w, bias, x, pairs, shift, low, out);
    case 3: return layer_avx2_registers<6>(w, bias, x, pairs, shift, low, out);
    default: return layer_avx2_registers<8>(w, bias, x, pairs, shift, low, out);  // kNetMaxWidth / 8
  }
}

// The last layer's dot products, vectorized by the compiler for AVX2.
UNZ_TARGET_AVX2 inline void rows_avx2(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs, int outputs,
                                      int shift, int low, int16_t* out) {
  rows_scalar(w, bias, x, pairs, outputs, shift, low, out);
}

// AVX-512 VNNI: the same with vectors of 16 sums, the multiply-add and the addition in one
// instruction (vpdpwssd, which wraps like vpaddd: no saturation). Its latency would chain each
// vector's pairs one after another: Sets of sums take the pairs in turn and meet at the end.
template <int Vectors>
UNZ_TARGET_AVX512_VNNI inline void layer_avx512_vnni_registers(const int16_t* w, const int32_t* bias, const int16_t* x,
                                                               int pairs, int shift, int low, int16_t* out) {
  constexpr int Sets = Vectors == 1 ? 4 : 2;
  __m512i acc[Sets][Vectors];
  for (int v = 0; v < Vectors; ++v) {
    acc[0][v] = _mm512_loadu_si512(bias + 16 * v);
    for (int set = 1; set < Sets; ++set) acc[set][v] = _mm512_setzero_si512();
  }
  for (int first = 0; first < pairs; first += Sets)
    for (int set = 0; set < Sets && first + set < pairs; ++set) {
      const int p = first + set;
      const __m512i xx = _mm512_set1_epi32(input_pair(x, p));
      const int16_t* wp = w + static_cast<size_t>(p) * Vectors * 32;
      for (int v = 0; v < Vectors; ++v)
        acc[set][v] = _mm512_dpwssd_epi32(acc[set][v], xx, _mm512_loadu_si512(wp + 32 * v));
    }
  // (Zero-masked forms with every lane selected: GCC 12's unmasked forms of these warn about an
  // uninitialized placeholder of their own.)
  const __mmask16 all = 0xFFFF;
  const __m512i count = _mm512_set1_epi32(shift);
  const __m512i lo = _mm512_set1_epi32(low), hi = _mm512_set1_epi32(kNetActivationLimit);
  for (int v = 0; v < Vectors; ++v) {
    __m512i sum = acc[0][v];
    for (int set = 1; set < Sets; ++set) sum = _mm512_add_epi32(sum, acc[set][v]);
    const __m512i shifted = _mm512_maskz_srav_epi32(all, sum, count);
    const __m512i a = _mm512_maskz_min_epi32(all, _mm512_maskz_max_epi32(all, shifted, lo), hi);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16 * v), _mm512_maskz_cvtepi32_epi16(all, a));
  }
}

UNZ_TARGET_AVX512_VNNI inline void layer_avx512_vnni(const int16_t* w, const int32_t* bias, const int16_t* x, int pairs,
                                                     int outputs, int shift, int low, int16_t* out) {
  switch (outputs / 16) {
    case 1: return layer_avx512_vnni_registers<1>(w, bias, x, pairs, shift, low, out);
    case 2: return layer_avx512_vnni_registers<2>(w, bias, x, pairs, shift, low, out);
    case 3: return layer_avx512_vnni_registers<3>(w, bias, x, pairs, shift, low, out);
    default: return layer_avx512_vnni_registers<4>(w, bias, x, pairs, shift, low, out);  // kNetMaxWidth / 16
  }
}
#endif

// The kernels this build and processor have, fastest first (tests compare them): each for the
// hidden layers, and for the last (its rows; AVX-512 has nothing to add to AVX2's for so few).
struct NetworkKernels {
  const char* name;
  LayerKernel layer, rows;
};
inline const std::vector<NetworkKernels>& network_kernels() {
  static const auto kernels = [] {
    std::vector<NetworkKernels> found;
#if UNZ_X86
    if (has_avx512_vnni()) found.push_back({"avx512vnni", layer_avx512_vnni, rows_avx2});
    if (has_avx2()) found.push_back({"avx2", layer_avx2, rows_avx2});
    found.push_back({"sse2", layer_sse2, rows_scalar});
#endif
    found.push_back({"scalar", layer_scalar, rows_scalar});
    return found;
  }();
  return kernels;
}

class ContextNetwork {
 public:
  struct Layer {
    int inputs, outputs, shift;
    bool rows;  // the last layer's layout (rows of weights, NetworkKernels::rows), else the hidden layers'
    std::vector<int16_t> weights;  // [channel][pair of inputs][padded output][2], or [channel][output][padded input]
    std::vector<int32_t> bias;     // [channel][padded output]
    // Rows take their inputs 16 at a time: the previous layer's padded outputs, or the context
    // and the zeros after it.
    int pairs() const { return rows ? (inputs + 15) / 16 * 8 : (inputs + 1) / 2; }
    int padded_outputs() const { return rows ? outputs : (outputs + 15) / 16 * 16; }
    // Where weight (c, o, i) lies in `weights`, and bias (c, o) in `bias`.
    size_t index(int c, int o, int i) const {
      if (rows) return (static_cast<size_t>(c) * outputs + o) * 2 * pairs() + i;
      return ((static_cast<size_t>(c) * pairs() + i / 2) * padded_outputs() + o) * 2 + i % 2;
    }
    size_t bias_index(int c, int o) const { return static_cast<size_t>(c) * padded_outputs() + o; }
  };

  // layers: the last one's in rows, the others' not.
  explicit ContextNetwork(std::vector<Layer> layers, const NetworkKernels& kernels = network_kernels().front())
      : layers_(std::move(layers)), kernels_(kernels), hidden_offsets_{0} {
    for (size_t l = 0; l + 1 < layers_.size(); ++l)
      hidden_offsets_.push_back(hidden_offsets_.back() + layers_[l].padded_outputs());
  }

  // How much of the context the network reads: kNarrowContextSize or kContextSize values.
  int inputs() const { return layers_.front().inputs; }

  // The mean correction (eighths) and scale-index offset of channel c's sample, from its
  // context (inputs() values, eighths); `hidden` (kNetMaxHidden values) receives the hidden
  // layers' outputs one after another, hidden_size() of them (the online readout's features).
  void apply(int c, const int32_t* context, int32_t& correction, int32_t& scale_offset, int16_t* hidden) const {
    // After the context, zeros: the last pair's second input, where the count is odd, or a
    // last layer's padding of its row.
    alignas(64) int16_t input[kNetMaxWidth] = {}, output[kNetMaxWidth];
    for (int i = 0; i < inputs(); ++i)
      input[i] = static_cast<int16_t>(std::clamp<int32_t>(context[i], -kNetInputLimit, kNetInputLimit));
    const int16_t* in = input;
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      // Hidden layers: a clipped ReLU, written where the next layer reads them. The last layer's
      // outputs are clipped within their own, narrower ranges below, so the kernel's wider clip
      // changes nothing.
      const bool last = l + 1 == layers_.size();
      int16_t* out = last ? output : hidden + hidden_offsets_[l];
      (layer.rows ? kernels_.rows : kernels_.layer)(layer.weights.data() + layer.index(c, 0, 0),
                                                   layer.bias.data() + layer.bias_index(c, 0), in, layer.pairs(),
                                                   layer.padded_outputs(), layer.shift, last ? -kNetActivationLimit : 0,
                                                   out);
      in = out;  // the padding's outputs are 0: the last pair's second input, where the count is odd
    }
    correction = std::clamp<int32_t>(output[0], -kNetMaxCorrection, kNetMaxCorrection);
    scale_offset = std::clamp<int32_t>(output[1], -kNetMaxScaleOffset, kNetMaxScaleOffset);
  }

  // How many hidden values apply() writes (the padding's zeros included).
  int hidden_size() const { return hidden_offsets_.back(); }

 private:
  std::vector<Layer> layers_;
  NetworkKernels kernels_;
  std::vector<int> hidden_offsets_;  // where each hidden layer's outputs start in `hidden`; then their end
};

}  // namespace unz
