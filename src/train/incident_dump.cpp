#include "nanguard/train/incident_dump.h"

#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "nanguard/data/npy.h"

namespace nanguard {
namespace fs = std::filesystem;

void write_module_tensors(const fs::path& path, torch::nn::Module& module, const ExtraTensors& extra) {
  write_file_atomic(path, [&](const fs::path& tmp) {
    torch::serialize::OutputArchive archive;
    for (const auto& item : module.named_parameters()) archive.write(item.key(), item.value());
    for (const auto& item : module.named_buffers()) archive.write(item.key(), item.value(), /*is_buffer=*/true);
    for (const auto& [name, value] : extra) archive.write(name, value, /*is_buffer=*/true);
    archive.save_to(tmp.string());
  });
}

void write_incident_dump(const fs::path& dir, torch::nn::Module& module, const data::Batch& batch,
                         const at::Tensor& rng_state, torch::optim::Optimizer* optimizer, const ExtraTensors& extra) {
  torch::NoGradGuard no_grad;
  write_module_tensors(dir / "state.pt", module, extra);
  if (optimizer != nullptr) {
    write_file_atomic(dir / "optimizer.pt", [&](const fs::path& tmp) { torch::save(*optimizer, tmp.string()); });
  }
  data::write_npy(dir / "x.npy", batch.x.to(torch::kCPU));
  if (batch.y.defined()) data::write_npy(dir / "y.npy", batch.y.to(torch::kCPU));
  data::write_npy(dir / "ids.npy", batch.ids.to(torch::kCPU));
  if (rng_state.defined()) data::write_npy(dir / "rng.npy", rng_state.to(torch::kCPU));
}

IncidentDump read_incident_dump(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw IoError("incident dump " + dir.string() + " is not a folder");
  for (const char* name : {"state.pt", "x.npy", "ids.npy"}) {
    if (!fs::exists(dir / name)) throw IoError("incident dump " + dir.string() + " lacks " + name);
  }
  IncidentDump dump;
  dump.state_file = dir / "state.pt";
  dump.batch.x = data::read_npy(dir / "x.npy");
  if (fs::exists(dir / "y.npy")) dump.batch.y = data::read_npy(dir / "y.npy");
  dump.batch.ids = data::read_npy(dir / "ids.npy");
  NANGUARD_CHECK(dump.batch.ids.dim() == 1 && dump.batch.ids.scalar_type() == torch::kLong &&
                     dump.batch.ids.size(0) == dump.batch.x.size(0) &&
                     (!dump.batch.y.defined() || dump.batch.y.size(0) == dump.batch.x.size(0)),
                 "incident dump {}: x, y and ids disagree on the batch size", dir.string());
  if (fs::exists(dir / "rng.npy")) dump.rng_state = data::read_npy(dir / "rng.npy");
  if (fs::exists(dir / "optimizer.pt")) dump.optimizer_file = dir / "optimizer.pt";
  return dump;
}

}  // namespace nanguard
