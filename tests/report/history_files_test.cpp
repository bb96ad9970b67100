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

TEST(HistoryFiles, CurvesAreLossThenOneChartPerMetric) {
  const auto curves = history_curves(two_epochs());
  ASSERT_EQ(curves.size(), 2u);
  EXPECT_EQ(curves[0].series, (std::vector<std::string>{"loss", "val_loss"}));
  EXPECT_EQ(curves[1].series, (std::vector<std::string>{"accuracy", "val_accuracy"}));
}

TEST(HistoryFiles, EventMarkersSitOnTheEpochOfTheirStep) {
  std::vector<GuardEvent> events(3);
  events[0].step = 0, events[0].kind = "warning", events[0].cause = "lr_too_high";
  events[1].step = 15, events[1].kind = "incident", events[1].cause = "bad_input_data";
  events[2].step = 15, events[2].kind = "action", events[2].action = "skip_step", events[2].detail = "dropped";
  const auto by_epoch = event_markers(events, 10);
  ASSERT_EQ(by_epoch.size(), 3u);
  EXPECT_EQ(by_epoch[0].x, 1);
  EXPECT_EQ(by_epoch[1].x, 2);
  EXPECT_EQ(by_epoch[1].kind, "incident");
  EXPECT_EQ(by_epoch[1].label, "step 15: incident bad_input_data");
  EXPECT_EQ(by_epoch[2].label, "step 15: repair skip_step (dropped)");
  EXPECT_EQ(event_markers(events, 0)[1].x, 15);  // per-step charts
}

TEST(HistoryFiles, WrittenCurvesCarryTheMarkersAndMatchTheChartSpec) {
  testing::TempDir dir;
  std::vector<ChartMarker> markers{{2, "incident", "step 15: incident bad_input_data"}};
  write_history_files(dir.path(), two_epochs(), markers);
  const std::string svg = testing::read_bytes(dir / "loss.svg");
  EXPECT_NE(svg.find("step 15: incident bad_input_data"), std::string::npos);
  // The image is exactly the SVG rendering of the chart the report draws.
  EXPECT_EQ(svg, chart_svg(history_chart(two_epochs(), history_curves(two_epochs())[0], markers)));
}

}  // namespace
}  // namespace nanguard::report
