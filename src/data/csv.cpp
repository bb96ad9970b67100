#include "nanguard/data/csv.h"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "core/text.h"
#include "data/binary_file.h"
#include "nanguard/core/error.h"

namespace nanguard::data {
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxChunk = 1 << 20;

// Printable excerpt of a cell for an error message, cut at about 40 characters.
std::string excerpt(std::string_view text, size_t limit = 40) {
  return nanguard::detail::printable_excerpt(text, limit);
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// A field as it sits in the read buffer: quotes removed, "" escapes not yet undone.
struct Field {
  const char* begin;
  const char* end;
  bool escaped_quotes;
};

// Splits a file into records, reading it in chunks. A record that does not fit in what has
// been read is scanned again after the next read, and the buffer grows only when one record
// fills it, so the work stays linear and bounded by the file size.
class CsvScanner {
 public:
  CsvScanner(const fs::path& path, char delimiter) : path_(path), file_(path), delimiter_(delimiter) {
    buffer_.resize(std::clamp<uint64_t>(file_.size() + 1, 64, kMaxChunk));
  }

  // Reads the next record that is not a blank line. Returns false at the end of the file.
  bool next(std::vector<Field>& fields) {
    if (!started_) {
      started_ = true;
      while (end_ < 3 && !eof_) refill();
      if (end_ >= 3 && std::memcmp(buffer_.data(), "\xEF\xBB\xBF", 3) == 0) pos_ = 3;  // UTF-8 byte order mark
    }
    for (;;) {
      size_t consumed = 0;
      int64_t newlines = 0;
      const Scan status = scan(fields, consumed, newlines);
      if (status == Scan::kNeedMore) {
        refill();
        continue;
      }
      record_line_ = line_ + skipped_lines_;
      line_ += skipped_lines_ + newlines;
      skipped_lines_ = 0;
      pos_ += consumed;
      record_bytes_ = consumed;
      return status == Scan::kRecord;
    }
  }

  // 1-based line on which the last record returned by next() starts.
  int64_t line() const { return record_line_; }
  // Bytes taken by the last record returned by next().
  uint64_t record_bytes() const { return record_bytes_; }
  uint64_t file_size() const { return file_.size(); }

 private:
  enum class Scan { kRecord, kEnd, kNeedMore };

  void refill() {
    if (pos_ > 0) {
      std::memmove(buffer_.data(), buffer_.data() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    if (end_ == buffer_.size()) buffer_.resize(buffer_.size() * 2);
    const size_t got = file_.read(buffer_.data() + end_, buffer_.size() - end_);
    end_ += got;
    if (got == 0) eof_ = true;
  }

  [[noreturn]] void fail(int64_t line, const std::string& what) const {
    throw ValueError(fmt::format("CSV file '{}': line {}: {}", path_.string(), line, what));
  }

  Scan scan(std::vector<Field>& fields, size_t& consumed, int64_t& newlines) {
    const char* const base = buffer_.data();
    const char* p = base + pos_;
    const char* const e = base + end_;
    // Blank lines are skipped; the lines they take still count.
    for (;;) {
      if (p == e) {
        pos_ = p - base;
        return eof_ ? Scan::kEnd : Scan::kNeedMore;
      }
      if (*p == '\n') {
        ++p;
        ++skipped_lines_;
      } else if (*p == '\r' && (p + 1 == e || p[1] == '\n')) {
        if (p + 1 == e) {
          if (!eof_) {
            pos_ = p - base;
            return Scan::kNeedMore;
          }
          pos_ = end_;
          return Scan::kEnd;
        }
        p += 2;
        ++skipped_lines_;
      } else {
        break;
      }
    }
    pos_ = p - base;
    const int64_t line = line_ + skipped_lines_;
    fields.clear();
    for (;;) {
      const char* q = p;
      while (q < e && is_blank(*q) && *q != delimiter_) ++q;
      if (q < e && *q == '"') {
        const char* begin = ++q;
        bool escaped = false;
        for (;;) {
          const auto* quote = static_cast<const char*>(std::memchr(q, '"', e - q));
          if (quote == nullptr) {
            if (eof_) fail(line, "a quoted field is not closed before the end of the file");
            return Scan::kNeedMore;
          }
          if (quote + 1 < e && quote[1] == '"') {
            escaped = true;
            q = quote + 2;
            continue;
          }
          newlines += std::count(begin, quote, '\n');
          fields.push_back({begin, quote, escaped});
          q = quote + 1;
          break;
        }
        while (q < e && (is_blank(*q) || *q == '\r') && *q != delimiter_) ++q;
        if (q == e && !eof_) return Scan::kNeedMore;
        if (q < e && *q != delimiter_ && *q != '\n') {
          fail(line, fmt::format("unexpected '{}' after the closing quote of field {}", excerpt({q, 1}),
                                 fields.size()));
        }
      } else {
        q = p;
        while (q < e && *q != delimiter_ && *q != '\n') ++q;
        if (q == e && !eof_) return Scan::kNeedMore;
        const char* end = q;
        if ((q == e || *q == '\n') && end > p && end[-1] == '\r') --end;
        fields.push_back({p, end, false});
      }
      if (q == e) {
        consumed = q - (base + pos_);
        return Scan::kRecord;
      }
      if (*q == '\n') {
        ++newlines;
        consumed = q + 1 - (base + pos_);
        return Scan::kRecord;
      }
      p = q + 1;  // past the delimiter
    }
  }

  fs::path path_;
  detail::InputFile file_;
  char delimiter_;
  std::string buffer_;
  size_t pos_ = 0;
  size_t end_ = 0;
  bool eof_ = false;
  int64_t line_ = 1;  // line of buffer_[pos_]
  int64_t skipped_lines_ = 0;
  int64_t record_line_ = 0;
  uint64_t record_bytes_ = 0;
  bool started_ = false;
};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i] >= 'A' && a[i] <= 'Z' ? a[i] - 'A' + 'a' : a[i];
    if (x != b[i]) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// The value of a number too large or too small for T: +/-Inf or +/-0. Decided from the
// decimal exponent of the first non-zero digit.
template <typename T>
T out_of_range_value(std::string_view s) {
  const bool negative = !s.empty() && s[0] == '-';
  size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
  int64_t magnitude = 0;  // position of the first non-zero digit relative to the point
  bool seen_point = false, seen_digit = false;
  for (; i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.'); ++i) {
    if (s[i] == '.') {
      seen_point = true;
    } else if (!seen_digit && s[i] != '0') {
      seen_digit = true;
    } else if (seen_digit && !seen_point) {
      ++magnitude;
    }
    if (!seen_digit && seen_point && s[i] == '0') --magnitude;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    const bool exp_negative = i < s.size() && s[i] == '-';
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    int64_t exponent = 0;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      exponent = std::min<int64_t>(exponent * 10 + (s[i] - '0'), 1 << 30);
    }
    magnitude += exp_negative ? -exponent : exponent;
  }
  const T value = magnitude > 0 ? std::numeric_limits<T>::infinity() : T(0);
  return negative ? -value : value;
}

// Parses a trimmed cell. Missing-value words read as NaN; returns false for anything that is
// not a number. std::from_chars is locale-independent.
template <typename T>
bool parse_number(std::string_view s, T* out) {
  if (s.empty()) {
    *out = std::numeric_limits<T>::quiet_NaN();
    return true;
  }
  std::string_view digits = s;
  // from_chars takes no leading '+'.
  if (digits[0] == '+' && digits.size() > 1 && digits[1] != '-' && digits[1] != '+') digits.remove_prefix(1);
  const char* last = digits.data() + digits.size();
  T value;
  auto [ptr, ec] = std::from_chars(digits.data(), last, value);
  if (ptr == last) {
    if (ec == std::errc()) {
      *out = value;
      return true;
    }
    if (ec == std::errc::result_out_of_range) {
      if constexpr (std::is_same_v<T, float>) {
        // Subnormal floats may land here; double has the range to round them.
        double wide;
        auto r = std::from_chars(digits.data(), last, wide);
        if (r.ptr == last && r.ec == std::errc()) {
          const float inf = std::numeric_limits<float>::infinity();
          *out = std::fabs(wide) <= FLT_MAX ? static_cast<float>(wide) : (wide < 0 ? -inf : inf);
          return true;
        }
      }
      *out = out_of_range_value<T>(digits);
      return true;
    }
  }
  if (iequals(s, "na") || iequals(s, "n/a") || iequals(s, "null") || iequals(s, "nan")) {
    *out = std::numeric_limits<T>::quiet_NaN();
    return true;
  }
  return false;
}

std::string field_text(const Field& field) {
  std::string text(field.begin, field.end);
  if (field.escaped_quotes) {
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      out += text[i];
      if (text[i] == '"' && i + 1 < text.size() && text[i + 1] == '"') ++i;
    }
    text = std::move(out);
  }
  return text;
}

// The trimmed text of a cell; "" escapes are undone into scratch only when present.
std::string_view cell_view(const Field& field, std::string& scratch) {
  if (!field.escaped_quotes) return trim(std::string_view(field.begin, field.end - field.begin));
  scratch = field_text(field);
  return trim(scratch);
}

}  // namespace

CsvTable read_csv(const fs::path& path, const CsvOptions& options) {
  const char delimiter = options.delimiter();
  NANGUARD_CHECK(delimiter != '"' && delimiter != '\n' && delimiter != '\r' && delimiter != '\0',
                 "read_csv('{}'): the delimiter cannot be a quote, CR, LF or NUL", path.string());
  NANGUARD_CHECK(options.max_rows() >= -1, "read_csv('{}'): max_rows must be -1 (all) or >= 0, got {}",
                 path.string(), options.max_rows());
  const std::string where = fmt::format("CSV file '{}'", path.string());

  CsvScanner scanner(path, delimiter);
  std::vector<Field> fields;
  std::vector<std::string> names;
  bool pending_row = false;  // the first record is data when there is no header
  if (options.has_header()) {
    NANGUARD_CHECK(scanner.next(fields), "{}: the file is empty (expected a header line)", where);
    for (const Field& field : fields) names.emplace_back(trim(field_text(field)));
  } else {
    NANGUARD_CHECK(scanner.next(fields), "{}: the file is empty (expected at least one row)", where);
    for (size_t i = 0; i < fields.size(); ++i) names.push_back(std::to_string(i));
    pending_row = true;
  }
  const auto ncols = static_cast<int64_t>(names.size());

  int64_t label_index = -1;
  if (!options.label_column().empty()) {
    const auto it = std::find(names.begin(), names.end(), options.label_column());
    if (it == names.end()) {
      if (!options.has_header()) {
        throw ValueError(fmt::format("{}: label column '{}' is not a column index from 0 to {} (without a header, "
                                     "columns are named by their 0-based index)",
                                     where, options.label_column(), ncols - 1));
      }
      std::string list;
      for (int64_t i = 0; i < std::min<int64_t>(ncols, 10); ++i) list += (i ? ", " : "") + excerpt(names[i]);
      if (ncols > 10) list += ", ...";
      throw ValueError(fmt::format("{}: label column '{}' is not in the header (columns: {})", where,
                                   options.label_column(), list));
    }
    label_index = it - names.begin();
  }

  CsvTable table;
  for (int64_t i = 0; i < ncols; ++i) {
    if (i == label_index) table.label_name = names[i];
    else table.feature_names.push_back(names[i]);
  }
  const auto nfeatures = static_cast<int64_t>(table.feature_names.size());

  auto features = std::make_unique<std::vector<float>>();
  std::vector<double> labels;
  std::vector<int64_t> integer_labels;
  bool labels_are_integers = true;
  std::string scratch;
  int64_t rows = 0;
  const int64_t max_rows = options.max_rows();

  while (max_rows < 0 || rows < max_rows) {
    if (!pending_row && !scanner.next(fields)) break;
    pending_row = false;
    const int64_t line = scanner.line();
    NANGUARD_CHECK(static_cast<int64_t>(fields.size()) == ncols, "{}: line {}: expected {} fields, found {}", where,
                   line, ncols, fields.size());
    if (rows == 0) {
      // Guess the row count from the first row to avoid regrowing; a row takes at least ncols
      // bytes, which bounds the guess by the file size.
      const uint64_t bytes = std::max<uint64_t>(scanner.record_bytes(), 1);
      uint64_t estimate = std::min<uint64_t>(scanner.file_size() / bytes * 5 / 4 + 16,
                                             scanner.file_size() / static_cast<uint64_t>(ncols) + 1);
      if (max_rows >= 0) estimate = std::min<uint64_t>(estimate, static_cast<uint64_t>(max_rows));
      features->reserve(estimate * static_cast<uint64_t>(nfeatures));
    }
    for (int64_t c = 0; c < ncols; ++c) {
      const std::string_view text = cell_view(fields[c], scratch);
      auto bad_cell = [&]() {
        return ValueError(fmt::format("{}: line {}, column {} ('{}'): expected a number, found '{}'", where, line,
                                      c + 1, excerpt(names[c]), excerpt(text)));
      };
      if (c == label_index) {
        double value;
        if (!parse_number(text, &value)) throw bad_cell();
        labels.push_back(value);
        if (labels_are_integers) {
          int64_t integer = 0;
          const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), integer);
          if (ec == std::errc() && ptr == text.data() + text.size()) {
            integer_labels.push_back(integer);
          } else if (std::isfinite(value) && value == std::nearbyint(value) && std::fabs(value) < 9.2e18) {
            integer_labels.push_back(static_cast<int64_t>(value));
          } else {
            labels_are_integers = false;
          }
        }
      } else {
        float value;
        if (!parse_number(text, &value)) throw bad_cell();
        features->push_back(value);
      }
    }
    ++rows;
  }

  if (rows * nfeatures == 0) {
    table.features = torch::empty({rows, nfeatures}, torch::kFloat32);
  } else {
    // Hand the vector to the tensor instead of copying it.
    std::vector<float>* owned = features.release();
    table.features = torch::from_blob(
        owned->data(), {rows, nfeatures}, [owned](void*) { delete owned; }, torch::kFloat32);
  }
  if (label_index >= 0) {
    if (labels_are_integers) {
      table.labels = torch::tensor(integer_labels, torch::kInt64);
    } else {
      table.labels = torch::tensor(labels, torch::kFloat64).to(torch::kFloat32);
    }
    if (rows == 0) table.labels = table.labels.reshape({0});
  }
  return table;
}

}  // namespace nanguard::data
