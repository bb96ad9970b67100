// Shared by fit and evaluate: building a Trainer from a config, and the summary written to
// the run folder.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "nanguard/env/doctor.h"
#include "nanguard/train/run_config.h"
#include "nanguard/train/trainer.h"

namespace nanguard::cli {

// Applies command-line overrides on top of the config file.
struct Overrides {
  int64_t epochs = 0;      // 0: keep the config's
  int64_t batch_size = 0;  // 0: keep the config's
  int64_t seed = -1;       // -1: keep the config's
  std::string device;      // empty: keep the config's
};

RunConfig load_config_with(const std::string& path, const Overrides& overrides);
// Seeds torch, builds the model and the trainer.
std::unique_ptr<Trainer> make_trainer(const RunConfig& config);
// Writes DIR/env.json: LibTorch, BLAS, threads, CPU, FTZ, CUDA devices and the quick self-test.
env::EnvSummary write_environment(const std::filesystem::path& dir);

}  // namespace nanguard::cli
