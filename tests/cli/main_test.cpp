// What every subcommand shares: parsing errors and the documented exit codes.
#include <gtest/gtest.h>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {

TEST(CliMain, HelpListsTheExitCodes) {
  TempDir dir;
  const CliResult r = run_cli({"--help"}, dir.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"fit", "evaluate", "replay", "report", "data", "doctor", "zoo", "Exit codes: 0 ok",
                                   "1 training stopped", "2 bad input", "3 I/O error", "4 internal error",
                                   "5 checks warned", "6 checks failed (doctor, data check)"}));
}

TEST(CliMain, NoSubcommandIsBadInput) {
  TempDir dir;
  const CliResult r = run_cli({}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"subcommand"}));
}

TEST(CliMain, UnknownSubcommandsAreNamed) {
  TempDir dir;
  CliResult r = run_cli({"frobnicate"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"unknown subcommand 'frobnicate'", "fit, evaluate, replay"}));
  r = run_cli({"data", "chek", "train.csv"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"'chek'", "'nanguard data'", "describe, check, fix"}));
}

}  // namespace
}  // namespace nanguard::cli_test
