#include "nanguard/report/html_report.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::report {
namespace {

using nanguard::testing::read_bytes;
using nanguard::testing::TempDir;
using nanguard::testing::write_bytes;

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

void write_run(const std::filesystem::path& dir) {
  write_bytes(dir / "history.csv", "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,0.5,0.8,0.6,0.7,0.01,1\n2,0.4,0.85,0.5,0.75,0.01,1\n");
  write_bytes(dir / "summary.json", R"({"name": "demo <run>", "epochs": 2, "steps": 40, "guard": {"incidents": 1}})");
  write_bytes(dir / "config.toml", "name = \"demo\" # </script>\n");
  write_bytes(dir / "events.jsonl",
              R"({"step": 12, "kind": "incident", "cause": "unsafe_loss/log_of_zero", "confidence": 0.9, "phase": "forward", "op": "aten::log", "module": "loss", "samples": [3, 7], "explanation": "log of <0>", "detail": "loss"}
{"step": 12, "kind": "action", "action": "stable_loss", "detail": "loss switched"}
{"step": 30, "kind": "warning", "cause": "lr_too_high", "explanation": "loss rising"}
)");
  write_bytes(dir / "monitor.csv", "step,loss,grad_norm,grad_norm/0,grad_norm/1,update_ratio\n1,0.5,2,1.5,1,0.01\n2,0.4,3,2,1,0.02\n");
}

TEST(HtmlReport, ChartsCoverCurvesLearningRateGradientNormsAndSignals) {
  TempDir dir;
  write_run(dir.path());
  const auto charts = report_charts(read_run(dir.path()));
  std::vector<std::string> ids;
  for (const auto& c : charts) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"loss", "accuracy", "lr", "grad_norm", "grad_norm_layers", "signal-loss",
                                           "signal-update_ratio"}));
  for (const auto& c : charts) EXPECT_EQ(c.markers.size(), 3u) << c.id;  // every curve marks every event
  EXPECT_EQ(charts[0].markers[0].x, 1);  // step 12 of 20 per epoch: epoch 1
  EXPECT_EQ(charts[3].markers[2].x, 30);  // per-step charts: the step
  EXPECT_EQ(charts[4].series.size(), 2u);
  EXPECT_TRUE(charts[3].log_y);
}

TEST(HtmlReport, RendersCardsSpecsAndEscapesText) {
  TempDir dir;
  write_run(dir.path());
  TempDir scripts;  // stand-ins for the Vega scripts
  for (const char* s : {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"}) {
    write_bytes(scripts / s, std::string("/*") + s + "*/ var x = '</script>';");
  }
  const std::string html = render_html(read_run(dir.path()), ReportOptions().script_dir(scripts.path()));
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count(html, "<article class=\"card incident\""), 1u);
  EXPECT_NE(html.find("aten::log"), std::string::npos);
  EXPECT_NE(html.find("log of &lt;0&gt;"), std::string::npos);
  EXPECT_NE(html.find("demo &lt;run&gt;"), std::string::npos);
  EXPECT_NE(html.find("<b>Outcome:</b> stable_loss: loss switched"), std::string::npos);
  EXPECT_EQ(count(html, "<li class=\"warning\">"), 1u);
  EXPECT_EQ(count(html, "<div class=\"chart\""), 7u);
  EXPECT_EQ(count(html, "/*vega-embed.min.js*/"), 1u);
  // Inlined text never closes its <script> element early.
  EXPECT_EQ(count(html, "</script>"), count(html, "<script"));
  // The chart specs are valid JSON with one entry per chart.
  const std::string open = "<script type=\"application/json\" id=\"nanguard-charts\">";
  const size_t a = html.find(open) + open.size();
  auto specs = nlohmann::json::parse(html.substr(a, html.find("</script>", a) - a));
  EXPECT_EQ(specs.size(), 7u);
  EXPECT_EQ(specs[0]["id"], "loss");
  EXPECT_NE(html.find("not recorded (no audit.json"), std::string::npos);
  EXPECT_NE(html.find("not recorded (no env.json"), std::string::npos);
  EXPECT_NE(html.find("name = &quot;demo&quot;"), std::string::npos);
}

TEST(HtmlReport, WithoutScriptsChartsAreStaticSvg) {
  TempDir dir;
  write_run(dir.path());
  TempDir empty;
  const std::string html = render_html(read_run(dir.path()), ReportOptions().script_dir(empty.path()));
  EXPECT_EQ(count(html, "<div class=\"chart\""), 7u);
  EXPECT_GE(count(html, "<svg xmlns"), 7u);
  EXPECT_EQ(html.find("vegaEmbed("), html.find("vegaEmbed('#chart-"));  // only the guarded call in the page script
  EXPECT_NE(html.find("static SVG (chart scripts not found)"), std::string::npos);
}

TEST(HtmlReport, CorruptFilesAreListedAndTheRestStillRenders) {
  TempDir dir;
  write_run(dir.path());
  write_bytes(dir / "events.jsonl", "{\"step\": 1, \"kind\": \"warning\", \"explanation\": \"early\"}\n{oops\n");
  write_bytes(dir / "history.csv", "epoch,loss\n1,zz\n");
  TempDir out;
  const auto problems = write_report(dir.path(), out / "r.html", ReportOptions().script_dir(out.path()));
  ASSERT_EQ(problems.size(), 2u);
  const std::string html = read_bytes(out / "r.html");
  EXPECT_NE(html.find("<b>events.jsonl</b>: line 2 is not JSON"), std::string::npos);
  EXPECT_NE(html.find("<b>history.csv</b>: line 2 column 2 (loss)"), std::string::npos);
  EXPECT_NE(html.find("Training history not shown: history.csv could not be read"), std::string::npos);
  EXPECT_EQ(count(html, "<li class=\"warning\">"), 1u);  // the good line is still shown
  EXPECT_EQ(count(html, "data-chart=\"grad_norm\""), 1u);  // monitor.csv is still drawn
}

TEST(HtmlReport, JsonSectionsRenderAsTables) {
  TempDir dir;
  write_bytes(dir / "env.json", R"({"os": "Linux", "blas": {"name": "openblas"}, "threads": 4})");
  write_bytes(dir / "audit.json", R"({"findings": [{"kind": "nan", "sample": 1}, {"kind": "inf", "sample": 2}]})");
  std::filesystem::create_directories(dir / "audit");
  write_bytes(dir / "audit" / "h.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"hist\"></svg>");
  const std::string html = render_html(read_run(dir.path()));
  EXPECT_NE(html.find("<tr><th>os</th><td>Linux</td></tr>"), std::string::npos);
  EXPECT_NE(html.find("<tr><th>kind</th><th>sample</th></tr>"), std::string::npos);
  EXPECT_EQ(count(html, "<figure class=\"histogram\">"), 1u);
  EXPECT_NE(html.find("No incidents"), std::string::npos);
  EXPECT_NE(html.find("not recorded (no history.csv"), std::string::npos);
}

TEST(HtmlReport, DataParallelRunsShowEveryRankAndNameASuspectDevice) {
  TempDir dir;
  write_bytes(dir / "summary.json", R"({"name": "dp", "epochs": 1, "steps": 90, "distributed": {"world_size": 2,
    "backend": "gloo", "batch_size_per_rank": 32, "global_batch_size": 64, "weights_identical": true, "ranks": [
    {"rank": 0, "host": "a<b", "pid": 11, "steps": 90, "step_seconds_median": 0.00341, "weights_digest": "d1"},
    {"rank": 1, "host": "node2", "pid": 12, "steps": 90, "step_seconds_median": 0.00445, "weights_digest": "d1"}]}})");
  // Two transient faults on rank 1, one bad batch on rank 0.
  write_bytes(dir / "events.jsonl",
              R"({"step": 5, "kind": "incident", "cause": "transient_fault", "rank": 1}
{"step": 9, "kind": "incident", "cause": "bad_input_data", "rank": 0}
{"step": 40, "kind": "incident", "cause": "transient_fault", "rank": 1}
)");
  const std::string html = render_html(read_run(dir.path()));
  EXPECT_NE(html.find("<section id=\"data-parallel\">"), std::string::npos);
  EXPECT_NE(html.find("2 processes (gloo), batch 32 per rank, 64 per step"), std::string::npos);
  EXPECT_NE(html.find("<tr><td>0</td><td>a&lt;b</td><td>11</td><td>90</td><td>3.410</td><td>1</td>"), std::string::npos) << html;
  EXPECT_NE(html.find("<tr><td>1</td><td>node2</td><td>12</td><td>90</td><td>4.450</td><td>2</td>"), std::string::npos);
  EXPECT_NE(html.find("Suspect device: rank 1 on node2.</b> 2 of its steps"), std::string::npos);
  EXPECT_NE(html.find("the other ranks had 0"), std::string::npos);
  EXPECT_EQ(count(html, "<tr><th>rank</th><td>1</td></tr>"), 2u);  // each incident card names its rank

  // One transient fault is no suspect; a malformed "distributed" renders what it can.
  write_bytes(dir / "summary.json", R"({"distributed": {"world_size": "two", "ranks": [{"rank": "x"}, 3]}})");
  write_bytes(dir / "events.jsonl", R"({"step": 5, "kind": "incident", "cause": "transient_fault", "rank": 1}
)");
  const std::string odd = render_html(read_run(dir.path()));
  EXPECT_NE(odd.find("two processes (-)"), std::string::npos);
  EXPECT_EQ(odd.find("Suspect device"), std::string::npos);
  EXPECT_EQ(count(odd, "<tr><td>"), 2u);
  // One process: no section.
  write_bytes(dir / "summary.json", R"({"name": "one"})");
  EXPECT_EQ(render_html(read_run(dir.path())).find("id=\"data-parallel\""), std::string::npos);
}

TEST(HtmlReport, ChartElementIdsAreSafeSelectors) {
  TempDir dir;
  write_bytes(dir / "history.csv", "epoch,loss,top.5 acc\n1,0.5,0.8\n");
  TempDir scripts;
  for (const char* s : {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"}) write_bytes(scripts / s, "var x;");
  const std::string html = render_html(read_run(dir.path()), ReportOptions().script_dir(scripts.path()));
  EXPECT_NE(html.find("id=\"chart-top_5_acc\""), std::string::npos);
  EXPECT_NE(html.find("\"id\":\"top_5_acc\""), std::string::npos);
  EXPECT_NE(html.find("data-chart=\"top.5 acc\""), std::string::npos);
}

TEST(HtmlReport, WriteReportFailsLoudlyOnlyForTheFolderAndTheOutput) {
  TempDir dir;
  EXPECT_THROW(write_report(dir / "absent", dir / "r.html"), IoError);
  write_bytes(dir / "blocker", "x");
  EXPECT_THROW(write_report(dir.path(), dir / "blocker" / "r.html"), IoError);
}

}  // namespace
}  // namespace nanguard::report
