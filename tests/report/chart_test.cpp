#include "nanguard/report/chart.h"

#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace nanguard::report {
namespace {

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

Chart two_series() {
  Chart c;
  c.id = "loss";
  c.title = "Loss";
  c.y_label = "loss";
  c.series.push_back({"loss", {1, 2, 3}, {0.9, std::nan(""), 0.5}});
  c.series.push_back({"val_loss", {1, 2, 3}, {1.0, 0.8, 0.7}});
  c.markers.push_back({2, "incident", "step 40: incident unsafe_loss"});
  c.markers.push_back({2, "action", "step 40: repair skip_step"});
  return c;
}

TEST(Chart, VegaLiteSpecHasOnePointPerFiniteValueAndOneRulePerMarker) {
  auto spec = nlohmann::json::parse(chart_vega_lite(two_series()));
  EXPECT_EQ(spec["$schema"], "https://vega.github.io/schema/vega-lite/v5.json");
  ASSERT_EQ(spec["layer"].size(), 2u);
  const auto& points = spec["layer"][0]["data"]["values"];
  EXPECT_EQ(points.size(), 5u);  // the NaN is a gap
  for (const auto& p : points) EXPECT_TRUE(p["y"].is_number());
  EXPECT_EQ(spec["layer"][1]["mark"]["type"], "rule");
  EXPECT_EQ(spec["layer"][1]["data"]["values"].size(), 2u);
  // Incidents come last so a repair at the same step does not hide them.
  EXPECT_EQ(spec["layer"][1]["data"]["values"][0]["label"], "step 40: repair skip_step");
  EXPECT_EQ(spec["layer"][1]["data"]["values"][1]["label"], "step 40: incident unsafe_loss");
}

TEST(Chart, SvgAndVegaLiteUseTheSameColours) {
  const Chart c = two_series();
  auto spec = nlohmann::json::parse(chart_vega_lite(c));
  const auto& range = spec["layer"][0]["encoding"]["color"]["scale"]["range"];
  const std::string svg = chart_svg(c);
  ASSERT_EQ(range.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(range[i], series_color(i));
    EXPECT_NE(svg.find(std::string("stroke=\"") + series_color(i) + "\""), std::string::npos);
  }
  EXPECT_EQ(spec["layer"][1]["encoding"]["stroke"]["scale"]["range"][0], marker_color("incident"));
  EXPECT_NE(svg.find(marker_color("incident")), std::string::npos);
}

TEST(Chart, SvgDrawsSeriesPointsAndMarkers) {
  const std::string svg = chart_svg(two_series());
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 5u);
  EXPECT_EQ(count(svg, "class=\"marker\""), 2u);
  EXPECT_NE(svg.find("step 40: incident unsafe_loss"), std::string::npos);
}

TEST(Chart, LogScaleDropsNonPositiveValuesInBothRenderings) {
  Chart c;
  c.id = "g";
  c.log_y = true;
  c.series.push_back({"grad_norm", {0, 1, 2, 3}, {0.0, 1e-3, 10, -1}});
  auto spec = nlohmann::json::parse(chart_vega_lite(c));
  EXPECT_EQ(spec["layer"][0]["data"]["values"].size(), 2u);
  EXPECT_EQ(spec["layer"][0]["encoding"]["y"]["scale"]["type"], "log");
  EXPECT_EQ(count(chart_svg(c), "<circle"), 2u);
}

TEST(Chart, EmptyAndMismatchedSeriesDoNotCrash) {
  Chart c;
  c.series.push_back({"a", {1, 2, 3}, {1}});  // x longer than y: only the common prefix
  c.series.push_back({"b", {}, {}});
  c.markers.push_back({std::nan(""), "warning", "x"});
  EXPECT_EQ(count(chart_svg(c), "<circle"), 1u);
  EXPECT_EQ(nlohmann::json::parse(chart_vega_lite(c))["layer"][0]["data"]["values"].size(), 1u);
}

TEST(Chart, EscapesTextInSvg) {
  Chart c;
  c.title = "a<b & \"c\"";
  c.series.push_back({"<s>", {1}, {1}});
  const std::string svg = chart_svg(c);
  EXPECT_EQ(svg.find("a<b"), std::string::npos);
  EXPECT_NE(svg.find("a&lt;b &amp; &quot;c&quot;"), std::string::npos);
}

}  // namespace
}  // namespace nanguard::report
