#include "nanguard/report/tensorboard.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sys/wait.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "guarded_run.h"
#include "nanguard/core/error.h"
#include "nanguard/report/tensorboard_callback.h"
#include "support/test_support.h"

namespace nanguard::report {
namespace {

using nanguard::testing::read_bytes;
using nanguard::testing::TempDir;
using nanguard::testing::write_bytes;

const std::filesystem::path kReader = std::filesystem::path(__FILE__).parent_path() / "read_tensorboard.py";

struct ReaderResult {
  int exit_code = -1;
  std::string output;
  std::vector<nlohmann::json> records;
};

// Runs the independent Python reader on one event file.
ReaderResult read_back(const std::filesystem::path& file) {
  ReaderResult r;
  const std::string command = "/usr/bin/python3 '" + kReader.string() + "' '" + file.string() + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (r.exit_code == 0) {
    size_t start = 0;
    for (size_t nl = r.output.find('\n'); nl != std::string::npos; start = nl + 1, nl = r.output.find('\n', start)) {
      r.records.push_back(nlohmann::json::parse(r.output.substr(start, nl - start)));
    }
  }
  return r;
}

#define SKIP_WITHOUT_READER(result)                                                                     \
  if (!std::filesystem::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 is not installed"; \
  if ((result).exit_code == 77) GTEST_SKIP() << (result).output

TEST(TensorBoard, Crc32cMatchesTheStandardCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C catalogue's check value
  EXPECT_EQ(crc32c("", 0), 0u);
  const uint32_t c = crc32c("abc", 3);
  EXPECT_EQ(masked_crc32c("abc", 3), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TensorBoard, RecordsUseTheTfRecordFraming) {
  TempDir dir;
  std::filesystem::path path;
  {
    TensorBoardWriter w(dir.path());
    w.add_scalar("epoch/loss", 0.25, 1);
    path = w.path();
    EXPECT_EQ(w.records(), 2);
  }
  EXPECT_EQ(path.filename().string().rfind("events.out.tfevents.", 0), 0u);
  const std::string bytes = read_bytes(path);
  uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(bytes[i]);
  ASSERT_GT(bytes.size(), 16 + length);
  uint32_t length_crc = 0;
  for (int i = 11; i >= 8; --i) length_crc = (length_crc << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(length_crc, masked_crc32c(bytes.data(), 8));
  EXPECT_NE(bytes.find("brain.Event:2"), std::string::npos);
}

TEST(TensorBoard, RoundTripThroughAnIndependentReader) {
  TempDir dir;
  std::filesystem::path path;
  {
    TensorBoardWriter w(dir.path());
    for (int64_t step = 1; step <= 3; ++step) w.add_scalar("epoch/loss", 1.0 / static_cast<double>(step), step);
    w.add_scalar("grad_norm/total", 12.5, 7);
    w.add_text("guard/incident", "**Incident at step 7**: unsafe_loss", 7);
    path = w.path();
  }
  ReaderResult r = read_back(path);
  SKIP_WITHOUT_READER(r);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(r.records.size(), 6u) << r.output;
  EXPECT_EQ(r.records[0]["file_version"], "brain.Event:2");
  for (int64_t step = 1; step <= 3; ++step) {
    const auto& rec = r.records[static_cast<size_t>(step)];
    EXPECT_EQ(rec["step"], step);
    EXPECT_FLOAT_EQ(rec["scalars"]["epoch/loss"].get<float>(), static_cast<float>(1.0 / static_cast<double>(step)));
    EXPECT_GT(rec["wall_time"].get<double>(), 1.6e9);
  }
  EXPECT_EQ(r.records[4]["step"], 7);
  EXPECT_FLOAT_EQ(r.records[4]["scalars"]["grad_norm/total"].get<float>(), 12.5f);
  const auto& text = r.records[5]["texts"]["guard/incident"];
  EXPECT_EQ(text["text"][0], "**Incident at step 7**: unsafe_loss");
  EXPECT_EQ(text["plugin"], "text");
  EXPECT_EQ(text["dtype"], 7);  // DT_STRING
}

TEST(TensorBoard, TheIndependentReaderCatchesACorruptRecord) {
  TempDir dir;
  std::filesystem::path path;
  {
    TensorBoardWriter w(dir.path());
    w.add_scalar("epoch/loss", 0.5, 1);
    path = w.path();
  }
  std::string bytes = read_bytes(path);
  bytes[bytes.size() - 6] ^= 0x01;  // a bit in the last record's data
  write_bytes(path, bytes);
  ReaderResult r = read_back(path);
  SKIP_WITHOUT_READER(r);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("record 1: data CRC mismatch"), std::string::npos) << r.output;
  write_bytes(path, bytes.substr(0, bytes.size() - 3));
  r = read_back(path);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("record 1: truncated"), std::string::npos) << r.output;
}

TEST(TensorBoard, AGuardedRunLogsCurvesGradientNormsAndIncidents) {
  TempDir run, logs;
  const auto guarded = nanguard::testing::write_guarded_run(run.path(), logs.path());
  ASSERT_GT(guarded.incidents, 0u);
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(logs.path())) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  ReaderResult r = read_back(files[0]);
  SKIP_WITHOUT_READER(r);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::map<std::string, int> scalars, texts;
  std::map<int64_t, double> total_sq, layers_sq;  // per step: total norm squared vs the layers' sum
  std::set<int64_t> epoch_steps;
  for (const auto& rec : r.records) {
    if (rec.contains("scalars")) {
      for (auto it = rec["scalars"].begin(); it != rec["scalars"].end(); ++it) {
        ++scalars[it.key()];
        const int64_t step = rec["step"].get<int64_t>();
        if (it.key() == "grad_norm/total") total_sq[step] = std::pow(it.value().get<double>(), 2);
        else if (it.key().rfind("grad_norm/", 0) == 0) layers_sq[step] += std::pow(it.value().get<double>(), 2);
        if (it.key() == "epoch/loss") epoch_steps.insert(rec["step"].get<int64_t>());
      }
    }
    if (rec.contains("texts")) {
      for (auto it = rec["texts"].begin(); it != rec["texts"].end(); ++it) ++texts[it.key()];
    }
  }
  EXPECT_EQ(epoch_steps, (std::set<int64_t>{1, 2, 3}));
  EXPECT_EQ(scalars["epoch/accuracy"], 3);
  EXPECT_EQ(scalars["epoch/lr"], 3);
  EXPECT_GT(scalars["step/loss"], 30);
  // Skipped steps may have no gradients to measure.
  EXPECT_GT(scalars["grad_norm/total"], 30);
  EXPECT_LE(scalars["grad_norm/total"], scalars["step/loss"]);
  int layer_curves = 0;  // one curve per layer (two dense layers), each with a point per step
  for (const auto& [tag, n] : scalars) {
    if (tag.rfind("grad_norm/", 0) != 0 || tag == "grad_norm/total") continue;
    ++layer_curves;
    EXPECT_EQ(n, scalars["grad_norm/total"]) << tag;
  }
  EXPECT_EQ(layer_curves, 2);
  for (const auto& [step, sq] : total_sq) {
    if (std::isfinite(sq)) EXPECT_NEAR(layers_sq[step], sq, 1e-4 * sq + 1e-12) << "step " << step;
  }
  EXPECT_EQ(static_cast<size_t>(texts["guard/incident"]), guarded.incidents);
  EXPECT_EQ(static_cast<size_t>(texts["guard/incident"] + texts["guard/action"] + texts["guard/warning"]), guarded.events);
}

TEST(TensorBoard, AnUnwritableFolderIsAnIoError) {
  TempDir dir;
  write_bytes(dir / "file", "x");
  EXPECT_THROW(TensorBoardWriter(dir / "file" / "logs"), IoError);
}

TEST(TensorBoard, EventMarkdownNamesTheIncident) {
  GuardEvent e;
  e.step = 7, e.kind = "incident", e.cause = "unsafe_loss/log_of_zero", e.confidence = 0.8, e.op = "aten::log";
  e.samples = {1, 2};
  const std::string md = event_markdown(e);
  EXPECT_NE(md.find("**Incident at step 7**: unsafe_loss/log_of_zero (80% confidence)"), std::string::npos) << md;
  EXPECT_NE(md.find("- birth op: aten::log"), std::string::npos);
  EXPECT_NE(md.find("- samples: 1, 2"), std::string::npos);
}

}  // namespace
}  // namespace nanguard::report
