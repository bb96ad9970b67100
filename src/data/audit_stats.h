// Private streaming statistics of the data auditor: one accumulator per column and per thread,
// mergeable, with memory independent of the number of values.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nanguard/data/audit.h"

namespace nanguard::data::detail {

// A reference to a row made before global row numbers are known: (chunk << 32) | local row.
// In-memory sources use chunk 0, so the reference is the row itself.
inline int64_t row_ref(int64_t chunk, int64_t local) { return (chunk << 32) | local; }

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Order-sensitive combination of value hashes into a row hash (finished with mix64).
inline uint64_t combine_hash(uint64_t row, uint64_t value) { return ((row << 7) | (row >> 57)) ^ value; }

// The high and low halves of a 128-bit product folded together: one multiplication mixes
// every input bit into the whole word (cheaper than mix64; enough for HyperLogLog).
inline uint64_t fold_multiply(uint64_t a, uint64_t b) {
  const unsigned __int128 p = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

// The hash of a value's bits (hash_double maps -0 to +0 and every NaN to one NaN first).
inline uint64_t hash_finite_bits(uint64_t bits) {
  return fold_multiply(bits ^ 0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL);
}

inline uint64_t hash_double(double v) {
  if (v == 0) v = 0;  // -0 and +0 are one value
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  if (v != v) bits = 0x7ff8000000000000ULL;  // every NaN is one value
  return hash_finite_bits(bits);
}

// HyperLogLog with 2^11 registers (2 KiB, so the registers of many columns stay in L1):
// about 2.3% standard error; linear counting for small sets.
class HyperLogLog {
 public:
  static constexpr int kBits = 11;
  static constexpr int kSize = 1 << kBits;
  HyperLogLog() : registers_(kSize, 0) {}
  void add_hash(uint64_t h) { add_hash(registers_.data(), h); }
  // The same on registers(), for loops that keep the pointer in a register.
  static void add_hash(uint8_t* registers, uint64_t h) {
    const uint32_t index = static_cast<uint32_t>(h >> (64 - kBits));
    const uint64_t rest = (h << kBits) | (uint64_t{1} << (kBits - 1));
    const auto rank = static_cast<uint8_t>(__builtin_clzll(rest) + 1);
    if (rank > registers[index]) registers[index] = rank;
  }
  uint8_t* registers() { return registers_.data(); }
  void merge(const HyperLogLog& other) {
    for (int i = 0; i < kSize; ++i) registers_[i] = std::max(registers_[i], other.registers_[i]);
  }
  double estimate() const {
    double sum = 0;
    int zeros = 0;
    for (uint8_t r : registers_) {
      sum += std::ldexp(1.0, -r);
      zeros += r == 0;
    }
    const double m = kSize;
    const double raw = 0.7213 / (1 + 1.079 / m) * m * m / sum;
    if (raw <= 2.5 * m && zeros > 0) return m * std::log(m / zeros);
    return raw;
  }

 private:
  std::vector<uint8_t> registers_;
};

// A small, fast generator (splitmix64) for the reservoirs: a replacement must cost little.
struct FastRng {
  using result_type = uint64_t;
  explicit FastRng(uint64_t seed) : state(seed) {}
  static constexpr uint64_t min() { return 0; }
  static constexpr uint64_t max() { return ~uint64_t{0}; }
  uint64_t operator()() { return mix64(state += 0x9e3779b97f4a7c15ULL); }
  // Uniform in (0, 1].
  double unit() { return (static_cast<double>((*this)() >> 11) + 1.0) * 0x1.0p-53; }
  // Uniform in [0, n).
  int64_t below(int64_t n) {
    return static_cast<int64_t>((static_cast<unsigned __int128>((*this)()) * static_cast<uint64_t>(n)) >> 64);
  }
  uint64_t state;
};

// A uniform sample without replacement of a stream (reservoir, Algorithm L skips), mergeable
// with another reservoir of a disjoint stream.
class Reservoir {
 public:
  explicit Reservoir(int64_t capacity = 0, uint64_t seed = 1) : capacity_(capacity), rng_(seed) {}
  void add(double v) {
    ++seen_;
    if (static_cast<int64_t>(items_.size()) < capacity_) {
      items_.push_back(v);
      if (static_cast<int64_t>(items_.size()) == capacity_) start_skipping();
      return;
    }
    if (seen_ < next_) return;
    items_[slot_] = v;
    advance();
  }
  // Merges a reservoir of another part of the stream (hypergeometric draw of the shares).
  void merge(Reservoir& other) {
    if (other.seen_ == 0) return;
    if (seen_ + other.seen_ <= capacity_ || seen_ == 0) {
      if (seen_ == 0) {
        items_ = other.items_;
        seen_ = other.seen_;
      } else {
        items_.insert(items_.end(), other.items_.begin(), other.items_.end());
        seen_ += other.seen_;
      }
      if (static_cast<int64_t>(items_.size()) >= capacity_ && seen_ > capacity_) start_skipping();
      return;
    }
    std::shuffle(items_.begin(), items_.end(), rng_);
    std::shuffle(other.items_.begin(), other.items_.end(), rng_);
    std::vector<double> out;
    const int64_t k = std::min<int64_t>(capacity_, static_cast<int64_t>(items_.size() + other.items_.size()));
    out.reserve(k);
    int64_t r1 = seen_, r2 = other.seen_;
    size_t i1 = 0, i2 = 0;
    while (static_cast<int64_t>(out.size()) < k) {
      const bool first = i2 >= other.items_.size() ||
                         (i1 < items_.size() && rng_.below(r1 + r2) < r1);
      if (first) {
        out.push_back(items_[i1++]);
        --r1;
      } else {
        out.push_back(other.items_[i2++]);
        --r2;
      }
    }
    items_ = std::move(out);
    seen_ += other.seen_;
    start_skipping();
  }
  int64_t seen() const { return seen_; }
  // How many values add would pass over before it takes one (0 while filling).
  int64_t free_skips() const {
    return static_cast<int64_t>(items_.size()) < capacity_ ? 0 : std::max<int64_t>(0, next_ - seen_ - 1);
  }
  // Counts n values that add would pass over (n <= free_skips()).
  void skip(int64_t n) { seen_ += n; }
  bool exact() const { return seen_ == static_cast<int64_t>(items_.size()); }
  std::vector<double>& items() { return items_; }

 private:
  void start_skipping() {
    w_ = root_of_uniform();
    advance();
  }
  // u^(1/capacity) for a uniform u: exp(log(u) / capacity), by its series while the exponent
  // is tiny (|x| < 2^-10: the first omitted term is below 1e-21, far under a double's ulp);
  // cheaper than exp (or pow) for each value the sample takes.
  double root_of_uniform() {
    const double x = std::log(uniform()) / static_cast<double>(capacity_);
    if (x < -0x1p-10) return std::exp(x);
    return 1 + x * (1 + x * (0.5 + x * (1.0 / 6 + x * (1.0 / 24 + x * (1.0 / 120)))));
  }
  void advance() {
    const double skip = std::floor(std::log(uniform()) / std::log1p(-w_));
    next_ = seen_ + 1 + (std::isfinite(skip) ? static_cast<int64_t>(std::min(skip, 4e18)) : 0);
    w_ *= root_of_uniform();
    // The slot the next taken value replaces, drawn now (it does not depend on the value) so
    // its cache line can be fetched meanwhile: the sample is larger than the caches.
    slot_ = rng_.below(capacity_);
    __builtin_prefetch(items_.data() + slot_, 1, 0);
  }
  double uniform() { return rng_.unit(); }

  int64_t capacity_;
  FastRng rng_;
  std::vector<double> items_;
  int64_t seen_ = 0;
  int64_t next_ = 0;
  double w_ = 0;
  int64_t slot_ = 0;
};

// The k largest (or smallest) values with their rows.
class Extremes {
 public:
  struct Item {
    double value;
    int64_t row;
  };
  Extremes(int64_t k = 0, bool largest = true) : k_(k), largest_(largest) {}
  // Whether v would enter; the caller checks this first (cheap) and then calls add.
  bool wants(double v) const {
    return static_cast<int64_t>(heap_.size()) < k_ || (largest_ ? v > heap_.front().value : v < heap_.front().value);
  }
  // The value a new one must pass (strictly) to enter: wants(v) is v > bar() (largest) or
  // v < bar() (smallest).
  double bar() const {
    const double none = largest_ ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    if (static_cast<int64_t>(heap_.size()) < k_) return none;
    return heap_.empty() ? -none : heap_.front().value;
  }
  void add(double v, int64_t row) {
    auto cmp = [this](const Item& a, const Item& b) { return largest_ ? a.value > b.value : a.value < b.value; };
    if (static_cast<int64_t>(heap_.size()) < k_) {
      heap_.push_back({v, row});
      std::push_heap(heap_.begin(), heap_.end(), cmp);
    } else if (wants(v)) {
      std::pop_heap(heap_.begin(), heap_.end(), cmp);
      heap_.back() = {v, row};
      std::push_heap(heap_.begin(), heap_.end(), cmp);
    }
  }
  void merge(const Extremes& other) {
    for (const Item& item : other.heap_) add(item.value, item.row);
  }
  // Most extreme first.
  std::vector<Item> sorted() const {
    std::vector<Item> items = heap_;
    std::sort(items.begin(), items.end(), [this](const Item& a, const Item& b) {
      return largest_ ? a.value > b.value : a.value < b.value;
    });
    return items;
  }
  std::vector<Item>& items() { return heap_; }
  int64_t capacity() const { return k_; }

 private:
  int64_t k_;
  bool largest_;
  std::vector<Item> heap_;  // heap whose front is the least extreme kept
};

// A missing cell in a block of parsed values: a NaN payload that parsing never produces
// (parsed NaNs are stored as kCanonicalNanBits).
inline constexpr uint64_t kMissingCellBits = 0x7ff4d15515511e00ULL;
inline constexpr uint64_t kCanonicalNanBits = 0x7ff8000000000000ULL;
inline constexpr uint64_t kExponentBits = 0x7ff0000000000000ULL;
inline constexpr uint64_t kMissingHash = 0x6d697373696e67ULL;  // "missing"
inline constexpr uint8_t kRowMissing = 1, kRowNonFinite = 2;
inline double bits_to_double(uint64_t bits) {
  double v;
  std::memcpy(&v, &bits, 8);
  return v;
}

// Everything the auditor tracks for one column in one thread.
struct ColumnAccumulator {
  static constexpr int64_t kExtremes = 1024;

  ColumnAccumulator(int64_t sample_size = 0, uint64_t seed = 1, int64_t max_examples = 10)
      : reservoir(sample_size, seed), high(kExtremes, true), low(kExtremes, false), max_examples(max_examples) {}

  void add_missing(int64_t row) {
    ++missing;
    note_nonfinite(row);
  }
  // Adds a value (finite or not) of the given row; returns its hash (for row hashing).
  inline uint64_t add(double v, int64_t row) {
    const uint64_t h = hash_double(v);
    hll.add_hash(h);
    if (!std::isfinite(v)) {
      if (std::isnan(v)) ++nan;
      else if (v > 0) ++pos_inf;
      else ++neg_inf;
      note_nonfinite(row);
      return h;
    }
    if (count == 0) shift = v;
    ++count;
    const double d = v - shift;
    s1 += d;
    s2 += d * d;
    if (v < min) min = v;
    if (v > max) max = v;
    zeros += v == 0;
    reservoir.add(v);
    if (high.wants(v)) high.add(v, row);
    if (low.wants(v)) low.add(v, row);
    return h;
  }
  // Adds n values of consecutive rows (the first is first_row); a value with kMissingCellBits
  // is a missing cell. Same result as add / add_missing per value, in two tight passes (the
  // state stays in registers): value hashes are combined into row_hash[i], and row_flags[i]
  // gets kRowMissing / kRowNonFinite.
  void add_block(const double* values, int n, int64_t first_row, uint64_t* row_hash, uint8_t* row_flags) {
    // Pass 1: hashes, unique estimate, sample, extremes; the rare missing and non-finite cells.
    // The state lives in locals: the register stores (uint8_t) may alias any member.
    double high_bar = high.bar(), low_bar = low.bar();
    uint8_t* const registers = hll.registers();
    int64_t finite = 0, skips = reservoir.free_skips(), skipped = 0;
    for (int i = 0; i < n; ++i) {
      const double v = values[i];
      uint64_t bits;
      std::memcpy(&bits, &v, 8);
      if (__builtin_expect((bits & kExponentBits) != kExponentBits, 1)) {
        const uint64_t h = hash_finite_bits(v == 0 ? 0 : bits);  // hash_double
        HyperLogLog::add_hash(registers, h);
        row_hash[i] = combine_hash(row_hash[i], h);
        ++finite;
        if (skips > 0) {
          --skips, ++skipped;
        } else {
          reservoir.skip(skipped);
          skipped = 0;
          reservoir.add(v);
          skips = reservoir.free_skips();
        }
        if (__builtin_expect(v > high_bar, 0)) {
          high.add(v, first_row + i);
          high_bar = high.bar();
        }
        if (__builtin_expect(v < low_bar, 0)) {
          low.add(v, first_row + i);
          low_bar = low.bar();
        }
      } else if (bits == kMissingCellBits) {
        add_missing(first_row + i);
        row_hash[i] = combine_hash(row_hash[i], kMissingHash);
        row_flags[i] |= kRowMissing;
      } else {
        row_hash[i] = combine_hash(row_hash[i], add(v, first_row + i));
        row_flags[i] |= kRowNonFinite;
      }
    }
    reservoir.skip(skipped);
    if (finite == 0) return;
    // Pass 2: moments, min, max, zeros of the finite values, branch-free (two partial sums).
    int i0 = 0;
    if (count == 0) {
      while (!finite_bits(values[i0])) ++i0;
      shift = values[i0];
    }
    double a1 = 0, a2 = 0, b1 = 0, b2 = 0, lo = min, hi = max;
    int64_t zero_count = 0;
    int i = i0;
    for (; i + 1 < n; i += 2) {
      const double x = values[i], y = values[i + 1];
      const bool fx = finite_bits(x), fy = finite_bits(y);
      const double dx = fx ? x - shift : 0.0, dy = fy ? y - shift : 0.0;
      a1 += dx, a2 += dx * dx, b1 += dy, b2 += dy * dy;
      lo = fx && x < lo ? x : lo, hi = fx && x > hi ? x : hi;
      lo = fy && y < lo ? y : lo, hi = fy && y > hi ? y : hi;
      zero_count += (x == 0) + (y == 0);
    }
    if (i < n) {
      const double x = values[i];
      if (finite_bits(x)) {
        const double dx = x - shift;
        a1 += dx, a2 += dx * dx;
        lo = x < lo ? x : lo, hi = x > hi ? x : hi;
        zero_count += x == 0;
      }
    }
    count += finite;
    s1 += a1 + b1;
    s2 += a2 + b2;
    min = lo, max = hi;
    zeros += zero_count;
  }
  static bool finite_bits(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    return (bits & kExponentBits) != kExponentBits;
  }
  void note_nonfinite(int64_t row) {
    if (static_cast<int64_t>(nonfinite_rows.size()) < max_examples) nonfinite_rows.push_back(row);
  }
  double mean() const { return count ? shift + s1 / count : std::numeric_limits<double>::quiet_NaN(); }
  double m2() const { return count ? std::max(0.0, s2 - s1 * s1 / count) : 0.0; }

  void merge(ColumnAccumulator& o) {
    if (o.count > 0) {
      if (count == 0) {
        shift = o.shift, s1 = o.s1, s2 = o.s2;
      } else {
        // Chan et al.: combine means and second moments, then re-express around our shift.
        const double n1 = count, n2 = o.count, n = n1 + n2;
        const double mean1 = mean(), mean2 = o.mean();
        const double delta = mean2 - mean1;
        const double m2v = m2() + o.m2() + delta * delta * n1 * n2 / n;
        const double mean_all = mean1 + delta * n2 / n;
        s1 = (mean_all - shift) * n;
        s2 = m2v + s1 * s1 / n;
      }
    }
    count += o.count;
    missing += o.missing, nan += o.nan, pos_inf += o.pos_inf, neg_inf += o.neg_inf, zeros += o.zeros;
    min = std::min(min, o.min);
    max = std::max(max, o.max);
    hll.merge(o.hll);
    reservoir.merge(o.reservoir);
    high.merge(o.high);
    low.merge(o.low);
    for (int64_t r : o.nonfinite_rows) note_nonfinite(r);
  }

  int64_t count = 0, missing = 0, nan = 0, pos_inf = 0, neg_inf = 0, zeros = 0;
  double shift = 0, s1 = 0, s2 = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  HyperLogLog hll;
  Reservoir reservoir;
  Extremes high, low;
  int64_t max_examples;
  std::vector<int64_t> nonfinite_rows;
};

// Label counts for integer labels.
struct LabelAccumulator {
  std::vector<std::pair<int64_t, int64_t>> counts_sorted() const;
  void add(double v, bool missing) {
    ++count;
    if (missing || !std::isfinite(v)) {
      ++non_finite;
      return;
    }
    if (v != std::nearbyint(v) || std::fabs(v) > 9e15) {
      ++non_integer;
      return;
    }
    const auto label = static_cast<int64_t>(v);
    if (label >= 0 && label < 4096) {
      if (static_cast<int64_t>(dense.size()) <= label) dense.resize(label + 1, 0);
      ++dense[label];
    } else {
      other.push_back(label);
    }
  }
  void merge(const LabelAccumulator& o) {
    count += o.count, non_finite += o.non_finite, non_integer += o.non_integer;
    if (dense.size() < o.dense.size()) dense.resize(o.dense.size(), 0);
    for (size_t i = 0; i < o.dense.size(); ++i) dense[i] += o.dense[i];
    other.insert(other.end(), o.other.begin(), o.other.end());
  }
  int64_t count = 0, non_finite = 0, non_integer = 0;
  std::vector<int64_t> dense;
  std::vector<int64_t> other;  // labels outside [0, 4096), rare
};

// Per-row state: which rows hold a non-finite cell, row hashes for duplicates.
struct RowAccumulator {
  int64_t nonfinite_rows = 0;
  std::vector<int64_t> nonfinite_list;  // row refs, up to max_listed
  int64_t missing_rows = 0;
  std::vector<int64_t> missing_list;
  std::vector<std::pair<uint64_t, int64_t>> hashes;  // (row hash, row ref)
  HyperLogLog row_hll;
  bool hashes_complete = true;
};

// Appends a flag when count > 0; samples are sorted and cut to max_listed.
void add_flag(AuditReport& report, const std::string& kind, int64_t count, std::vector<int64_t> samples,
              int64_t max_listed, const std::string& detail);

// Builds the summary of a merged column; rows are already global.
ColumnSummary finish_column(std::string name, ColumnAccumulator& acc, const AuditOptions& options);

}  // namespace nanguard::data::detail
