#include "nanguard/data/csv.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

using nanguard::testing::TempDir;
using nanguard::testing::tensors_match;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

constexpr float kNaN = NAN;
constexpr float kInf = INFINITY;

torch::Tensor rows(std::vector<std::vector<float>> values) {
  const auto n = static_cast<int64_t>(values.size());
  std::vector<float> flat;
  for (const auto& row : values) flat.insert(flat.end(), row.begin(), row.end());
  return torch::tensor(flat).reshape({n, n ? static_cast<int64_t>(values[0].size()) : 0});
}

TEST(Csv, ReadsMissingValuesInfinitiesQuotesAndCrlf) {
  TempDir dir;
  const auto path = dir / "mixed.csv";
  write_bytes(path,
              "a,label,\"b \"\"quoted\"\"\"\r\n"
              "1.5,3,-2\r\n"
              ",1,NA\r\n"
              "N/A,0,NaN\r\n"
              "nan,2,null\r\n"
              "inf,7,+inf\r\n"
              "-inf,1,Infinity\r\n"
              "-INFINITY,0,\"1.25\"\r\n"
              " +4 ,2, 1e3\r\n"
              "1e400,5,-1e400\r\n"
              "1e-400,5,\"\"\r\n"
              "\r\n");
  const CsvTable table = read_csv(path, CsvOptions().label_column("label"));
  EXPECT_EQ(table.feature_names, (std::vector<std::string>{"a", "b \"quoted\""}));
  EXPECT_EQ(table.label_name, "label");
  EXPECT_EQ(table.features.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(tensors_match(table.features, rows({{1.5f, -2},
                                                  {kNaN, kNaN},
                                                  {kNaN, kNaN},
                                                  {kNaN, kNaN},
                                                  {kInf, kInf},
                                                  {-kInf, kInf},
                                                  {-kInf, 1.25f},
                                                  {4, 1000},
                                                  {kInf, -kInf},
                                                  {0, kNaN}}),
                            0, 0));
  EXPECT_EQ(table.labels.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(table.labels, torch::tensor({3, 1, 0, 2, 7, 1, 0, 2, 5, 5}, torch::kInt64)));
}

TEST(Csv, ReadsExactFloatValues) {
  TempDir dir;
  write_bytes(dir / "v.csv", "x,y\n0.1,-3.4028235e38\n16777217,1e-45\n");
  const auto t = read_csv(dir / "v.csv").features;
  EXPECT_EQ(t[0][0].item<float>(), 0.1f);
  EXPECT_EQ(t[0][1].item<float>(), -3.4028235e38f);
  EXPECT_EQ(t[1][0].item<float>(), 16777216.0f);
  EXPECT_EQ(t[1][1].item<float>(), 1e-45f);
  EXPECT_FALSE(read_csv(dir / "v.csv").labels.defined());
}

TEST(Csv, LabelsAreFloatUnlessAllIntegers) {
  TempDir dir;
  write_bytes(dir / "f.csv", "x,y\n1,0.5\n2,3\n");
  const auto f = read_csv(dir / "f.csv", CsvOptions().label_column("y"));
  EXPECT_EQ(f.labels.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(tensors_match(f.labels, torch::tensor({0.5f, 3.0f})));
  EXPECT_EQ(f.feature_names, std::vector<std::string>{"x"});

  write_bytes(dir / "n.csv", "x,y\n1,2\n2,\n");
  const auto n = read_csv(dir / "n.csv", CsvOptions().label_column("y"));
  EXPECT_EQ(n.labels.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(tensors_match(n.labels, torch::tensor({2.0f, kNaN})));

  write_bytes(dir / "i.csv", "y,x\n3.0,1\n-1,2\n9007199254740993,3\n");
  const auto i = read_csv(dir / "i.csv", CsvOptions().label_column("y"));
  EXPECT_EQ(i.labels.scalar_type(), torch::kInt64);
  EXPECT_TRUE(torch::equal(i.labels, torch::tensor({int64_t{3}, int64_t{-1}, int64_t{9007199254740993}})));
}

TEST(Csv, ReadsFilesWithoutHeader) {
  TempDir dir;
  write_bytes(dir / "h.csv", "4;1;2\n5;3;4");  // no final newline
  const auto t = read_csv(dir / "h.csv", CsvOptions().has_header(false).delimiter(';').label_column("0"));
  EXPECT_EQ(t.feature_names, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(t.label_name, "0");
  EXPECT_TRUE(tensors_match(t.features, rows({{1, 2}, {3, 4}})));
  EXPECT_TRUE(torch::equal(t.labels, torch::tensor({4, 5}, torch::kInt64)));
  const auto all = read_csv(dir / "h.csv", CsvOptions().has_header(false).delimiter(';'));
  EXPECT_EQ(all.features.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(all.label_name.empty());
}

TEST(Csv, ReadsTabsBlankLinesAndByteOrderMark) {
  TempDir dir;
  write_bytes(dir / "t.tsv", "\xEF\xBB\xBFu\tv\n\n1\t2\n\n\n3\t\n\n");
  const auto t = read_csv(dir / "t.tsv", CsvOptions().delimiter('\t'));
  EXPECT_EQ(t.feature_names, (std::vector<std::string>{"u", "v"}));
  EXPECT_TRUE(tensors_match(t.features, rows({{1, 2}, {3, kNaN}})));
}

TEST(Csv, MaxRowsStopsEarly) {
  TempDir dir;
  write_bytes(dir / "m.csv", "a,b\n1,2\n3,4\nbad,row,here\n");
  EXPECT_TRUE(tensors_match(read_csv(dir / "m.csv", CsvOptions().max_rows(2)).features, rows({{1, 2}, {3, 4}})));
  const auto none = read_csv(dir / "m.csv", CsvOptions().max_rows(0).label_column("b"));
  EXPECT_EQ(none.features.sizes(), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(none.labels.sizes(), (std::vector<int64_t>{0}));
  EXPECT_THROW(read_csv(dir / "m.csv"), ValueError);
  EXPECT_THROW(read_csv(dir / "m.csv", CsvOptions().max_rows(-2)), ValueError);
}

TEST(Csv, HeaderOnlyGivesZeroRows) {
  TempDir dir;
  write_bytes(dir / "h.csv", "a,b,c\n");
  const auto t = read_csv(dir / "h.csv", CsvOptions().label_column("c"));
  EXPECT_EQ(t.features.sizes(), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(t.labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(t.labels.numel(), 0);
}

TEST(Csv, BadCellsNameLineColumnAndText) {
  TempDir dir;
  const auto path = dir / "bad.csv";
  write_bytes(path, "a,b,c\n1,2,3\n\n4,abc,6\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); },
                                      {"bad.csv", "line 4", "column 2", "'b'", "expected a number", "'abc'"}));
  write_bytes(path, "a,b\n1,2\n3,\"x\"\"y\"\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path, CsvOptions().label_column("b")); },
                                      {"line 3", "column 2", "'x\"y'"}));
  write_bytes(path, "a\n" + std::string(100, '7') + "z\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"line 2", "'" + std::string(40, '7') + "...'"}));
  write_bytes(path, "a\n1.5.5\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"'1.5.5'"}));
  write_bytes(path, "a\n1,5\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"line 2", "expected 1 fields, found 2"}));
  write_bytes(path, std::string("a\n\x01\xff\n", 6));
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"\\x01\\xff"}));
}

TEST(Csv, WrongFieldCountsNameTheLine) {
  TempDir dir;
  const auto path = dir / "n.csv";
  write_bytes(path, "a,b,c\r\n1,2,3\r\n1,2\r\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"n.csv", "line 3", "expected 3 fields, found 2"}));
  // A quoted field spanning lines still counts its lines.
  write_bytes(path, "a,b\n\"1\n\",2\n1,2,3\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"line 2", "column 1"}));
  write_bytes(path, "a,b\n1,2\n\"3\n\n4\"\n5,6,7\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"line 3", "expected 2 fields, found 1"}));
  write_bytes(path, "a,b\n1,2\n3,4,\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"line 3", "found 3"}));
}

TEST(Csv, RejectsMalformedQuotesAndOptions) {
  TempDir dir;
  const auto path = dir / "q.csv";
  write_bytes(path, "a,b\n1,\"2\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"q.csv", "line 2", "not closed"}));
  write_bytes(path, "a,b\n1,\"2\"x\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"line 2", "after the closing quote"}));
  write_bytes(path, "a,b\n1,2\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path, CsvOptions().label_column("target")); },
                                      {"q.csv", "label column 'target'", "columns: a, b"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path, CsvOptions().has_header(false).label_column("2")); },
                                      {"label column '2'", "0 to 1"}));
  EXPECT_THROW(read_csv(path, CsvOptions().delimiter('"')), ValueError);
  write_bytes(path, "");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {"q.csv", "empty"}));
  write_bytes(path, "\n\r\n");
  EXPECT_THROW(read_csv(path, CsvOptions().has_header(false)), ValueError);
  EXPECT_TRUE(throws_with<IoError>([&] { read_csv(dir / "missing.csv"); }, {"missing.csv"}));
}

// Files larger than one read buffer, with records and quotes cut at the buffer boundaries.
TEST(Csv, ReadsAcrossBufferBoundaries) {
  TempDir dir;
  std::mt19937 rng(7);
  std::string text = "x,\"y\",label\r\n";
  std::vector<float> expected;
  std::vector<int64_t> labels;
  for (int row = 0; text.size() < (3u << 20); ++row) {
    const float x = static_cast<float>(rng() % 100000) / 8;
    const float y = -static_cast<float>(rng() % 1000);
    const int64_t label = rng() % 10;
    // Vary the record forms so different bytes land on each boundary.
    switch (row % 4) {
      case 0: text += std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(label) + "\r\n"; break;
      case 1: text += "\"" + std::to_string(x) + "\",\"" + std::to_string(y) + "\"," + std::to_string(label) + "\n"; break;
      case 2: text += std::to_string(x) + ", " + std::to_string(y) + " ,\"" + std::to_string(label) + "\"\n\n"; break;
      default: text += std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(label) + "\n"; break;
    }
    expected.push_back(x);
    expected.push_back(y);
    labels.push_back(label);
  }
  write_bytes(dir / "big.csv", text);
  const auto t = read_csv(dir / "big.csv", CsvOptions().label_column("label"));
  const auto n = static_cast<int64_t>(labels.size());
  EXPECT_TRUE(torch::equal(t.features, torch::tensor(expected).reshape({n, 2})));
  EXPECT_TRUE(torch::equal(t.labels, torch::tensor(labels)));

  // One header record longer than the first buffer.
  std::string wide;
  for (int c = 0; c < 150000; ++c) wide += (c ? ",col" : "col") + std::to_string(c);
  wide += "\n";
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 150000; ++c) wide += (c ? "," : "") + std::to_string((c + r) % 10);
    wide += "\n";
  }
  write_bytes(dir / "wide.csv", wide);
  const auto w = read_csv(dir / "wide.csv");
  ASSERT_EQ(w.features.sizes(), (std::vector<int64_t>{2, 150000}));
  EXPECT_EQ(w.feature_names[149999], "col149999");
  EXPECT_EQ(w.features[1][149999].item<float>(), 0.0f);
  EXPECT_EQ(w.features[1][8].item<float>(), 9.0f);
}

// The first read takes 1 MiB. Shifting a record with quotes, CRLF and a blank line across that
// point byte by byte puts each of its characters at the end of the buffer.
TEST(Csv, ReadsRecordsCutAtTheEndOfTheFirstBuffer) {
  TempDir dir;
  const std::string header = "a,b\n";
  const std::string tricky = " \"1.5\" ,\"-2\"\r\n\r\n\"3\",4\r\n5,6\n";
  const size_t buffer = 1 << 20;
  for (size_t shift = 0; shift <= tricky.size(); ++shift) {
    const size_t start = buffer - tricky.size() + shift;  // offset of the tricky record
    const size_t fillers = (start - header.size() - 4) / 4;
    const size_t spaces = start - header.size() - 4 * fillers - 4;
    std::string text = header;
    for (size_t i = 0; i < fillers; ++i) text += "1,2\n";
    text += "7,8" + std::string(spaces, ' ') + "\n";
    ASSERT_EQ(text.size(), start);
    text += tricky + "x,1\n";
    const auto path = dir / "cut.csv";
    write_bytes(path, text);
    const auto n = static_cast<int64_t>(fillers + 4);
    const auto t = read_csv(path, CsvOptions().max_rows(n)).features;
    ASSERT_EQ(t.size(0), n) << "shift " << shift;
    EXPECT_TRUE(torch::equal(t.slice(0, n - 4), torch::tensor({7.0f, 8.0f, 1.5f, -2.0f, 3.0f, 4.0f, 5.0f, 6.0f}).reshape({4, 2})))
        << "shift " << shift;
    // header + fillers + the 7,8 row + four lines of the tricky part, then the bad row.
    const std::string line = "line " + std::to_string(fillers + 7) + ",";
    EXPECT_TRUE(throws_with<ValueError>([&] { read_csv(path); }, {line, "'x'"})) << "shift " << shift;
  }
}

TEST(Csv, FuzzedFilesParseOrRaiseInputErrors) {
  TempDir dir;
  const std::string good = "a,\"b\",label\r\n1.5,-2,0\r\n\"3\",NA,1\r\n,inf,2\r\n\r\n";
  const auto path = dir / "fuzz.csv";
  auto check = [&](const std::string& bytes, const std::string& what) {
    write_bytes(path, bytes);
    try {
      const CsvTable t = read_csv(path, CsvOptions().label_column("label"));
      EXPECT_EQ(t.features.size(1), static_cast<int64_t>(t.feature_names.size())) << what;
      EXPECT_EQ(t.labels.size(0), t.features.size(0)) << what;
    } catch (const ValueError&) {
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << ": unexpected exception: " << e.what();
    }
  };
  for (size_t n = 0; n <= good.size(); ++n) check(good.substr(0, n), "prefix of " + std::to_string(n) + " bytes");
  std::mt19937 rng(99);
  std::string alphabet = "\",\r\n \t1.e-+abcNlI";
  alphabet += '\0';
  alphabet += '\xff';
  for (int i = 0; i < 500; ++i) {
    std::string bytes = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % bytes.size();
      const char c = alphabet[rng() % alphabet.size()];
      switch (rng() % 3) {
        case 0: bytes[at] = c; break;
        case 1: bytes.insert(bytes.begin() + at, c); break;
        default: bytes.erase(at, 1); break;
      }
      if (bytes.empty()) bytes = "x";
    }
    check(bytes, "mutation " + std::to_string(i));
  }
}

}  // namespace
}  // namespace nanguard::data
