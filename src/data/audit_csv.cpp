#include "data/audit_csv.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "core/check.h"
#include "core/text.h"
#include "data/binary_file.h"
#include "data/csv_fast.h"
#include "nanguard/core/error.h"

namespace nanguard::data::detail {
namespace fs = std::filesystem;

namespace {

constexpr size_t kChunkBytes = 4 << 20;
// Separators are indexed this many bytes at a time (the index stays in the L2 cache).
constexpr int64_t kSegmentBytes = 128 << 10;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string excerpt(std::string_view text) { return nanguard::detail::printable_excerpt(text, 40); }

}  // namespace

void fail_record(const std::string& where, int64_t line, const std::string& what) {
  throw ValueError(fmt::format("{}: line {}: {}", where, line, what));
}

CellKind parse_cell(std::string_view s, double* value) {
  s = trim(s);
  if (s.empty()) return CellKind::kMissing;
  std::string_view digits = s;
  if (digits[0] == '+' && digits.size() > 1 && digits[1] != '-' && digits[1] != '+') digits.remove_prefix(1);
  const char* last = digits.data() + digits.size();
  const auto [ptr, ec] = std::from_chars(digits.data(), last, *value);
  if (ptr == last) {
    if (ec == std::errc()) return CellKind::kValue;
    if (ec == std::errc::result_out_of_range) {
      // Overflow to +/-Inf, underflow to 0: strtod decides which.
      *value = std::strtod(std::string(digits).c_str(), nullptr);
      return CellKind::kValue;
    }
  }
  // from_chars reads nan and inf; what is left are the missing-value words.
  if (iequals(s, "na") || iequals(s, "n/a") || iequals(s, "null")) return CellKind::kMissing;
  if (iequals(s, "-nan") || iequals(s, "+nan")) {
    *value = std::numeric_limits<double>::quiet_NaN();
    return CellKind::kValue;
  }
  return CellKind::kBad;
}

char* read_record_fast(char* p, char* e, char delimiter, int64_t ncols, double* out, int64_t stride) {
  for (int64_t c = 0;; ++c) {
    double v = 0;
    const char* q = parse_plain_decimal(p, e, &v);
    if (q != nullptr && q < e && *q == '\r' && (q + 1 == e || q[1] == '\n')) ++q;  // the CR of a CRLF
    if (q == nullptr || (q < e && *q != delimiter && *q != '\n')) {
      // Not a plain decimal: find the cell's end and let parse_cell read it.
      const char* s = p;
      while (s < e && (*s == ' ' || *s == '\t') && *s != delimiter) ++s;
      if (s < e && *s == '"') return nullptr;
      q = p;
      while (q < e && *q != delimiter && *q != '\n') ++q;
      const char* end = q;
      if ((q == e || *q == '\n') && end > p && end[-1] == '\r') --end;
      const CellKind kind = parse_cell(std::string_view(p, static_cast<size_t>(end - p)), &v);
      if (kind == CellKind::kBad) return nullptr;
      v = stored_cell(kind, v);
    }
    out[c * stride] = v;
    if (q == e) return c + 1 == ncols ? e : nullptr;
    if (*q == '\n') return c + 1 == ncols ? const_cast<char*>(q) + 1 : nullptr;
    if (c + 1 == ncols) return nullptr;  // more fields than columns
    p = const_cast<char*>(q) + 1;
  }
}

size_t index_separators_portable(const char* p, const char* e, char delimiter, uint32_t* out, bool* quoted) {
  const char* const base = p;
  size_t n = 0;
  bool has_quote = false;
  for (; p < e; ++p) {
    if (*p == delimiter || *p == '\n') out[n++] = static_cast<uint32_t>(p - base);
    has_quote |= *p == '"';
  }
  *quoted = has_quote;
  return n;
}

#ifndef NANGUARD_CSV_X86
size_t index_separators(const char* p, const char* e, char delimiter, uint32_t* out, bool* quoted) {
  return index_separators_portable(p, e, delimiter, out, quoted);
}
#else
// Compares 64 bytes at a time; positions come out of the bit mask 16 at a time without a
// branch per position (x86-64-v3 has popcnt and tzcnt for that).
__attribute__((target_clones("arch=x86-64-v3", "default"))) size_t index_separators(const char* p, const char* e,
                                                                                     char delimiter, uint32_t* out,
                                                                                     bool* quoted) {
  const char* const base = p;
  size_t n = 0;
  const __m128i d = _mm_set1_epi8(delimiter), nl = _mm_set1_epi8('\n'), quote = _mm_set1_epi8('"');
  __m128i quotes = _mm_setzero_si128();
  auto mask16 = [&](const char* q) -> uint64_t {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    quotes = _mm_or_si128(quotes, _mm_cmpeq_epi8(x, quote));
    return static_cast<uint32_t>(_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(x, d), _mm_cmpeq_epi8(x, nl))));
  };
  bool has_quote = false;
  for (; e - p >= 64; p += 64) {
    uint64_t m = mask16(p) | mask16(p + 16) << 16 | mask16(p + 32) << 32 | mask16(p + 48) << 48;
    const auto offset = static_cast<uint32_t>(p - base);
    const int count = __builtin_popcountll(m);
    for (int i = 0; i < 16; ++i) {  // unconditionally: garbage past count is overwritten later
      out[n + i] = offset + static_cast<uint32_t>(__builtin_ctzll(m | (uint64_t{1} << 63)));
      m &= m - 1;
    }
    for (int i = 16; i < count; ++i) {
      out[n + i] = offset + static_cast<uint32_t>(__builtin_ctzll(m));
      m &= m - 1;
    }
    n += count;
  }
  for (; p < e; ++p) {
    if (*p == delimiter || *p == '\n') out[n++] = static_cast<uint32_t>(p - base);
    has_quote |= *p == '"';
  }
  *quoted = has_quote || _mm_movemask_epi8(quotes) != 0;
  return n;
}
#endif  // NANGUARD_CSV_X86

namespace {

template <bool kFma>
__attribute__((always_inline)) inline bool read_record_indexed_impl(const char* p, const char* base,
                                                                    const uint32_t* ends, const char* e,
                                                                    char delimiter, int64_t ncols, double* out,
                                                                    int64_t stride) {
  bool ok = true;
  for (int64_t c = 0; c < ncols; ++c) {
    const char* end = base + ends[c];
    const bool last = c + 1 == ncols;
    ok &= *end == (last ? '\n' : delimiter);
    const char* cell_end = end - (last && end > p && end[-1] == '\r');  // CRLF
    double v;
    bool parsed;
    if constexpr (kFma) {
#ifdef NANGUARD_CSV_X86
      parsed = e - p >= 18 && parse_decimal_cell_v3(p, cell_end, &v);
#else
      parsed = e - p >= 18 && parse_decimal_cell(p, cell_end, &v);  // not instantiated there
#endif
    } else {
      parsed = e - p >= 18 && parse_decimal_cell(p, cell_end, &v);
    }
    if (__builtin_expect(!parsed, 0)) {
      const CellKind kind = parse_cell(std::string_view(p, static_cast<size_t>(cell_end - p)), &v);
      ok &= kind != CellKind::kBad;
      v = stored_cell(kind, v);
    }
    out[c * stride] = v;
    p = end + 1;
  }
  return ok;
}

#ifdef NANGUARD_CSV_X86
__attribute__((target("arch=x86-64-v3"))) bool read_record_indexed_v3(const char* p, const char* base,
                                                                      const uint32_t* ends, const char* e,
                                                                      char delimiter, int64_t ncols, double* out,
                                                                      int64_t stride) {
  return read_record_indexed_impl<true>(p, base, ends, e, delimiter, ncols, out, stride);
}
#endif

bool read_record_indexed_baseline(const char* p, const char* base, const uint32_t* ends, const char* e,
                                  char delimiter, int64_t ncols, double* out, int64_t stride) {
  return read_record_indexed_impl<false>(p, base, ends, e, delimiter, ncols, out, stride);
}

}  // namespace

bool read_record_indexed(const char* p, const char* base, const uint32_t* ends, const char* e, char delimiter,
                         int64_t ncols, double* out, int64_t stride) {
#ifdef NANGUARD_CSV_X86
  // The x86-64-v3 build (BMI2 shifts, FMA instead of a division per cell) where the CPU has it.
  static const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  if (v3) return read_record_indexed_v3(p, base, ends, e, delimiter, ncols, out, stride);
#endif
  return read_record_indexed_baseline(p, base, ends, e, delimiter, ncols, out, stride);
}

int64_t find_label_column(const std::vector<std::string>& names, const std::string& label, bool has_header,
                          const std::string& where) {
  if (label.empty()) return -1;
  const auto it = std::find(names.begin(), names.end(), label);
  if (it != names.end()) return it - names.begin();
  if (!has_header) {
    throw ValueError(fmt::format("{}: label column '{}' is not a column index from 0 to {} (without a header, "
                                 "columns are named by their 0-based index)",
                                 where, label, names.size() - 1));
  }
  std::string list;
  for (size_t i = 0; i < std::min<size_t>(names.size(), 10); ++i) list += (i ? ", " : "") + excerpt(names[i]);
  if (names.size() > 10) list += ", ...";
  throw ValueError(fmt::format("{}: label column '{}' is not in the header (columns: {})", where, label, list));
}

CsvHead read_csv_head(const fs::path& path, char delimiter, bool has_header) {
  const std::string where = fmt::format("CSV file '{}'", path.string());
  InputFile file(path);
  std::string buffer;
  size_t have = 0;
  bool eof = false;
  // Grow until the first record is complete (a newline outside quotes) or the file ends.
  for (;;) {
    buffer.resize(std::max<size_t>(buffer.size() * 2, 1 << 16));
    const size_t got = file.read(buffer.data() + have, buffer.size() - have);
    have += got;
    eof = got == 0 || have < buffer.size();
    bool in_quote = false;
    size_t start = (have >= 3 && std::memcmp(buffer.data(), "\xEF\xBB\xBF", 3) == 0) ? 3 : 0;
    // Skip leading blank lines.
    size_t i = start;
    int64_t line = 1;
    while (i < have && (buffer[i] == '\n' || buffer[i] == '\r')) line += buffer[i++] == '\n';
    size_t end = std::string::npos;
    for (size_t j = i; j < have; ++j) {
      if (buffer[j] == '"') in_quote = !in_quote;
      else if (buffer[j] == '\n' && !in_quote) {
        end = j + 1;
        break;
      }
    }
    if (end == std::string::npos && !eof) continue;
    if (end == std::string::npos) end = have;
    NANGUARD_CHECK(end > i, "{}: the file is empty (expected {})", where,
                   has_header ? "a header line" : "at least one row");
    CsvHead head;
    std::vector<std::string_view> fields;
    std::string record(buffer.data() + i, end - i);
    int64_t record_lines = 0;
    for_each_record(record.data(), record.data() + record.size(), line, delimiter, where, fields,
                    [&](const std::vector<std::string_view>& f, int64_t) {
                      for (size_t c = 0; c < f.size(); ++c) {
                        head.names.push_back(has_header ? std::string(trim(f[c])) : std::to_string(c));
                      }
                    });
    record_lines = std::count(buffer.data() + i, buffer.data() + end, '\n');
    if (has_header) {
      head.data_offset = end;
      head.data_line = line + record_lines;
    } else {
      head.data_offset = i;
      head.data_line = line;
      head.first_record_is_data = true;
    }
    return head;
  }
}

CsvChunkReader::CsvChunkReader(const fs::path& path, const CsvHead& head)
    : file_(std::make_unique<InputFile>(path)), line_(head.data_line) {
  uint64_t skip = head.data_offset;
  while (skip > 0) {
    char tmp[1 << 14];
    const size_t got = file_->read(tmp, std::min<uint64_t>(skip, sizeof tmp));
    if (got == 0) break;
    skip -= got;
  }
}

CsvChunkReader::~CsvChunkReader() = default;

bool CsvChunkReader::next(std::string& buffer, int64_t* first_line) {
  while (!eof_) {
    const size_t scanned_from = carry_.size();
    const size_t want = std::max(kChunkBytes, carry_.size() * 2);
    // Grow only (a recycled buffer is nearly that long already): resize zero-fills.
    if (buffer.size() < want) buffer.resize(want);
    if (!carry_.empty()) std::memcpy(buffer.data(), carry_.data(), carry_.size());
    size_t have = carry_.size();
    const size_t got = file_->read(buffer.data() + have, want - have);
    have += got;
    eof_ = got == 0 || have < want;
    buffer.resize(have);  // shrinks: no fill
    // Where the last whole record ends: after the last newline outside quotes. A cut is never
    // inside quotes, so the carried text starts outside them; in_quote_ is the state at
    // scanned_from.
    size_t cut = 0;
    const char* base = buffer.data();
    if (!in_quote_ && std::memchr(base + scanned_from, '"', have - scanned_from) == nullptr) {
      const void* nl = memrchr(base + scanned_from, '\n', have - scanned_from);
      cut = nl ? static_cast<size_t>(static_cast<const char*>(nl) - base) + 1 : 0;
    } else {
      bool q = in_quote_;
      for (size_t i = scanned_from; i < have; ++i) {
        if (base[i] == '"') q = !q;
        else if (base[i] == '\n' && !q) cut = i + 1;
      }
      in_quote_ = q;
    }
    if (eof_) cut = have;
    if (cut == 0) {
      carry_ = buffer;
      continue;
    }
    carry_.assign(buffer, cut, std::string::npos);
    buffer.resize(cut);
    *first_line = line_;
    line_ += count_newlines(buffer.data(), buffer.data() + buffer.size());
    return true;
  }
  return false;
}

namespace {

struct Chunk {
  std::string data;
  int64_t id = 0;
  int64_t first_line = 1;
};

// A bounded queue of chunks; the reader blocks when the workers fall behind, which bounds
// memory.
class ChunkQueue {
 public:
  explicit ChunkQueue(size_t capacity) : capacity_(capacity) {}
  bool push(std::unique_ptr<Chunk> chunk) {
    std::unique_lock<std::mutex> lock(mutex_);
    not_full_.wait(lock, [&] { return queue_.size() < capacity_ || stopped_; });
    if (stopped_) return false;
    queue_.push_back(std::move(chunk));
    not_empty_.notify_one();
    return true;
  }
  std::unique_ptr<Chunk> pop() {
    std::unique_lock<std::mutex> lock(mutex_);
    not_empty_.wait(lock, [&] { return !queue_.empty() || closed_ || stopped_; });
    if (queue_.empty() || stopped_) return nullptr;
    auto chunk = std::move(queue_.front());
    queue_.pop_front();
    not_full_.notify_one();
    return chunk;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
  }
  void stop() {
    std::lock_guard<std::mutex> lock(mutex_);
    stopped_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }
  // Recycled buffers, so memory does not grow with the file.
  std::string take_buffer() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.empty()) return {};
    std::string b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void give_buffer(std::string b) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (free_.size() < capacity_ + 4) free_.push_back(std::move(b));
  }

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::condition_variable not_empty_, not_full_;
  std::deque<std::unique_ptr<Chunk>> queue_;
  std::vector<std::string> free_;
  bool closed_ = false, stopped_ = false;
};

struct ThreadState {
  std::vector<ColumnAccumulator> columns;
  LabelAccumulator labels;
  std::vector<int64_t> bad_label_rows;  // row refs
  int64_t bad_labels = 0;
  RowAccumulator rows;
};

}  // namespace

AuditReport describe_csv(const fs::path& path, const AuditOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  const char delimiter = options.delimiter();
  NANGUARD_CHECK(delimiter != '"' && delimiter != '\n' && delimiter != '\r' && delimiter != '\0',
                 "describe('{}'): the delimiter cannot be a quote, CR, LF or NUL", path.string());
  const std::string where = fmt::format("CSV file '{}'", path.string());
  const CsvHead head = read_csv_head(path, delimiter, options.has_header());
  const auto ncols = static_cast<int64_t>(head.names.size());
  const int64_t label_index = find_label_column(head.names, options.label_column(), options.has_header(), where);
  std::vector<int64_t> feature_of(ncols, -1);
  std::vector<std::string> feature_names;
  for (int64_t c = 0; c < ncols; ++c) {
    if (c == label_index) continue;
    feature_of[c] = static_cast<int64_t>(feature_names.size());
    feature_names.push_back(head.names[c]);
  }
  const auto nfeatures = static_cast<int64_t>(feature_names.size());

  int threads = options.threads() > 0 ? options.threads()
                                      : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  threads = std::min(threads, 64);
  // Sample budget: about 4M values over all columns and threads.
  const int64_t sample_size = std::max<int64_t>(
      1024, std::min<int64_t>(options.sample_size(), (int64_t{4} << 20) / std::max<int64_t>(1, nfeatures * threads)));

  std::vector<ThreadState> states(threads);
  for (int t = 0; t < threads; ++t) {
    states[t].columns.reserve(nfeatures);
    for (int64_t c = 0; c < nfeatures; ++c) {
      states[t].columns.emplace_back(sample_size, 0x5eed + 7919 * static_cast<uint64_t>(c) + 104729 * t,
                                     options.max_examples());
    }
  }
  ChunkQueue queue(static_cast<size_t>(threads) * 2);
  std::mutex info_mutex;
  std::vector<int64_t> chunk_rows;
  std::string error;
  int64_t error_chunk = std::numeric_limits<int64_t>::max();
  bool io_error = false;
  const int64_t max_hashes = options.max_row_hashes();
  const int64_t max_listed = options.max_listed();

  auto record_error = [&](int64_t chunk, const std::string& what, bool io) {
    std::lock_guard<std::mutex> lock(info_mutex);
    if (chunk < error_chunk) {
      error_chunk = chunk;
      error = what;
      io_error = io;
    }
    queue.stop();
  };

  // The fast path reads numbers byte by byte; a delimiter that can be part of one rules it out.
  const bool fast_ok = std::strchr("0123456789.+-", delimiter) == nullptr;
  // Row hashes are kept while the rows counted so far fit max_row_hashes; the count is shared
  // every kHashBlock rows (not per row: the threads would fight over its cache line).
  constexpr int64_t kHashBlock = 1024;
  std::atomic<int64_t> rows_counted{0};
  std::atomic<bool> too_many_hashes{false};

  auto worker = [&](int t) {
    ThreadState& st = states[t];
    std::vector<std::string_view> fields;
    fields.reserve(ncols);
    // Records are parsed into a column-major block of rows, then each column's accumulator
    // takes its whole column at once.
    // 128 rows, fewer for very wide files (the block stays within about 1 MiB).
    const int block_rows = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 17) / std::max<int64_t>(ncols, 1), 1, 128));
    std::vector<double> block(static_cast<size_t>(ncols) * block_rows);
    std::vector<uint64_t> row_hash(block_rows);
    std::vector<uint8_t> row_flags(block_rows);
    int rows_in_block = 0;
    int64_t unshared_rows = 0;
    auto share_row_count = [&] {
      if (rows_counted.fetch_add(unshared_rows, std::memory_order_relaxed) + unshared_rows > max_hashes) {
        too_many_hashes.store(true, std::memory_order_relaxed);
      }
      unshared_rows = 0;
      if (too_many_hashes.load(std::memory_order_relaxed) && !st.rows.hashes.empty()) {
        std::vector<std::pair<uint64_t, int64_t>>().swap(st.rows.hashes);
      }
    };
    // Adds the rows of the block; the first is row `first` of the chunk.
    auto flush_block = [&](int64_t first_ref) {
      const int n = rows_in_block;
      rows_in_block = 0;
      if (n == 0) return;
      std::fill(row_hash.begin(), row_hash.begin() + n, uint64_t{0x1234567});
      std::fill(row_flags.begin(), row_flags.begin() + n, uint8_t{0});
      for (int64_t c = 0; c < ncols; ++c) {
        const double* col = block.data() + c * block_rows;
        if (c != label_index) {
          st.columns[feature_of[c]].add_block(col, n, first_ref, row_hash.data(), row_flags.data());
          continue;
        }
        for (int i = 0; i < n; ++i) {
          uint64_t bits;
          std::memcpy(&bits, &col[i], 8);
          const bool miss = bits == kMissingCellBits;
          const double v = miss ? std::numeric_limits<double>::quiet_NaN() : col[i];
          row_hash[i] = combine_hash(row_hash[i], hash_double(v) + static_cast<uint64_t>(miss));
          st.labels.add(v, miss);
          const bool bad = miss || !std::isfinite(v) || v != std::nearbyint(v) || v < 0 ||
                           (options.num_classes() > 0 && v >= static_cast<double>(options.num_classes()));
          if (bad) {
            ++st.bad_labels;
            if (static_cast<int64_t>(st.bad_label_rows.size()) < max_listed) st.bad_label_rows.push_back(first_ref + i);
          }
        }
      }
      const bool keep_hashes = !too_many_hashes.load(std::memory_order_relaxed);
      for (int i = 0; i < n; ++i) {
        const int64_t ref = first_ref + i;
        if (row_flags[i] & kRowNonFinite) {
          ++st.rows.nonfinite_rows;
          if (static_cast<int64_t>(st.rows.nonfinite_list.size()) < max_listed) st.rows.nonfinite_list.push_back(ref);
        }
        if (row_flags[i] & kRowMissing) {
          ++st.rows.missing_rows;
          if (static_cast<int64_t>(st.rows.missing_list.size()) < max_listed) st.rows.missing_list.push_back(ref);
        }
        const uint64_t h = mix64(row_hash[i]);
        st.rows.row_hll.add_hash(h);
        if (keep_hashes) st.rows.hashes.emplace_back(h, ref);
      }
      unshared_rows += n;
      if (unshared_rows >= kHashBlock) share_row_count();
    };
    std::vector<uint32_t> separators;
    while (auto chunk = queue.pop()) {
      int64_t local = 0;
      const int64_t id = chunk->id;
      try {
        char* p = chunk->data.data();
        char* const e = p + chunk->data.size();
        int64_t line = chunk->first_line;
        auto row_added = [&] {
          ++local;
          if (++rows_in_block == block_rows) flush_block(row_ref(id, local - block_rows));
        };
        // One record (or blank line) at p, cell by cell; the general parser where needed.
        auto read_record = [&] {
          if (skip_blank_line(p, e, line)) return;
          double* out = block.data() + rows_in_block;
          char* next = fast_ok ? read_record_fast(p, e, delimiter, ncols, out, block_rows) : nullptr;
          if (next != nullptr) {
            p = next;
            ++line;  // a fast record is one line (the last one may lack its newline: no matter)
          } else {
            // The general parser: quotes, and the errors with their exact messages.
            const int64_t record_line = line;
            split_record(p, e, line, delimiter, where, fields);
            if (static_cast<int64_t>(fields.size()) != ncols) {
              fail_record(where, record_line, fmt::format("expected {} fields, found {}", ncols, fields.size()));
            }
            for (int64_t c = 0; c < ncols; ++c) {
              double v = 0;
              const CellKind kind = parse_cell(fields[c], &v);
              if (kind == CellKind::kBad) {
                throw ValueError(fmt::format("{}: line {}, column {} ('{}'): expected a number, found '{}'", where,
                                             record_line, c + 1, excerpt(head.names[c]), excerpt(trim(fields[c]))));
              }
              out[c * block_rows] = stored_cell(kind, v);
            }
          }
          row_added();
        };
        if (!fast_ok) {
          while (p < e) read_record();
        } else {
          // Without quotes, a record's fields end at the next ncols separators: they are found
          // first, for a segment at a time, so the cells parse independently of each other.
          while (p < e) {
            char* segment_end = e;
            if (e - p > kSegmentBytes) {
              const void* nl = memrchr(p, '\n', kSegmentBytes);
              if (nl != nullptr) segment_end = static_cast<char*>(const_cast<void*>(nl)) + 1;
            }
            const auto length = static_cast<size_t>(segment_end - p);
            if (length > (size_t{1} << 31)) {  // offsets are 32-bit: a record of gigabytes goes the slow way
              while (p < e) read_record();
              break;
            }
            if (separators.size() < length + 64) separators.resize(length + 64);
            bool quoted = false;
            const size_t n = index_separators(p, segment_end, delimiter, separators.data(), &quoted);
            if (quoted) {  // quoted fields may hold newlines: the general parser, to the chunk's end
              while (p < e) read_record();
              break;
            }
            const char* const base = p;
            size_t j = 0;
            while (p < segment_end) {
              while (j < n && base + separators[j] < p) ++j;
              if (j + ncols <= n && *p != '\n' && *p != '\r') {
                const uint32_t* sep = separators.data() + j;
                const bool ok =
                    read_record_indexed(p, base, sep, e, delimiter, ncols, block.data() + rows_in_block, block_rows);
                const char* s = base + sep[ncols - 1] + 1;
                if (ok) {
                  p = const_cast<char*>(s);
                  j += ncols;
                  ++line;
                  row_added();
                  continue;
                }
              }
              read_record();  // blank lines, the file's last record without a newline, errors
            }
          }
        }
        flush_block(row_ref(id, local - rows_in_block));
      } catch (const ValueError& e) {
        record_error(id, e.what(), false);
        return;
      } catch (const std::exception& e) {
        record_error(id, fmt::format("{}: {}", where, e.what()), true);
        return;
      }
      share_row_count();
      {
        std::lock_guard<std::mutex> lock(info_mutex);
        if (static_cast<int64_t>(chunk_rows.size()) <= id) chunk_rows.resize(id + 1, 0);
        chunk_rows[id] = local;
      }
      std::string buffer = std::move(chunk->data);
      queue.give_buffer(std::move(buffer));
    }
  };

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker, t);

  // The reader: cuts the file into chunks of whole records.
  int64_t chunks = 0;
  try {
    CsvChunkReader reader(path, head);
    for (;;) {
      auto chunk = std::make_unique<Chunk>();
      chunk->data = queue.take_buffer();
      if (!reader.next(chunk->data, &chunk->first_line)) break;
      chunk->id = chunks++;
      if (!queue.push(std::move(chunk))) break;
    }
  } catch (const ValueError& e) {
    record_error(-1, e.what(), false);
  } catch (const IoError& e) {
    record_error(-1, e.what(), true);
  }
  queue.close();
  for (auto& th : pool) th.join();
  if (!error.empty()) {
    if (io_error) throw IoError(error);
    throw ValueError(error);
  }

  // Global row numbers of the chunks.
  chunk_rows.resize(chunks, 0);
  std::vector<int64_t> prefix(chunks + 1, 0);
  for (int64_t i = 0; i < chunks; ++i) prefix[i + 1] = prefix[i] + chunk_rows[i];
  auto global = [&](int64_t ref) { return prefix[ref >> 32] + (ref & 0xffffffffLL); };
  for (ThreadState& st : states) {
    for (ColumnAccumulator& acc : st.columns) {
      for (auto& item : acc.high.items()) item.row = global(item.row);
      for (auto& item : acc.low.items()) item.row = global(item.row);
      for (int64_t& r : acc.nonfinite_rows) r = global(r);
    }
    for (int64_t& r : st.rows.nonfinite_list) r = global(r);
    for (int64_t& r : st.rows.missing_list) r = global(r);
    for (int64_t& r : st.bad_label_rows) r = global(r);
    for (auto& h : st.rows.hashes) h.second = global(h.second);
  }
  for (int t = 1; t < threads; ++t) {
    for (int64_t c = 0; c < nfeatures; ++c) states[0].columns[c].merge(states[t].columns[c]);
    states[0].labels.merge(states[t].labels);
    states[0].bad_labels += states[t].bad_labels;
    auto& bl = states[0].bad_label_rows;
    bl.insert(bl.end(), states[t].bad_label_rows.begin(), states[t].bad_label_rows.end());
    RowAccumulator& r0 = states[0].rows;
    RowAccumulator& rt = states[t].rows;
    r0.nonfinite_rows += rt.nonfinite_rows;
    r0.nonfinite_list.insert(r0.nonfinite_list.end(), rt.nonfinite_list.begin(), rt.nonfinite_list.end());
    r0.missing_rows += rt.missing_rows;
    r0.missing_list.insert(r0.missing_list.end(), rt.missing_list.begin(), rt.missing_list.end());
    r0.row_hll.merge(rt.row_hll);
    r0.hashes_complete = r0.hashes_complete && rt.hashes_complete;
    r0.hashes.insert(r0.hashes.end(), rt.hashes.begin(), rt.hashes.end());
    std::vector<std::pair<uint64_t, int64_t>>().swap(rt.hashes);
  }
  ThreadState& st = states[0];
  st.rows.hashes_complete = prefix[chunks] <= max_hashes && !too_many_hashes.load();

  AuditReport report;
  report.path = path.string();
  report.format = "csv";
  report.rows = prefix[chunks];
  report.shape = {report.rows, ncols};
  report.threads = threads;
  report.zscore_limit = options.zscore_limit();
  report.iqr_factor = options.iqr_factor();
  for (int64_t c = 0; c < nfeatures; ++c) {
    report.columns.push_back(finish_column(feature_names[c], st.columns[c], options));
  }
  add_flag(report, "non_finite", st.rows.nonfinite_rows, st.rows.nonfinite_list, max_listed,
           "rows with a NaN or Inf feature");
  add_flag(report, "missing", st.rows.missing_rows, st.rows.missing_list, max_listed,
           "rows with a missing feature (empty, NA, N/A, null)");
  if (label_index >= 0) {
    report.has_labels = true;
    LabelSummary& ls = report.labels;
    ls.name = head.names[label_index];
    ls.count = st.labels.count;
    ls.classes = st.labels.counts_sorted();
    ls.non_integer = st.labels.non_integer;
    ls.non_finite = st.labels.non_finite;
    ls.out_of_range = st.bad_labels - ls.non_integer - ls.non_finite;
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
    for (const auto& [label, n] : ls.classes) {
      if (label < 0 || (options.num_classes() > 0 && label >= options.num_classes())) continue;
      lo = std::min(lo, n), hi = std::max(hi, n);
    }
    ls.imbalance = hi > 0 ? static_cast<double>(hi) / static_cast<double>(lo) : 0;
    if (st.bad_labels > 0) {
      SampleFlag flag;
      flag.kind = "label_out_of_range";
      flag.count = st.bad_labels;
      std::sort(st.bad_label_rows.begin(), st.bad_label_rows.end());
      flag.samples = st.bad_label_rows;
      if (static_cast<int64_t>(flag.samples.size()) > max_listed) flag.samples.resize(max_listed);
      flag.detail = options.num_classes() > 0
                        ? fmt::format("labels missing, non-integer or outside [0, {})", options.num_classes())
                        : "labels missing, non-integer or negative";
      report.flags.push_back(std::move(flag));
    }
  }
  // Duplicate rows: equal row hashes (64-bit; a collision is negligible at these sizes).
  if (st.rows.hashes_complete) {
    auto& h = st.rows.hashes;
    std::sort(h.begin(), h.end());
    std::vector<int64_t> dups;
    for (size_t i = 1; i < h.size(); ++i) {
      if (h[i].first == h[i - 1].first) {
        size_t first = i - 1;
        while (first > 0 && h[first - 1].first == h[i].first) --first;
        ++report.duplicate_rows;
        if (static_cast<int64_t>(dups.size()) < max_listed) dups.push_back(h[i].second);
        if (static_cast<int64_t>(report.duplicate_examples.size()) < options.max_examples()) {
          report.duplicate_examples.emplace_back(h[i].second, h[first].second);
        }
      }
    }
    if (report.duplicate_rows > 0) {
      SampleFlag flag;
      flag.kind = "duplicate";
      flag.count = report.duplicate_rows;
      std::sort(dups.begin(), dups.end());
      flag.samples = std::move(dups);
      flag.detail = "rows equal to an earlier row";
      report.flags.push_back(std::move(flag));
    }
  } else {
    report.duplicates_exact = false;
    report.duplicate_rows =
        std::max<int64_t>(0, report.rows - static_cast<int64_t>(std::llround(st.rows.row_hll.estimate())));
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return report;
}

}  // namespace nanguard::data::detail
