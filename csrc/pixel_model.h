// The sequential half of pillow-unz's pixel model: in raster order, each sample's prediction
// (predictor.h) is corrected by the context network (context_network.h, where the band's tool
// names one) and by error feedback, and the sample is coded with a discretized logistic whose
// scale comes from a learned table indexed by local context, adapted to the image as it is
// coded, and offset by the parameters and the context network.
//
// The parameters are, per pixel, a scale-index offset and an error-feedback coefficient for
// every channel (the `params` planes: the model's constants, or an adapted UNet's planes).
// Everything here is integer arithmetic, so encoder and decoder agree on every machine.
// pillow_unz/pixelmodel.py computes the same quantities, in parallel, for training.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <vector>

#include "context_network.h"
#include "logistic.h"
#include "online_readout.h"
#include "predictor.h"
#include "range_coder.h"
#include "residual_shape.h"

namespace unz {

// Bump on any change to what this file computes: it is part of every file's model id, so a
// file never decodes with a pixel model other than the one that coded it.
constexpr int kPixelModelRevision = 4;
constexpr int kActivityBuckets = 16;
constexpr int kCrossBuckets = 4;
// Bucket edges of the activity A = 2|eN| + 2|eW| + |eNW| + |eNE| + |eNN| + |eWW| (errors of the
// final prediction, in 1/8 units), and of
// the cross-channel activity B = sum of |residuals| of the channels already coded at the pixel.
constexpr int32_t kActivityEdges[kActivityBuckets - 1] = {12,  17,  24,  34,  48,  68,  96, 136,
                                                          192, 272, 384, 543, 768, 1086, 1536};
constexpr int32_t kCrossEdges[kCrossBuckets - 1] = {16, 64, 192};
// Bucket edges of the spread of the six difference predictions (max - min, in 1/8 units): where
// they disagree, the sample is less predictable whatever the recent errors were.
constexpr int kSpreadBuckets = 6;
constexpr int32_t kSpreadEdges[kSpreadBuckets - 1] = {8, 24, 48, 96, 192};
constexpr int kBetaFracBits = 6;  // feedback coefficients are in 1/64

// The bucket of v: how many of the ascending edges it reaches. Counted without branches, whose
// exits no predictor could guess.
template <int N>
inline int bucket(int32_t v, const int32_t (&edges)[N]) {
  int b = 0;
  for (int k = 0; k < N; ++k) b += v >= edges[k];
  return b;
}

// round(8 * log2(v)) for v >= 1, from the bit length and eight mantissa thresholds.
inline int log2_eighths(uint64_t v) {
  const int e = highest_bit(v);
  const uint64_t m = e >= 15 ? v >> (e - 15) : v << (15 - e);
  int frac = 0;  // how many of the ascending thresholds m reaches
  for (int k = 0; k < 8; ++k) frac += m >= static_cast<uint64_t>(kLog8Thresholds[k]);
  return 8 * e + frac;
}

// Each context cell's scale adapts to the image: the learned scale counts as kAdaptPrior samples
// of mean absolute residual, the residuals already coded in the cell as themselves, and the
// index moves by the log ratio of the two estimates.
constexpr int kAdaptPrior = 32;
constexpr int kAdaptMaxStep = 64;  // at most 8 doublings either way
constexpr int kCells = kActivityBuckets * kCrossBuckets * kSpreadBuckets;
constexpr int kBiasPrior = 16;

// base_index: of kPriorMad, which goes on past kNumScales for samples of more than 8 bits.
inline int adapted_scale_step(int64_t residual_sum8, int64_t count, int base_index) {
  const int64_t prior = kPriorMad[base_index];  // in 1/128 sample; residual sums are in 1/8
  const int64_t ratio256 = ((16 * residual_sum8 + kAdaptPrior * prior) << 8) / ((count + kAdaptPrior) * prior);
  return std::clamp(log2_eighths(static_cast<uint64_t>(std::max<int64_t>(ratio256, 1))) - 64, -kAdaptMaxStep,
                    kAdaptMaxStep);
}

// A second stage of the cells' statistics, keyed by what the cell does not see, which the band
// stream names (docs/FORMAT.md, "Statistics keys"): each cell's statistics are split by the key,
// and the split ones adapt the cell's adapted scale (and bias) further, the cell's own counting
// as kAdaptPrior (kBiasPrior) samples, so that a sparse split costs little.
// - level: the prediction's eighth of the sample range (the noise of a photograph depends on
//   its brightness: shot noise, then the gamma curve), scale and bias;
// - position: the sample's place in an 8x8 grid, (y mod 8, x mod 8) from the band's first row
//   (a JPEG's blocks, also of a photograph reduced 2x or 4x since, which keeps period 4 or 2):
//   the scale only, since the blocks change how large residuals are, not their sign.
enum StatsKey : int { kNoKey = 0, kLevelKey = 1, kPositionKey = 2 };
constexpr int kNumStatsKeys = 3;
constexpr int kKeyValues[kNumStatsKeys] = {1, 8, 64};

// Number of parameter planes for `channels` colour channels: a scale offset and an
// error-feedback coefficient each.
inline int num_param_planes(int channels) { return 2 * channels; }

// The parameters of every pixel: P planes `plane` values apart (the network's), or one value
// per plane for every pixel (pixel = 0: the model's learned constants).
struct Parameters {
  const int32_t* data;
  size_t plane, pixel;
  int32_t operator()(int p, size_t at) const { return data[p * plane + at * pixel]; }
  // The parameters of the pixels from `at` on.
  Parameters from(size_t at) const { return {data + at * pixel, plane, pixel}; }
};

// Images are coded in bands of rows, which decode in parallel: bands of at most `max_rows` rows,
// as even as can be. Every band starts its statistics afresh, so taller bands code smaller
// (docs/DESIGN.md); the file says how tall (multiples of kBandRows from version 11, kBandRows
// before).
constexpr int kBandRows = 256;
constexpr int kMaxBandHeight = 255 * kBandRows;
struct Bands {
  int H;                     // the image's rows
  int max_rows = kBandRows;  // a band's: 1 .. kMaxBandHeight
  int count() const { return std::max(1, (H + max_rows - 1) / max_rows); }
  int start(int band) const { return static_cast<int>(int64_t{band} * H / count()); }  // start(count()) == H
};

// A sample of `bits` bits (9 to 16) with coded mean mean8 (in eighths) and scale index s (of
// the wide tables): its top 8 bits under the logistic in their units, then its low bits under
// the same logistic restricted to the top bits' interval. The two factors make up the
// logistic over all 2**bits values, which the coder's 16-bit counts cannot hold at once.
// Top symbol t holds the values t 2**low_bits .. (t + 1) 2**low_bits - 1, so a value u lies
// at (u + 1/2) / 2**low_bits - 1/2 in top units: exactly, in 2**-(3 + low_bits) of them.
template <bool Decode, class Coder>
int code_wide_sample(Coder& coder, int v, int mean8, int s, int bits) {
  const int low_bits = bits - 8;
  const LogisticCdf top_cdf(mean8 + 4 - (4 << low_bits), std::max(s - 8 * low_bits, 0), 256, kMeanFracBits + low_bits);
  const int top = code_symbol<Decode>(coder, top_cdf, 256, v >> low_bits, top_cdf.mode());
  const int low_count = 1 << low_bits;
  const LogisticCdf low_cdf(mean8 - 8 * (top << low_bits), s, low_count);
  const int low = code_symbol<Decode>(coder, low_cdf, low_count, v & (low_count - 1), low_cdf.mode());
  return (top << low_bits) | low;
}

// The newest format version, and so the newest coding of samples: 8-bit samples under the
// logistic as it is (up to version 8), their distributions refined by ResidualShape (9), and the
// context network's online readout (10); 11 to 13 code them as 10 (11 let bands be taller,
// which the caller gives: Bands; 12 lets a band choose its fit memory, Coding::fit_memory; 13
// codes each row channel by channel, code_pixels). Files decode with the coding of their version.
constexpr int kLatestRevision = 13;
constexpr int kChannelRowsRevision = 13;

// One way of coding a band's samples: the memory of the classical prediction's fits
// (ClassicalPredictor), a context network over that prediction (or none, the classical model
// alone) and a statistics key. The encoder tries several at once.
struct Coding {
  const ContextNetwork* network = nullptr;
  int stats_key = kNoKey;
  int revision = kLatestRevision;
  int fit_memory = kDefaultFitMemory;
};

// What a context network says of a sample (all zero without one): its mean correction and scale
// offset, and its hidden values (the online readout's features).
struct NetworkOutputs {
  int32_t correction = 0, scale_offset = 0;
  const int16_t* hidden = nullptr;
  int hidden_size = 0;
};

// What one Coding adapts as it codes a band (its context cells' statistics and its residuals),
// and the coding of a sample under it: the prediction corrected by the network and by error
// feedback, the scale from the learned table adapted to the image, the discretized logistic.
// See code_pixels for the arguments.
template <class Sample>
class AdaptiveCoding {
 public:
  AdaptiveCoding(const Parameters& params, int C, int W, const int32_t* scale_table, int bits, int context_shift,
                 const Coding& coding)
      : params_(params), C_(C), table_(scale_table), bits_(bits), context_shift_(context_shift),
        max8_(8 * ((1 << bits) - 1)), num_scales_(bits > 8 ? kNumWideScales : kNumScales), key_(coding.stats_key),
        key_values_(kKeyValues[coding.stats_key]), err_(C, W), cell_sum_(static_cast<size_t>(C) * kCells, 0),
        cell_count_(cell_sum_.size(), 0), cell_signed_sum_(cell_sum_.size(), 0),
        split_sum_(coding.stats_key == kNoKey ? 0 : cell_sum_.size() * key_values_, 0), split_count_(split_sum_.size(), 0),
        split_signed_sum_(split_sum_.size(), 0) {
    if (coding.revision >= 9 && bits == 8) shape_.emplace(C, W);
    if (coding.revision >= 10 && coding.network) readout_.emplace(2 * C);
  }

  // Sample (c, y, x), the at-th of its plane, of value v (encoding; decoding: the value it
  // decodes, returned), with prediction p and what the coding's network says of it.
  // Calls in coding order (ClassicalPredictor::predict's); channel 0 of a pixel first.
  template <bool Decode, class Coder>
  int code(Coder& coder, int v, const Prediction& p, const NetworkOutputs& net, int c, int y, int x, size_t at) {
    const int32_t gamma = params_(C_ + c, at);
    const int32_t activity = err_.causal_sum(c, y, x, 2, 2, 1, 1, 1, 1) >> context_shift_;
    const int qa = bucket(activity, kActivityEdges);
    // The readout of the channel's quiet samples (the lower half of the activity buckets) and
    // that of its busy ones learn apart.
    const int32_t readout =
        readout_ ? readout_->correction(2 * c + (2 * qa >= kActivityBuckets), net.hidden, net.hidden_size) : 0;
    const int m = clamp_pred(p.mean8 + net.correction + readout + floor_div(int64_t{gamma} * p.feedback, 8 << kBetaFracBits), max8_);

    int32_t cross = 0;  // the pixel's |residuals| of the channels coded before
    for (int j = 0; j < c; ++j) cross += err_.row(j, y)[x];
    const int qb = c > 0 ? bucket(cross >> context_shift_, kCrossEdges) : 0;
    const int qs = bucket(p.spread >> context_shift_, kSpreadEdges);
    const size_t cell = static_cast<size_t>(c) * kCells + (qa * kCrossBuckets + qb) * kSpreadBuckets + qs;
    const int base_index = std::clamp(table_[cell], 0, kNumScales - 1) + 8 * context_shift_;
    int adapted = base_index + adapted_scale_step(cell_sum_[cell], cell_count_[cell], base_index);
    // Bias cancellation: the coded mean moves by the mean signed residual of the cell so far
    // (shrunk towards zero by kBiasPrior samples). Every other statistic uses the residual
    // of m, so the bias feeds nothing but itself.
    int64_t bias = floor_div(cell_signed_sum_[cell], cell_count_[cell] + kBiasPrior);
    size_t split = 0;
    if (key_ != kNoKey) {
      const int key = key_ == kLevelKey ? m >> bits_ : (y & 7) << 3 | (x & 7);
      split = cell * key_values_ + key;
      adapted = std::clamp(adapted, 0, num_scales_ - 1);
      adapted += adapted_scale_step(split_sum_[split], split_count_[split], adapted);
      if (key_ == kLevelKey)
        bias = floor_div(split_signed_sum_[split] + kBiasPrior * bias, split_count_[split] + kBiasPrior);
    }
    // (in int64: the network's offset is whatever int32 the caller gives)
    const int s = static_cast<int>(std::clamp<int64_t>(int64_t{adapted} + params_(c, at) + net.scale_offset, 0, num_scales_ - 1));
    const int coded_mean = clamp_pred(m + bias, max8_);
    if (bits_ == 8) {
      const LogisticCdf cdf(coded_mean, s, 256);
      v = shape_ ? shape_->code<Decode>(coder, cdf, v, c, y, x, s, qa, m >> bits_)
                 : code_symbol<Decode>(coder, cdf, 256, v, cdf.mode());
    } else {
      v = code_wide_sample<Decode>(coder, v, coded_mean, s, bits_);
    }

    const int32_t residual = 8 * v - m;
    if (readout_) readout_->learn(residual);
    // Samples of more than 8 bits meet steps far beyond their cell's usual residuals (the
    // edge of a CT scan's field of view): the cell's statistics take each residual clipped
    // to 8 times their mean magnitude so far, plus 8, so that a few steps do not
    // inflate the scale of every later sample of the cell. (8-bit residuals are never
    // clipped: the statistics of 8-bit files stay as they were.)
    const int32_t limit = bits_ == 8 ? kMaxPred8 : static_cast<int32_t>(64 + 8 * cell_sum_[cell] / (cell_count_[cell] + 1));
    const int32_t clipped = std::clamp(residual, -limit, limit);
    cell_signed_sum_[cell] += clipped;
    cell_sum_[cell] += std::abs(clipped);
    ++cell_count_[cell];
    if (key_ != kNoKey) {
      split_signed_sum_[split] += clipped;
      split_sum_[split] += std::abs(clipped);
      ++split_count_[split];
    }
    err_.row(c, y)[x] = std::abs(residual);
    if (shape_) shape_->record(c, y, x, residual);
    return v;
  }

 private:
  Parameters params_;
  int C_;
  const int32_t* table_;
  int bits_, context_shift_, max8_, num_scales_, key_, key_values_;
  RollingRows<> err_;  // |final residual| of each channel
  std::vector<int64_t> cell_sum_, cell_count_, cell_signed_sum_;
  std::vector<int64_t> split_sum_, split_count_, split_signed_sum_;
  std::optional<ResidualShape> shape_;  // format 9's refinement of 8-bit samples
  std::optional<OnlineReadout> readout_;  // format 10's, of a coding with a network: two a channel
};

// One band of H rows of W samples of `bits` bits (8 in uint8_t, 9 to 16 in uint16_t), coded as
// a stream of its own: the prediction and every adaptive statistic start afresh, so bands
// decode in parallel. From revision 13 each row is coded channel by channel, before pixel by
// pixel: a sample's model reads the samples before it in either order (the channels coded before
// it at its pixel through the rolling rows), so the probabilities are the same, but a channel's
// network weights stay in the processor's first-level cache for a whole row (decoding a colour
// photo 15% faster). Encoding codes it `count` ways at once, codings[k] into coders[k], over
// one classical prediction per fit memory they name (and one evaluation of each network over
// each prediction it reads); decoding, one way.
// planes: C planes, `plane` samples apart, read when encoding, written when decoding.
// params: num_param_planes(C) values for every pixel: per channel the scale offset, then per
// channel the error-feedback coefficient.
// scale_table: (C, kActivityBuckets, kCrossBuckets, kSpreadBuckets) learned base scale indices,
// of 8-bit photographs. Wider samples take their contexts (activity, cross-channel activity,
// spread) and their least-squares inputs divided by 2**context_shift (0 to bits - 8, the
// encoder's choice: how much larger than an 8-bit photograph's the image's variations are),
// and scale the base scales back.
// A coding's network (8-bit samples only) corrects every sample's mean and offsets its scale
// index; its statistics key splits its cells' statistics (StatsKey).
// race_rows (encoding several ways): after that many rows, of the ways over each prediction
// only the one whose stream is then the shortest goes on, the others' streams are left
// unfinished (0: every way codes every row). The way ahead after a band's first rows is almost
// always the one that ends smallest, and the others' networks and statistics are most of the
// encoder's time; but which fit memory ends smallest shows late, so each memory's way codes to
// the end. Returns which ways coded the whole band.
template <bool Decode, class Coder, class Sample>
std::vector<bool> code_pixels(Coder* coders, const Coding* codings, int count, Sample* planes, const Parameters& params,
                              size_t plane, int C, int H, int W, const int32_t* scale_table, int bits = 8,
                              int context_shift = 0, int race_rows = 0) {
  if (Decode && count != 1) throw std::invalid_argument("a band decodes one way");
  struct Evaluation {  // of a network over a prediction
    const ContextNetwork* network;
    int predictor;
  };
  std::vector<ClassicalPredictor<Sample>> predictors;  // one a fit memory
  std::vector<Evaluation> evaluations;                 // each distinct one once
  std::vector<AdaptiveCoding<Sample>> ways;
  std::vector<int> predictor_of, evaluation_of;  // each coding's (evaluation -1: none)
  predictors.reserve(count);
  for (int k = 0; k < count; ++k) {
    const Coding& coding = codings[k];
    ways.emplace_back(params, C, W, scale_table, bits, context_shift, coding);
    const auto its_memory = [&](const ClassicalPredictor<Sample>& q) { return q.fit_memory() == coding.fit_memory; };
    const int p = static_cast<int>(std::find_if(predictors.begin(), predictors.end(), its_memory) - predictors.begin());
    if (p == static_cast<int>(predictors.size())) predictors.emplace_back(planes, plane, C, W, bits, context_shift, coding.fit_memory);
    predictor_of.push_back(p);
    int e = -1;
    if (coding.network) {
      const auto same = [&](const Evaluation& v) { return v.network == coding.network && v.predictor == p; };
      e = static_cast<int>(std::find_if(evaluations.begin(), evaluations.end(), same) - evaluations.begin());
      if (e == static_cast<int>(evaluations.size())) evaluations.push_back({coding.network, p});
    }
    evaluation_of.push_back(e);
  }
  std::vector<Prediction> predictions(predictors.size());
  std::vector<int32_t> contexts(predictors.size() * kContextSize);
  std::vector<int> context_inputs(predictors.size(), 0);  // the most any network over each prediction reads
  for (const Evaluation& e : evaluations)
    context_inputs[e.predictor] = std::max(context_inputs[e.predictor], e.network->inputs());
  std::vector<NetworkOutputs> outputs(evaluations.size());
  std::vector<int16_t> hidden(evaluations.size() * kNetMaxHidden);
  for (size_t e = 0; e < evaluations.size(); ++e) {
    outputs[e].hidden = &hidden[e * kNetMaxHidden];
    outputs[e].hidden_size = evaluations[e].network->hidden_size();
  }
  const NetworkOutputs none;
  // The ways still coding and the evaluations they read (every prediction runs to the end).
  std::vector<int> running(count), evaluating(evaluations.size());
  std::iota(running.begin(), running.end(), 0);
  std::iota(evaluating.begin(), evaluating.end(), 0);
  std::vector<bool> read(predictors.size());  // each prediction's context, by an evaluation still running
  const auto mark_read = [&] {
    std::fill(read.begin(), read.end(), false);
    for (const int e : evaluating) read[evaluations[e].predictor] = true;
  };
  mark_read();

  const bool channel_rows = codings[0].revision >= kChannelRowsRevision;
  for (int y = 0; y < H; ++y) {
    if constexpr (!Decode) {
      if (race_rows > 0 && y == race_rows && running.size() > predictors.size()) {
        std::vector<int> ahead(predictors.size(), -1);  // each prediction's way then ahead: the first of its shortest
        for (const int k : running) {
          int& a = ahead[predictor_of[k]];
          if (a < 0 || coders[k].bytes() < coders[a].bytes()) a = k;
        }
        running = ahead;
        evaluating.clear();
        for (const int k : running)
          if (evaluation_of[k] >= 0) evaluating.push_back(evaluation_of[k]);
        mark_read();
      }
    }
    const auto code_sample = [&](int c, int x) {
      const size_t at = static_cast<size_t>(y) * W + x;
      Sample* img = planes + c * plane;
      for (size_t p = 0; p < predictors.size(); ++p) predictions[p] = predictors[p].predict(c, y, x);
      if (!evaluating.empty()) {
        for (size_t p = 0; p < predictors.size(); ++p)
          if (read[p]) predictors[p].context(c, y, x, &contexts[p * kContextSize], context_inputs[p]);
        for (const int e : evaluating)
          evaluations[e].network->apply(c, &contexts[evaluations[e].predictor * kContextSize], outputs[e].correction,
                                        outputs[e].scale_offset, &hidden[e * kNetMaxHidden]);
      }
      int v = Decode ? 0 : img[at];
      for (const int k : running) {
        const int e = evaluation_of[k];
        v = ways[k].template code<Decode>(coders[k], v, predictions[predictor_of[k]], e < 0 ? none : outputs[e], c, y, x, at);
      }
      if constexpr (Decode) img[at] = static_cast<Sample>(v);
      for (auto& predictor : predictors) predictor.update(c, y, x);
    };
    if (channel_rows) {
      for (int c = 0; c < C; ++c)
        for (int x = 0; x < W; ++x) code_sample(c, x);
    } else {
      for (int x = 0; x < W; ++x)
        for (int c = 0; c < C; ++c) code_sample(c, x);
    }
  }
  std::vector<bool> finished(count, false);
  for (const int k : running) finished[k] = true;
  return finished;
}

}  // namespace unz
