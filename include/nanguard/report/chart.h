// One chart description, two renderings: a Vega-Lite spec for the HTML report and a static
// SVG image for the run folder, so the report and the images never disagree.
#pragma once

#include <string>
#include <vector>

namespace nanguard::report {

// One line of a chart; x and y have the same length, non-finite y values are gaps.
struct ChartSeries {
  std::string name;  // legend label, e.g. "val_loss"
  std::vector<double> x;
  std::vector<double> y;
};

// A vertical rule where the guard did something.
struct ChartMarker {
  double x = 0;
  std::string kind;   // "incident", "action" or "warning"
  std::string label;  // tooltip text, e.g. "step 120: incident unsafe_loss/log_of_zero"
};

struct Chart {
  std::string id;               // stable identifier, e.g. "loss" (HTML element ids, file names)
  std::string title;            // "Loss"
  std::string x_label = "epoch";
  std::string y_label;          // "loss"
  bool log_y = false;           // log scale for values spanning decades (gradient norms)
  std::vector<ChartSeries> series;
  std::vector<ChartMarker> markers;
};

// The colour of series i, shared by both renderings.
const char* series_color(size_t i);
// The colour of a marker kind ("incident" red, "action" green, "warning" orange).
const char* marker_color(const std::string& kind);

// A Vega-Lite v5 spec (JSON text) with the data inlined: one line per series, one rule per marker.
std::string chart_vega_lite(const Chart& chart);
// A standalone SVG image of the same chart.
std::string chart_svg(const Chart& chart);

}  // namespace nanguard::report
