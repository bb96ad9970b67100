#include "run_folder.h"

#include <torch/torch.h>

#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"

namespace nanguard::cli {

RunConfig load_config_with(const std::string& path, const Overrides& o) {
  RunConfig config = load_run_config(path);
  if (o.epochs < 0) throw ValueError("--epochs must be positive");
  if (o.batch_size < 0) throw ValueError("--batch-size must be positive");
  if (o.epochs > 0) config.fit.epochs = o.epochs;
  if (o.batch_size > 0) config.fit.batch_size = o.batch_size;
  if (!o.device.empty()) config.compile.device = parse_device(o.device);
  if (o.seed >= 0) config.fit.seed = static_cast<uint64_t>(o.seed), config.data.seed = config.fit.seed;
  return config;
}

std::unique_ptr<Trainer> make_trainer(const RunConfig& config) {
  torch::manual_seed(config.fit.seed);
  SequentialModel model(config.model);
  return std::make_unique<Trainer>(model, config.compile);
}

env::EnvSummary write_environment(const std::filesystem::path& dir) {
  env::EnvSummary summary = env::environment_summary(true);
  std::filesystem::create_directories(dir);
  write_text_atomic(dir / "env.json", env::summary_json(summary) + "\n");
  return summary;
}

}  // namespace nanguard::cli
