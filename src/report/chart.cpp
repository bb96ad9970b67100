#include "nanguard/report/chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "report/markup.h"

namespace nanguard::report {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
                                    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79"};
constexpr const char* kMarkerKinds[] = {"incident", "action", "warning"};

std::string number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return fmt::format("{}", v);  // shortest round-trip representation
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

// Incidents drawn last, so a repair at the same step does not hide them.
std::vector<ChartMarker> drawing_order(std::vector<ChartMarker> markers) {
  auto rank = [](const ChartMarker& m) { return m.kind == "incident" ? 2 : m.kind == "action" ? 1 : 0; };
  std::stable_sort(markers.begin(), markers.end(),
                   [&](const ChartMarker& a, const ChartMarker& b) { return rank(a) < rank(b); });
  return markers;
}

// A value is drawn when it is finite (and positive on a log scale).
bool drawable(double v, bool log_y) { return std::isfinite(v) && (!log_y || v > 0); }

}  // namespace

const char* series_color(size_t i) { return kPalette[i % (sizeof(kPalette) / sizeof(kPalette[0]))]; }

const char* marker_color(const std::string& kind) {
  if (kind == "incident") return "#d62728";
  if (kind == "action") return "#2ca02c";
  return "#ff9900";
}

std::string chart_vega_lite(const Chart& chart) {
  using nlohmann::json;
  json values = json::array();
  json domain = json::array(), range = json::array();
  for (size_t s = 0; s < chart.series.size(); ++s) {
    const ChartSeries& series = chart.series[s];
    domain.push_back(series.name);
    range.push_back(series_color(s));
    for (size_t i = 0; i < std::min(series.x.size(), series.y.size()); ++i) {
      if (!std::isfinite(series.x[i]) || !drawable(series.y[i], chart.log_y)) continue;  // a gap, as in the SVG
      values.push_back({{"x", series.x[i]}, {"y", series.y[i]}, {"series", series.name}});
    }
  }
  json y_scale = {{"zero", false}};
  if (chart.log_y) y_scale["type"] = "log";
  json lines = {
      {"data", {{"values", values}}},
      {"mark", {{"type", "line"}, {"point", true}, {"clip", true}}},
      {"encoding",
       {{"x",
         {{"field", "x"},
          {"type", "quantitative"},
          {"title", chart.x_label},
          {"scale", {{"zero", false}}},
          {"axis", {{"tickMinStep", 1}, {"format", "d"}}}}},  // epochs and steps are whole numbers
        {"y",
         {{"field", "y"},
          {"type", "quantitative"},
          {"title", chart.y_label},
          {"scale", y_scale},
          {"axis", {{"format", ".4~g"}}}}},
        {"color",
         {{"field", "series"}, {"type", "nominal"}, {"title", nullptr}, {"scale", {{"domain", domain}, {"range", range}}}}},
        {"tooltip",
         json::array({{{"field", "series"}, {"type", "nominal"}},
                      {{"field", "x"}, {"type", "quantitative"}, {"title", chart.x_label}},
                      {{"field", "y"}, {"type", "quantitative"}, {"title", chart.y_label}, {"format", ".6g"}}})}}}};
  json layers = json::array({lines});
  if (!chart.markers.empty()) {
    json marks = json::array();
    for (const auto& m : drawing_order(chart.markers)) {
      if (std::isfinite(m.x)) marks.push_back({{"x", m.x}, {"kind", m.kind}, {"label", m.label}});
    }
    json kinds = json::array(), kind_colors = json::array();
    for (const char* k : kMarkerKinds) kinds.push_back(k), kind_colors.push_back(marker_color(k));
    layers.push_back(
        {{"data", {{"values", marks}}},
         {"mark", {{"type", "rule"}, {"strokeDash", {5, 3}}, {"strokeWidth", 2}}},
         {"encoding",
          {{"x", {{"field", "x"}, {"type", "quantitative"}}},
           {"stroke", {{"field", "kind"}, {"type", "nominal"}, {"title", "guard"},
                       {"scale", {{"domain", kinds}, {"range", kind_colors}}}}},
           {"tooltip", json::array({{{"field", "label"}, {"type", "nominal"}, {"title", "event"}}})}}}});
  }
  json spec = {{"$schema", "https://vega.github.io/schema/vega-lite/v5.json"},
               {"title", chart.title},
               {"width", "container"},
               {"autosize", {{"type", "fit-x"}, {"contains", "padding"}}},  // legend inside the card
               {"height", 260},
               {"layer", layers}};
  // NaN cannot appear (filtered above); replace odd bytes in names rather than throw.
  return spec.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string chart_svg(const Chart& chart) {
  constexpr double W = 640, H = 400, left = 70, right = 150, top = 40, bottom = 50;
  const double pw = W - left - right, ph = H - top - bottom;
  const bool log_y = chart.log_y;
  auto ty = [&](double v) { return log_y ? std::log10(v) : v; };

  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  double xlo = lo, xhi = -lo;
  for (const auto& s : chart.series) {
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !drawable(s.y[i], log_y)) continue;
      lo = std::min(lo, ty(s.y[i])), hi = std::max(hi, ty(s.y[i]));
      xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
    }
  }
  for (const auto& m : chart.markers) {
    if (std::isfinite(m.x)) xlo = std::min(xlo, m.x), xhi = std::max(xhi, m.x);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (!std::isfinite(xlo)) xlo = 0, xhi = 1;
  if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
  const double step = log_y ? std::max(1.0, std::ceil((hi - lo) / 5)) : nice_step(hi - lo, 5);
  lo = std::floor(lo / step) * step;
  hi = std::ceil(hi / step) * step;
  const double xspan = std::max(xhi - xlo, 1.0);
  auto X = [&](double x) { return left + (x - xlo) / xspan * pw; };
  auto Y = [&](double v) { return top + (hi - ty(v)) / (hi - lo) * ph; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"22\" font-size=\"16\" text-anchor=\"middle\">{3}</text>\n",
      W, H, left + pw / 2, detail::escape_markup(chart.title));
  for (double t = lo; t <= hi + step / 2; t += step) {
    const double v = log_y ? std::pow(10.0, t) : (std::abs(t) < step * 1e-9 ? 0.0 : t);
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\" stroke=\"#e5e5e5\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:.4g}</text>\n",
        left, left + pw, Y(v), left - 6, Y(v) + 4, v);
  }
  const double xstep = std::max(1.0, nice_step(xspan, 10));
  for (double x = std::ceil(xlo / xstep) * xstep; x <= xhi + 1e-9; x += xstep) {
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", X(x), top + ph + 18, number(x));
  }
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n"
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n"
      "<text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
      left, top, pw, ph, left + pw / 2, H - 10, detail::escape_markup(chart.x_label), top + ph / 2, detail::escape_markup(chart.y_label));
  for (const auto& m : drawing_order(chart.markers)) {
    if (!std::isfinite(m.x)) continue;
    svg += fmt::format(
        "<line class=\"marker\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"2\" "
        "stroke-dasharray=\"5,3\"><title>{4}</title></line>\n",
        X(m.x), top, top + ph, marker_color(m.kind), detail::escape_markup(m.label));
  }
  for (size_t s = 0; s < chart.series.size(); ++s) {
    const char* color = series_color(s);
    const ChartSeries& series = chart.series[s];
    std::string points;
    for (size_t i = 0; i < std::min(series.x.size(), series.y.size()); ++i) {
      if (!std::isfinite(series.x[i]) || !drawable(series.y[i], log_y)) continue;  // a gap, not a fake value
      const double x = X(series.x[i]), y = Y(series.y[i]);
      points += fmt::format("{:.1f},{:.1f} ", x, y);
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"><title>{} {} {}: {}</title></circle>\n",
                         x, y, color, detail::escape_markup(series.name), detail::escape_markup(chart.x_label), number(series.x[i]),
                         number(series.y[i]));
    }
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n", color, points);
    const double ly = top + 10 + 20 * static_cast<double>(s);
    svg += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"2\"/>"
        "<text x=\"{4}\" y=\"{5}\">{6}</text>\n",
        left + pw + 12, left + pw + 36, ly, color, left + pw + 42, ly + 4, detail::escape_markup(series.name));
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace nanguard::report
