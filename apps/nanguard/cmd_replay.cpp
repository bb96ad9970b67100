// nanguard replay DIR: reproduces a dumped incident offline (see `fit --dump-incidents`) and
// prints the same localization and diagnosis.
#include <iostream>

#include <torch/torch.h>

#include "commands.h"
#include "nanguard/core/error.h"
#include "nanguard/train/incident_dump.h"
#include "run_folder.h"

namespace nanguard::cli {
namespace {

struct ReplayArgs {
  std::string dir;
  std::string config;
};

int run_replay(const ReplayArgs& args) {
  const std::filesystem::path dir = args.dir;
  IncidentDump dump = read_incident_dump(dir);
  // Dumps live in RUN_DIR/incidents/step_N, beside the run's copy of its config. The folder is
  // made absolute and normal first, so "step_N/" (as shells complete it) and "." find it too.
  std::filesystem::path normal = std::filesystem::absolute(dir).lexically_normal();
  if (!normal.has_filename()) normal = normal.parent_path();
  const std::filesystem::path config =
      args.config.empty() ? normal.parent_path().parent_path() / "config.toml" : std::filesystem::path(args.config);
  if (!std::filesystem::exists(config)) {
    throw IoError("no config for " + dir.string() + ": " + config.string() + " does not exist (pass --config)");
  }
  RunConfig run = load_config_with(config.string(), {});
  auto trainer = make_trainer(run);
  trainer->load_weights(dump.state_file);
  // With the optimizer's state the replay also takes the optimizer step, where incidents of
  // the optimizer phase are born.
  if (!dump.optimizer_file.empty()) trainer->load_optimizer_state(dump.optimizer_file);
  if (dump.rng_state.defined()) {
    at::Generator generator = at::globalContext().defaultGenerator(c10::Device(c10::kCPU));
    generator.set_state(dump.rng_state);
  }
  auto incident = trainer->examine(dump.batch);
  if (!incident) {
    std::cout << "the step is finite when replayed from " << dir.string() << ": the fault did not reproduce\n";
    return kOk;
  }
  std::cout << incident->summary();
  return kOk;
}

}  // namespace

Command add_replay(CLI::App& app) {
  auto args = std::make_shared<ReplayArgs>();
  CLI::App* sub = app.add_subcommand("replay", "Reproduce a dumped incident offline and print its localization");
  sub->add_option("dir", args->dir, "Incident dump, e.g. runs/NAME/incidents/step_412 (fit --dump-incidents)")
      ->required();
  sub->add_option("--config", args->config, "Run config (default: the run folder's config.toml)");
  return [args] { return run_replay(*args); };
}

}  // namespace nanguard::cli
