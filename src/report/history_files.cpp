#include "nanguard/report/history_files.h"

#include <algorithm>
#include <cmath>
#include <limits>

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

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// "Nice" tick step: 1, 2 or 5 times a power of ten.
double nice_step(double range, int target_ticks) {
  const double raw = range / std::max(target_ticks, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw) return m * magnitude;
  }
  return 10.0 * magnitude;
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

std::string curves_svg(const History& history, const CurveChart& chart) {
  constexpr double W = 640, H = 400, left = 70, right = 150, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  static const char* colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"};

  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& s : chart.series) {
    for (double v : history.column(s)) {
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
  const double step = nice_step(hi - lo, 5);
  lo = std::floor(lo / step) * step;
  hi = std::ceil(hi / step) * step;
  const int64_t first = history.epochs.empty() ? 1 : history.epochs.front();
  const int64_t last = history.epochs.empty() ? 1 : history.epochs.back();
  const double xspan = std::max<double>(static_cast<double>(last - first), 1.0);
  auto X = [&](double epoch) { return left + (epoch - static_cast<double>(first)) / xspan * pw; };
  auto Y = [&](double v) { return top + (hi - v) / (hi - lo) * ph; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"16\" text-anchor=\"middle\">{3}</text>\n",
      W, H, left + pw / 2, xml_escape(chart.title));
  for (double v = lo; v <= hi + step / 2; v += step) {
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#e5e5e5\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:.4g}</text>\n",
        left, left + pw, Y(v), left - 6, Y(v) + 4, std::abs(v) < step * 1e-9 ? 0.0 : v);
  }
  const int64_t xstep = std::max<int64_t>(1, static_cast<int64_t>(nice_step(xspan, 10)));
  for (int64_t e = first; e <= last; e += xstep) {
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", X(static_cast<double>(e)),
                       top + ph + 18, e);
  }
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n"
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">epoch</text>\n"
      "<text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
      left, top, pw, ph, left + pw / 2, H - 10, top + ph / 2, xml_escape(chart.y_label));
  for (size_t s = 0; s < chart.series.size(); ++s) {
    const char* color = colors[s % 5];
    const auto values = history.column(chart.series[s]);
    std::string points;
    for (size_t i = 0; i < values.size(); ++i) {
      if (!std::isfinite(values[i])) continue;  // a gap, not a fake value
      const double x = X(static_cast<double>(history.epochs[i])), y = Y(values[i]);
      points += fmt::format("{:.1f},{:.1f} ", x, y);
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{} epoch {}: {}</title></circle>\n",
                         x, y, color, xml_escape(chart.series[s]), history.epochs[i], number(values[i]));
    }
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", color, points);
    const double ly = top + 10 + 20 * static_cast<double>(s);
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"2\"/>"
        "<text x=\"{4}\" y=\"{5}\">{6}</text>\n",
        left + pw + 12, left + pw + 36, ly, color, left + pw + 42, ly + 4, xml_escape(chart.series[s]));
  }
  svg += "</svg>\n";
  return svg;
}

std::vector<std::filesystem::path> write_history_files(const std::filesystem::path& dir, const History& history) {
  std::vector<std::filesystem::path> written;
  auto put = [&](const std::string& name, const std::string& text) {
    write_text_atomic(dir / name, text);
    written.push_back(dir / name);
  };
  put("history.csv", history_csv(history));
  put("history.json", history_json(history));
  const auto columns = history.columns();
  auto has = [&](const std::string& c) { return std::find(columns.begin(), columns.end(), c) != columns.end(); };
  std::vector<std::string> loss_series{"loss"};
  if (has("val_loss")) loss_series.push_back("val_loss");
  put("loss.svg", curves_svg(history, {"Loss", "loss", loss_series}));
  for (const auto& c : columns) {
    if (!is_metric_column(c)) continue;
    std::vector<std::string> series{c};
    if (has("val_" + c)) series.push_back("val_" + c);
    put(c + ".svg", curves_svg(history, {c, c, series}));
  }
  return written;
}

}  // namespace nanguard::report
