// The fast path of the CSV describe pass against strtod and the general parser.
#include "data/csv_fast.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "data/audit_csv.h"
#include "nanguard/core/error.h"
#include "nanguard/data/audit.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

using detail::CellKind;
using nanguard::testing::TempDir;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

uint64_t bits_of(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}

#ifdef NANGUARD_CSV_X86
bool cpu_has_v3() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
}

__attribute__((target("arch=x86-64-v3"))) bool parse_cell_fma(const char* p, const char* end, double* v) {
  return detail::parse_decimal_cell<true>(p, end, v);
}
bool parse_cell_v3(const char* p, const char* end, double* v) { return detail::parse_decimal_cell_v3(p, end, v); }
#else
// Other targets have no x86-64-v3 readers: only the portable ones are checked.
bool cpu_has_v3() { return false; }
bool parse_cell_fma(const char* p, const char* end, double* v) { return detail::parse_decimal_cell(p, end, v); }
bool parse_cell_v3(const char* p, const char* end, double* v) { return detail::parse_decimal_cell(p, end, v); }
#endif

// Every fast reader on text: parse_plain_decimal (to its end), parse_decimal_cell with and
// without FMA. Each must either decline or give strtod's value bit for bit.
void expect_like_strtod(const std::string& text) {
  SCOPED_TRACE("'" + text + "'");
  std::string padded = text + std::string(32, ',');  // readable bytes after the cell
  const char* b = padded.data();
  const char* e = b + text.size();
  const double want = std::strtod(text.c_str(), nullptr);
  double v = 0;
  const char* end = detail::parse_plain_decimal(b, e, &v);
  if (end == e) EXPECT_EQ(bits_of(v), bits_of(want));
  // With the delimiter after the text visible to it, it must stop there too.
  end = detail::parse_plain_decimal(b, b + padded.size(), &v);
  if (end == e) EXPECT_EQ(bits_of(v), bits_of(want));
  if (detail::parse_decimal_cell(b, e, &v)) EXPECT_EQ(bits_of(v), bits_of(want));
  if (cpu_has_v3() && parse_cell_fma(b, e, &v)) EXPECT_EQ(bits_of(v), bits_of(want));
  if (cpu_has_v3() && parse_cell_v3(b, e, &v)) EXPECT_EQ(bits_of(v), bits_of(want));
}

// Whether the cell reader takes text (the x86-64-v3 one must agree where both apply).
bool cell_accepted(const std::string& text) {
  std::string padded = text + std::string(32, ',');
  double v;
  const bool taken = detail::parse_decimal_cell(padded.data(), padded.data() + text.size(), &v);
  if (cpu_has_v3() && text.size() <= 9) {
    EXPECT_EQ(parse_cell_v3(padded.data(), padded.data() + text.size(), &v), taken) << text;
  }
  return taken;
}

TEST(CsvFast, PlainDecimalsMatchStrtod) {
  for (const char* s : {"0", "-0", "+0", "0.0", "-0.0", "1", "-1", "+7", "5.", "-5.", ".5", "-.5", "+.25", "00012.500",
                        "123456789", "12345678.12345678", "9007199254740992", "9007199254740993", "0.1", "0.3",
                        "2.675", "1.005", "-0.00000001", "99999999.99999999", "4503599627370497.5", "1234567890123456789",
                        "12345678901234567890", "0.000000000000000000001", "1234567890123456", "9007199254740993", "900719925474099.3",
                        "0.000000000000001", ".000000000000001", "123456789012345.", "-9999999999999999"}) {
    expect_like_strtod(s);
  }
  std::mt19937_64 rng(3);
  for (int i = 0; i < 200000; ++i) {
    const int most = i % 2 ? 10 : 17;  // up to 16 characters and beyond
    const int int_digits = static_cast<int>(rng() % most);
    const int frac_digits = static_cast<int>(rng() % most);
    std::string s = (rng() % 3 == 0) ? "-" : (rng() % 7 == 0 ? "+" : "");
    for (int d = 0; d < int_digits; ++d) s += static_cast<char>('0' + rng() % 10);
    if (frac_digits > 0 || rng() % 5 == 0) s += '.';
    for (int d = 0; d < frac_digits; ++d) s += static_cast<char>('0' + rng() % 10);
    if (int_digits + frac_digits == 0) s += '0';
    expect_like_strtod(s);
    // The generator's own format.
    expect_like_strtod(fmt::format("{:.5f}", std::ldexp(static_cast<double>(rng() >> 11), -static_cast<int>(rng() % 60))));
  }
}

TEST(CsvFast, DeclinesWhatIsNotAPlainDecimal) {
  // Left to parse_cell: words, exponents, spaces, signs twice, several dots, hex, too long.
  for (const char* s : {"", "-", "+", ".", "-.", "1e5", "1E-3", " 1", "1 ", "nan", "inf", "-inf", "NA", "+-5", "--5",
                        "1.2.3", "12a", "0x10", "1,5", "\"1\"", "123456789.1234567890", "12345678901234567"}) {
    EXPECT_FALSE(cell_accepted(s)) << s;
  }
  for (const char* s : {"1", "-1.5", "1234567.12345678", "12345678.1234567", "+.5"}) EXPECT_TRUE(cell_accepted(s)) << s;
}

TEST(CsvFast, CountNewlinesAndIndexSeparators) {
  std::mt19937 rng(5);
  const std::string alphabet = "0123456789.,-\n\r\" ;";
  for (int round = 0; round < 200; ++round) {
    const size_t n = rng() % 3000;
    std::string text(n, ' ');
    for (char& c : text) c = alphabet[rng() % (round % 2 ? alphabet.size() : alphabet.size() - 3)];
    const auto newlines = std::count(text.begin(), text.end(), '\n');
    EXPECT_EQ(detail::count_newlines(text.data(), text.data() + n), newlines);
    EXPECT_EQ(detail::count_newlines_portable(text.data(), text.data() + n), newlines);
    const char delimiter = round % 3 == 0 ? ';' : ',';
    std::vector<uint32_t> want;
    for (size_t i = 0; i < n; ++i) {
      if (text[i] == delimiter || text[i] == '\n') want.push_back(static_cast<uint32_t>(i));
    }
    // The build's version (SIMD on x86-64) and the portable one other targets use.
    for (auto* index_separators : {&detail::index_separators, &detail::index_separators_portable}) {
      std::vector<uint32_t> index(n + 64);
      bool quoted = false;
      const size_t found = index_separators(text.data(), text.data() + n, delimiter, index.data(), &quoted);
      index.resize(found);
      EXPECT_EQ(index, want);
      EXPECT_EQ(quoted, text.find('"') != std::string::npos);
    }
  }
}

// A record read by the fast readers; "" = declined.
std::string fast_record(const std::string& record, int64_t ncols, bool indexed) {
  std::string text = record;
  std::vector<double> out(ncols, -12345.0);
  char* p = text.data();
  char* e = p + text.size();
  const char* next = nullptr;
  if (indexed) {
    std::vector<uint32_t> index(text.size() + 64);
    bool quoted = false;
    const size_t n = detail::index_separators(p, e, ',', index.data(), &quoted);
    if (quoted || static_cast<int64_t>(n) < ncols) return "";
    if (!detail::read_record_indexed(p, p, index.data(), e, ',', ncols, out.data(), 1)) return "";
    next = p + index[ncols - 1] + 1;
  } else {
    next = detail::read_record_fast(p, e, ',', ncols, out.data(), 1);
    if (next == nullptr) return "";
  }
  std::string s = std::to_string(next - text.data()) + ":";
  for (double v : out) {
    if (bits_of(v) == detail::kMissingCellBits) s += "missing ";
    else if (std::isnan(v)) s += bits_of(v) == detail::kCanonicalNanBits ? "nan " : "odd-nan ";
    else s += fmt::format("{} ", v);
  }
  return s;
}

TEST(CsvFast, RecordsLikeTheGeneralParser) {
  // Both fast readers agree with parse_cell on every cell kind, and give up on quotes, wrong
  // field counts and bad cells (the general parser then reports them).
  const std::string padding(40, '\n');
  struct Case {
    std::string record;
    int64_t ncols;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"1.5,-2,3\n", 3, "9:1.5 -2 3 "},
      {"1.5,-2,3\r\n", 3, "10:1.5 -2 3 "},
      {",NA,null\n", 3, "9:missing missing missing "},
      {"nan,-inf,+Inf\n", 3, "14:nan -inf inf "},
      {"-nan,1e3, 2 \n", 3, "13:nan 1000 2 "},
      {"N/A,\t7\t,0x1p3\n", 3, ""},  // hex floats are not numbers here (from_chars, general format)
      {"1,2\n", 3, ""},
      {"1,2,3,4\n", 3, ""},
      {"1,\"2\",3\n", 3, ""},
      {"1,abc,3\n", 3, ""},
      {"12345678901234567890,0.1,-0\n", 3, fmt::format("28:{} 0.1 -0 ", 12345678901234567890.0)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.record);
    // Followed by more text, as inside a chunk (the indexed reader reads ahead).
    EXPECT_EQ(fast_record(c.record + padding, c.ncols, false), c.want);
    EXPECT_EQ(fast_record(c.record + padding, c.ncols, true), c.want);
  }
  // The last record of a file without its newline: the cell reader takes it.
  EXPECT_EQ(fast_record("1,2.5,3", 3, false), "7:1 2.5 3 ");
  EXPECT_EQ(fast_record("1,2.5,3\r", 3, false), "8:1 2.5 3 ");
}

// The reference: each column parsed with strtod, statistics summed in long double.
struct Reference {
  int64_t count = 0, missing = 0, nan = 0, pos_inf = 0, neg_inf = 0, zeros = 0;
  long double sum = 0, sum2 = 0;
  double min = INFINITY, max = -INFINITY;
};

TEST(CsvFast, DescribeMatchesAReferenceAcrossChunksAndFormats) {
  // Over 4 MiB chunks: plain decimals, exponents, words, spaces, CRLF; quotes only in the
  // last part of the file (so both the indexed and the general path run).
  TempDir dir;
  std::mt19937_64 rng(9);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int64_t rows = 160000, cols = 6;
  std::vector<Reference> ref(cols);
  std::string text = "a,b,c,d,e,f\n";
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (c) text += ',';
      const uint64_t pick = rng() % 1000;
      std::string cell;
      if (pick < 10) {
        cell = pick < 5 ? "" : "NA";
        ++ref[c].missing;
        text += cell;
        continue;
      }
      if (pick < 12) cell = "nan";
      else if (pick < 13) cell = "-inf";
      else if (pick < 14) cell = "inf";
      else if (pick < 30) cell = fmt::format("{:e}", normal(rng) * 1e3);
      else if (pick < 40) cell = "0";
      else if (pick < 45) cell = fmt::format(" {:.3f} ", normal(rng));
      else if (pick < 50) cell = fmt::format("{}", static_cast<int64_t>(rng() % 2000000) - 1000000);
      else cell = fmt::format("{:.{}f}", normal(rng) * static_cast<double>(c + 1) * 100, static_cast<int>(rng() % 9));
      if (r > rows * 9 / 10 && pick % 7 == 0) text += "\"" + cell + "\"";
      else text += cell;
      const double v = std::strtod(cell.c_str(), nullptr);
      Reference& x = ref[c];
      if (std::isnan(v)) ++x.nan;
      else if (std::isinf(v)) ++(v > 0 ? x.pos_inf : x.neg_inf);
      else {
        ++x.count;
        x.sum += v;
        x.sum2 += static_cast<long double>(v) * v;
        x.min = std::min(x.min, v);
        x.max = std::max(x.max, v);
        x.zeros += v == 0;
      }
    }
    text += r % 5 == 0 ? "\r\n" : "\n";
  }
  ASSERT_GT(text.size(), size_t{8} << 20);
  write_bytes(dir / "m.csv", text);
  for (int threads : {1, 3}) {
    const AuditReport report = describe_file(dir / "m.csv", AuditOptions().threads(threads));
    ASSERT_EQ(report.rows, rows);
    ASSERT_EQ(report.columns.size(), static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) {
      SCOPED_TRACE(fmt::format("threads {}, column {}", threads, c));
      const ColumnSummary& s = report.columns[c];
      const Reference& x = ref[c];
      EXPECT_EQ(s.count, x.count);
      EXPECT_EQ(s.missing, x.missing);
      EXPECT_EQ(s.nan, x.nan);
      EXPECT_EQ(s.pos_inf, x.pos_inf);
      EXPECT_EQ(s.neg_inf, x.neg_inf);
      EXPECT_EQ(s.zeros, x.zeros);
      EXPECT_EQ(s.min, x.min);
      EXPECT_EQ(s.max, x.max);
      const long double mean = x.sum / x.count;
      const long double var = (x.sum2 - x.sum * mean) / (x.count - 1);
      EXPECT_NEAR(s.mean, static_cast<double>(mean), 1e-9 * std::fabs(static_cast<double>(std::sqrt(var))));
      EXPECT_NEAR(s.std, static_cast<double>(std::sqrt(var)), 1e-9 * static_cast<double>(std::sqrt(var)));
    }
  }
  // A bad cell in the indexed part, and a short record: file, line and column.
  std::string bad = text;
  const size_t at = bad.find('\n', bad.size() / 3) + 1;
  const int64_t line = std::count(bad.begin(), bad.begin() + at, '\n') + 1;
  bad.insert(at, "1,2,3,4,5,6x\n");
  write_bytes(dir / "bad.csv", bad);
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "bad.csv"); },
                                      {"bad.csv", fmt::format("line {}, column 6", line), "'f'", "6x"}));
  bad = text;
  bad.insert(at, "1,2,3\n");
  write_bytes(dir / "short.csv", bad);
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "short.csv"); },
                                      {"short.csv", fmt::format("line {}", line), "expected 6 fields, found 3"}));
}

TEST(CsvFast, WideFileInSmallerBlocks) {
  // 3000 columns: the blocks of rows get shorter (43 rows) and do not line up with chunks.
  TempDir dir;
  const int cols = 3000, rows = 500;
  std::string text;
  for (int c = 0; c < cols; ++c) text += fmt::format("{}c{}", c ? "," : "", c);
  text += "\n";
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      if (c) text += ',';
      if ((r + c) % 97 != 0) text += fmt::format("{}.{}", (r * 7 + c) % 1000, r % 10);
    }
    text += "\n";
  }
  write_bytes(dir / "w.csv", text);
  const AuditReport report = describe_file(dir / "w.csv", AuditOptions().threads(2));
  ASSERT_EQ(report.rows, rows);
  ASSERT_EQ(report.columns.size(), static_cast<size_t>(cols));
  for (int c : {0, 1, 96, 1500, 2999}) {
    SCOPED_TRACE(c);
    int64_t count = 0;
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    for (int r = 0; r < rows; ++r) {
      if ((r + c) % 97 == 0) continue;
      const double v = std::strtod(fmt::format("{}.{}", (r * 7 + c) % 1000, r % 10).c_str(), nullptr);
      ++count, sum += v, lo = std::min(lo, v), hi = std::max(hi, v);
    }
    const ColumnSummary& s = report.columns[c];
    EXPECT_EQ(s.count, count);
    EXPECT_EQ(s.missing, rows - count);
    EXPECT_NEAR(s.mean, sum / static_cast<double>(count), 1e-9);
    EXPECT_EQ(s.min, lo);
    EXPECT_EQ(s.max, hi);
  }
}

}  // namespace
}  // namespace nanguard::data
