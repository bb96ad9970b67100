// nanguard report RUN_DIR: renders the run folder as one self-contained HTML file.
#include <iostream>

#include <fmt/format.h>

#include "commands.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/report/html_report.h"

namespace nanguard::cli {
namespace {

struct ReportArgs {
  std::string run_dir;
  std::string out;
};

int run_report(const ReportArgs& args) {
  const std::filesystem::path out = args.out.empty() ? std::filesystem::path(args.run_dir) / "report.html"
                                                     : std::filesystem::path(args.out);
  const report::RunRecord run = report::read_run(args.run_dir);
  if (run.history.size() == 0 && run.events.empty() && run.summary_json.empty()) {
    std::cerr << fmt::format("nanguard: warning: {} holds no history, events or summary; the report will be mostly empty\n",
                             args.run_dir);
  }
  for (const auto& p : run.problems) std::cerr << fmt::format("nanguard: {}: {}\n", p.file, p.message);
  write_text_atomic(out, report::render_html(run));
  std::cout << fmt::format("Report: {}{}\n", out.string(),
                           run.problems.empty() ? "" : fmt::format(" ({} problem(s) in the run folder, listed in the report)",
                                                                   run.problems.size()));
  if (report::find_chart_scripts().empty()) {
    std::cerr << "nanguard: note: chart scripts not found (run scripts/setup.sh or set NANGUARD_VEGA_DIR); "
                 "the report shows static charts\n";
  }
  return kOk;
}

}  // namespace

Command add_report(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  CLI::App* sub = app.add_subcommand("report", "Render a run folder as one self-contained HTML report");
  sub->add_option("run_dir", args->run_dir, "Run folder written by `nanguard fit`")->required();
  sub->add_option("--out", args->out, "Output file (default: RUN_DIR/report.html)");
  return [args] { return run_report(*args); };
}

}  // namespace nanguard::cli
