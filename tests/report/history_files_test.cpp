#include "nanguard/report/history_files.h"

#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "nanguard/core/atomic_file.h"
#include "support/test_support.h"

namespace nanguard::report {
namespace {

History two_epochs() {
  History h;
  Logs a;
  a.set("loss", 0.5);
  a.set("accuracy", 0.875);
  a.set("val_loss", 0.25);
  a.set("val_accuracy", 0.9);
  a.set("lr", 0.001);
  a.set("seconds", 1.5);
  h.append(1, a);
  Logs b = a;
  b.set("loss", std::nan(""));
  h.append(2, b);
  return h;
}

TEST(HistoryFiles, CsvHasTheDocumentedHeaderAndRoundTripValues) {
  const std::string csv = history_csv(two_epochs());
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds");
  EXPECT_NE(csv.find("\n1,0.5,0.875,0.25,0.9,0.001,1.5\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\n2,nan,"), std::string::npos) << csv;
}

TEST(HistoryFiles, JsonNullsNonFiniteValues) {
  auto j = nlohmann::json::parse(history_json(two_epochs()));
  EXPECT_EQ(j["epochs"], nlohmann::json({1, 2}));
  EXPECT_DOUBLE_EQ(j["columns"]["loss"][0].get<double>(), 0.5);
  EXPECT_TRUE(j["columns"]["loss"][1].is_null());
}

TEST(HistoryFiles, SvgDrawsEverySeriesAndSkipsNonFinitePoints) {
  const std::string svg = curves_svg(two_epochs(), {"Loss", "loss", {"loss", "val_loss"}});
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  size_t polylines = 0, circles = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) ++polylines;
  for (size_t p = svg.find("<circle"); p != std::string::npos; p = svg.find("<circle", p + 1)) ++circles;
  EXPECT_EQ(polylines, 2u);
  EXPECT_EQ(circles, 3u);  // loss has one finite point, val_loss two
  EXPECT_EQ(svg.find("nan,"), std::string::npos);
}

TEST(HistoryFiles, WritesTheRunFolderFiles) {
  testing::TempDir dir;
  auto written = write_history_files(dir.path(), two_epochs());
  for (const char* name : {"history.csv", "history.json", "loss.svg", "accuracy.svg"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / name)) << name;
  }
  EXPECT_EQ(written.size(), 4u);
}

}  // namespace
}  // namespace nanguard::report
