// pybind11 bindings of the pillow-unz entropy coder: pillow_unz._coder.
// Arrays are used in place (no copies) and every loop runs without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "logistic.h"
#include "pixel_model.h"
#include "png_filter.h"
#include "range_coder.h"
#include "screen_model.h"

namespace py = pybind11;
using namespace unz;

namespace {

template <class T>
py::array_t<T> checked(const py::array& a, const char* name, int ndim) {
  if (!a.dtype().equal(py::dtype::of<T>()))  // equal, not the same object: unpickled arrays carry dtypes of their own
    throw py::value_error(std::string(name) + ": wrong dtype " + std::string(py::str(a.dtype())));
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(a.ndim()));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  return py::reinterpret_borrow<py::array_t<T>>(a);
}

py::bytes to_bytes(const std::vector<uint8_t>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}

// Table-driven CDFs: row `index` of an (M, K+1) array.
struct TableCdf {
  const int32_t* row;
  uint32_t operator()(int k) const { return static_cast<uint32_t>(row[k]); }
};

struct CdfTables {
  const int32_t* data;
  int rows, width;  // width = K + 1
  const int32_t* indexes;  // null: symbol i uses row i
  size_t count;

  CdfTables(const py::array& cdf, const py::object& idx) {
    auto c = checked<int32_t>(cdf, "cdf", 2);
    rows = static_cast<int>(c.shape(0));
    width = static_cast<int>(c.shape(1));
    if (width < 2 || width > 65537) throw py::value_error("cdf: rows must have 2 to 65537 entries");
    data = c.data();
    for (int r = 0; r < rows; ++r) {
      const int32_t* row = data + static_cast<size_t>(r) * width;
      if (row[0] != 0 || row[width - 1] != static_cast<int32_t>(kProbTotal))
        throw py::value_error("cdf: each row must run from 0 to 65536 (row " + std::to_string(r) + ")");
      for (int k = 1; k < width; ++k)
        if (row[k] < row[k - 1]) throw py::value_error("cdf: row " + std::to_string(r) + " decreases");
    }
    if (idx.is_none()) {
      indexes = nullptr;
      count = rows;
    } else {
      auto ix = checked<int32_t>(idx.cast<py::array>(), "indexes", 1);
      indexes = ix.data();
      count = ix.shape(0);
      for (size_t i = 0; i < count; ++i)
        if (indexes[i] < 0 || indexes[i] >= rows) throw py::value_error("indexes: out of range");
    }
  }
  TableCdf at(size_t i) const {
    return TableCdf{data + static_cast<size_t>(indexes ? indexes[i] : i) * width};
  }
};

py::bytes encode_cdf(const py::array& cdf, const py::array& symbols, const py::object& indexes) {
  const CdfTables t(cdf, indexes);
  auto s = checked<int32_t>(symbols, "symbols", 1);
  if (static_cast<size_t>(s.shape(0)) != t.count)
    throw py::value_error("symbols: length " + std::to_string(s.shape(0)) + " does not match " +
                          std::to_string(t.count) + " CDF rows");
  const int32_t* sym = s.data();
  const int K = t.width - 1;
  std::vector<uint8_t> out;
  {
    py::gil_scoped_release release;
    RangeEncoder enc(t.count);
    for (size_t i = 0; i < t.count; ++i) {
      const int32_t s = sym[i];
      if (s < 0 || s >= K) throw py::value_error("symbols: value out of range at " + std::to_string(i));
      const TableCdf c = t.at(i);
      const uint32_t start = c(s), stop = c(s + 1);
      if (stop == start) throw py::value_error("symbols: zero-probability symbol at " + std::to_string(i));
      enc.encode(start, stop - start);
    }
    out = enc.finish();
  }
  return to_bytes(out);
}

// For tables shared by many symbols, a slot -> symbol map replaces the bisection.
struct SlotLookup {
  std::vector<uint16_t> slots;  // kProbTotal entries per table
  explicit SlotLookup(const CdfTables& t) : slots(static_cast<size_t>(t.rows) * kProbTotal) {
    for (int r = 0; r < t.rows; ++r) {
      const int32_t* row = t.data + static_cast<size_t>(r) * t.width;
      uint16_t* out = slots.data() + static_cast<size_t>(r) * kProbTotal;
      for (int k = 0; k + 1 < t.width; ++k)
        std::fill(out + row[k], out + row[k + 1], static_cast<uint16_t>(k));
    }
  }
};

py::array_t<int32_t> decode_cdf(const py::array& cdf, const py::bytes& data, const py::object& indexes) {
  const CdfTables t(cdf, indexes);
  const std::string_view buf(data);
  py::array_t<int32_t> result(t.count);
  int32_t* out = result.mutable_data();
  const int K = t.width - 1;
  {
    py::gil_scoped_release release;
    RangeDecoder dec(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
    const bool lookup = K <= 65536 && t.count >= static_cast<size_t>(t.rows) * 4096;
    if (lookup) {
      const SlotLookup slots(t);
      for (size_t i = 0; i < t.count; ++i) {
        const size_t row = t.indexes ? t.indexes[i] : i;
        const int32_t* c = t.data + row * t.width;
        const int s = slots.slots[row * kProbTotal + dec.target()];
        dec.consume(c[s], c[s + 1] - c[s]);
        out[i] = s;
      }
    } else {
      for (size_t i = 0; i < t.count; ++i) out[i] = code_symbol<true>(dec, t.at(i), K, 0);
    }
    dec.finish();
  }
  return result;
}

// Discretized logistics from per-symbol (mean in 1/8 units, scale index), computed in C++.
struct LogisticParams {
  const int32_t* mean8;
  const int32_t* scale;
  size_t count;
  int num_symbols;
  LogisticParams(const py::array& m, const py::array& s, int n) {
    auto ma = checked<int32_t>(m, "mean8", 1);
    auto sa = checked<int32_t>(s, "scale_index", 1);
    if (ma.shape(0) != sa.shape(0)) throw py::value_error("mean8 and scale_index differ in length");
    if (n < 2 || n > 4096) throw py::value_error("num_symbols must be in 2..4096");
    mean8 = ma.data();
    scale = sa.data();
    count = ma.shape(0);
    num_symbols = n;
    for (size_t i = 0; i < count; ++i)
      if (scale[i] < 0 || scale[i] >= kNumScales) throw py::value_error("scale_index out of range");
  }
  LogisticCdf at(size_t i) const { return LogisticCdf(mean8[i], scale[i], num_symbols); }
};

py::bytes encode_logistic(const py::array& symbols, const py::array& mean8, const py::array& scale, int n) {
  const LogisticParams p(mean8, scale, n);
  auto s = checked<int32_t>(symbols, "symbols", 1);
  if (static_cast<size_t>(s.shape(0)) != p.count) throw py::value_error("symbols: wrong length");
  const int32_t* sym = s.data();
  std::vector<uint8_t> out;
  {
    py::gil_scoped_release release;
    RangeEncoder enc;
    for (size_t i = 0; i < p.count; ++i) {
      if (sym[i] < 0 || sym[i] >= n) throw py::value_error("symbols: value out of range");
      code_symbol<false>(enc, p.at(i), n, sym[i]);
    }
    out = enc.finish();
  }
  return to_bytes(out);
}

py::array_t<int32_t> decode_logistic(const py::bytes& data, const py::array& mean8, const py::array& scale, int n) {
  const LogisticParams p(mean8, scale, n);
  const std::string_view buf(data);
  py::array_t<int32_t> result(p.count);
  int32_t* out = result.mutable_data();
  {
    py::gil_scoped_release release;
    RangeDecoder dec(reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
    for (size_t i = 0; i < p.count; ++i) {
      const LogisticCdf cdf = p.at(i);
      out[i] = code_symbol<true>(dec, cdf, n, 0, cdf.mode());
    }
    dec.finish();
  }
  return result;
}

// The context network of C channels from a sequence of layers (weights (C, outputs, inputs)
// int16, bias (C, outputs) int32, shift), the first taking kNarrowContextSize or kContextSize
// inputs (ClassicalPredictor::context) and the last giving kNetOutputs; None: no network.
// Refuses weights beyond the bounds that keep its sums inside int32.
std::unique_ptr<ContextNetwork> context_network(const py::object& layers, int C, int bits,
                                                const NetworkKernels& kernels = network_kernels().front()) {
  if (layers.is_none()) return nullptr;
  if (bits != 8) throw py::value_error("the context network codes 8-bit samples only");
  std::vector<ContextNetwork::Layer> out;
  int width = kContextSize;
  const auto list = layers.cast<py::list>();
  for (size_t l = 0; l < list.size(); ++l) {
    const auto t = list[l].cast<py::tuple>();
    if (t.size() != 3) throw py::value_error("network: each layer is (weights, bias, shift)");
    auto w = checked<int16_t>(t[0].cast<py::array>(), "network weights", 3);
    auto b = checked<int32_t>(t[1].cast<py::array>(), "network bias", 2);
    const int outputs = static_cast<int>(w.shape(1)), shift = t[2].cast<int>();
    if (l == 0 && w.shape(2) == kNarrowContextSize) width = kNarrowContextSize;
    if (w.shape(0) != C || w.shape(2) != width || b.shape(0) != C || b.shape(1) != outputs || outputs < 1 ||
        outputs > kNetMaxWidth)
      throw py::value_error("network: layer shapes do not chain");
    if (shift < 0 || shift > kNetMaxShift) throw py::value_error("network: shift out of range");
    ContextNetwork::Layer layer{width, outputs, shift, l + 1 == list.size(), {}, {}};
    layer.weights.assign(static_cast<size_t>(C) * layer.pairs() * layer.padded_outputs() * 2, 0);
    layer.bias.assign(static_cast<size_t>(C) * layer.padded_outputs(), 0);
    for (int c = 0; c < C; ++c)
      for (int o = 0; o < outputs; ++o) {
        for (int i = 0; i < width; ++i) {
          const int16_t v = w.data()[(static_cast<size_t>(c) * outputs + o) * width + i];
          if (std::abs(v) > kNetWeightLimit) throw py::value_error("network: weight out of range");
          layer.weights[layer.index(c, o, i)] = v;
        }
        const int32_t v = b.data()[static_cast<size_t>(c) * outputs + o];
        if (std::abs(v) > kNetBiasLimit) throw py::value_error("network: bias out of range");
        layer.bias[layer.bias_index(c, o)] = v;
      }
    out.push_back(std::move(layer));
    width = outputs;
  }
  if (out.empty() || out.size() > kNetMaxLayers || width != kNetOutputs)
    throw py::value_error("network: 1 to " + std::to_string(kNetMaxLayers) + " layers, the last with " +
                          std::to_string(kNetOutputs) + " outputs");
  return std::make_unique<ContextNetwork>(std::move(out), kernels);
}

// The pixel model's arguments for bands of `rows` rows of W samples: params (P, rows, W), or
// (P,) for the same parameters at every pixel; the scale table (C, A, B, S); the context
// network's layers, or None.
struct PixelArgs {
  int C;
  Parameters params;
  const int32_t* table;
  std::unique_ptr<ContextNetwork> network;
  PixelArgs(const py::array& params_arr, const py::array& table_arr, const py::object& network_layers, int channels,
            int rows, int W, int bits) {
    C = channels;
    if (C < 1 || C > kMaxChannels) throw py::value_error("channels must be 1..4");
    const bool constant = params_arr.ndim() == 1;
    auto p = checked<int32_t>(params_arr, "params", constant ? 1 : 3);
    if (p.shape(0) != num_param_planes(C))
      throw py::value_error("params: expected " + std::to_string(num_param_planes(C)) + " planes");
    if (!constant && (p.shape(1) != rows || p.shape(2) != W))
      throw py::value_error("params must cover the rows of the bands to code");
    auto t = checked<int32_t>(table_arr, "scale_table", 4);
    if (t.shape(0) != C || t.shape(1) != kActivityBuckets || t.shape(2) != kCrossBuckets ||
        t.shape(3) != kSpreadBuckets)
      throw py::value_error("scale_table: wrong shape");
    params = constant ? Parameters{p.data(), 1, 0} : Parameters{p.data(), static_cast<size_t>(rows) * W, 1};
    table = t.data();
    network = context_network(network_layers, C, bits);
  }
};

// Runs job(i) for i in [0, n) on up to `threads` threads; rethrows the first exception.
template <class Job>
void parallel_for(int n, int threads, const Job& job) {
  std::atomic<int> next{0};
  std::vector<std::exception_ptr> errors(n);
  const auto worker = [&] {
    for (int i; (i = next++) < n;) {
      try {
        job(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::min(threads, n); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// The bands of an image of `height` rows, `band_height` rows at most, checked.
Bands bands_of(int height, int band_height) {
  if (height < 0) throw py::value_error("height must not be negative");
  if (band_height < 1 || band_height > kMaxBandHeight)
    throw py::value_error("band_height must be 1 to " + std::to_string(kMaxBandHeight));
  return {height, band_height};
}

// Band `band` of an image of W samples a row: its rows, and where its first sample lies.
struct Band {
  int number, first, rows;
  size_t offset;
  Band(const Bands& bands, int W, int band)
      : number(band), first(bands.start(band)), rows(bands.start(band + 1) - first),
        offset(static_cast<size_t>(first) * W) {}
};

// Bands [first, first + count) of an image, and the rows they cover.
struct BandRange {
  int first, count;
  size_t row_offset;  // first row of the range, times W
  int rows;
  BandRange(const Bands& bands, int W, int first_band, int band_count) : first(first_band), count(band_count) {
    if (first < 0 || count < 0 || first + count > bands.count()) throw py::value_error("band range out of the image");
    row_offset = static_cast<size_t>(bands.start(first)) * W;
    rows = bands.start(first + count) - bands.start(first);
  }
};

template <class Sample = uint8_t>
py::array_t<Sample> writeable_planes(py::array& out, int max_channels) {
  auto planes = checked<Sample>(out, "out", 3);
  if (!planes.writeable()) throw py::value_error("out: must be writeable");
  if (planes.shape(0) < 1 || planes.shape(0) > max_channels)
    throw py::value_error("out: 1 to " + std::to_string(max_channels) + " planes");
  return planes;
}

// The range-coded streams of bands [first_band, first_band + count) of an image of H rows of W
// samples, coded `ways` ways at once by code(encoders, band) (one encoder per way), which says
// which ways coded the whole band, on up to `threads` threads: for each way, the list of its
// band streams, None where the way left the band unfinished (code_pixels' race).
template <class CodeBand>
std::vector<py::list> encode_bands_ways(const Bands& bands, int W, int first_band, int count, int threads, int ways,
                                        const CodeBand& code) {
  std::vector<std::vector<std::optional<std::vector<uint8_t>>>> out(count);
  {
    py::gil_scoped_release release;
    parallel_for(count, threads, [&](int i) {
      const Band b(bands, W, first_band + i);
      std::vector<RangeEncoder> encoders(ways);
      const std::vector<bool> finished = code(encoders.data(), b);
      for (int k = 0; k < ways; ++k)
        out[i].push_back(finished[k] ? std::optional(encoders[k].finish()) : std::nullopt);
    });
  }
  std::vector<py::list> streams(ways);
  for (const auto& band : out)
    for (int k = 0; k < ways; ++k) streams[k].append(band[k] ? py::object(to_bytes(*band[k])) : py::none());
  return streams;
}

// The same, one way: code(encoder, band).
template <class CodeBand>
py::list encode_bands(const Bands& bands, int W, int first_band, int count, int threads, const CodeBand& code) {
  return encode_bands_ways(bands, W, first_band, count, threads, 1, [&](RangeEncoder* encoders, const Band& b) {
    code(encoders[0], b);
    return std::vector<bool>{true};
  })[0];
}

// Decodes streams of bands [first_band, first_band + len(streams)) by code(decoder, band); a
// None stream is a band left to another tool.
template <class CodeBand>
void decode_bands(const py::list& streams, const Bands& bands, int W, int first_band, int threads, const CodeBand& code) {
  std::vector<std::string_view> buffers;
  std::vector<bool> skip;
  for (const auto& s : streams) {
    skip.push_back(s.is_none());
    buffers.push_back(s.is_none() ? std::string_view() : s.cast<std::string_view>());  // the list holds the bytes
  }
  py::gil_scoped_release release;
  parallel_for(static_cast<int>(buffers.size()), threads, [&](int i) {
    if (skip[i]) return;
    const Band b(bands, W, first_band + i);
    RangeDecoder dec(reinterpret_cast<const uint8_t*>(buffers[i].data()), buffers[i].size());
    code(dec, b);
    dec.finish();
  });
}

// The sample type of `bits`-bit planes: uint8 for 8 bits, uint16 for 9 to 16.
void check_sample_bits(const py::array& planes, int bits, int context_shift) {
  if (bits < 8 || bits > kMaxBits) throw py::value_error("bits must be 8 to 16");
  if (context_shift < 0 || context_shift > bits - 8) throw py::value_error("context_shift must be 0 to bits - 8");
  if (!planes.dtype().equal(bits == 8 ? py::dtype::of<uint8_t>() : py::dtype::of<uint16_t>()))
    throw py::value_error("planes of " + std::to_string(bits) + "-bit samples must be " + (bits == 8 ? "uint8" : "uint16"));
}

void check_stats_key(int key) {
  if (key < 0 || key >= kNumStatsKeys) throw py::value_error("unknown statistics key " + std::to_string(key));
}

void check_fit_memory(int memory) {
  using Fit = OnlineLeastSquares<kMaxInputs>;
  if (memory < Fit::kMinMemoryBits || memory > Fit::kMaxMemoryBits)
    throw py::value_error("fit memory must be " + std::to_string(Fit::kMinMemoryBits) + " to " +
                          std::to_string(Fit::kMaxMemoryBits) + ", got " + std::to_string(memory));
}

void check_revision(int revision) {
  if (revision < 5 || revision > kLatestRevision)
    throw py::value_error("no coding of samples for format version " + std::to_string(revision));
}

// Codings (pixel_model.h) from (network layers or None, statistics key[, fit memory]) tuples,
// each network parsed once into `networks`, which must outlive them.
std::vector<Coding> codings_of(const py::list& pairs, int C, int bits, int revision,
                               std::vector<std::unique_ptr<ContextNetwork>>& networks) {
  if (pairs.empty()) throw py::value_error("codings: at least one");
  std::vector<Coding> codings;
  std::vector<py::object> seen;  // the layer objects parsed, in networks' order
  for (const auto& item : pairs) {
    const auto way = item.cast<py::tuple>();
    if (way.size() != 2 && way.size() != 3) throw py::value_error("codings: (network, statistics key[, fit memory]) tuples");
    const py::object layers = way[0];
    const int key = way[1].cast<int>(), memory = way.size() == 3 ? way[2].cast<int>() : kDefaultFitMemory;
    check_stats_key(key);
    check_fit_memory(memory);
    const ContextNetwork* network = nullptr;
    if (!layers.is_none()) {
      auto known = std::find_if(seen.begin(), seen.end(), [&](const py::object& o) { return o.is(layers); });
      if (known == seen.end()) {
        networks.push_back(context_network(layers, C, bits));
        seen.push_back(layers);
        known = seen.end() - 1;
      }
      network = networks[known - seen.begin()].get();
    }
    codings.push_back({network, key, revision, memory});
  }
  return codings;
}

template <class Sample>
std::vector<py::list> encode_pixels_of(const py::array& planes, const py::array& params, const py::array& table,
                                       const py::list& pairs, int revision, int threads, int first_band, int count,
                                       int band_height, int bits, int context_shift, int race_rows) {
  auto img = checked<Sample>(planes, "planes", 3);
  const int H = static_cast<int>(img.shape(1)), W = static_cast<int>(img.shape(2));
  const Bands bands = bands_of(H, band_height);
  if (count < 0) count = bands.count() - first_band;
  const BandRange range(bands, W, first_band, count);
  const PixelArgs a(params, table, py::none(), static_cast<int>(img.shape(0)), range.rows, W, bits);
  std::vector<std::unique_ptr<ContextNetwork>> networks;
  const std::vector<Coding> codings = codings_of(pairs, a.C, bits, revision, networks);
  Sample* data = const_cast<Sample*>(img.data());  // read only: Decode=false never writes
  const size_t plane = static_cast<size_t>(H) * W;
  if (bits > 8 && *std::max_element(data, data + a.C * plane) >> bits)
    throw py::value_error("planes: a sample has more than " + std::to_string(bits) + " bits");
  const int ways = static_cast<int>(codings.size());
  return encode_bands_ways(bands, W, first_band, count, threads, ways, [&](RangeEncoder* encoders, const Band& b) {
    return code_pixels<false>(encoders, codings.data(), ways, data + b.offset, a.params.from(b.offset - range.row_offset),
                              plane, a.C, b.rows, W, a.table, bits, context_shift, race_rows);
  });
}

// The photo tool's streams of bands [first_band, first_band + count) (count -1: to the last band)
// of planes (C, H, W) of `bits`-bit samples, coded with params (P, rows, W) for exactly those
// bands' rows (so that the caller computes parameter planes for a few bands at a time, never
// for the whole image), or (P,) for the same parameters at every pixel; network: the context
// network's layers (context_network), or None; stats_key: the cells' second stage (StatsKey);
// fit_memory: the classical prediction's (ClassicalPredictor). With codings, a list of (network
// layers or None, statistics key[, fit memory]) instead of network, stats_key and fit_memory, the
// bands are coded every such way at once, over one classical prediction per fit memory: a list
// of streams per coding; with race_rows > 0, of each fit memory's ways only the one whose
// stream is the shortest after that many rows of a band codes the rest of it, and the others'
// streams of the band are None (code_pixels). revision: the format version whose coding of samples to use
// (Coding::revision; 5 to kLatestRevision). band_height: the most rows a band has (Bands).
py::object encode_pixels(const py::array& planes, const py::array& params, const py::array& table, int threads,
                         int first_band, int count, int bits, int context_shift, const py::object& network,
                         int stats_key, int fit_memory, const py::object& codings, int revision, int band_height,
                         int race_rows) {
  check_sample_bits(planes, bits, context_shift);
  check_revision(revision);
  if (race_rows < 0) throw py::value_error("race_rows must be 0 or more");
  py::list pairs;
  if (codings.is_none()) {
    pairs.append(py::make_tuple(network, stats_key, fit_memory));
  } else {
    if (!network.is_none() || stats_key != kNoKey || fit_memory != kDefaultFitMemory)
      throw py::value_error("give network, stats_key and fit_memory, or codings, not both");
    pairs = codings.cast<py::list>();
  }
  const auto streams = bits == 8 ? encode_pixels_of<uint8_t>(planes, params, table, pairs, revision, threads, first_band, count, band_height, bits, context_shift, race_rows)
                                 : encode_pixels_of<uint16_t>(planes, params, table, pairs, revision, threads, first_band, count, band_height, bits, context_shift, race_rows);
  if (codings.is_none()) return streams[0];
  py::list per_coding;
  for (const auto& s : streams) per_coding.append(s);
  return per_coding;
}

// Where the bands [first_band, first_band + count) of an image of `height` rows (-1: as many as
// `out` has), `band_height` rows at most, go: `out` (C, R, W) holds rows [top, top + R) of the
// image, which must cover them.
struct OutputWindow {
  Bands bands;
  BandRange range;
  size_t origin;  // offset of out's first row in the image, times W
  OutputWindow(const py::array& out, int height, int band_height, int top, int first_band, int count)
      : bands(bands_of(height < 0 ? static_cast<int>(out.shape(1)) : height, band_height)),
        range(bands, static_cast<int>(out.shape(2)), first_band, count),
        origin(static_cast<size_t>(std::max(top, 0)) * out.shape(2)) {
    const int64_t first_row = bands.start(first_band);
    if (top < 0 || first_row < top || first_row + range.rows > top + static_cast<int64_t>(out.shape(1)))
      throw py::value_error("out must hold the rows of the bands");
  }
};

template <class Sample>
void decode_pixels_of(const py::list& streams, const py::array& params, const py::array& table,
                      const py::object& network, const py::object& networks, const std::vector<int>& stats_keys,
                      const std::vector<int>& fit_memories, int revision, int threads, py::array& out, int first_band,
                      int bits, int context_shift, int height, int band_height, int top) {
  auto planes = writeable_planes<Sample>(out, kMaxChannels);
  const int W = static_cast<int>(planes.shape(2));
  const OutputWindow window(planes, height, band_height, top, first_band, static_cast<int>(streams.size()));
  const PixelArgs a(params, table, network, static_cast<int>(planes.shape(0)), window.range.rows, W, bits);
  // Each stream's context network: one call decodes bands of different networks side by side.
  std::vector<std::unique_ptr<ContextNetwork>> per_stream;
  if (!networks.is_none()) {
    if (!network.is_none()) throw py::value_error("give network (every band's) or networks (each band's), not both");
    const auto list = networks.cast<py::list>();
    if (list.size() != streams.size()) throw py::value_error("networks: one per stream");
    for (const auto& layers : list) per_stream.push_back(context_network(py::reinterpret_borrow<py::object>(layers), a.C, bits));
  }
  if (!stats_keys.empty() && stats_keys.size() != streams.size()) throw py::value_error("stats_keys: one per stream");
  for (const int key : stats_keys) check_stats_key(key);
  if (!fit_memories.empty() && fit_memories.size() != streams.size()) throw py::value_error("fit_memories: one per stream");
  for (const int memory : fit_memories) check_fit_memory(memory);
  Sample* data = planes.mutable_data();
  const size_t plane = static_cast<size_t>(planes.shape(1)) * W;
  decode_bands(streams, window.bands, W, first_band, threads, [&](RangeDecoder& dec, const Band& b) {
    const int i = b.number - first_band;
    const ContextNetwork* net = per_stream.empty() ? a.network.get() : per_stream[i].get();
    const Coding coding{net, stats_keys.empty() ? kNoKey : stats_keys[i], revision,
                        fit_memories.empty() ? kDefaultFitMemory : fit_memories[i]};
    code_pixels<true>(&dec, &coding, 1, data + (b.offset - window.origin),
                      a.params.from(b.offset - window.range.row_offset), plane, a.C, b.rows, W, a.table, bits,
                      context_shift);
  });
}

// Decodes the photo tool's streams of bands [first_band, first_band + len(streams)) of an image
// of `height` rows into `out` of `bits`-bit samples, rows [top, ...) of the image, in place
// (OutputWindow), with params (P, rows, W) for exactly those bands' rows, or (P,), and the
// context network's layers for every band (network), or one entry per stream (networks: layers
// or None), or neither (the classical model); stats_keys and fit_memories: each stream's (empty:
// none, and the default memory); revision: as encode_pixels's.
void decode_pixels(const py::list& streams, const py::array& params, const py::array& table, int threads,
                   py::array& out, int first_band, int bits, int context_shift, int height, int top,
                   const py::object& network, const py::object& networks, const std::vector<int>& stats_keys,
                   const std::vector<int>& fit_memories, int revision, int band_height) {
  check_sample_bits(out, bits, context_shift);
  check_revision(revision);
  if (bits == 8)
    decode_pixels_of<uint8_t>(streams, params, table, network, networks, stats_keys, fit_memories, revision, threads, out,
                              first_band, bits, context_shift, height, band_height, top);
  else
    decode_pixels_of<uint16_t>(streams, params, table, network, networks, stats_keys, fit_memories, revision, threads, out,
                               first_band, bits, context_shift, height, band_height, top);
}

// The screen tool's streams of bands [first_band, first_band + count) of planes (C, H, W).
py::list encode_screen(const py::array& planes, int threads, int first_band, int count, int band_height) {
  auto img = checked<uint8_t>(planes, "planes", 3);
  const int C = static_cast<int>(img.shape(0)), H = static_cast<int>(img.shape(1)), W = static_cast<int>(img.shape(2));
  if (C < 1 || C > kScreenMaxChannels) throw py::value_error("the screen tool codes 1 to 3 channels");
  const Bands bands = bands_of(H, band_height);
  if (count < 0) count = bands.count() - first_band;
  BandRange(bands, W, first_band, count);  // checks the range
  uint8_t* data = const_cast<uint8_t*>(img.data());  // read only: Decode=false never writes
  const size_t plane = static_cast<size_t>(H) * W;
  return encode_bands(bands, W, first_band, count, threads, [&](RangeEncoder& enc, const Band& b) {
    code_screen<false>(enc, data + b.offset, plane, C, b.rows, W);
  });
}

// Decodes the screen tool's streams of bands [first_band, first_band + len(streams)) into `out`
// (C, H, W), in place; None streams are skipped.
void decode_screen(const py::list& streams, int threads, py::array& out, int first_band, int height, int top,
                   int band_height) {
  auto planes = writeable_planes(out, kScreenMaxChannels);
  const int C = static_cast<int>(planes.shape(0)), W = static_cast<int>(planes.shape(2));
  const OutputWindow window(planes, height, band_height, top, first_band, static_cast<int>(streams.size()));
  uint8_t* data = planes.mutable_data();
  const size_t plane = static_cast<size_t>(planes.shape(1)) * W;
  decode_bands(streams, window.bands, W, first_band, threads, [&](RangeDecoder& dec, const Band& b) {
    code_screen<true>(dec, data + (b.offset - window.origin), plane, C, b.rows, W);
  });
}

// PNG filtering of rows (R, S) uint8 with `bpp` bytes per pixel: (R, S + 1), each row's filter
// type first.
py::array_t<uint8_t> png_filter_rows(const py::array& rows, int bpp) {
  auto in = checked<uint8_t>(rows, "rows", 2);
  const int R = static_cast<int>(in.shape(0));
  const size_t S = in.shape(1);
  if (bpp < 1 || S % bpp) throw py::value_error("rows: length must be a multiple of bpp");
  py::array_t<uint8_t> out({static_cast<size_t>(R), S + 1});
  uint8_t* o = out.mutable_data();
  py::gil_scoped_release release;
  png_filter(in.data(), R, S, bpp, o);
  return out;
}

// Inverse of png_filter_rows, from filtered bytes: (R, S).
py::array_t<uint8_t> png_unfilter_rows(const py::bytes& filtered, int rows, int stride, int bpp) {
  const std::string_view in(filtered);
  if (rows < 0 || stride < 1 || bpp < 1 || stride % bpp || in.size() != static_cast<size_t>(rows) * (stride + 1))
    throw CorruptStream("corrupt deflate band: wrong size");
  py::array_t<uint8_t> out({rows, stride});
  uint8_t* o = out.mutable_data();
  py::gil_scoped_release release;
  png_unfilter(reinterpret_cast<const uint8_t*>(in.data()), rows, stride, bpp, o);
  return out;
}

// Runs the classical predictor over every sample of planes (C, H, W), band by band as the coder
// does, and lets visit(predictor, prediction, c, y, x, out, block) write the sample's `outputs`
// values at out[0], out[block], ... of an (outputs, C, H, W) array, between predict and update.
template <class T, class Visit>
py::array_t<T> over_samples(const py::array& planes, int outputs, int threads, const Visit& visit) {
  auto img = checked<uint8_t>(planes, "planes", 3);
  const int C = static_cast<int>(img.shape(0)), H = static_cast<int>(img.shape(1)), W = static_cast<int>(img.shape(2));
  if (C < 1 || C > kMaxChannels) throw py::value_error("channels must be 1..4");
  py::array_t<T> result({outputs, C, H, W});
  T* out = result.mutable_data();
  {
    py::gil_scoped_release release;
    const size_t plane = static_cast<size_t>(H) * W, block = C * plane;
    const Bands bands{H};
    parallel_for(bands.count(), threads, [&](int i) {
      const Band b(bands, W, i);
      ClassicalPredictor<> predictor(img.data() + b.offset, plane, C, W);
      for (int y = 0; y < b.rows; ++y)
        for (int x = 0; x < W; ++x)
          for (int c = 0; c < C; ++c) {
            const Prediction p = predictor.predict(c, y, x);
            visit(predictor, p, c, y, x, out + c * plane + b.offset + static_cast<size_t>(y) * W + x, block);
            predictor.update(c, y, x);
          }
    });
  }
  return result;
}

// What the pixel model predicts for every sample before the network's correction (predictor.h):
// (3, C, H, W) int32 planes of mean8, spread and feedback. Training computes it once per image.
py::array_t<int32_t> classical_predictions(const py::array& planes, int threads) {
  return over_samples<int32_t>(planes, 3, threads,
                               [](ClassicalPredictor<>&, const Prediction& p, int, int, int, int32_t* out, size_t block) {
                                 out[0] = p.mean8;
                                 out[block] = p.spread;
                                 out[2 * block] = p.feedback;
                               });
}

// The learned model's context of every sample (ClassicalPredictor::context): (kContextSize, C,
// H, W) int16, clamped to +-32767. For training and probes.
py::array_t<int16_t> classical_contexts(const py::array& planes, int threads) {
  return over_samples<int16_t>(
      planes, kContextSize, threads,
      [](ClassicalPredictor<>& predictor, const Prediction&, int c, int y, int x, int16_t* out, size_t block) {
        int32_t context[kContextSize];
        predictor.context(c, y, x, context);
        for (int k = 0; k < kContextSize; ++k)
          out[k * block] = static_cast<int16_t>(std::clamp<int32_t>(context[k], -32767, 32767));
      });
}

// The context network's outputs at every sample of planes (C, H, W): (2, C, H, W) int32, the mean
// corrections and the scale-index offsets, as the coder computes them with `kernel` (one of
// context_kernels(); "": the coder's). For tests of the network's specification
// (pillow_unz.context_network.ContextNetwork.outputs) and for training.
py::array_t<int32_t> context_outputs(const py::array& planes, const py::object& network, int threads,
                                     const std::string& kernel) {
  const NetworkKernels* chosen = nullptr;
  for (const auto& kernels : network_kernels())
    if ((kernel.empty() && !chosen) || kernel == kernels.name) chosen = &kernels;
  if (!chosen) throw py::value_error("unknown kernel " + kernel);
  const auto net = context_network(network, static_cast<int>(checked<uint8_t>(planes, "planes", 3).shape(0)), 8, *chosen);
  if (!net) throw py::value_error("network: None");
  return over_samples<int32_t>(
      planes, kNetOutputs, threads,
      [&](ClassicalPredictor<>& predictor, const Prediction&, int c, int y, int x, int32_t* out, size_t block) {
        int32_t context[kContextSize];
        int16_t hidden[kNetMaxHidden];
        predictor.context(c, y, x, context);
        net->apply(c, context, out[0], out[block], hidden);
      });
}

template <size_t N>
py::tuple as_tuple(const int32_t (&v)[N]) {
  py::tuple t(N);
  for (size_t i = 0; i < N; ++i) t[i] = v[i];
  return t;
}

}  // namespace

PYBIND11_MODULE(_coder, m) {
  m.doc() = "pillow-unz range coder: table, logistic and pixel-model entropy coding";
  py::register_exception<CorruptStream>(m, "CorruptStream", PyExc_ValueError);
  m.attr("LATEST_REVISION") = kLatestRevision;  // the newest format version's coding of samples

  m.def("encode_cdf", &encode_cdf, py::arg("cdf"), py::arg("symbols"), py::arg("indexes") = py::none());
  m.def("decode_cdf", &decode_cdf, py::arg("cdf"), py::arg("data"), py::arg("indexes") = py::none());
  m.def("encode_logistic", &encode_logistic, py::arg("symbols"), py::arg("mean8"), py::arg("scale_index"),
        py::arg("num_symbols"));
  m.def("decode_logistic", &decode_logistic, py::arg("data"), py::arg("mean8"), py::arg("scale_index"),
        py::arg("num_symbols"));
  m.def("num_param_planes", &num_param_planes, py::arg("channels"), "Network parameter planes the pixel model takes");
  m.def("num_bands", [](int height, int band_height) { return bands_of(height, band_height).count(); }, py::arg("height"),
        py::arg("band_height") = kBandRows, "How many bands of rows (independent streams) an image has");
  m.def("band_start", [](int height, int band, int band_height) { return bands_of(height, band_height).start(band); },
        py::arg("height"), py::arg("band"), py::arg("band_height") = kBandRows,
        "The first row of a band (band_start(H, num_bands(H)) == H)");
  m.def("classical_predictions", &classical_predictions, py::arg("planes"), py::arg("threads") = 1);
  m.def("classical_contexts", &classical_contexts, py::arg("planes"), py::arg("threads") = 1);
  m.def("context_outputs", &context_outputs, py::arg("planes"), py::arg("network"), py::arg("threads") = 1,
        py::arg("kernel") = "");
  m.def("context_kernels", [] {
    py::list names;
    for (const auto& kernels : network_kernels()) names.append(kernels.name);
    return names;
  }, "The context network's kernels this processor runs, the coder's first");
  m.def("encode_pixels", &encode_pixels, py::arg("planes"), py::arg("params"), py::arg("scale_table"),
        py::arg("threads") = 1, py::arg("first_band") = 0, py::arg("count") = -1, py::arg("bits") = 8,
        py::arg("context_shift") = 0, py::arg("network") = py::none(), py::arg("stats_key") = 0,
        py::arg("fit_memory") = kDefaultFitMemory, py::arg("codings") = py::none(), py::arg("revision") = kLatestRevision, py::arg("band_height") = kBandRows,
        py::arg("race_rows") = 0);
  m.def("decode_pixels", &decode_pixels, py::arg("streams"), py::arg("params"), py::arg("scale_table"),
        py::arg("threads"), py::arg("out"), py::arg("first_band") = 0, py::arg("bits") = 8,
        py::arg("context_shift") = 0, py::arg("height") = -1, py::arg("top") = 0, py::arg("network") = py::none(),
        py::arg("networks") = py::none(), py::arg("stats_keys") = std::vector<int>(),
        py::arg("fit_memories") = std::vector<int>(), py::arg("revision") = kLatestRevision,
        py::arg("band_height") = kBandRows);
  m.def("encode_screen", &encode_screen, py::arg("planes"), py::arg("threads") = 1, py::arg("first_band") = 0,
        py::arg("count") = -1, py::arg("band_height") = kBandRows);
  m.def("decode_screen", &decode_screen, py::arg("streams"), py::arg("threads"), py::arg("out"),
        py::arg("first_band") = 0, py::arg("height") = -1, py::arg("top") = 0, py::arg("band_height") = kBandRows);
  m.def("png_filter", &png_filter_rows, py::arg("rows"), py::arg("bpp"));
  m.def("png_unfilter", &png_unfilter_rows, py::arg("filtered"), py::arg("rows"), py::arg("stride"), py::arg("bpp"));

  m.attr("PROB_BITS") = kProbBits;
  m.attr("NUM_SCALES") = kNumScales;
  m.attr("MAX_BITS") = kMaxBits;
  m.attr("SCALE_LOG2_MIN") = kScaleLog2Min;
  m.attr("PRIOR_MAD") = as_tuple(kPriorMad);
  m.attr("LOG8_THRESHOLDS") = as_tuple(kLog8Thresholds);
  m.attr("ADAPT_PRIOR") = kAdaptPrior;
  m.attr("ADAPT_MAX_STEP") = kAdaptMaxStep;
  m.attr("BIAS_PRIOR") = kBiasPrior;
  m.attr("NUM_STATS_KEYS") = kNumStatsKeys;
  m.attr("DEFAULT_FIT_MEMORY") = kDefaultFitMemory;
  m.attr("MIN_FIT_MEMORY") = OnlineLeastSquares<kMaxInputs>::kMinMemoryBits;
  m.attr("MAX_FIT_MEMORY") = OnlineLeastSquares<kMaxInputs>::kMaxMemoryBits;
  m.attr("PIXEL_MODEL_REVISION") = kPixelModelRevision;
  m.attr("INV_SCALE_ONE_LOG2") = kInvScaleOneLog2;
  m.attr("INV_SCALE") = as_tuple(kInvScale);
  m.attr("NUM_PREDICTORS") = kNumPredictors;
  m.attr("ACTIVITY_EDGES") = as_tuple(kActivityEdges);
  m.attr("CROSS_EDGES") = as_tuple(kCrossEdges);
  m.attr("SPREAD_EDGES") = as_tuple(kSpreadEdges);
  m.attr("BETA_FRAC_BITS") = kBetaFracBits;
  m.attr("BAND_ROWS") = kBandRows;
  m.attr("MAX_BAND_HEIGHT") = kMaxBandHeight;
  m.attr("CONTEXT_SIZE") = kContextSize;
  m.attr("NARROW_CONTEXT_SIZE") = kNarrowContextSize;
  m.attr("NET_INPUT_LIMIT") = kNetInputLimit;
  m.attr("NET_ACTIVATION_LIMIT") = kNetActivationLimit;
  m.attr("NET_WEIGHT_LIMIT") = kNetWeightLimit;
  m.attr("NET_BIAS_LIMIT") = kNetBiasLimit;
  m.attr("NET_MAX_WIDTH") = kNetMaxWidth;
  m.attr("NET_MAX_LAYERS") = kNetMaxLayers;
  m.attr("NET_MAX_SHIFT") = kNetMaxShift;
  m.attr("NET_MAX_CORRECTION") = kNetMaxCorrection;
  m.attr("NET_MAX_SCALE_OFFSET") = kNetMaxScaleOffset;
}
