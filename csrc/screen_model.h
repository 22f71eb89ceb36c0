// The screen-content tool: screenshots, diagrams, charts, text and flat graphics, where most
// pixels repeat a colour seen nearby exactly (a neighbour's, or the one that followed the same
// neighbourhood before: a glyph, a widget, a hatch). Each pixel's colour, all channels of the
// plane group at once, is coded as a choice among such candidate colours by adaptive binary
// decisions; a colour that is none of them comes from a short list of recent colours or, channel
// by channel, as the residual of a gradient prediction. Integer arithmetic only, like the rest.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "range_coder.h"

namespace unz {

// An adaptive probability of a binary decision: the running mean of the decisions seen (from
// 1/2) over the first kBitWindow, then a moving average of about that length. 32 bits of state,
// so a decision that is always the same (a flat area) costs near the coder's floor, 2^-16.
class BitModel {
 public:
  uint32_t p1() const { return std::clamp<uint32_t>(p_ >> 16, 1, kProbTotal - 1); }  // P(1) in 1/65536
  void update(int bit) {
    const int64_t target = bit ? int64_t{0xFFFFFFFF} : 0;
    p_ = static_cast<uint32_t>(p_ + (target - p_) / (n_ + 2));
    if (n_ < kBitWindow) ++n_;
  }

 private:
  static constexpr int kBitWindow = 30;
  uint32_t p_ = 1u << 31;
  int n_ = 0;
};

template <bool Decode, class Coder>
inline int code_bit(Coder& coder, BitModel& model, int bit) {
  const uint32_t p1 = model.p1();
  if constexpr (Decode) {
    bit = coder.target() < p1;
    if (bit) coder.consume(0, p1); else coder.consume(p1, kProbTotal - p1);
  } else {
    if (bit) coder.encode(0, p1); else coder.encode(p1, kProbTotal - p1);
  }
  model.update(bit);
  return bit;
}

// A value of `bits` bits, most significant first, each bit in the context of those above it:
// `tree` holds 2^bits models (entry 0 unused).
template <bool Decode, class Coder>
inline int code_bits(Coder& coder, BitModel* tree, int bits, int value) {
  int node = 1;
  for (int i = bits - 1; i >= 0; --i) node = 2 * node + code_bit<Decode>(coder, tree[node], (value >> i) & 1);
  return node - (1 << bits);
}

constexpr int kScreenMaxChannels = 3;  // colours pack into 24 bits; kAbsent lies outside
constexpr uint32_t kAbsent = 0xFFFFFFFFu;

// What followed the latest occurrence of a neighbourhood (a colour, or a position), by the
// neighbourhood's hash. Slots keep a check of the hash's low bits, so that another neighbourhood
// rarely passes for this one.
class ContextMatch {
 public:
  explicit ContextMatch(size_t pixels) {
    while (bits_ < 18 && (size_t{1} << bits_) < pixels) ++bits_;
    slots_.resize(size_t{1} << bits_);
  }
  uint32_t find(uint64_t hash) const {
    const Slot& s = slots_[hash >> (64 - bits_)];
    return s.check == check(hash) ? s.value : kAbsent;
  }
  void store(uint64_t hash, uint32_t value) { slots_[hash >> (64 - bits_)] = {check(hash), value}; }

 private:
  struct Slot {
    uint32_t check = 0, value = kAbsent;
  };
  static uint32_t check(uint64_t hash) { return static_cast<uint32_t>(hash) | 1; }
  int bits_ = 8;
  std::vector<Slot> slots_;
};

// A match: the position after the latest occurrence of a neighbourhood, followed along the row
// for as long as its colours keep being right.
class Match {
 public:
  explicit Match(size_t pixels) : starts_(pixels) {}
  // The position the match points at for the pixel at `at` with neighbourhood `hash`, or kAbsent.
  uint32_t find(uint64_t hash) {
    if (at_ == kAbsent) at_ = starts_.find(hash);
    return at_;
  }
  // After coding the pixel at `at`: whether the match's colour was right.
  void update(uint64_t hash, size_t at, bool right) {
    starts_.store(hash, static_cast<uint32_t>(at));
    if (at_ != kAbsent && right) {
      ++length_;
      ++at_;
    } else {
      length_ = 0;
      at_ = kAbsent;
    }
  }
  int length_class() const { return length_ == 0 ? 0 : length_ < 4 ? 1 : length_ < 16 ? 2 : 3; }

 private:
  ContextMatch starts_;
  uint32_t at_ = kAbsent;
  int length_ = 0;
};

inline uint64_t mix(uint64_t h, uint32_t v) { return (h ^ v) * 0x9E3779B97F4A7C15ull + (h >> 29); }

// Candidate sources, and the order in which the coder asks "is it this one?" (each colour once):
// the neighbours; the colour that last followed the four nearest neighbours' colours; matches of
// the thirteen nearest neighbours' colours, of the six nearest, and of the four to the left (a
// repeated word, a widget); the pixel as far back as the match that was right at N (a repeated line of text or a
// table row continues below); and the pixel of a row above that the encoder names for the whole
// row (the rows of a list, a table or a menu repeat at the pitch of its lines).
enum Source { kW, kN, kNE, kNW, kWW, kNN, kContext, kMatch, kShortMatch, kRowMatch, kMatchAbove, kRowRepeat, kSources };
constexpr int kAskOrder[kSources] = {kW, kN, kRowRepeat, kMatch, kShortMatch, kRowMatch, kMatchAbove, kNE, kNW, kContext, kWW, kNN};
constexpr int kRowRepeatBits = 7;  // rows up to 127 above; 0 names none
constexpr int kMatchLengthClasses = 4;
constexpr int kMaxSupport = 4;  // how many sources agree on a candidate, 1..4 or more
constexpr int kRecentBits = 8;  // a move-to-front list of the last 256 distinct colours
constexpr int kRecentColours = 1 << kRecentBits;
constexpr int kActivityClasses = 5;

// The last kRecentColours distinct colours, most recent first, with a bit per possible colour for
// whether it is among them: most escaped pixels of a photograph-like area are not, and then cost
// no search.
class RecentColours {
 public:
  explicit RecentColours(int channels) : present_((size_t{1} << (8 * channels)) / 64 + 1, 0) { list_.fill(kAbsent); }
  uint32_t operator[](int i) const { return list_[i]; }
  // The colour's place in the list, or kRecentColours.
  int find(uint32_t colour) const {
    return contains(colour) ? static_cast<int>(std::find(list_.begin(), list_.end(), colour) - list_.begin())
                            : kRecentColours;
  }
  void use(uint32_t colour) {
    if (list_[0] == colour) return;
    auto last = list_.begin() + std::min(find(colour), kRecentColours - 1);
    if (*last != colour) {
      if (*last != kAbsent) flip(*last);  // leaves the list
      flip(colour);
    }
    std::move_backward(list_.begin(), last, last + 1);
    list_[0] = colour;
  }

 private:
  bool contains(uint32_t colour) const { return colour != kAbsent && (present_[colour >> 6] >> (colour & 63) & 1); }
  void flip(uint32_t colour) { present_[colour >> 6] ^= uint64_t{1} << (colour & 63); }
  std::array<uint32_t, kRecentColours> list_;
  std::vector<uint64_t> present_;
};

inline int activity_class(int a) { return a == 0 ? 0 : a <= 2 ? 1 : a <= 8 ? 2 : a <= 32 ? 3 : 4; }
inline int channel_of(uint32_t colour, int c) { return static_cast<int>((colour >> (8 * c)) & 0xFF); }
inline int med(int w, int n, int nw) {  // LOCO-I's median edge detector
  return nw >= std::max(w, n) ? std::min(w, n) : nw <= std::min(w, n) ? std::max(w, n) : w + n - nw;
}

// One band of H rows of W pixels of C <= kScreenMaxChannels planes (`plane` samples apart), coded
// as a stream of its own; pixels above the band count as absent.
template <bool Decode, class Coder>
void code_screen(Coder& coder, uint8_t* planes, size_t plane, int C, int H, int W) {
  constexpr int kPad = 4;
  const size_t stride = static_cast<size_t>(W) + kPad + 1;
  std::vector<uint32_t> colours(3 * stride, kAbsent);  // rows y-2, y-1, y (by y % 3)
  std::vector<uint16_t> hits(2 * stride, 0);           // which sources were right, rows y-1, y
  std::vector<uint32_t> offsets(2 * stride, 0);        // how far back a right match was, rows y-1, y
  ContextMatch context_colour(static_cast<size_t>(H) * W);
  Match match(static_cast<size_t>(H) * W), short_match(static_cast<size_t>(H) * W), row_match(static_cast<size_t>(H) * W);
  const auto colour_at = [&](size_t i) {
    uint32_t colour = 0;
    for (int c = 0; c < C; ++c) colour |= uint32_t{planes[c * plane + i]} << (8 * c);
    return colour;
  };
  std::vector<BitModel> is_candidate(kSources * kMaxSupport * 4 * 2 * kMatchLengthClasses);
  std::vector<BitModel> is_recent(4), recent_index(kRecentColours);
  std::vector<BitModel> residual(static_cast<size_t>(C) * kActivityClasses * kActivityClasses << 8);
  std::array<int, kScreenMaxChannels> blend_error{}, shift_error{};  // recent errors of the two literal predictions
  RecentColours recent(C);

  // The row above (at least 2 up) whose pixels repeat most of those here that neither W nor N gives.
  const auto best_repeat = [&](int y) {
    std::vector<int> gain(1 << kRowRepeatBits, 0);
    const size_t row = static_cast<size_t>(y) * W;
    for (int x = 0; x < W; ++x) {
      const uint32_t here = colour_at(row + x);
      if ((x > 0 && colour_at(row + x - 1) == here) || (y > 0 && colour_at(row + x - W) == here)) continue;
      for (int d = 2; d < (1 << kRowRepeatBits) && d <= y; ++d) gain[d] += colour_at(row + x - d * W) == here;
    }
    const int best = static_cast<int>(std::max_element(gain.begin(), gain.end()) - gain.begin());
    return gain[best] >= std::max(2, W / 32) ? best : 0;
  };
  std::vector<BitModel> repeat_tree(1 << kRowRepeatBits);

  for (int y = 0; y < H; ++y) {
    const int repeat = code_bits<Decode>(coder, repeat_tree.data(), kRowRepeatBits, Decode ? 0 : best_repeat(y));
    if (repeat > y) throw CorruptStream("corrupt screen stream: repeats a row above the band");
    uint32_t* row = colours.data() + (y % 3) * stride + kPad;
    const uint32_t* up = colours.data() + ((y + 2) % 3) * stride + kPad;
    const uint32_t* up2 = colours.data() + ((y + 1) % 3) * stride + kPad;
    uint16_t* hit_row = hits.data() + (y % 2) * stride + kPad;
    const uint16_t* hit_up = hits.data() + ((y + 1) % 2) * stride + kPad;
    uint32_t* offset_row = offsets.data() + (y % 2) * stride + kPad;
    const uint32_t* offset_up = offsets.data() + ((y + 1) % 2) * stride + kPad;
    for (int x = 0; x < W; ++x) {
      const size_t at = static_cast<size_t>(y) * W + x;
      uint32_t colour = Decode ? 0 : colour_at(at);

      std::array<uint32_t, kSources> cand;
      cand[kW] = row[x - 1];
      cand[kN] = up[x];
      cand[kNE] = up[x + 1];
      cand[kNW] = up[x - 1];
      cand[kWW] = row[x - 2];
      cand[kNN] = up2[x];
      const uint64_t short_hash = mix(mix(mix(mix(0, cand[kW]), cand[kN]), cand[kNW]), cand[kNE]);
      uint64_t long_hash = mix(mix(mix(mix(short_hash, cand[kWW]), cand[kNN]), up[x - 2]), up2[x + 1]);
      for (int k = 3; k <= kPad; ++k) long_hash = mix(long_hash, row[x - k]);
      cand[kContext] = context_colour.find(short_hash);
      const uint64_t six_hash = mix(mix(short_hash, cand[kWW]), cand[kNN]) + 1;
      const uint64_t row_hash = mix(mix(mix(mix(2, cand[kW]), cand[kWW]), row[x - 3]), row[x - 4]);
      const uint32_t matched = match.find(long_hash), short_matched = short_match.find(six_hash);
      const uint32_t row_matched = row_match.find(row_hash);
      cand[kRowMatch] = row_matched == kAbsent ? kAbsent : colour_at(row_matched);
      cand[kMatch] = matched == kAbsent ? kAbsent : colour_at(matched);
      cand[kShortMatch] = short_matched == kAbsent ? kAbsent : colour_at(short_matched);
      const uint32_t above = offset_up[x];
      cand[kMatchAbove] = above && above <= at ? colour_at(at - above) : kAbsent;
      cand[kRowRepeat] = repeat ? colour_at(at - static_cast<size_t>(repeat) * W) : kAbsent;

      // Is it the next distinct candidate? In the context of the source, how many sources agree
      // on that colour, whether the source was right at W and at N, and whether it is the first.
      bool found = false;
      int asked = 0;
      std::array<uint32_t, kSources> asked_colours;
      for (const int s : kAskOrder) {
        const uint32_t candidate = cand[s];
        if (candidate == kAbsent || std::find(asked_colours.begin(), asked_colours.begin() + asked, candidate) !=
                                        asked_colours.begin() + asked)
          continue;
        const int support = static_cast<int>(std::count(cand.begin(), cand.end(), candidate));
        const int context = (((s * kMaxSupport + std::min(support, kMaxSupport) - 1) * 4 + ((hit_row[x - 1] >> s) & 1) * 2 +
                              ((hit_up[x] >> s) & 1)) * 2 + (asked > 0)) * kMatchLengthClasses +
                            (s == kMatch ? match.length_class() : s == kShortMatch ? short_match.length_class() : s == kRowMatch ? row_match.length_class() : 0);
        asked_colours[asked++] = candidate;
        if (code_bit<Decode>(coder, is_candidate[context], candidate == colour)) {
          colour = candidate;
          found = true;
          break;
        }
      }

      if (!found) {
        // A recent colour (by its place in the move-to-front list, the candidates already refused
        // moved last), else every channel's residual from LOCO-I's prediction (after the first
        // channel, plus the first channel's residual).
        std::array<std::array<int, 4>, kScreenMaxChannels> near;  // W, N, NW, NE of each channel
        for (int c = 0; c < C; ++c) {
          const auto value = [&](uint32_t col, int fallback) { return col == kAbsent ? fallback : channel_of(col, c); };
          const int w = value(cand[kW], value(cand[kN], 0)), n = value(cand[kN], w);
          near[c] = {w, n, value(cand[kNW], n), value(cand[kNE], n)};
        }
        const int index = Decode ? 0 : recent.find(colour);
        const int escaped_near = (hit_row[x - 1] == 0) * 2 + (hit_up[x] == 0);
        if (code_bit<Decode>(coder, is_recent[escaped_near], index < kRecentColours)) {
          std::array<uint32_t, kRecentColours> order;  // (refused or empty, place in the list)
          for (int i = 0; i < kRecentColours; ++i) {
            const uint32_t r = recent[i];
            const bool refused = r == kAbsent || std::find(asked_colours.begin(), asked_colours.begin() + asked, r) !=
                                                     asked_colours.begin() + asked;
            order[i] = uint32_t{refused} << kRecentBits | static_cast<uint32_t>(i);
          }
          int rank = 0;
          if constexpr (!Decode)
            for (const uint32_t o : order) rank += o < order[index];
          rank = code_bits<Decode>(coder, recent_index.data(), kRecentBits, rank);
          std::nth_element(order.begin(), order.begin() + rank, order.end());
          if (order[rank] >> kRecentBits) throw CorruptStream("corrupt screen stream: not a recent colour");
          colour = recent[order[rank] & (kRecentColours - 1)];
        } else {
          // After the first channel, two predictions: LOCO-I's plus the first channel's residual,
          // and (where the neighbours hold two colours apart in the first channel) a blend of the
          // two in the same proportion, as anti-aliased edges are. The one with the smaller
          // recent errors is used.
          uint32_t lo = kAbsent, hi = kAbsent;
          for (const int s : {kW, kN, kNW, kNE, kWW, kNN}) {
            if (cand[s] == kAbsent) continue;
            if (lo == kAbsent || channel_of(cand[s], 0) < channel_of(lo, 0)) lo = cand[s];
            if (hi == kAbsent || channel_of(cand[s], 0) > channel_of(hi, 0)) hi = cand[s];
          }
          const int span = lo == kAbsent ? 0 : channel_of(hi, 0) - channel_of(lo, 0);
          uint32_t coded = 0;
          int first_residual = 0, first = 0;
          for (int c = 0; c < C; ++c) {
            const auto [w, n, nw, ne] = near[c];
            const int shifted = med(w, n, nw) + first_residual;
            int blended = shifted;
            if (c > 0 && span > 0) {
              const int64_t t = std::clamp(first - channel_of(lo, 0), 0, span);
              const int64_t num = 2 * t * (channel_of(hi, c) - channel_of(lo, c)) + span;
              blended = channel_of(lo, c) + static_cast<int>(num >= 0 ? num / (2 * span) : -((-num + 2 * span - 1) / (2 * span)));
            }
            const int predicted = blend_error[c] < shift_error[c] ? blended : shifted;
            // In the context of the local activity and, after the first channel, of its residual.
            const int activity = activity_class(std::abs(w - nw) + std::abs(n - nw) + std::abs(n - ne));
            const int ctx = (c * kActivityClasses + activity) * kActivityClasses + activity_class(std::abs(first_residual));
            const int diff = static_cast<int8_t>(static_cast<uint8_t>(channel_of(colour, c) - predicted));
            const int zigzag = code_bits<Decode>(coder, residual.data() + static_cast<size_t>(ctx) * 256, 8,
                                                 diff >= 0 ? 2 * diff : -2 * diff - 1);
            const int d = zigzag & 1 ? -(zigzag + 1) / 2 : zigzag / 2;
            const int v = (predicted + d) & 0xFF;
            if (c == 0) first_residual = v - med(w, n, nw), first = v;
            blend_error[c] += std::abs(v - blended) - blend_error[c] / 16;
            shift_error[c] += std::abs(v - shifted) - shift_error[c] / 16;
            coded |= static_cast<uint32_t>(v) << (8 * c);
          }
          colour = coded;
        }
      }
      if constexpr (Decode)
        for (int c = 0; c < C; ++c) planes[c * plane + at] = static_cast<uint8_t>(channel_of(colour, c));

      uint16_t hit = 0;
      for (int s = 0; s < kSources; ++s) hit |= static_cast<uint16_t>(cand[s] == colour) << s;
      hit_row[x] = hit;
      offset_row[x] = cand[kMatch] == colour          ? static_cast<uint32_t>(at - matched)
                      : cand[kShortMatch] == colour ? static_cast<uint32_t>(at - short_matched)
                      : cand[kRowMatch] == colour   ? static_cast<uint32_t>(at - row_matched)
                      : cand[kMatchAbove] == colour ? above
                                                    : 0;
      row[x] = colour;
      context_colour.store(short_hash, colour);
      match.update(long_hash, at, cand[kMatch] == colour);
      short_match.update(six_hash, at, cand[kShortMatch] == colour);
      row_match.update(row_hash, at, cand[kRowMatch] == colour);
      recent.use(colour);
    }
  }
}

}  // namespace unz
