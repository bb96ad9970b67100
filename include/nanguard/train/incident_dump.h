// An incident's pre-step state on disk, for replaying it offline (`nanguard replay DIR`):
//   DIR/state.pt   parameters and buffers (non-finite values kept: this is evidence, not a
//                  checkpoint), DIR/x.npy, y.npy, ids.npy the batch, DIR/rng.npy the CPU RNG,
//                  DIR/optimizer.pt the optimizer's state (moments, step counts) when given.
// An incident born in an optimizer step is dumped with the state before that step (the
// guard rebuilds it from a snapshot), so a replay takes the optimizer step again.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "nanguard/data/dataset.h"

namespace nanguard {

struct IncidentDump {
  data::Batch batch;
  at::Tensor rng_state;              // uint8, the CPU generator's state
  std::filesystem::path state_file;  // load with Trainer::load_weights
  std::filesystem::path optimizer_file;  // empty when not dumped; load with Trainer::load_optimizer_state
};

// Tensors saved beside a module's, under names of their own ("nanguard.input_scale").
using ExtraTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Parameters and buffers under flat names ("layers.1.dense.weight"), and `extra` as buffers,
// written atomically.
void write_module_tensors(const std::filesystem::path& path, torch::nn::Module& module, const ExtraTensors& extra = {});

void write_incident_dump(const std::filesystem::path& dir, torch::nn::Module& module, const data::Batch& batch,
                         const at::Tensor& rng_state, torch::optim::Optimizer* optimizer = nullptr,
                         const ExtraTensors& extra = {});
// Throws IoError naming the missing file, ValueError for inconsistent contents.
IncidentDump read_incident_dump(const std::filesystem::path& dir);

}  // namespace nanguard
