#include "nanguard/data/audit_fix.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/data/csv.h"
#include "nanguard/data/idx.h"
#include "nanguard/data/npy.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

namespace fs = std::filesystem;
using nanguard::testing::read_bytes;
using nanguard::testing::TempDir;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

const char* kCsv = "a,b,label\n1,10,0\n,20,1\n3,NaN,0\n5,40,1\n100,50,0\n";

TEST(AuditFix, ImputeMeanAndReportEveryChange) {
  TempDir dir;
  write_bytes(dir / "in.csv", kCsv);
  const FixReport r = fix_file(dir / "in.csv", dir / "out.csv", FixOptions().impute("mean").label_column("label"));
  const CsvTable t = read_csv(dir / "out.csv", CsvOptions().label_column("label"));
  // Means of the finite values: a (1+3+5+100)/4, b (10+20+40+50)/4.
  EXPECT_FLOAT_EQ(t.features[1][0].item<float>(), 109.0f / 4);
  EXPECT_FLOAT_EQ(t.features[2][1].item<float>(), 30.0f);
  EXPECT_FLOAT_EQ(t.features[4][0].item<float>(), 100.0f);
  EXPECT_EQ(t.labels.sum().item<int64_t>(), 2);
  ASSERT_EQ(r.changes.size(), 2u);
  EXPECT_EQ(r.changes[0].row, 1);
  EXPECT_EQ(r.changes[0].column, "a");
  EXPECT_EQ(r.changes[0].action, "impute");
  EXPECT_TRUE(std::isnan(r.changes[0].old_value));
  EXPECT_DOUBLE_EQ(r.changes[0].new_value, 109.0 / 4);
  EXPECT_EQ(r.changes[1].row, 2);
  EXPECT_EQ(r.changes[1].column, "b");
  EXPECT_EQ(r.rows_in, 5);
  EXPECT_EQ(r.rows_out, 5);
  // Untouched cells keep their text.
  EXPECT_NE(read_bytes(dir / "out.csv").find("\n100,50,0\n"), std::string::npos);
  const std::string json = fix_report_to_json(r);
  EXPECT_NE(json.find("\"action\": \"impute\""), std::string::npos);
}

TEST(AuditFix, DropRowsClipAndStandardize) {
  TempDir dir;
  write_bytes(dir / "in.csv", kCsv);
  const FixReport r = fix_file(dir / "in.csv", dir / "out.csv",
                               FixOptions().drop_rows(true).clip_min(0).clip_max(10).label_column("label"));
  EXPECT_EQ(r.dropped_rows, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(r.rows_out, 3);
  const CsvTable t = read_csv(dir / "out.csv", CsvOptions().label_column("label"));
  ASSERT_EQ(t.features.size(0), 3);
  EXPECT_FLOAT_EQ(t.features.select(1, 0).max().item<float>(), 10.0f);
  EXPECT_FLOAT_EQ(t.features.select(1, 1).max().item<float>(), 10.0f);
  EXPECT_EQ(r.columns[0].clipped, 1);  // 100 -> 10
  EXPECT_EQ(r.columns[1].clipped, 2);  // 40, 50 -> 10

  const FixReport s = fix_file(dir / "in.csv", dir / "std.csv",
                               FixOptions().impute("median").standardize(true).label_column("label"));
  const CsvTable u = read_csv(dir / "std.csv", CsvOptions().label_column("label"));
  const torch::Tensor f = u.features.to(torch::kFloat64);
  EXPECT_NEAR(f.mean(0)[0].item<double>(), 0, 1e-6);
  EXPECT_NEAR(f.std(0)[1].item<double>(), 1, 1e-6);
  EXPECT_EQ(s.columns[0].standardized, 5);
}

TEST(AuditFix, WinsorizeClipsToQuantiles) {
  TempDir dir;
  std::string text = "x\n";
  for (int i = 0; i < 100; ++i) text += std::to_string(i) + "\n";
  write_bytes(dir / "w.csv", text);
  const FixReport r = fix_file(dir / "w.csv", dir / "o.csv", FixOptions().winsorize(0.05));
  const CsvTable t = read_csv(dir / "o.csv");
  // numpy.quantile(range(100), [0.05, 0.95]) = 4.95, 94.05.
  EXPECT_NEAR(t.features.min().item<float>(), 4.95f, 1e-4);
  EXPECT_NEAR(t.features.max().item<float>(), 94.05f, 1e-4);
  EXPECT_EQ(r.columns[0].clipped, 10);
  EXPECT_EQ(r.changes[0].action, "winsorize");
}

TEST(AuditFix, NeverTouchesItsInput) {
  TempDir dir;
  write_bytes(dir / "in.csv", kCsv);
  const auto mtime = fs::last_write_time(dir / "in.csv");
  const std::string before = read_bytes(dir / "in.csv");
  // The same path, another spelling, a symlink and a hard link are all refused.
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "in.csv", dir / "in.csv", FixOptions().impute("mean")); },
                                      {"never overwrites"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { fix_file(dir / "in.csv", dir.path() / "." / "in.csv", FixOptions().impute("mean")); }, {"never overwrites"}));
  fs::create_symlink(dir / "in.csv", dir / "link.csv");
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "in.csv", dir / "link.csv", FixOptions().impute("mean")); },
                                      {"never overwrites"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "link.csv", dir / "in.csv", FixOptions().impute("mean")); },
                                      {"never overwrites"}));
  fs::create_hard_link(dir / "in.csv", dir / "hard.csv");
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "in.csv", dir / "hard.csv", FixOptions().impute("mean")); },
                                      {"never overwrites"}));
  // A real fix, then a failing one (bad cell): the input is byte-identical with the same mtime.
  fix_file(dir / "in.csv", dir / "out.csv", FixOptions().impute("mean").standardize(true));
  write_bytes(dir / "bad.csv", "a\n1\nx\n");
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "bad.csv", dir / "out2.csv", FixOptions().impute("mean")); },
                                      {"bad.csv", "line 3"}));
  EXPECT_FALSE(fs::exists(dir / "out2.csv"));  // atomic: nothing half-written
  EXPECT_EQ(read_bytes(dir / "in.csv"), before);
  EXPECT_EQ(fs::last_write_time(dir / "in.csv"), mtime);
}

TEST(AuditFix, BadOptions) {
  TempDir dir;
  write_bytes(dir / "in.csv", kCsv);
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "in.csv", dir / "o.csv", FixOptions()); }, {"nothing to do"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "in.csv", dir / "o.csv", FixOptions().impute("mode")); },
                                      {"--impute", "mode"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { fix_file(dir / "in.csv", dir / "o.csv", FixOptions().impute("constant:abc")); }, {"constant", "abc"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { fix_file(dir / "in.csv", dir / "o.csv", FixOptions().winsorize(0.7)); },
                                      {"--winsorize"}));
  EXPECT_TRUE(throws_with<ValueError>(
      [&] { fix_file(dir / "in.csv", dir / "o.csv", FixOptions().clip_min(5).clip_max(1)); }, {"--clip"}));
  EXPECT_TRUE(throws_with<IoError>([&] { fix_file(dir / "none.csv", dir / "o.csv", FixOptions().impute("mean")); },
                                   {"none.csv"}));
}

TEST(AuditFix, NpyAndIdxSamples) {
  TempDir dir;
  torch::Tensor x = torch::arange(12, torch::kFloat32).reshape({4, 3});
  x[1][2] = std::numeric_limits<float>::quiet_NaN();
  write_npy(dir / "x.npy", x);
  const FixReport r = fix_file(dir / "x.npy", dir / "y.npy", FixOptions().impute("constant:-1"));
  const torch::Tensor y = read_npy(dir / "y.npy");
  EXPECT_EQ(y.scalar_type(), torch::kFloat32);
  EXPECT_FLOAT_EQ(y[1][2].item<float>(), -1.0f);
  ASSERT_EQ(r.changes.size(), 1u);
  EXPECT_EQ(r.changes[0].row, 1);
  EXPECT_EQ(r.changes[0].column, "2");

  torch::Tensor img = torch::ones({5, 2, 2});
  img[3][0][1] = std::numeric_limits<float>::infinity();
  write_idx(dir / "img-idx3-ubyte", img);
  const FixReport d = fix_file(dir / "img-idx3-ubyte", dir / "fixed-idx3-ubyte", FixOptions().drop_rows(true));
  EXPECT_EQ(d.dropped_rows, (std::vector<int64_t>{3}));
  EXPECT_EQ(read_idx(dir / "fixed-idx3-ubyte").sizes().vec(), (std::vector<int64_t>{4, 2, 2}));
}

}  // namespace
}  // namespace nanguard::data
