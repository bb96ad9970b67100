// nanguard replay: 0 when a dumped incident is replayed (reproduced or not), 3 when the dump or
// its config cannot be found.
#include <gtest/gtest.h>

#include "cli/cli_run.h"

namespace nanguard::cli_test {
namespace {
namespace fs = std::filesystem;

// The first folder under RUN/incidents (step_N).
fs::path first_dump(const fs::path& run) {
  if (!fs::is_directory(run / "incidents")) return {};
  for (const auto& entry : fs::directory_iterator(run / "incidents")) return entry.path();
  return {};
}

TEST(CliReplay, ReplaysADumpedIncident) {
  TempDir dir;
  write_tiny_run(dir.path(), "\n[guard]\nmax_incidents = 1\n", /*nan_row=*/20);
  const CliResult fit = run_cli({"fit", "tiny.toml", "--out", "run", "--quiet", "--dump-incidents"}, dir.path());
  ASSERT_EQ(fit.code, 1) << describe(fit);
  const fs::path dump = first_dump(dir / "run");
  ASSERT_FALSE(dump.empty()) << "no incident dump in run/incidents\n" << describe(fit);

  // The run's config.toml is found beside the dump, also when the folder is written as shells
  // complete it (run/incidents/step_N/).
  CliResult r = run_cli({"replay", dump.string() + "/"}, dir.path());
  EXPECT_EQ(r.code, 0) << describe(r);
  EXPECT_TRUE(contains_all(r.out, {"bad_input_data", "dataset id 20"}));

  // Moved away from its run folder, the dump needs --config.
  fs::rename(dump, dir / "lonely");
  r = run_cli({"replay", "lonely"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"lonely", "config.toml", "--config"}));
  r = run_cli({"replay", "lonely", "--config", "tiny.toml"}, dir.path());
  EXPECT_EQ(r.code, 0) << describe(r);

  // A corrupt batch file is bad input, a missing one an I/O error; both are named.
  write_bytes(dir / "lonely" / "x.npy", "not an npy file");
  r = run_cli({"replay", "lonely", "--config", "tiny.toml"}, dir.path());
  EXPECT_EQ(r.code, 2) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"x.npy"}));
  fs::remove(dir / "lonely" / "x.npy");
  r = run_cli({"replay", "lonely", "--config", "tiny.toml"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"lonely", "lacks x.npy"}));
}

TEST(CliReplay, MissingDumpFolderIsAnIoError) {
  TempDir dir;
  const CliResult r = run_cli({"replay", "runs/x/incidents/step_3"}, dir.path());
  EXPECT_EQ(r.code, 3) << describe(r);
  EXPECT_TRUE(contains_all(r.err, {"runs/x/incidents/step_3", "not a folder"}));
}

}  // namespace
}  // namespace nanguard::cli_test
