#include "nanguard/report/history_files.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "nanguard/core/atomic_file.h"

namespace nanguard::report {
namespace {

bool is_metric_column(const std::string& name) {
  return name != "loss" && name != "lr" && name != "seconds" && name.rfind("val_", 0) != 0;
}

std::string number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);  // shortest round-trip representation
}

}  // namespace

std::string history_csv(const History& history) {
  const auto columns = history.columns();
  std::string out = "epoch";
  for (const auto& c : columns) out += "," + c;
  out += "\n";
  for (size_t i = 0; i < history.size(); ++i) {
    out += std::to_string(history.epochs[i]);
    for (const auto& c : columns) out += "," + (history.logs[i].has(c) ? number(history.logs[i].get(c)) : "");
    out += "\n";
  }
  return out;
}

std::string history_json(const History& history) {
  nlohmann::json j;
  j["epochs"] = history.epochs;
  nlohmann::json columns = nlohmann::json::object();
  for (const auto& c : history.columns()) {
    nlohmann::json values = nlohmann::json::array();
    for (double v : history.column(c)) values.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json());
    columns[c] = values;
  }
  j["columns"] = columns;
  return j.dump(2) + "\n";
}

std::vector<CurveChart> history_curves(const History& history) {
  const auto columns = history.columns();
  auto has = [&](const std::string& c) { return std::find(columns.begin(), columns.end(), c) != columns.end(); };
  std::vector<CurveChart> charts;
  std::vector<std::string> loss_series{"loss"};
  if (has("val_loss")) loss_series.push_back("val_loss");
  charts.push_back({"Loss", "loss", loss_series});
  for (const auto& c : columns) {
    if (!is_metric_column(c)) continue;
    std::vector<std::string> series{c};
    if (has("val_" + c)) series.push_back("val_" + c);
    charts.push_back({c, c, series});
  }
  return charts;
}

Chart history_chart(const History& history, const CurveChart& curves, const std::vector<ChartMarker>& markers) {
  Chart chart;
  chart.id = curves.series.empty() ? curves.y_label : curves.series.front();
  chart.title = curves.title;
  chart.x_label = "epoch";
  chart.y_label = curves.y_label;
  std::vector<double> x(history.epochs.begin(), history.epochs.end());
  for (const auto& name : curves.series) chart.series.push_back({name, x, history.column(name)});
  chart.markers = markers;
  return chart;
}

std::string curves_svg(const History& history, const CurveChart& chart) {
  return chart_svg(history_chart(history, chart));
}

std::vector<ChartMarker> event_markers(const std::vector<GuardEvent>& events, double steps_per_epoch) {
  std::vector<ChartMarker> markers;
  for (const auto& e : events) {
    ChartMarker m;
    m.x = steps_per_epoch > 0 ? std::floor(static_cast<double>(e.step) / steps_per_epoch) + 1 : static_cast<double>(e.step);
    m.kind = e.kind == "incident" || e.kind == "action" ? e.kind : "warning";
    const std::string what = e.kind == "incident" ? "incident " + e.cause
                             : e.kind == "action"  ? "repair " + e.action + (e.detail.empty() ? "" : " (" + e.detail + ")")
                                                   : "warning " + (e.cause.empty() ? e.explanation : e.cause);
    m.label = fmt::format("step {}: {}", e.step, what);
    markers.push_back(std::move(m));
  }
  return markers;
}

std::vector<std::filesystem::path> write_history_files(const std::filesystem::path& dir, const History& history,
                                                       const std::vector<ChartMarker>& markers) {
  std::vector<std::filesystem::path> written;
  auto put = [&](const std::string& name, const std::string& text) {
    write_text_atomic(dir / name, text);
    written.push_back(dir / name);
  };
  put("history.csv", history_csv(history));
  put("history.json", history_json(history));
  // The same charts the HTML report draws, with the same markers.
  for (const auto& curves : history_curves(history)) {
    const Chart chart = history_chart(history, curves, markers);
    put(chart.id + ".svg", chart_svg(chart));
  }
  return written;
}

}  // namespace nanguard::report
