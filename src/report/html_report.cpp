#include "nanguard/report/html_report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "nanguard/core/atomic_file.h"
#include "report/markup.h"
#include "nanguard/core/error.h"
#include "nanguard/report/history_files.h"

#ifndef NANGUARD_VEGA_DIR
#define NANGUARD_VEGA_DIR ""
#endif

namespace nanguard::report {
namespace {

using nlohmann::json;

constexpr const char* kScripts[] = {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"};


// Script text placed inside <script>: only "</script" (any case) ends the element early, and
// "<\/script" means the same in a JS string or regex. Nothing else is touched: "</" alone
// is common in minified regexes.
std::string script_safe_js(std::string s) {
  for (size_t p = 0; (p = s.find("</", p)) != std::string::npos; p += 2) {
    std::string tag = s.substr(p + 2, 6);
    for (auto& c : tag) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (tag == "script") s.replace(p, 2, "<\\/");
  }
  return s;
}

// JSON placed inside <script>: '<' only occurs inside strings there, where \u003c means the same.
std::string script_safe_json(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '<') {
      out += "\\u003c";
    } else {
      out += c;
    }
  }
  return out;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool has_scripts(const std::filesystem::path& dir) {
  if (dir.empty()) return false;
  std::error_code ec;
  for (const char* s : kScripts) {
    if (!std::filesystem::is_regular_file(dir / s, ec)) return false;
  }
  return true;
}

std::string fmt_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{:.6g}", v);
}

// Any JSON value as readable HTML: objects as key/value tables, arrays of objects as tables.
std::string json_html(const json& j, int depth = 0) {
  if (j.is_null()) return "<span class=\"muted\">null</span>";
  if (j.is_string()) return detail::escape_markup(j.get<std::string>());
  if (j.is_boolean()) return j.get<bool>() ? "yes" : "no";
  if (j.is_number()) return detail::escape_markup(j.is_number_float() ? fmt_value(j.get<double>()) : j.dump());
  if (depth > 6) return "<code>" + detail::escape_markup(dump(j).substr(0, 200)) + "</code>";
  constexpr size_t kMaxItems = 200;
  if (j.is_object()) {
    if (j.empty()) return "<span class=\"muted\">(empty)</span>";
    std::string out = "<table class=\"kv\">";
    for (auto it = j.begin(); it != j.end(); ++it) {
      out += "<tr><th>" + detail::escape_markup(it.key()) + "</th><td>" + json_html(it.value(), depth + 1) + "</td></tr>";
    }
    return out + "</table>";
  }
  // Arrays.
  if (j.empty()) return "<span class=\"muted\">(none)</span>";
  const bool all_objects = std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_object(); });
  std::string out;
  if (all_objects) {
    std::vector<std::string> keys;
    for (const auto& e : j) {
      for (auto it = e.begin(); it != e.end(); ++it) {
        if (std::find(keys.begin(), keys.end(), it.key()) == keys.end()) keys.push_back(it.key());
      }
    }
    out = "<table class=\"grid\"><tr>";
    for (const auto& k : keys) out += "<th>" + detail::escape_markup(k) + "</th>";
    out += "</tr>";
    size_t n = 0;
    for (const auto& e : j) {
      if (n++ == kMaxItems) break;
      out += "<tr>";
      for (const auto& k : keys) out += "<td>" + (e.contains(k) ? json_html(e[k], depth + 1) : "") + "</td>";
      out += "</tr>";
    }
    out += "</table>";
  } else {
    const bool scalars = std::all_of(j.begin(), j.end(), [](const json& e) { return e.is_primitive(); });
    size_t n = 0;
    if (scalars) {
      for (const auto& e : j) {
        if (n++ == kMaxItems) break;
        out += (n > 1 ? ", " : "") + json_html(e, depth + 1);
      }
    } else {
      out = "<ul>";
      for (const auto& e : j) {
        if (n++ == kMaxItems) break;
        out += "<li>" + json_html(e, depth + 1) + "</li>";
      }
      out += "</ul>";
    }
  }
  if (j.size() > kMaxItems) out += fmt::format(" <span class=\"muted\">... and {} more</span>", j.size() - kMaxItems);
  return out;
}

// A scalar as plain text (stat boxes escape it themselves).
std::string plain(const json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_float()) return fmt_value(j.get<double>());
  if (j.is_null()) return "-";
  return dump(j);
}

std::string not_recorded(const std::string& what, const std::string& file, const RunRecord* run = nullptr) {
  if (run) {
    for (const auto& p : run->problems) {
      if (p.file == file) return "<p class=\"muted notrec\">" + detail::escape_markup(what) + " not shown: " + detail::escape_markup(file) + " could not be read (see the problems above).</p>";
    }
  }
  return "<p class=\"muted notrec\">" + detail::escape_markup(what) + " not recorded (no " + detail::escape_markup(file) + " in the run folder).</p>";
}

std::string samples_text(const std::vector<int64_t>& samples) {
  if (samples.empty()) return "none identified";
  std::string out;
  for (size_t i = 0; i < samples.size() && i < 20; ++i) out += (i ? ", " : "") + std::to_string(samples[i]);
  if (samples.size() > 20) out += fmt::format(" and {} more", samples.size() - 20);
  return fmt::format("{} ({} sample{})", out, samples.size(), samples.size() == 1 ? "" : "s");
}

std::string incident_card(const IncidentRecord& r, size_t index) {
  const GuardEvent& e = r.incident;
  auto row = [](const std::string& k, const std::string& v) {
    return "<tr><th>" + detail::escape_markup(k) + "</th><td>" + (v.empty() ? "<span class=\"muted\">unknown</span>" : detail::escape_markup(v)) + "</td></tr>";
  };
  std::string conf = std::isfinite(e.confidence) ? fmt::format("{:.0f}%", e.confidence * 100) : "";
  std::string out = fmt::format(
      "<article class=\"card incident\" id=\"incident-{}\" data-step=\"{}\">\n"
      "<header><span class=\"badge red\">incident {}</span> <h3>step {}: {}</h3>{}</header>\n",
      index + 1, e.step, index + 1, e.step, detail::escape_markup(e.cause.empty() ? "cause unknown" : e.cause),
      conf.empty() ? "" : "<span class=\"conf\" title=\"confidence\">" + conf + "</span>");
  if (!e.explanation.empty()) out += "<p class=\"explanation\">" + detail::escape_markup(e.explanation) + "</p>\n";
  out += "<table class=\"kv\">";
  out += row("failed check", e.detail);
  if (e.rank >= 0) out += row("rank", std::to_string(e.rank));  // data parallelism: where it happened
  // Values that were already in the batch have no birth op: say where they were.
  out += row("birth op", e.op.empty() && e.phase == "input" ? "in the input batch, before any op" : e.op);
  out += row("phase", e.phase);
  out += row("module", e.module);
  out += row("samples", samples_text(e.samples));
  out += row("confidence", conf);
  out += "</table>\n<h4>Actions taken</h4>\n";
  if (r.actions.empty()) {
    out += "<p class=\"muted\">none recorded</p>\n";
  } else {
    out += "<ol class=\"actions\">";
    for (const auto& a : r.actions) {
      out += "<li><b>" + detail::escape_markup(a.action) + "</b>" + (a.detail.empty() ? "" : " &mdash; " + detail::escape_markup(a.detail)) + "</li>";
    }
    out += "</ol>\n";
  }
  out += "<p class=\"outcome\"><b>Outcome:</b> " + detail::escape_markup(r.outcome()) + "</p>\n</article>\n";
  return out;
}

constexpr const char* kStyle = R"CSS(
:root{--fg:#1d2330;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--red:#d62728;--green:#2ca02c;--amber:#e08a00;--blue:#1f77b4}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:var(--fg);background:var(--bg)}
header.top{background:#1d2330;color:#fff;padding:20px 32px}
header.top h1{margin:0;font-size:22px;font-weight:600}
header.top .sub{color:#c7cbd4;font-size:13px;margin-top:4px}
main{max-width:1180px;margin:0 auto;padding:20px 32px 48px}
section{margin-top:28px}
h2{font-size:18px;border-bottom:2px solid var(--line);padding-bottom:6px;margin:0 0 14px}
h3{font-size:16px;margin:0;display:inline}
h4{font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);margin:14px 0 4px}
.stats{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.stat{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:120px}
.stat .v{font-size:20px;font-weight:600}
.stat .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.stat.bad .v{color:var(--red)} .stat.warn .v{color:var(--amber)} .stat.good .v{color:var(--green)}
.verdict{font-size:17px;padding:10px 14px;border-radius:8px;border-left:5px solid var(--green)} .verdict.bad{border-left-color:var(--red);color:var(--red)}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:16px}
.chart{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px;min-height:120px;width:100%}
.chart .vis{width:100%} .chart .vega-embed{width:100%} .chart .vis > svg{max-width:100%;height:auto}
.card{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--red);border-radius:8px;padding:14px 18px;margin-bottom:14px}
.card header{display:flex;align-items:center;gap:10px;flex-wrap:wrap}
.conf{margin-left:auto;font-weight:600;color:var(--red)}
.explanation{margin:10px 0}
.badge{display:inline-block;font-size:11px;font-weight:600;text-transform:uppercase;border-radius:999px;padding:2px 9px;color:#fff;background:var(--blue)}
.badge.red{background:var(--red)} .badge.amber{background:var(--amber)} .badge.green{background:var(--green)}
table{border-collapse:collapse;font-size:14px}
table.kv th{text-align:left;font-weight:500;color:var(--muted);padding:3px 16px 3px 0;vertical-align:top;white-space:nowrap}
table.kv td{padding:3px 0;vertical-align:top}
table.grid{width:100%;background:var(--card)} table.grid th,table.grid td{border:1px solid var(--line);padding:4px 8px;text-align:left}
table.grid th{background:#f0f2f5}
.outcome{margin:10px 0 0}
ol.actions{margin:4px 0 0 20px;padding:0}
.warnings li{margin-bottom:4px}
.problems{background:#fff4e5;border:1px solid #f5c27a;border-radius:8px;padding:10px 16px;margin-top:16px}
.problems h2{border:0;margin:0 0 4px;font-size:15px;color:#8a4b00}
.muted{color:var(--muted)}
pre{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px;overflow:auto;font-size:13px}
.images{display:flex;flex-wrap:wrap;gap:12px} .images figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px}
.images figure svg{max-width:420px;height:auto} figcaption{font-size:12px;color:var(--muted)}
footer{color:var(--muted);font-size:12px;margin-top:40px}
)CSS";

// Records errors and the number of rendered charts into the page, so a headless browser
// (and a curious reader) can see whether everything drew.
constexpr const char* kBootScript = R"JS(
(function(){
  var errors=[];
  function show(){var el=document.getElementById('nanguard-errors');if(el&&errors.length){el.textContent=errors.join('\n');el.hidden=false;}document.documentElement.setAttribute('data-errors',String(errors.length));}
  function note(msg){errors.push(String(msg));show();}
  window.addEventListener('error',function(e){note('error: '+(e.message||e));});
  window.addEventListener('unhandledrejection',function(e){note('unhandled rejection: '+(e.reason&&e.reason.message||e.reason));});
  var origError=console.error;console.error=function(){note(Array.prototype.join.call(arguments,' '));return origError.apply(console,arguments);};
  window.nanguardNote=note;
  window.nanguardShowErrors=show;
})();
)JS";

constexpr const char* kRenderScript = R"JS(
(function(){
  var root=document.documentElement;
  root.setAttribute('data-errors',root.getAttribute('data-errors')||'0');
  window.nanguardShowErrors();  // errors raised before the page body existed
  var specs=JSON.parse(document.getElementById('nanguard-charts').textContent);
  if(typeof vegaEmbed!=='function'){root.setAttribute('data-charts-rendered','0');root.setAttribute('data-report-status','static');return;}
  var done=0;
  var jobs=specs.map(function(c){
    return vegaEmbed('#chart-'+c.id,c.spec,{renderer:'svg',actions:false}).then(function(){done++;})
      .catch(function(e){window.nanguardNote('chart '+c.id+': '+e);});
  });
  Promise.all(jobs).then(function(){root.setAttribute('data-charts-rendered',String(done));root.setAttribute('data-report-status','done');});
})();
)JS";

// Element ids safe in a CSS selector ("#chart-<id>"), whatever a column is called.
std::string dom_id(const std::string& id) {
  std::string out;
  for (char c : id) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return out;
}

std::string chart_block(const Chart& chart, bool dynamic) {
  // vega-embed sizes "container" charts from the element's width: an inner box without padding.
  std::string out = "<div class=\"chart\" data-chart=\"" + detail::escape_markup(chart.id) + "\"><div class=\"vis\" id=\"chart-" +
                    dom_id(chart.id) + "\">";
  if (!dynamic) out += chart_svg(chart);
  return out + "</div></div>\n";
}

std::string stat(const std::string& k, const std::string& v, const char* cls = "") {
  return fmt::format("<div class=\"stat {}\"><div class=\"v\">{}</div><div class=\"k\">{}</div></div>", cls, detail::escape_markup(v), detail::escape_markup(k));
}

// A rank whose steps failed this often, each time finite again when replayed, is named as a
// suspect device: one transient fault is a cosmic ray, repeated ones on one rank a machine.
constexpr int kSuspectTransientFaults = 2;

// summary.json's "distributed": per rank its host, steps, median step time and weights digest,
// the incidents it produced, and a suspect device where one rank's faults repeat.
std::string data_parallel_section(const json& summary, const std::vector<GuardEvent>& events) {
  if (!summary.is_object() || !summary.contains("distributed") || !summary["distributed"].is_object()) return "";
  const json& d = summary["distributed"];
  auto field = [](const json& j, const char* k) { return j.is_object() && j.contains(k) ? plain(j[k]) : std::string("-"); };
  std::map<int, int> incidents, transient;
  for (const auto& e : events) {
    if (e.kind != "incident" || e.rank < 0) continue;
    incidents[e.rank]++;
    if (e.cause.rfind("transient_fault", 0) == 0) transient[e.rank]++;
  }
  std::string h = "<section id=\"data-parallel\"><h2>Data parallel</h2>\n";
  h += fmt::format("<p>{} processes ({}), batch {} per rank, {} per step; weights identical on every rank at the end: "
                   "<b>{}</b>.</p>\n",
                   detail::escape_markup(field(d, "world_size")), detail::escape_markup(field(d, "backend")),
                   detail::escape_markup(field(d, "batch_size_per_rank")), detail::escape_markup(field(d, "global_batch_size")),
                   detail::escape_markup(field(d, "weights_identical")));
  const json ranks = d.contains("ranks") && d["ranks"].is_array() ? d["ranks"] : json::array();
  h += "<table class=\"grid\" id=\"ranks\"><tr><th>rank</th><th>host</th><th>pid</th><th>steps</th><th>median step (ms)</th>"
       "<th>incidents</th><th>weights digest</th></tr>";
  for (const auto& r : ranks) {
    const int rank = r.is_object() && r.contains("rank") && r["rank"].is_number_integer() ? r["rank"].get<int>() : -1;
    const std::string ms = r.is_object() && r.contains("step_seconds_median") && r["step_seconds_median"].is_number()
                               ? fmt::format("{:.3f}", r["step_seconds_median"].get<double>() * 1e3)
                               : "-";
    const auto n = incidents.find(rank);
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                     detail::escape_markup(field(r, "rank")), detail::escape_markup(field(r, "host")),
                     detail::escape_markup(field(r, "pid")), detail::escape_markup(field(r, "steps")), ms,
                     n == incidents.end() ? 0 : n->second, detail::escape_markup(field(r, "weights_digest")));
  }
  h += "</table>\n";
  int all_transient = 0;
  for (const auto& [rank, n] : transient) all_transient += n;
  for (const auto& [rank, n] : transient) {
    if (n < kSuspectTransientFaults) continue;
    std::string host;
    for (const auto& r : ranks) {
      if (r.is_object() && r.contains("rank") && r["rank"] == rank) host = field(r, "host");
    }
    h += fmt::format("<p class=\"verdict bad\" id=\"suspect-device\"><b>Suspect device: rank {}{}.</b> {} of its steps "
                     "produced a non-finite value that did not come back when the step was replayed from the same state "
                     "and batch (transient faults); the other ranks had {}. Check that machine's memory and processor "
                     "(<code>nanguard doctor</code> there) before trusting its results.</p>\n",
                     rank, host.empty() ? "" : " on " + detail::escape_markup(host), n, all_transient - n);
  }
  return h + "</section>\n";
}

}  // namespace

std::filesystem::path find_chart_scripts() {
  if (const char* env = std::getenv("NANGUARD_VEGA_DIR"); env && *env) {
    return has_scripts(env) ? std::filesystem::path(env) : std::filesystem::path();
  }
  if (has_scripts(NANGUARD_VEGA_DIR)) return NANGUARD_VEGA_DIR;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto installed = exe.parent_path().parent_path() / "share" / "nanguard" / "vega";
    if (has_scripts(installed)) return installed;
  }
  return {};
}

std::vector<Chart> report_charts(const RunRecord& run) {
  std::vector<Chart> charts;
  const auto epoch_markers = event_markers(run.events, run.steps_per_epoch() > 0 ? run.steps_per_epoch() : 0);
  // Without steps per epoch the step cannot be placed on an epoch axis: no markers there.
  const auto& curve_markers = run.steps_per_epoch() > 0 ? epoch_markers : std::vector<ChartMarker>{};
  if (run.history.size() > 0) {
    for (const auto& curves : history_curves(run.history)) charts.push_back(history_chart(run.history, curves, curve_markers));
    const auto columns = run.history.columns();
    if (std::find(columns.begin(), columns.end(), "lr") != columns.end()) {
      Chart lr = history_chart(run.history, {"Learning rate", "learning rate", {"lr"}}, curve_markers);
      lr.id = "lr";
      charts.push_back(lr);
    }
  }
  if (!run.signals.empty()) {
    const auto step_markers = event_markers(run.events, 0);
    Chart total{"grad_norm", "Total gradient norm", "step", "gradient norm", true, {}, step_markers};
    Chart layers{"grad_norm_layers", "Per-layer gradient norms", "step", "gradient norm", true, {}, step_markers};
    // Sampled signals hold values only every few hundred steps: keep the measured points so
    // each line joins them instead of breaking at every unmeasured step.
    auto measured = [&](const std::string& name, const std::vector<double>& values) {
      ChartSeries s{name, {}, {}};
      for (size_t i = 0; i < values.size() && i < run.signals.steps.size(); ++i) {
        if (std::isnan(values[i])) continue;
        s.x.push_back(run.signals.steps[i]);
        s.y.push_back(values[i]);
      }
      return s;
    };
    std::vector<Chart> others;  // one chart per signal, a line per layer
    for (const auto& [name, values] : run.signals.columns) {
      if (name == "grad_norm") {
        total.series.push_back(measured(name, values));
      } else if (name.rfind("grad_norm/", 0) == 0) {
        layers.series.push_back(measured(name.substr(10), values));
      } else {
        const size_t slash = name.find('/');
        const std::string signal = name.substr(0, slash);
        const std::string layer = slash == std::string::npos ? signal : name.substr(slash + 1);
        std::string id = "signal-";
        for (char c : signal) id += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
        auto chart = std::find_if(others.begin(), others.end(), [&](const Chart& c) { return c.id == id; });
        if (chart == others.end()) {
          others.push_back({id, signal + " (per step)", "step", signal, false, {}, step_markers});
          chart = others.end() - 1;
        }
        chart->series.push_back(measured(layer, values));
      }
    }
    if (!total.series.empty()) charts.push_back(total);
    if (!layers.series.empty()) charts.push_back(layers);
    for (auto& c : others) charts.push_back(std::move(c));
  }
  return charts;
}

std::string render_html(const RunRecord& run, const ReportOptions& options) {
  const std::filesystem::path script_dir = options.script_dir().empty() ? find_chart_scripts() : options.script_dir();
  const bool dynamic = has_scripts(script_dir);
  const std::string title = options.title().empty() ? "nanguard report: " + run.name : options.title();
  const json summary = run.summary_json.empty() ? json::object() : json::parse(run.summary_json, nullptr, false);
  const auto incidents = run.incidents();
  const size_t actions = run.count("action"), warnings = run.count("warning");

  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
                  detail::escape_markup(title) + "</title>\n<style>" + kStyle + "</style>\n<script>" + kBootScript + "</script>\n";
  if (dynamic) {
    for (const char* s : kScripts) h += "<script>/* " + std::string(s) + " */\n" + script_safe_js(read_all(script_dir / s)) + "\n</script>\n";
  }
  h += "</head>\n<body>\n<header class=\"top\"><h1>" + detail::escape_markup(title) + "</h1><div class=\"sub\">" + detail::escape_markup(run.dir.string()) +
       "</div></header>\n<main>\n";

  // The verdict first: a run that stayed finite can still be dead.
  const RunVerdictRecord verdict = run.verdict();
  if (verdict.known) {
    h += fmt::format("<p id=\"verdict\" class=\"verdict {}\"><b>{}</b></p>\n", verdict.learned ? "good" : "bad",
                     detail::escape_markup(verdict.headline.empty() ? (verdict.learned ? "this run learned" : "this run did not learn")
                                                                   : verdict.headline));
  }
  // At a glance.
  h += "<div class=\"stats\">";
  if (summary.is_object()) {
    if (summary.contains("epochs")) h += stat("epochs", plain(summary["epochs"]));
    if (summary.contains("steps")) h += stat("steps", plain(summary["steps"]));
    if (summary.contains("final_epoch") && summary["final_epoch"].is_object()) {
      for (const char* k : {"loss", "accuracy", "val_loss", "val_accuracy"}) {
        if (summary["final_epoch"].contains(k)) h += stat("final " + std::string(k), plain(summary["final_epoch"][k]));
      }
    }
    if (summary.contains("test_accuracy")) h += stat("test accuracy", plain(summary["test_accuracy"]));
  }
  h += stat("incidents", std::to_string(incidents.size()), incidents.empty() ? "good" : "bad");
  h += stat("repair actions", std::to_string(actions));
  h += stat("warnings", std::to_string(warnings), warnings ? "warn" : "good");
  h += "</div>\n";

  if (!run.problems.empty()) {
    h += "<div class=\"problems\" id=\"problems\"><h2>Problems in the run folder</h2><ul>";
    for (const auto& p : run.problems) h += "<li class=\"problem\"><b>" + detail::escape_markup(p.file) + "</b>: " + detail::escape_markup(p.message) + "</li>";
    h += "</ul><p class=\"muted\">The parts these files feed are left out; everything else is shown.</p></div>\n";
  }
  h += "<pre id=\"nanguard-errors\" class=\"problems\" hidden></pre>\n";

  // Guard.
  h += "<section id=\"guard\"><h2>Incidents</h2>\n";
  if (incidents.empty()) {
    h += verdict.known && !verdict.learned
             ? "<p class=\"muted\">No incidents: every step was finite, but the run did not learn (see the verdict "
               "above).</p>\n"
             : "<p class=\"muted\">No incidents: every step was finite.</p>\n";
  } else {
    for (size_t i = 0; i < incidents.size(); ++i) h += incident_card(incidents[i], i);
  }
  if (warnings) {
    h += "<h4>Warnings</h4><ul class=\"warnings\">";
    for (const auto& e : run.events) {
      if (e.kind != "incident" && e.kind != "action") {
        h += fmt::format("<li class=\"warning\"><span class=\"badge amber\">step {}</span> <b>{}</b> {}</li>", e.step,
                         detail::escape_markup(e.cause), detail::escape_markup(e.explanation.empty() ? e.detail : e.explanation));
      }
    }
    h += "</ul>\n";
  }
  h += "</section>\n";
  h += data_parallel_section(summary, run.events);

  // Charts.
  const auto charts = report_charts(run);
  json specs = json::array();
  auto emit_charts = [&](auto&& pick) {
    std::string block = "<div class=\"grid2\">";
    size_t n = 0;
    for (const auto& c : charts) {
      if (!pick(c)) continue;
      block += chart_block(c, dynamic);
      specs.push_back({{"id", dom_id(c.id)}, {"spec", json::parse(chart_vega_lite(c))}});
      ++n;
    }
    return n ? block + "</div>\n" : std::string();
  };
  h += "<section id=\"curves\"><h2>Training curves</h2>\n";
  const std::string curves = emit_charts([](const Chart& c) { return c.x_label == "epoch"; });
  h += curves.empty() ? not_recorded("Training history", RunFiles::history, &run) : curves;
  h += "</section>\n<section id=\"signals\"><h2>Gradient norms and monitor signals</h2>\n";
  const std::string signals = emit_charts([](const Chart& c) { return c.x_label == "step"; });
  h += signals.empty() ? not_recorded("Per-step signals", RunFiles::signals, &run) : signals;
  h += "</section>\n";

  // Data audit.
  h += "<section id=\"audit\"><h2>Data audit</h2>\n";
  if (!run.audit_json.empty()) {
    h += json_html(json::parse(run.audit_json, nullptr, false));
  } else {
    h += not_recorded("The data audit", RunFiles::audit, &run);
  }
  if (!run.audit_images.empty()) {
    h += "<div class=\"images\">";
    for (const auto& [name, svg] : run.audit_images) {
      h += "<figure class=\"histogram\">" + svg + "<figcaption>" + detail::escape_markup(name) + "</figcaption></figure>";
    }
    h += "</div>\n";
  }
  h += "</section>\n";

  // Environment.
  h += "<section id=\"environment\"><h2>Environment</h2>\n";
  if (!run.environment_json.empty()) {
    h += json_html(json::parse(run.environment_json, nullptr, false));
  } else if (summary.is_object() && summary.contains("environment")) {
    h += json_html(summary["environment"]) + "<p class=\"muted\">From summary.json; the full environment summary (" +
         std::string(RunFiles::environment) + ") was not recorded.</p>";
  } else {
    h += not_recorded("The environment", RunFiles::environment, &run);
  }
  h += "</section>\n";

  // Guard totals and configuration.
  if (summary.is_object() && summary.contains("guard")) {
    h += "<section id=\"guard-summary\"><h2>Guard totals</h2>\n" + json_html(summary["guard"]) + "</section>\n";
  }
  h += "<section id=\"config\"><h2>Configuration</h2>\n";
  h += run.config_toml.empty() ? not_recorded("The configuration", RunFiles::config, &run)
                               : "<pre class=\"config\">" + detail::escape_markup(run.config_toml) + "</pre>\n";
  h += "</section>\n";
  h += "<footer>Written by nanguard. Charts: " +
       std::string(dynamic ? "Vega-Lite (inlined; works offline)." : "static SVG (chart scripts not found).") +
       "</footer>\n</main>\n";
  h += "<script type=\"application/json\" id=\"nanguard-charts\">" + script_safe_json(dump(dynamic ? specs : json::array())) +
       "</script>\n<script>" + kRenderScript + "</script>\n</body>\n</html>\n";
  return h;
}

std::vector<FileProblem> write_report(const std::filesystem::path& run_dir, const std::filesystem::path& out,
                                      const ReportOptions& options) {
  RunRecord run = read_run(run_dir);
  write_text_atomic(out, render_html(run, options));
  return run.problems;
}

}  // namespace nanguard::report
