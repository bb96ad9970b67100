// Private: the streaming, parallel CSV pass of the data auditor, and the cell parser it shares
// with `fix`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/audit_stats.h"
#include "nanguard/data/audit.h"

namespace nanguard::data::detail {

// How a cell reads: a number (finite or not), a missing value, or not a number.
enum class CellKind { kValue, kMissing, kBad };

// Parses a trimmed cell: "" and NA, N/A, null (any case) are missing; nan, inf, +inf, -inf,
// infinity (any case) are NaN / Inf.
CellKind parse_cell(std::string_view text, double* value);

// Reads the record at p (not a blank line) of ncols cells when every cell is a number or
// missing and unquoted, fast: cell c goes to out[c * stride], a missing cell as
// kMissingCellBits and any NaN as kCanonicalNanBits. Returns the position after the record
// (past its newline), or nullptr for anything else (quotes, a wrong field count, a bad cell):
// the general parser then reads the record and reports its errors. Values match parse_cell.
char* read_record_fast(char* p, char* e, char delimiter, int64_t ncols, double* out, int64_t stride);

// The same for a record without quotes whose fields end at base + ends[c] (the separators
// found in advance): true when it is one record of numbers and missing cells, each ending
// with the delimiter and the last with a newline. Reads 18 bytes past a cell (within e).
bool read_record_indexed(const char* p, const char* base, const uint32_t* ends, const char* e, char delimiter,
                         int64_t ncols, double* out, int64_t stride);

// The value stored for a cell parse_cell read as kind/value (see read_record_fast).
inline double stored_cell(CellKind kind, double value) {
  if (kind == CellKind::kMissing) return bits_to_double(kMissingCellBits);
  return value != value ? bits_to_double(kCanonicalNanBits) : value;
}

[[noreturn]] void fail_record(const std::string& where, int64_t line, const std::string& what);

// Splits the record at p (not a blank line) into fields and moves p past it; line counts
// the newlines passed (inside quotes too). Quotes are removed and "" escapes undone in place
// (the text is modified). Throws ValueError naming the file and the record's line for an
// unclosed quote or text after a closing quote.
inline void split_record(char*& p, char* e, int64_t& line, char delimiter, const std::string& where,
                         std::vector<std::string_view>& fields) {
  const int64_t record_line = line;
  fields.clear();
  for (;;) {
    char* q = p;
    while (q < e && (*q == ' ' || *q == '\t') && *q != delimiter) ++q;
    if (q < e && *q == '"') {
      char* begin = ++q;
      char* out = begin;
      for (;;) {
        if (q >= e) fail_record(where, record_line, "a quoted field is not closed before the end of the file");
        if (*q == '"') {
          if (q + 1 < e && q[1] == '"') {
            *out++ = '"';
            q += 2;
            continue;
          }
          break;
        }
        if (*q == '\n') ++line;
        *out++ = *q++;
      }
      fields.emplace_back(begin, static_cast<size_t>(out - begin));
      ++q;  // closing quote
      while (q < e && (*q == ' ' || *q == '\t' || *q == '\r') && *q != delimiter) ++q;
      if (q < e && *q != delimiter && *q != '\n') {
        fail_record(where, record_line,
                    "unexpected text after the closing quote of field " + std::to_string(fields.size()));
      }
    } else {
      q = p;
      if (delimiter == ',') {
        while (q < e && *q != ',' && *q != '\n') ++q;
      } else {
        while (q < e && *q != delimiter && *q != '\n') ++q;
      }
      char* end = q;
      if ((q == e || *q == '\n') && end > p && end[-1] == '\r') --end;
      fields.emplace_back(p, static_cast<size_t>(end - p));
    }
    if (q >= e) {
      p = e;
      return;
    }
    if (*q == '\n') {
      p = q + 1;
      ++line;
      return;
    }
    p = q + 1;  // past the delimiter
  }
}

// Skips a blank line (LF or CRLF) at p; false when p starts a record.
inline bool skip_blank_line(char*& p, char* e, int64_t& line) {
  if (*p == '\n') {
    ++p, ++line;
    return true;
  }
  if (*p == '\r' && (p + 1 == e || p[1] == '\n')) {
    p += (p + 1 == e) ? 1 : 2;
    ++line;
    return true;
  }
  return false;
}

// Splits CSV text made of whole records into records, calling on_record(fields, line) for
// each non-blank one; line is 1-based, counted from first_line. See split_record.
template <typename OnRecord>
void for_each_record(char* p, char* e, int64_t first_line, char delimiter, const std::string& where,
                     std::vector<std::string_view>& fields, OnRecord&& on_record) {
  int64_t line = first_line;
  while (p < e) {
    if (skip_blank_line(p, e, line)) continue;
    const int64_t record_line = line;
    split_record(p, e, line, delimiter, where, fields);
    on_record(fields, record_line);
  }
}

// Reads the header (or the first record) of a CSV file: its fields and the byte offset and
// line where the data begins.
struct CsvHead {
  std::vector<std::string> names;
  uint64_t data_offset = 0;
  int64_t data_line = 1;
  bool first_record_is_data = false;
};
CsvHead read_csv_head(const std::filesystem::path& path, char delimiter, bool has_header);

class InputFile;

// Cuts a CSV file after its head into chunks of whole records (about 4 MiB each).
class CsvChunkReader {
 public:
  CsvChunkReader(const std::filesystem::path& path, const CsvHead& head);
  ~CsvChunkReader();
  // Fills buffer with the next chunk and its first line; false at the end of the file.
  bool next(std::string& buffer, int64_t* first_line);

 private:
  std::unique_ptr<InputFile> file_;
  std::string carry_;
  int64_t line_;
  bool in_quote_ = false;
  bool eof_ = false;
};

// The streaming describe of a CSV file.
AuditReport describe_csv(const std::filesystem::path& path, const AuditOptions& options);

// Column index of the label column in names, or -1 ("" = none). Throws ValueError naming the
// file when the label is not a column.
int64_t find_label_column(const std::vector<std::string>& names, const std::string& label, bool has_header,
                          const std::string& where);

}  // namespace nanguard::data::detail
