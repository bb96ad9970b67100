// nanguard zoo: the NaN zoo benchmark. `list` prints the scenarios, `run ID` runs one under one
// baseline and writes DIR/result.json, `table` runs everything and writes table.md/table.json.
#include <cstdlib>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.h"
#include "nanguard/core/error.h"
#include "nanguard/dist/data_parallel.h"
#include "nanguard/zoo/scenario.h"
#include "nanguard/zoo/table.h"

namespace nanguard::cli {
namespace {

struct ZooArgs {
  std::string id;
  std::string baseline = "nanguard";
  uint64_t seed = 0;
  std::string out;
  std::string mnist;
  int64_t seeds = 3;
  std::vector<std::string> only;
  std::vector<std::string> baselines;
  std::string python = "/usr/bin/python3";
  std::string python_dir;
  int64_t train_samples = 0;
  int64_t epochs = 0;
  // Data parallelism. run: local workers to start (0: one process, or torchrun's); table:
  // processes per data-parallel run (-1: the default, 2; 0: none).
  int nproc = -1;
  int fault_rank = -1;     // the rank the fault lives on (-1: every rank)
  int64_t kill_step = -1;  // the fault rank kills itself at this step (-1: never)
};

std::filesystem::path executable_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

// --mnist, else $NANGUARD_MNIST_DIR, else data/mnist here or beside the build folder.
std::filesystem::path mnist_dir(const ZooArgs& a) {
  if (!a.mnist.empty()) return a.mnist;
  if (const char* env = std::getenv("NANGUARD_MNIST_DIR"); env && *env) return env;
  if (std::filesystem::exists("data/mnist")) return "data/mnist";
  const auto near = executable_dir().parent_path() / "data" / "mnist";
  return std::filesystem::exists(near) ? near : std::filesystem::path("data/mnist");
}

// --python-dir, else zoo/python here or beside the build folder.
std::filesystem::path python_dir(const ZooArgs& a) {
  if (!a.python_dir.empty()) return a.python_dir;
  if (std::filesystem::exists("zoo/python/anomaly_zoo.py")) return "zoo/python";
  const auto near = executable_dir().parent_path() / "zoo" / "python";
  return std::filesystem::exists(near / "anomaly_zoo.py") ? near : std::filesystem::path();
}

int run_list() {
  for (const auto& s : zoo::builtin_scenarios()) {
    std::cout << fmt::format("{}  {:<45} cause {}{}{}\n    {}\n", s.id, s.title, s.true_cause,
                             s.true_subkind.empty() ? "" : "/" + s.true_subkind, s.repairable ? "" : " (not repairable)",
                             s.trigger);
  }
  return kOk;
}

int run_one(const ZooArgs& a) {
  const auto& scenario = zoo::builtin_scenario(a.id);
  zoo::check_baseline(a.baseline);
  const bool worker = std::getenv("WORLD_SIZE") != nullptr;  // started by torchrun or our launcher
  const bool launching = a.nproc > 1 && !worker;
  if (a.fault_rank >= 0 && a.nproc <= 1 && !worker) {
    throw ValueError(fmt::format("--fault-rank {} needs a data-parallel run (--nproc 2 or more, or torchrun)", a.fault_rank));
  }
  if (launching && a.fault_rank >= a.nproc) {
    throw ValueError(fmt::format("--fault-rank {}: expected a rank of the {} processes, 0-{}", a.fault_rank, a.nproc, a.nproc - 1));
  }
  if (a.kill_step >= 0 && a.fault_rank < 0) throw ValueError("--kill-step needs --fault-rank: the rank that dies");
  if (launching) return launch_workers(a.nproc, "--nproc");
  // Under torchrun (or our own launcher) this process is one rank; rank 0 writes the result.
  const std::shared_ptr<dist::DataParallel> group = dist::DataParallel::from_environment();
  const bool lead = !group || group->rank() == 0;
  const std::filesystem::path dir = a.out;
  if (lead) zoo::prepare_output_dir(dir);
  zoo::RunOptions o;
  o.baseline(a.baseline).seed(a.seed).mnist_dir(mnist_dir(a)).train_samples(a.train_samples).epochs(a.epochs);
  o.data_parallel(group).fault_rank(a.fault_rank).kill_step(a.kill_step);
  const auto r = zoo::run_scenario(scenario, o);
  if (!lead) return kOk;
  zoo::write_result(r, dir);
  // The cause and its verdict: a baseline without a diagnosis has none to judge, and the
  // healthy scenario's right answer is no cause at all.
  const std::string cause = !r.top_cause.empty() ? r.top_cause : scenario.true_cause == "none" && r.cause_correct ? "none" : "-";
  const std::string verdict = !zoo::baseline_diagnoses(r.baseline) ? "not diagnosed by this baseline"
                              : r.cause_correct                    ? "correct"
                                                                   : "wrong";
  std::cout << fmt::format("{} {} seed {}: detected {} (step {}), birth {} {}, cause {} ({}), final {:.1f}% clean {:.1f}% "
                           "repaired {}, {:.1f} s\n  -> {}\n",
                           r.scenario, r.baseline, r.seed, r.detected, r.detected_step, r.birth_op.empty() ? "-" : r.birth_op,
                           r.phase, cause, verdict, r.final_accuracy * 100, r.clean_accuracy * 100, r.repaired, r.seconds,
                           (dir / "result.json").string());
  if (group) {
    std::cout << fmt::format("  {} processes, fault on {}; incidents on rank {}; weights identical on every rank: {}\n",
                             r.world_size, r.fault_rank < 0 ? "every rank" : fmt::format("rank {}", r.fault_rank),
                             r.incident_ranks.empty() ? std::string("-") : fmt::format("{}", fmt::join(r.incident_ranks, ", ")),
                             r.weights_identical);
  }
  return kOk;
}

int run_table(const ZooArgs& a) {
  const std::filesystem::path dir = a.out.empty() ? "zoo-table" : a.out;
  zoo::TableOptions o;
  o.seeds(a.seeds).only(a.only).mnist_dir(mnist_dir(a)).python(a.python).python_dir(python_dir(a));
  o.train_samples(a.train_samples).epochs(a.epochs);
  // The data-parallel section runs this program's `zoo run --nproc` (--nproc 0 leaves it out).
  o.nanguard(std::filesystem::read_symlink("/proc/self/exe")).nproc(a.nproc < 0 ? 2 : a.nproc);
  if (!a.baselines.empty()) o.baselines(a.baselines);
  o.validate();  // bad options leave no output folder behind
  zoo::prepare_output_dir(dir);
  o.on_data_parallel([](const zoo::DataParallelResult& d) {
    std::cerr << fmt::format("{} data-parallel seed {}: {} -> exit {}{}, incidents on ranks [{}], cause {} {:.1f} s\n", d.scenario,
                             d.seed, d.fault, d.exit_code, d.error.empty() ? "" : " (" + d.error + ")",
                             fmt::join(d.incident_ranks, ", "), d.top_cause.empty() ? "-" : d.top_cause, d.seconds);
  });
  o.on_result([](const zoo::ScenarioResult& r) {
    std::cerr << fmt::format("{} {:<9} seed {}: detected {:<5} cause {:<28} final {:5.1f}% repaired {:<5} {:.1f} s\n",
                             r.scenario, r.baseline, r.seed, r.detected, r.top_cause.empty() ? "-" : r.top_cause,
                             r.final_accuracy * 100, r.repaired, r.seconds);
  });
  const auto table = zoo::run_table(o);
  zoo::write_table(table, dir);
  std::cout << table.to_markdown() << "\nwrote " << (dir / "table.md").string() << " and " << (dir / "table.json").string() << "\n";
  return kOk;
}

}  // namespace

Command add_zoo(CLI::App& app) {
  auto a = std::make_shared<ZooArgs>();
  CLI::App* zoo = app.add_subcommand("zoo", "The NaN zoo: scenarios that go wrong, run under nanguard and baselines");
  zoo->require_subcommand(1);
  CLI::App* list = zoo->add_subcommand("list", "List the scenarios");
  CLI::App* run = zoo->add_subcommand("run", "Run one scenario under one baseline; writes DIR/result.json");
  run->add_option("id", a->id, "Scenario id (Z0-Z15; zoo list names them)")->required();
  run->add_option("--baseline", a->baseline, "nanguard, prevent, none, terminate, skip or random");
  run->add_option("--seed", a->seed, "Seed of the run");
  run->add_option("--out", a->out, "Output folder")->required();
  run->add_option("--nproc", a->nproc, "Run data-parallel on N local processes (the scenario's batch split over them)")
      ->check(integer_at_least(1, "a number of processes, 1 or more", "N >= 1"));
  run->add_option("--fault-rank", a->fault_rank,
                  "The rank the scenario's data fault or fault hook lives on (default: every rank)")
      ->check(integer_at_least(0, "a rank, 0 or more", "RANK >= 0"));
  run->add_option("--kill-step", a->kill_step, "The fault rank kills itself (SIGKILL) at this step")
      ->check(integer_at_least(0, "a step, 0 or more", "STEP >= 0"));
  CLI::App* table = zoo->add_subcommand("table", "Run every scenario and baseline; writes table.md and table.json");
  table->add_option("--out", a->out, "Output folder (default zoo-table)");
  table->add_option("--seeds", a->seeds, "Seeds per scenario and baseline (default 3)");
  table->add_option("--only", a->only, "Scenario ids to run (default all)")->delimiter(',');
  table->add_option("--baselines", a->baselines, "Baselines to run (default all)")->delimiter(',');
  table->add_option("--python", a->python, "Python with torch for the anomaly-mode column");
  table->add_option("--nproc", a->nproc, "Processes per data-parallel run (default 2; 0 leaves that section out)")
      ->check(integer_at_least(0, "a number of processes, 0 or more", "N >= 0"));
  table->add_option("--python-dir", a->python_dir, "Folder of the zoo's Python scripts (default zoo/python)");
  for (CLI::App* sub : {run, table}) {
    sub->add_option("--mnist", a->mnist, "MNIST folder (default $NANGUARD_MNIST_DIR or data/mnist)");
    sub->add_option("--train-samples", a->train_samples, "Training samples per run (default: the scenario's)");
    sub->add_option("--epochs", a->epochs, "Epochs per run (default: the scenario's)");
  }
  return [a, list, run, table] {
    if (list->parsed()) return run_list();
    if (run->parsed()) return run_one(*a);
    if (table->parsed()) return run_table(*a);
    return static_cast<int>(kBadInput);
  };
}

}  // namespace nanguard::cli
