// The HTML run report: one self-contained file (styles, data, chart specs and the Vega-Lite
// scripts inlined) that opens offline in any browser.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "nanguard/report/chart.h"
#include "nanguard/report/run_record.h"

namespace nanguard::report {

struct ReportOptions {
  // Folder holding vega.min.js, vega-lite.min.js and vega-embed.min.js; empty: find_chart_scripts().
  TORCH_ARG(std::filesystem::path, script_dir);
  // Page title; empty: "nanguard report: <run name>".
  TORCH_ARG(std::string, title);
};

// The folder with the chart scripts: $NANGUARD_VEGA_DIR if set, else the one scripts/setup.sh
// fills at build time (third_party/vega), else the installed share/nanguard/vega. Empty when
// none holds all three files; the report then shows static SVG charts instead.
std::filesystem::path find_chart_scripts();

// Every chart the report draws for a run, in page order (curves, learning rate, gradient
// norms, monitor signals), markers included.
std::vector<Chart> report_charts(const RunRecord& run);

// The report as one HTML document.
std::string render_html(const RunRecord& run, const ReportOptions& options = {});

// Reads run_dir, writes the report to out (atomically) and returns the problems found in the
// run folder (the report lists them too). Throws IoError when run_dir is not a folder or out
// cannot be written.
std::vector<FileProblem> write_report(const std::filesystem::path& run_dir, const std::filesystem::path& out,
                                      const ReportOptions& options = {});

}  // namespace nanguard::report
