#include "nanguard/data/audit.h"

#include <cmath>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/data/idx.h"
#include "nanguard/data/npy.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

using nanguard::testing::TempDir;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

// Exact quantile with linear interpolation, computed by sorting (the reference).
double exact_quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const auto i = static_cast<size_t>(pos);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (v[i + 1] - v[i]) * (pos - static_cast<double>(i));
}

std::string write_csv(const TempDir& dir, const std::string& name, const std::vector<std::vector<double>>& cols,
                      const std::vector<std::string>& names) {
  std::string text;
  for (size_t c = 0; c < names.size(); ++c) text += (c ? "," : "") + names[c];
  text += "\n";
  for (size_t r = 0; r < cols[0].size(); ++r) {
    for (size_t c = 0; c < cols.size(); ++c) text += (c ? "," : "") + fmt::format("{}", cols[c][r]);
    text += "\n";
  }
  write_bytes(dir / name, text);
  return (dir / name).string();
}

TEST(AuditDescribe, CsvStatisticsMatchTorch) {
  TempDir dir;
  std::mt19937 rng(1);
  std::normal_distribution<double> normal(3.0, 2.0);
  std::vector<double> a(2000), b(2000);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = normal(rng);
    b[i] = static_cast<double>(i % 7);
  }
  const std::string path = write_csv(dir, "t.csv", {a, b}, {"a", "b"});
  const AuditReport r = describe_file(path, AuditOptions().threads(2));
  ASSERT_EQ(r.rows, 2000);
  ASSERT_EQ(r.columns.size(), 2u);
  const torch::Tensor ta = torch::tensor(a, torch::kFloat64);
  const ColumnSummary& ca = r.columns[0];
  EXPECT_EQ(ca.count, 2000);
  EXPECT_NEAR(ca.mean, ta.mean().item<double>(), 1e-9);
  EXPECT_NEAR(ca.std, ta.std().item<double>(), 1e-9);  // ddof 1, like pandas
  EXPECT_DOUBLE_EQ(ca.min, ta.min().item<double>());
  EXPECT_DOUBLE_EQ(ca.max, ta.max().item<double>());
  // Small columns fit in the sample: quantiles are exact (torch.quantile interpolates linearly).
  EXPECT_EQ(ca.quantile_rank_error, 0);
  EXPECT_NEAR(ca.q25, torch::quantile(ta, 0.25).item<double>(), 1e-9);
  EXPECT_NEAR(ca.q50, torch::quantile(ta, 0.50).item<double>(), 1e-9);
  EXPECT_NEAR(ca.q75, torch::quantile(ta, 0.75).item<double>(), 1e-9);
  EXPECT_NEAR(ca.unique_estimate, 2000, 2000 * 0.05);
  const ColumnSummary& cb = r.columns[1];
  EXPECT_EQ(cb.zeros, (2000 + 6) / 7);
  EXPECT_NEAR(cb.unique_estimate, 7, 0.5);
  EXPECT_EQ(cb.histogram.size(), 20u);
  double total = 0;
  for (double h : cb.histogram) total += h;
  EXPECT_NEAR(total, 2000, 1e-6);
}

TEST(AuditDescribe, MissingNanInfCountedSeparately) {
  TempDir dir;
  write_bytes(dir / "m.csv", "x,y\n1,NA\n,2\nnan,3\ninf,-inf\n-Infinity,null\n0,N/A\n");
  const AuditReport r = describe_file(dir / "m.csv");
  const ColumnSummary& x = r.columns[0];
  EXPECT_EQ(x.count, 2);
  EXPECT_EQ(x.missing, 1);
  EXPECT_EQ(x.nan, 1);
  EXPECT_EQ(x.pos_inf, 1);
  EXPECT_EQ(x.neg_inf, 1);
  EXPECT_EQ(x.zeros, 1);
  EXPECT_EQ(x.nonfinite_rows, (std::vector<int64_t>{1, 2, 3, 4}));
  const ColumnSummary& y = r.columns[1];
  EXPECT_EQ(y.missing, 3);
  EXPECT_EQ(y.neg_inf, 1);
  ASSERT_NE(r.flag("non_finite"), nullptr);
  EXPECT_EQ(r.flag("non_finite")->samples, (std::vector<int64_t>{2, 3, 4}));
  ASSERT_NE(r.flag("missing"), nullptr);
  EXPECT_EQ(r.flag("missing")->samples, (std::vector<int64_t>{0, 1, 4, 5}));
}

TEST(AuditDescribe, OutliersMatchNaiveCount) {
  TempDir dir;
  std::mt19937 rng(2);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> v(5000);
  for (double& x : v) x = normal(rng);
  v[17] = 50, v[4000] = -80, v[999] = 40;
  const std::string path = write_csv(dir, "o.csv", {v}, {"v"});
  const AuditReport r = describe_file(path, AuditOptions().zscore_limit(4).threads(3));
  const ColumnSummary& c = r.columns[0];
  // The reference: a direct count over all values.
  const torch::Tensor t = torch::tensor(v, torch::kFloat64);
  const double mean = t.mean().item<double>(), sd = t.std().item<double>();
  int64_t z = 0, iqr = 0;
  const double q1 = exact_quantile(v, 0.25), q3 = exact_quantile(v, 0.75);
  for (double x : v) {
    z += std::fabs(x - mean) > 4 * sd;
    iqr += x < q1 - 1.5 * (q3 - q1) || x > q3 + 1.5 * (q3 - q1);
  }
  EXPECT_TRUE(c.outlier_counts_exact);
  EXPECT_EQ(c.zscore_outliers, z);
  EXPECT_EQ(c.iqr_outliers, iqr);
  ASSERT_GE(c.outlier_rows.size(), 3u);
  EXPECT_EQ(c.outlier_rows[0], 4000);  // most extreme first
  EXPECT_EQ(std::set<int64_t>(c.outlier_rows.begin(), c.outlier_rows.begin() + 3), (std::set<int64_t>{17, 999, 4000}));
}

TEST(AuditDescribe, LargeColumnQuantilesWithinStatedBound) {
  TempDir dir;
  std::mt19937 rng(3);
  std::exponential_distribution<double> expo(1.0);
  std::vector<double> v(200000);
  for (double& x : v) x = expo(rng);
  const std::string path = write_csv(dir, "big.csv", {v}, {"e"});
  const AuditReport r = describe_file(path, AuditOptions().sample_size(4096).threads(2));
  const ColumnSummary& c = r.columns[0];
  ASSERT_GT(c.quantile_rank_error, 0);
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  auto rank = [&](double x) {
    return static_cast<double>(std::lower_bound(sorted.begin(), sorted.end(), x) - sorted.begin()) /
           static_cast<double>(sorted.size());
  };
  EXPECT_NEAR(rank(c.q25), 0.25, c.quantile_rank_error);
  EXPECT_NEAR(rank(c.q50), 0.50, c.quantile_rank_error);
  EXPECT_NEAR(rank(c.q75), 0.75, c.quantile_rank_error);
  EXPECT_NEAR(c.mean, torch::tensor(v, torch::kFloat64).mean().item<double>(), 1e-9);
  EXPECT_NEAR(c.unique_estimate, 200000, 200000 * 0.07);  // 3 standard errors of the HyperLogLog
}

TEST(AuditDescribe, ManyChunksKeepRowNumbersAndLines) {
  // More than one 4 MiB chunk: row indices and error lines must be global.
  TempDir dir;
  std::string text = "a,b,c\n";
  const int64_t rows = 1200000;
  for (int64_t i = 0; i < rows; ++i) {
    if (i == 723456) text += "\"1e9\",2,3\n";  // quoted outlier
    else if (i == 1150001) text += "1,,3\n";
    else text += fmt::format("{},{},{}\n", i % 10, (i * 7) % 13, i % 3);
  }
  write_bytes(dir / "c.csv", text);
  const AuditReport r = describe_file(dir / "c.csv", AuditOptions().threads(3));
  EXPECT_EQ(r.rows, rows);
  EXPECT_EQ(r.columns[0].outlier_rows.at(0), 723456);
  EXPECT_EQ(r.columns[1].missing, 1);
  EXPECT_EQ(r.columns[1].nonfinite_rows, (std::vector<int64_t>{1150001}));
  // Rows repeat with period lcm(10, 13, 3) = 390: all later rows are duplicates.
  EXPECT_TRUE(r.duplicates_exact);
  EXPECT_EQ(r.duplicate_rows, rows - 390 - 2);  // all but the 390 patterns and the two odd rows
  // A bad cell near the end is reported with its line.
  text += "1,x2,3\n";
  write_bytes(dir / "bad.csv", text);
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "bad.csv"); },
                                      {"bad.csv", fmt::format("line {}", rows + 2), "column 2", "'b'", "x2"}));
}

TEST(AuditDescribe, DuplicateRowsExactAndEstimated) {
  TempDir dir;
  write_bytes(dir / "d.csv", "a,b\n1,2\n3,4\n1,2\n5,6\n3,4\n1,2\n");
  const AuditReport r = describe_file(dir / "d.csv");
  EXPECT_EQ(r.duplicate_rows, 3);
  ASSERT_NE(r.flag("duplicate"), nullptr);
  EXPECT_EQ(r.flag("duplicate")->samples, (std::vector<int64_t>{2, 4, 5}));
  const AuditReport e = describe_file(dir / "d.csv", AuditOptions().max_row_hashes(2));
  EXPECT_FALSE(e.duplicates_exact);
  EXPECT_EQ(e.duplicate_rows, 3);  // HyperLogLog is exact at this size
}

TEST(AuditDescribe, LabelsDistributionAndOutOfRange) {
  TempDir dir;
  write_bytes(dir / "l.csv", "x,label\n1,0\n2,1\n3,1\n4,1\n5,7\n6,-1\n7,0.5\n8,\n");
  const AuditReport r = describe_file(dir / "l.csv", AuditOptions().label_column("label").num_classes(3));
  ASSERT_TRUE(r.has_labels);
  EXPECT_EQ(r.columns.size(), 1u);
  EXPECT_EQ(r.labels.classes, (std::vector<std::pair<int64_t, int64_t>>{{-1, 1}, {0, 1}, {1, 3}, {7, 1}}));
  EXPECT_EQ(r.labels.non_integer, 1);
  EXPECT_EQ(r.labels.non_finite, 1);
  EXPECT_EQ(r.labels.out_of_range, 2);
  EXPECT_DOUBLE_EQ(r.labels.imbalance, 3.0);
  ASSERT_NE(r.flag("label_out_of_range"), nullptr);
  EXPECT_EQ(r.flag("label_out_of_range")->samples, (std::vector<int64_t>{4, 5, 6, 7}));
}

TEST(AuditDescribe, ConstantAndNearConstantColumns) {
  TempDir dir;
  std::string text = "c,n,v\n";
  for (int i = 0; i < 1000; ++i) text += fmt::format("5,{},{}\n", i == 3 ? 9 : 1, i);
  write_bytes(dir / "k.csv", text);
  const AuditReport r = describe_file(dir / "k.csv");
  EXPECT_TRUE(r.columns[0].constant);
  EXPECT_EQ(r.columns[0].std, 0);
  EXPECT_FALSE(r.columns[1].constant);
  EXPECT_TRUE(r.columns[1].near_constant);
  EXPECT_FALSE(r.columns[2].near_constant);
}

TEST(AuditDescribe, CsvBadInputNamesFileLineColumn) {
  TempDir dir;
  write_bytes(dir / "a.csv", "x,y\n1,2\n3\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "a.csv"); }, {"a.csv", "line 3", "expected 2 fields"}));
  write_bytes(dir / "b.csv", "x,y\n1,2\n\n3,abc\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "b.csv"); },
                                      {"b.csv", "line 4", "column 2", "'y'", "abc"}));
  write_bytes(dir / "q.csv", "x,y\n1,\"2\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "q.csv"); }, {"q.csv", "line 2", "not closed"}));
  write_bytes(dir / "e.csv", "");
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "e.csv"); }, {"e.csv", "empty"}));
  write_bytes(dir / "h.csv", "x,y\n1,2\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "h.csv", AuditOptions().label_column("z")); },
                                      {"h.csv", "label column 'z'"}));
  EXPECT_TRUE(throws_with<IoError>([&] { describe_file(dir / "missing.csv"); }, {"missing.csv"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "file.bin"); }, {"file.bin", "unknown data format"}));
}

TEST(AuditDescribe, QuotedFieldsAndCrlf) {
  TempDir dir;
  write_bytes(dir / "q.csv", "\"a\",\"b,c\"\r\n\"1\",\"2\"\r\n3,4\r\n");
  const AuditReport r = describe_file(dir / "q.csv");
  ASSERT_EQ(r.columns.size(), 2u);
  EXPECT_EQ(r.columns[1].name, "b,c");
  EXPECT_EQ(r.rows, 2);
  EXPECT_DOUBLE_EQ(r.columns[1].mean, 3.0);
}

TEST(AuditDescribe, NpyTableAndBadNpy) {
  TempDir dir;
  torch::Tensor t = torch::randn({300, 3}, torch::kFloat64);
  t[10][1] = std::numeric_limits<double>::quiet_NaN();
  write_npy(dir / "t.npy", t);
  const AuditReport r = describe_file(dir / "t.npy");
  EXPECT_EQ(r.format, "npy");
  ASSERT_EQ(r.columns.size(), 3u);
  EXPECT_EQ(r.columns[1].nan, 1);
  EXPECT_NEAR(r.columns[0].mean, t.select(1, 0).mean().item<double>(), 1e-9);
  EXPECT_NEAR(r.columns[2].q50, torch::quantile(t.select(1, 2), 0.5).item<double>(), 1e-9);
  ASSERT_NE(r.flag("non_finite"), nullptr);
  EXPECT_EQ(r.flag("non_finite")->samples, (std::vector<int64_t>{10}));
  write_bytes(dir / "bad.npy", "\x93NUMPY garbage");
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "bad.npy"); }, {"bad.npy"}));
}

TEST(AuditDescribe, IdxImagesPerSampleChecks) {
  TempDir dir;
  torch::manual_seed(4);
  torch::Tensor img = (torch::rand({64, 8, 8}) * 255).to(torch::kUInt8);
  img[3].zero_();                // blank
  img[9].fill_(77);              // constant
  img[20].fill_(255);            // saturated
  img[21].narrow(0, 0, 6).fill_(255);
  write_idx(dir / "images-idx3-ubyte", img);
  torch::Tensor labels = torch::randint(0, 10, {64}, torch::kUInt8);
  labels[5] = 12;
  write_idx(dir / "labels-idx1-ubyte", labels);
  const AuditReport r = describe_file(dir / "images-idx3-ubyte",
                                      AuditOptions().labels_file(dir / "labels-idx1-ubyte").num_classes(10));
  EXPECT_TRUE(r.images);
  EXPECT_EQ(r.columns[0].name, "value");
  EXPECT_EQ(r.columns[0].count, 64 * 64);
  EXPECT_NEAR(r.columns[0].mean, img.to(torch::kFloat64).mean().item<double>(), 1e-9);
  ASSERT_NE(r.flag("blank"), nullptr);
  EXPECT_EQ(r.flag("blank")->samples, (std::vector<int64_t>{3}));
  ASSERT_NE(r.flag("constant"), nullptr);
  EXPECT_EQ(r.flag("constant")->samples, (std::vector<int64_t>{9}));
  ASSERT_NE(r.flag("saturated"), nullptr);
  EXPECT_EQ(r.flag("saturated")->samples, (std::vector<int64_t>{20, 21}));
  ASSERT_NE(r.flag("label_out_of_range"), nullptr);
  EXPECT_EQ(r.flag("label_out_of_range")->samples, (std::vector<int64_t>{5}));
  write_bytes(dir / "short-idx3-ubyte", std::string("\0\0\x08\x03\0\0\0\x02\0\0\0\x02\0\0\0\x02", 16) + "abc");
  EXPECT_TRUE(throws_with<ValueError>([&] { describe_file(dir / "short-idx3-ubyte"); }, {"short-idx3-ubyte"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { describe_file(dir / "images-idx3-ubyte", AuditOptions().labels_file(dir / "short-idx3-ubyte")); },
      {"short-idx3-ubyte"}));
}

TEST(AuditDescribe, OutputsJsonTextAndSvg) {
  TempDir dir;
  write_bytes(dir / "s.csv", "a,b\n1,2\n3,NA\n5,6\n100,8\n");
  const AuditReport r = describe_file(dir / "s.csv");
  const std::string json = audit_to_json(r);
  EXPECT_NE(json.find("\"q50\""), std::string::npos);
  EXPECT_NE(json.find("\"missing\": 1"), std::string::npos);
  const std::string text = audit_to_text(r);
  EXPECT_NE(text.find("quantiles: exact"), std::string::npos);
  EXPECT_NE(text.find("\u2588"), std::string::npos);  // a full sparkline bar
  const auto files = write_histograms(r, dir / "hist");
  ASSERT_EQ(files.size(), 2u);
  const std::string svg = nanguard::testing::read_bytes(files[0]);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 20, true);
}

}  // namespace
}  // namespace nanguard::data
