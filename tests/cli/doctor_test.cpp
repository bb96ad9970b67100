// nanguard doctor: 0 when every check passes, 5 when one warns, 6 when one fails (which of
// them depends on the machine, so the code is checked against the report's own status).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {

TEST(CliDoctor, ExitCodeFollowsTheWorstStatus) {
  TempDir dir;
  const CliResult r = run_cli({"doctor", "--quick", "--json"}, dir.path());
  ASSERT_TRUE(r.code == 0 || r.code == 5 || r.code == 6) << describe(r);
  const auto report = nlohmann::json::parse(r.out);
  const std::string status = report.at("status");
  const int expected = status == "fail" ? 6 : status == "warn" ? 5 : 0;
  EXPECT_EQ(r.code, expected) << "status " << status << "\n" << describe(r);
  EXPECT_EQ(report["counts"]["fail"].get<int>() > 0, r.code == 6);
}

TEST(CliDoctor, UnknownFlagIsBadInput) {
  TempDir dir;
  const CliResult r = run_cli({"doctor", "--quick", "--fast"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"--fast"}));
}

}  // namespace
}  // namespace nanguard::cli_test
