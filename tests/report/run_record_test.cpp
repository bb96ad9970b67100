#include "nanguard/report/run_record.h"

#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::report {
namespace {

using nanguard::testing::TempDir;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

const char* kEvents =
    R"({"step": 12, "kind": "incident", "cause": "unsafe_loss/log_of_zero", "confidence": 0.9, "phase": "forward", "op": "aten::log", "module": "loss", "samples": [3, 7], "explanation": "log of 0", "action": "", "detail": "loss"}
{"step": 12, "kind": "action", "cause": "unsafe_loss/log_of_zero", "confidence": 0.9, "action": "skip_step", "detail": "update of step 12 dropped", "samples": []}
{"step": 12, "kind": "action", "action": "stable_loss", "detail": "loss switched to its stable form"}
{"step": 30, "kind": "warning", "cause": "lr_too_high", "explanation": "loss rising"}
)";

void write_good_run(const std::filesystem::path& dir) {
  write_bytes(dir / "history.csv", "epoch,loss,accuracy,lr\n1,0.5,0.8,0.01\n2,nan,0.85,\n");
  write_bytes(dir / "summary.json", R"({"name": "demo", "epochs": 2, "steps": 40})");
  write_bytes(dir / "config.toml", "name = \"demo\"\n");
  write_bytes(dir / "events.jsonl", kEvents);
  write_bytes(dir / "monitor.csv", "step,loss,grad_norm,grad_norm/0\n1,0.5,2,1.5\n2,,inf,1\n");
}

TEST(RunRecord, ReadsEveryFileOfAGoodRun) {
  TempDir dir;
  write_good_run(dir.path());
  RunRecord run = read_run(dir.path());
  EXPECT_TRUE(run.problems.empty()) << run.problems.front().file << ": " << run.problems.front().message;
  EXPECT_EQ(run.name, "demo");
  ASSERT_EQ(run.history.size(), 2u);
  EXPECT_TRUE(std::isnan(run.history.logs[1].get("loss")));
  EXPECT_FALSE(run.history.logs[1].has("lr"));  // an empty cell is "not logged"
  EXPECT_EQ(run.events.size(), 4u);
  EXPECT_EQ(run.count("action"), 2u);
  EXPECT_DOUBLE_EQ(run.steps_per_epoch(), 20.0);
  ASSERT_EQ(run.signals.steps.size(), 2u);
  ASSERT_EQ(run.signals.columns.size(), 3u);
  EXPECT_EQ(run.signals.columns[2].first, "grad_norm/0");
  EXPECT_TRUE(std::isnan(run.signals.columns[0].second[1]));
  EXPECT_TRUE(std::isinf(run.signals.columns[1].second[1]));
  EXPECT_EQ(run.missing, (std::vector<std::string>{"audit.json", "env.json"}));
}

TEST(RunRecord, IncidentsCollectTheirActionsAndOutcome) {
  TempDir dir;
  write_good_run(dir.path());
  const auto incidents = read_run(dir.path()).incidents();
  ASSERT_EQ(incidents.size(), 1u);
  EXPECT_EQ(incidents[0].incident.op, "aten::log");
  EXPECT_EQ(incidents[0].incident.samples, (std::vector<int64_t>{3, 7}));
  ASSERT_EQ(incidents[0].actions.size(), 2u);
  EXPECT_EQ(incidents[0].outcome(), "stable_loss: loss switched to its stable form");
}

TEST(RunRecord, AnEmptyFolderIsAllMissingAndNoProblem) {
  TempDir dir;
  RunRecord run = read_run(dir.path());
  EXPECT_TRUE(run.problems.empty());
  EXPECT_EQ(run.missing.size(), 7u);
  EXPECT_EQ(run.history.size(), 0u);
  EXPECT_EQ(run.steps_per_epoch(), 0);
}

TEST(RunRecord, NotAFolderIsAnIoError) {
  TempDir dir;
  write_bytes(dir / "file", "x");
  EXPECT_TRUE(throws_with<IoError>([&] { read_run(dir / "file"); }, {"file", "not a run folder"}));
  EXPECT_TRUE(throws_with<IoError>([&] { read_run(dir / "absent"); }, {"absent"}));
}

TEST(RunRecord, BadEventLinesAreNamedAndTheRestIsKept) {
  TempDir dir;
  write_bytes(dir / "events.jsonl", std::string(kEvents) + "{not json\n[1, 2]\n{\"kind\": \"warning\"}\n\n");
  RunRecord run = read_run(dir.path());
  EXPECT_EQ(run.events.size(), 4u);
  ASSERT_EQ(run.problems.size(), 3u);
  for (const auto& p : run.problems) EXPECT_EQ(p.file, "events.jsonl");
  EXPECT_NE(run.problems[0].message.find("line 5 is not JSON"), std::string::npos) << run.problems[0].message;
  EXPECT_NE(run.problems[1].message.find("line 6"), std::string::npos);
  EXPECT_NE(run.problems[1].message.find("not an object"), std::string::npos);
  EXPECT_NE(run.problems[2].message.find("line 7"), std::string::npos);
  EXPECT_NE(run.problems[2].message.find("\"step\""), std::string::npos);
}

TEST(RunRecord, CorruptFilesAreReportedByNameAndOthersStillRead) {
  TempDir dir;
  write_good_run(dir.path());
  write_bytes(dir / "history.csv", "epoch,loss\n1,0.5\n2,abc\n");
  write_bytes(dir / "summary.json", "{\"name\": ");
  write_bytes(dir / "env.json", "[1, 2]");
  write_bytes(dir / "monitor.csv", "loss,step\n1,2\n");
  write_bytes(dir / "audit.json", "");
  RunRecord run = read_run(dir.path());
  auto message_of = [&](const std::string& file) {
    for (const auto& p : run.problems) {
      if (p.file == file) return p.message;
    }
    return std::string("(no problem reported)");
  };
  EXPECT_NE(message_of("history.csv").find("line 3 column 2 (loss): expected a number, found 'abc'"), std::string::npos)
      << message_of("history.csv");
  EXPECT_NE(message_of("summary.json").find("not valid JSON"), std::string::npos) << message_of("summary.json");
  EXPECT_NE(message_of("env.json").find("expected an object"), std::string::npos) << message_of("env.json");
  EXPECT_NE(message_of("monitor.csv").find("start with 'step'"), std::string::npos) << message_of("monitor.csv");
  EXPECT_NE(message_of("audit.json").find("not valid JSON"), std::string::npos) << message_of("audit.json");
  EXPECT_EQ(run.problems.size(), 5u);
  EXPECT_EQ(run.events.size(), 4u);  // events.jsonl is fine
  EXPECT_EQ(run.history.size(), 0u);
  EXPECT_TRUE(run.summary_json.empty());
}

TEST(RunRecord, HistoryParserNamesTheLineAndWhatWasExpected) {
  EXPECT_TRUE(throws_with<ValueError>([] { parse_history_csv("", "h.csv"); }, {"h.csv", "empty", "epoch"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_history_csv("step,loss\n", "h.csv"); }, {"h.csv line 1", "'step'"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_history_csv("epoch,loss\n1,2,3\n", "h.csv"); },
                                      {"h.csv line 2", "expected 2 values", "found 3"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_history_csv("epoch,loss\nx,2\n", "h.csv"); }, {"line 2 column 1"}));
  EXPECT_TRUE(throws_with<ValueError>([] { parse_signals_csv("step,a\n1\n", "m.csv"); }, {"m.csv line 2", "expected 2"}));
}

TEST(RunRecord, CrlfLineEndingsAreAccepted) {
  const History h = parse_history_csv("epoch,loss\r\n1,0.5\r\n", "h.csv");
  ASSERT_EQ(h.size(), 1u);
  EXPECT_DOUBLE_EQ(h.logs[0].get("loss"), 0.5);
}

TEST(RunRecord, NonSvgAuditImagesAreProblemsNotContent) {
  TempDir dir;
  std::filesystem::create_directories(dir / "audit");
  write_bytes(dir / "audit" / "a.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>");
  write_bytes(dir / "audit" / "b.svg", "\x89PNG");
  RunRecord run = read_run(dir.path());
  ASSERT_EQ(run.audit_images.size(), 1u);
  EXPECT_EQ(run.audit_images[0].first, "a.svg");
  ASSERT_EQ(run.problems.size(), 1u);
  EXPECT_EQ(run.problems[0].file, "audit/b.svg");
}

}  // namespace
}  // namespace nanguard::report

namespace nanguard::report {
namespace {

// The monitor's own format: one row per value, per-layer signals only on sampled steps.
TEST(RunRecord, MonitorLongFormatIsPivotedIntoColumns) {
  const std::string text =
      "step,signal,layer,value\n"
      "0,loss,,2.5\n0,grad_norm,,1.5\n0,layer_grad_norm,layers.0.dense,0.25\n0,dead_fraction,layers.0.dense,0.1\n"
      "1,loss,,2.0\n1,grad_norm,,1.25\n";
  const SignalTable t = parse_signals_csv(text, "monitor.csv");
  ASSERT_EQ(t.steps, (std::vector<double>{0, 1}));
  std::map<std::string, std::vector<double>> cols(t.columns.begin(), t.columns.end());
  ASSERT_EQ(cols.count("loss"), 1u);
  EXPECT_EQ(cols["loss"], (std::vector<double>{2.5, 2.0}));
  ASSERT_EQ(cols.count("grad_norm/layers.0.dense"), 1u);
  EXPECT_DOUBLE_EQ(cols["grad_norm/layers.0.dense"][0], 0.25);
  EXPECT_TRUE(std::isnan(cols["grad_norm/layers.0.dense"][1]));  // not sampled at step 1
  EXPECT_EQ(cols.count("dead_fraction/layers.0.dense"), 1u);
}

TEST(RunRecord, MonitorLongFormatErrorsNameLineAndColumn) {
  EXPECT_TRUE(testing::throws_with<ValueError>(
      [] { parse_signals_csv("step,signal,layer,value\n0,loss,,1\n1,loss\n", "monitor.csv"); },
      {"monitor.csv", "line 3", "4 values"}));
  EXPECT_TRUE(testing::throws_with<ValueError>(
      [] { parse_signals_csv("step,signal,layer,value\nx,loss,,1\n", "monitor.csv"); }, {"monitor.csv", "line 2"}));
}

}  // namespace
}  // namespace nanguard::report
