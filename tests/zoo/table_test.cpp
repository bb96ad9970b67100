// The zoo table: totals and their Markdown / JSON forms from hand-made results, output folders
// and bad options.
#include "nanguard/zoo/table.h"

#include <sys/stat.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::zoo {
namespace {

ScenarioResult result(const std::string& id, const std::string& baseline, bool detected, bool cause, bool repaired) {
  ScenarioResult r;
  r.scenario = id;
  r.baseline = baseline;
  r.detected = detected;
  r.detected_step = detected ? 5 : -1;
  r.cause_correct = cause;
  r.localization_correct = cause;
  r.repaired = repaired;
  r.final_accuracy = repaired ? 0.9 : 0.1;
  r.clean_accuracy = 0.9;
  r.top_cause = baseline == "nanguard" && detected ? "unsafe_loss/log_of_zero" : "";
  r.birth_op = detected ? "aten::log" : "";
  r.diagnosis_seconds = detected ? 0.5 : -1;
  r.seconds = 1.0;
  return r;
}

Table sample_table() {
  Table t;
  t.seeds = 1;
  t.results = {result("Z0", "nanguard", false, true, true), result("Z3", "nanguard", true, true, true),
               result("Z5", "nanguard", true, false, false), result("Z0", "none", false, false, true),
               result("Z3", "none", false, false, false), result("Z5", "none", false, false, false)};
  t.anomaly_note = "not asked";
  return t;
}

TEST(ZooTable, TotalsCountFromTheResults) {
  const auto j = nlohmann::json::parse(sample_table().to_json());
  const auto& g = j["totals"]["nanguard"];
  EXPECT_EQ(g["detection"]["hit"], 2);
  EXPECT_EQ(g["detection"]["of"], 2);  // Z0 is not a fault to detect
  EXPECT_EQ(g["cause"]["hit"], 1);
  EXPECT_EQ(g["repair"]["hit"], 1);
  EXPECT_EQ(g["repair"]["of"], 2);
  EXPECT_EQ(g["false_positives_z0"]["hit"], 0);
  EXPECT_EQ(g["false_positives_z0"]["of"], 1);
  EXPECT_DOUBLE_EQ(g["diagnosis_seconds"].get<double>(), 0.5);
  const auto& n = j["totals"]["none"];
  EXPECT_EQ(n["detection"]["hit"], 0);
  EXPECT_TRUE(n["cause"].is_null());  // `none` does not diagnose
  EXPECT_EQ(j["results"].size(), 6u);
  EXPECT_FALSE(j["anomaly_available"].get<bool>());
}

TEST(ZooTable, MarkdownShowsEveryScenarioAndBaseline) {
  const std::string md = sample_table().to_markdown();
  for (const char* needle : {"| nanguard | 2/2 |", "| none | 0/2 |", "| Z3 |", "| Z5 |", "aten::log",
                             "unsafe_loss/log_of_zero", "Not run: not asked"}) {
    EXPECT_NE(md.find(needle), std::string::npos) << needle << "\n" << md;
  }
}

TEST(ZooTable, WritesResultAndTableFiles) {
  nanguard::testing::TempDir dir;
  write_table(sample_table(), dir / "out");
  EXPECT_TRUE(std::filesystem::exists(dir / "out" / "table.md"));
  EXPECT_TRUE(nlohmann::json::accept(nanguard::testing::read_bytes(dir / "out" / "table.json")));
  write_result(result("Z3", "nanguard", true, true, true), dir / "one");
  const auto j = nlohmann::json::parse(nanguard::testing::read_bytes(dir / "one" / "result.json"));
  EXPECT_EQ(j["scenario"], "Z3");
}

TEST(ZooTable, UnwritableOutputFolderIsAnIoError) {
  nanguard::testing::TempDir dir;
  nanguard::testing::write_bytes(dir / "file", "x");
  EXPECT_TRUE(nanguard::testing::throws_with<IoError>([&] { prepare_output_dir(dir / "file"); }, {"output folder", "file"}));
  EXPECT_TRUE(nanguard::testing::throws_with<IoError>([&] { prepare_output_dir(dir / "file" / "sub"); }, {"output folder"}));
  if (geteuid() != 0) {  // root writes anywhere
    std::filesystem::create_directory(dir / "ro");
    chmod((dir / "ro").c_str(), 0500);
    EXPECT_TRUE(nanguard::testing::throws_with<IoError>([&] { prepare_output_dir(dir / "ro"); }, {"ro"}));
    chmod((dir / "ro").c_str(), 0700);
  }
}

TEST(ZooTable, BadOptions) {
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { run_table(TableOptions().seeds(0)); }, {"seeds", "0"}));
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { run_table(TableOptions().only({"Z42"})); }, {"Z42"}));
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { run_table(TableOptions().baselines({"oracle"})); },
                                            {"unknown baseline 'oracle'"}));
}

TEST(ZooTable, AnomalyModeWithoutScriptSaysWhy) {
  nanguard::testing::TempDir dir;
  const auto r = run_anomaly_mode("/usr/bin/python3", dir.path(), "Z3", 0, dir.path());
  EXPECT_FALSE(r.detected);
  EXPECT_NE(r.error.find("no script"), std::string::npos) << r.error;
}

TEST(ZooTable, PythonGuardWithoutScriptSaysWhy) {
  nanguard::testing::TempDir dir;
  const auto r = run_python_guard("/usr/bin/python3", dir.path(), "Z3", 0, dir.path());
  EXPECT_FALSE(r.detected);
  EXPECT_NE(r.error.find("nanguard_zoo.py"), std::string::npos) << r.error;
}

TEST(ZooTable, PythonGuardColumnIsJudgedLikeTheCppRuns) {
  Table t = sample_table();
  t.anomaly_available = true;
  t.anomaly_note.clear();
  AnomalyResult a;
  a.scenario = "Z3";
  a.detected = true;
  a.op = "LogBackward0";
  t.anomaly.push_back(a);
  PythonGuardResult p;
  p.scenario = "Z3";
  p.detected = true;
  p.birth_op = "aten::log";
  p.phase = "forward";
  p.cause = "unsafe_loss/log_of_zero";
  p.final_accuracy = 0.0;  // below any clean twin: not repaired
  p.finite = true;
  t.python_guard.push_back(p);
  const std::string md = t.to_markdown();
  EXPECT_NE(md.find("nanguard from Python: birth op"), std::string::npos) << md;
  EXPECT_NE(md.find("aten::log (correct) | unsafe_loss/log_of_zero (correct) | no ("), std::string::npos) << md;
  const auto j = nlohmann::json::parse(t.to_json());
  EXPECT_EQ(j["python_guard"][0]["birth_op"], "aten::log");

  // With the Python clean twin's accuracy, that is the bar, not the C++ twin's (90%).
  t.python_guard[0].final_accuracy = 0.80;
  t.python_guard[0].clean_accuracy = 0.805;
  EXPECT_NE(t.to_markdown().find("| yes (80.0% vs 80.5%) |"), std::string::npos) << t.to_markdown();
  t.python_guard[0].clean_accuracy = 0.815;
  EXPECT_NE(t.to_markdown().find("| no (80.0% vs 81.5%) |"), std::string::npos) << t.to_markdown();
}

}  // namespace
}  // namespace nanguard::zoo

namespace nanguard::zoo {
namespace {

// The early-warning column: steps between the first warning and the unguarded run's first
// non-finite value; "no NaN" when the scenario never goes non-finite.
TEST(ZooTable, WarnedStepsAheadComesFromTheFirstWarningAndTheUnguardedRun) {
  Table t = sample_table();
  for (auto& r : t.results) {
    if (r.baseline != "nanguard") continue;
    if (r.scenario == "Z3") r.first_warning_step = 4, r.first_nonfinite_step = 23, r.warnings = 2;
    if (r.scenario == "Z5") r.first_warning_step = 0, r.first_nonfinite_step = -1, r.warnings = 1;
  }
  const std::string md = t.to_markdown();
  EXPECT_NE(md.find("| warned N steps ahead |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 23 | 1/1 | 19 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| never | 1/1 | no NaN |"), std::string::npos) << md;
}

}  // namespace
}  // namespace nanguard::zoo

namespace nanguard::zoo {
namespace {

// The new scenarios sit in the same table as Z0-Z8: every baseline beside nanguard, the finite
// failures (Z9-Z12) counted for detection and repair but not for localization.
TEST(ZooTable, NewScenariosShowEveryBaselineAndFiniteOnesAreNotLocalized) {
  Table t;
  t.seeds = 1;
  for (const char* id : {"Z9", "Z14"}) {
    for (const char* b : {"nanguard", "random", "skip", "none"}) t.results.push_back(result(id, b, true, true, true));
  }
  const std::string md = t.to_markdown();
  const auto row = md.substr(md.find("| Z14 | 90.0 |"));
  EXPECT_NE(md.find("| id | clean | nanguard | none | skip | random |"), std::string::npos) << md;
  EXPECT_EQ(row.substr(0, row.find('\n')),
            "| Z14 | 90.0 | 90.0 (1/1 repaired) | 90.0 (1/1 repaired, finite) | 90.0 (1/1 repaired, 1/1 fired) | "
            "90.0 (1/1 repaired) |");
  const auto j = nlohmann::json::parse(t.to_json());
  const auto& g = j["totals"]["nanguard"];
  EXPECT_EQ(g["detection"]["of"], 2);
  EXPECT_EQ(g["localization"]["of"], 1);  // Z14 only: Z9 never goes non-finite
  EXPECT_EQ(g["repair"]["of"], 2);
  EXPECT_EQ(j["totals"]["random"]["localization"]["of"], 1);
  EXPECT_TRUE(j["totals"]["skip"]["localization"].is_null());
}

}  // namespace
}  // namespace nanguard::zoo

namespace nanguard::zoo {
namespace {

// A stand-in for `nanguard zoo run`: a shell script that writes result.json into --out, or
// fails the way the launcher does.
std::filesystem::path fake_program(const std::filesystem::path& dir, const std::string& body) {
  const auto path = dir / "fake_nanguard";
  nanguard::testing::write_bytes(path, "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = --out ] && out=$2; shift; done\n" + body);
  chmod(path.c_str(), 0755);
  return path;
}

TEST(ZooTable, DataParallelRunsAreReadFromTheirResultOrTheirError) {
  nanguard::testing::TempDir dir;
  const DataParallelCase bad_samples{"Z5", 1, -1, "bad samples on rank 1"};
  const auto ok = run_data_parallel(
      fake_program(dir.path(), R"(echo '{"incident_ranks": [1, 1], "top_cause": "bad_input_data", "cause_correct": true,
 "samples": [7, 123], "actions": ["quarantine_samples", "skip_step"], "final_accuracy": 0.9, "clean_accuracy": 0.89,
 "repaired": true, "weights_identical": true}' > "$out/result.json"
)"),
      bad_samples, 2, 0, "mnist");
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_EQ(ok.error, "");
  EXPECT_EQ(ok.incident_ranks, (std::vector<int>{1, 1}));
  EXPECT_EQ(ok.top_cause, "bad_input_data");
  EXPECT_TRUE(ok.repaired && ok.weights_identical && ok.cause_correct);

  const DataParallelCase kill{"Z0", 1, 50, "rank 1 killed at step 50"};
  const auto died = run_data_parallel(
      fake_program(dir.path(), "echo 'nanguard: data-parallel run failed: rank 1 (pid 9) died of signal 9' >&2\n"
                               "echo 'rank 0: peer gone' >&2\nexit 7\n"),
      kill, 2, 0, "mnist");
  EXPECT_EQ(died.exit_code, 7);
  EXPECT_EQ(died.error, "nanguard: data-parallel run failed: rank 1 (pid 9) died of signal 9");
  EXPECT_EQ(died.kill_step, 50);

  const auto silent = run_data_parallel(fake_program(dir.path(), "exit 0\n"), bad_samples, 2, 0, "mnist");
  EXPECT_EQ(silent.error, "the run wrote no readable result.json");

  Table t;
  t.seeds = 1;
  t.data_parallel = {ok, died};
  const std::string md = t.to_markdown();
  EXPECT_NE(md.find("### Data parallel (2 processes"), std::string::npos) << md;
  EXPECT_NE(md.find("| Z5 | 0 | bad samples on rank 1 | exit 0 | 1 (x2) | bad_input_data (correct) | "
                    "quarantine_samples, skip_step | 90.0 | 89.0 | yes | yes |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| Z0 | 0 | rank 1 killed at step 50 | exit 7: nanguard: data-parallel run failed: rank 1 (pid 9) "
                    "died of signal 9 | - | - |"),
            std::string::npos)
      << md;
  const auto j = nlohmann::json::parse(t.to_json());
  ASSERT_EQ(j["data_parallel"].size(), 2u);
  EXPECT_EQ(j["data_parallel"][1]["exit_code"], 7);
  EXPECT_EQ(j["data_parallel"][0]["incident_ranks"], nlohmann::json::array({1, 1}));
}

}  // namespace
}  // namespace nanguard::zoo
