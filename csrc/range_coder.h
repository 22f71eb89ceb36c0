// A carry-propagating range coder (the LZMA construction) with 16-bit frequencies.
//
// The encoder's first byte is always 0 and the decoder reads exactly the bytes the encoder
// wrote, so a decoder that needs a byte past the end has a truncated stream and one that
// finishes early has trailing garbage: both are reported, never read out of bounds.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

namespace unz {

constexpr int kProbBits = 16;
constexpr uint32_t kProbTotal = 1u << kProbBits;

// Thrown for any stream that this decoder cannot have produced; bound to ValueError.
struct CorruptStream : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class RangeEncoder {
 public:
  explicit RangeEncoder(size_t expected_bytes = 0) { out_.reserve(expected_bytes + 8); }

  // Codes the interval [start, start + freq) out of kProbTotal; freq must be > 0.
  void encode(uint32_t start, uint32_t freq) {
    const uint32_t r = range_ >> kProbBits;
    low_ += static_cast<uint64_t>(r) * start;
    range_ = r * freq;
    while (range_ < (1u << 24)) {
      range_ <<= 8;
      shift_low();
    }
  }
  // A binary decision, 1 with probability p / kProbTotal (0 < p < kProbTotal): [0, p) for a 1,
  // [p, kProbTotal) for a 0.
  void encode_bit(int bit, uint32_t p) { bit ? encode(0, p) : encode(p, kProbTotal - p); }

  // The bytes written so far and those held back for a carry: the stream's length, to a few bytes.
  size_t bytes() const { return out_.size() + pending_; }

  std::vector<uint8_t> finish() {
    for (int i = 0; i < 5; ++i) shift_low();
    return std::move(out_);
  }

 private:
  void shift_low() {
    if (static_cast<uint32_t>(low_) < 0xFF000000u || (low_ >> 32) != 0) {
      const uint8_t carry = static_cast<uint8_t>(low_ >> 32);
      uint8_t byte = cache_;
      do {
        out_.push_back(static_cast<uint8_t>(byte + carry));
        byte = 0xFF;
      } while (--pending_ != 0);
      cache_ = static_cast<uint8_t>(low_ >> 24);
    }
    ++pending_;
    low_ = (low_ & 0x00FFFFFFu) << 8;
  }

  uint64_t low_ = 0;
  uint32_t range_ = 0xFFFFFFFFu;
  uint8_t cache_ = 0;
  uint64_t pending_ = 1;
  std::vector<uint8_t> out_;
};

class RangeDecoder {
 public:
  RangeDecoder(const uint8_t* data, size_t size) : p_(data), end_(data + size) {
    if (size < 5 || data[0] != 0) throw CorruptStream("not a range-coded stream (bad first byte or too short)");
    ++p_;
    for (int i = 0; i < 4; ++i) code_ = (code_ << 8) | next_byte();
  }

  // The target frequency in [0, kProbTotal) of the next symbol; call consume() after.
  uint32_t target() {
    r_ = range_ >> kProbBits;
    const uint32_t v = code_ / r_;
    if (v >= kProbTotal) throw CorruptStream("corrupt range-coded stream");
    return v;
  }

  void consume(uint32_t start, uint32_t freq) {
    code_ -= r_ * start;
    range_ = r_ * freq;
    normalise();
  }
  // A binary decision that RangeEncoder::encode_bit coded with the same p. (A comparison where
  // target() takes a division.)
  int decode_bit(uint32_t p) {
    const uint32_t r = range_ >> kProbBits, bound = r * p;
    const int bit = code_ < bound;
    if (bit) {
      range_ = bound;
    } else {
      code_ -= bound;
      range_ = r * (kProbTotal - p);
      if (code_ >= range_) throw CorruptStream("corrupt range-coded stream");
    }
    normalise();
    return bit;
  }

  // Every byte must have been used: leftovers mean the stream is not what was encoded.
  void finish() const {
    if (p_ != end_) throw CorruptStream("range-coded stream has trailing bytes");
  }

 private:
  void normalise() {
    while (range_ < (1u << 24)) {
      code_ = (code_ << 8) | next_byte();
      range_ <<= 8;
    }
  }
  uint8_t next_byte() {
    if (p_ == end_) throw CorruptStream("range-coded stream is truncated");
    return *p_++;
  }

  const uint8_t* p_;
  const uint8_t* end_;
  uint32_t range_ = 0xFFFFFFFFu;
  uint32_t code_ = 0;
  uint32_t r_ = 0;
};

// Finds the symbol s in [0, num_symbols) with cdf(s) <= target < cdf(s + 1), where cdf is any
// non-decreasing function with cdf(0) = 0 and cdf(num_symbols) = kProbTotal. With a hint (the
// likeliest symbol, say), it gallops outwards from there first: few evaluations when the
// distribution is peaked around the hint, never more than twice bisection's.
template <class Cdf>
inline int find_symbol(const Cdf& cdf, int num_symbols, uint32_t target, int hint = -1) {
  int lo = 0, hi = num_symbols;  // invariant: cdf(lo) <= target < cdf(hi)
  if (hint >= 0 && hint < num_symbols) {
    if (cdf(hint) <= target) {
      lo = hint;
      for (int step = 1;; step *= 2) {
        const int probe = lo + step;
        if (probe >= num_symbols) break;  // hi stays num_symbols
        if (cdf(probe) > target) {
          hi = probe;
          break;
        }
        lo = probe;
      }
    } else {
      hi = hint;
      for (int step = 1;; step *= 2) {
        const int probe = hi - step;
        if (probe <= 0) break;  // lo stays 0
        if (cdf(probe) <= target) {
          lo = probe;
          break;
        }
        hi = probe;
      }
    }
  }
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (cdf(mid) <= target) lo = mid; else hi = mid;
  }
  return lo;
}

// Codes one symbol under `cdf`, the same call on both sides, so that encoder and decoder cannot
// drift apart: Decode ignores `symbol` and returns the decoded one (searching from `hint`).
template <bool Decode, class Coder, class Cdf>
inline int code_symbol(Coder& coder, const Cdf& cdf, int num_symbols, int symbol, int hint = -1) {
  if constexpr (Decode) {
    const uint32_t target = coder.target();
    symbol = find_symbol(cdf, num_symbols, target, hint);
  }
  const uint32_t start = cdf(symbol);
  const uint32_t stop = cdf(symbol + 1);
  if constexpr (Decode) {
    if (stop <= start) throw CorruptStream("corrupt stream: zero-probability symbol");
    coder.consume(start, stop - start);
  } else {
    coder.encode(start, stop - start);
  }
  return symbol;
}

}  // namespace unz
