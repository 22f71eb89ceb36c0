// PNG's row filters (RFC 2083, section 6), for the deflate tool: rows of `stride` bytes, `bpp`
// bytes per pixel; each filtered row is its filter type byte, then `stride` filtered bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "range_coder.h"

namespace unz {

constexpr int kPngFilters = 5;  // None, Sub, Up, Average, Paeth

inline int paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// The prediction of byte i of a row by filter f, from the bytes already known: a (left), b (up),
// c (up-left); up is null on the first row.
inline int png_predict(int f, const uint8_t* row, const uint8_t* up, size_t i, int bpp) {
  const int a = i >= static_cast<size_t>(bpp) ? row[i - bpp] : 0, b = up ? up[i] : 0;
  const int c = up && i >= static_cast<size_t>(bpp) ? up[i - bpp] : 0;
  switch (f) {
    case 1: return a;
    case 2: return b;
    case 3: return (a + b) >> 1;
    case 4: return paeth(a, b, c);
    default: return 0;
  }
}

// Filters every row with the filter that gives the least sum of |filtered bytes as signed|
// (libpng's heuristic). out: rows * (stride + 1) bytes.
inline void png_filter(const uint8_t* in, int rows, size_t stride, int bpp, uint8_t* out) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t* row = in + y * stride;
    const uint8_t* up = y > 0 ? row - stride : nullptr;
    int best = 0;
    long best_cost = -1;
    for (int f = 0; f < kPngFilters; ++f) {
      long cost = 0;
      for (size_t i = 0; i < stride; ++i) cost += std::abs(static_cast<int8_t>(row[i] - png_predict(f, row, up, i, bpp)));
      if (best_cost < 0 || cost < best_cost) best = f, best_cost = cost;
    }
    uint8_t* o = out + y * (stride + 1);
    o[0] = static_cast<uint8_t>(best);
    for (size_t i = 0; i < stride; ++i) o[i + 1] = static_cast<uint8_t>(row[i] - png_predict(best, row, up, i, bpp));
  }
}

// Inverse of png_filter; a filter type above 4 is a corrupt stream.
inline void png_unfilter(const uint8_t* in, int rows, size_t stride, int bpp, uint8_t* out) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t* f = in + y * (stride + 1);
    if (f[0] >= kPngFilters) throw CorruptStream("corrupt deflate band: unknown row filter");
    uint8_t* row = out + y * stride;
    const uint8_t* up = y > 0 ? row - stride : nullptr;
    for (size_t i = 0; i < stride; ++i) row[i] = static_cast<uint8_t>(f[i + 1] + png_predict(f[0], row, up, i, bpp));
  }
}

}  // namespace unz
