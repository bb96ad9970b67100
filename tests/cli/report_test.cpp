// nanguard report: 0 for a run folder (also a damaged one: the problems are named on stderr),
// 3 when the run folder does not exist.
#include <gtest/gtest.h>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {
namespace fs = std::filesystem;

TEST(CliReport, RendersARunFolderAndNamesDamagedFiles) {
  TempDir dir;
  write_tiny_run(dir.path());
  const CliResult fit = run_cli({"fit", "tiny.toml", "--out", "run", "--quiet"}, dir.path());
  ASSERT_EQ(fit.code, 0) << describe(fit);

  CliResult r = run_cli({"report", "run", "--out", "again.html"}, dir.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"again.html"}));
  EXPECT_TRUE(contains_all(read_bytes(dir / "again.html"), {"<html", "tiny"}));

  // A damaged history.csv is named with its line and left out; the report is still written.
  write_bytes(dir / "run" / "history.csv", "epoch,loss,accuracy\n1,abc,0.5\n");
  r = run_cli({"report", "run"}, dir.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"history.csv", "line 2", "abc"}));
  EXPECT_TRUE(contains_all(r.out, {"1 problem(s)"}));
  EXPECT_TRUE(fs::exists(dir / "run" / "report.html"));
}

TEST(CliReport, MissingRunFolderIsAnIoError) {
  TempDir dir;
  const CliResult r = run_cli({"report", "no-such-run"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"no-such-run", "not a run folder"}));
  EXPECT_FALSE(fs::exists(dir / "no-such-run"));
}

}  // namespace
}  // namespace nanguard::cli_test
