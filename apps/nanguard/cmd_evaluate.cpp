// nanguard evaluate CONFIG --weights FILE: evaluates saved weights on the config's test data.
#include <iostream>

#include <fmt/format.h>

#include "commands.h"
#include "nanguard/core/error.h"
#include "run_folder.h"

namespace nanguard::cli {
namespace {

struct EvaluateArgs {
  std::string config;
  std::string weights;
  int64_t batch_size = 256;
  std::string split = "test";
  std::string device;
};

int run_evaluate(const EvaluateArgs& args) {
  Overrides overrides;
  overrides.device = args.device;
  RunConfig config = load_config_with(args.config, overrides);
  config.data.validation = "none";
  data::LoadedData data = data::load_data(config.data);
  auto trainer = make_trainer(config);
  trainer->load_weights(args.weights);
  const data::TensorDataset& ds = args.split == "train" ? data.train : data.test;
  if (ds.size() == 0) throw ValueError("the config's data has no " + args.split + " split");
  Logs logs = trainer->evaluate(ds, args.batch_size);
  std::string line = fmt::format("{} samples ({} split):", ds.size(), args.split);
  for (const auto& [k, v] : logs.items()) line += fmt::format(" {} {:.4f}", k, v);
  std::cout << line << "\n";
  return kOk;
}

}  // namespace

Command add_evaluate(CLI::App& app) {
  auto args = std::make_shared<EvaluateArgs>();
  CLI::App* sub = app.add_subcommand("evaluate", "Evaluate saved weights on the config's test (or train) data");
  sub->add_option("config", args->config, "Run config (TOML) the weights were trained with")->required();
  sub->add_option("--weights", args->weights, "Weights file written by fit (weights.pt)")->required();
  sub->add_option("--batch-size", args->batch_size, "Evaluation batch size")
      ->check(integer_at_least(1, "a positive integer", "POSITIVE"));
  sub->add_option("--device", args->device, "Override device: cpu, cuda or cuda:N");
  sub->add_option("--split", args->split, "Which split to evaluate")->check(CLI::IsMember({"test", "train"}));
  return [args] { return run_evaluate(*args); };
}

}  // namespace nanguard::cli
