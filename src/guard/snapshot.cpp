#include "nanguard/guard/snapshot.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/guard/optimizer_adapter.h"

namespace nanguard {
namespace {

// Copies src into dst, allocating dst only the first time (or when the shape changed).
void copy_into(at::Tensor& dst, const at::Tensor& src) {
  if (!src.defined()) {
    dst = at::Tensor();
    return;
  }
  if (!dst.defined() || dst.sizes() != src.sizes() || dst.scalar_type() != src.scalar_type() ||
      dst.device() != src.device()) {
    dst = torch::empty_like(src, at::MemoryFormat::Contiguous);
  }
  if (src.is_cpu() && src.is_contiguous() && dst.is_contiguous() && !src.is_conj() && !src.is_neg()) {
    if (src.nbytes() == 0) return;
    // A plain memory copy: a dozen copy_ dispatches cost as much as the copying on small models.
    std::memcpy(dst.data_ptr(), src.data_ptr(), src.nbytes());
    return;
  }
  dst.copy_(src);
}

std::vector<c10::Device> generator_devices(const TrainingStateRefs& s) {
  std::vector<c10::Device> devices{c10::Device(c10::kCPU)};
  for (const auto& p : s.parameters) {
    if (!p.is_cpu() && std::find(devices.begin(), devices.end(), p.device()) == devices.end()) {
      devices.push_back(p.device());
    }
  }
  return devices;
}

}  // namespace

struct SnapshotRing::Slot {
  bool valid = false;
  int64_t step = -1;
  std::vector<at::Tensor> parameters;
  std::vector<at::Tensor> buffers;
  // Per optimizer: the state of each parameter (copies in buffers reused by later takes) and
  // each group's learning rate.
  std::vector<std::vector<OptimizerParamStateView>> optimizer;
  std::vector<std::vector<double>> group_lrs;
  std::vector<std::pair<c10::Device, at::Tensor>> rng;
  std::vector<double> extra;
};

SnapshotRing::SnapshotRing(TrainingStateRefs state, int64_t capacity, bool keep_first)
    : state_(std::move(state)), capacity_(capacity), first_pending_(keep_first) {
  NANGUARD_CHECK(capacity > 0, "snapshot capacity must be positive, got {}", capacity);
  for (int64_t i = 0; i < capacity + (keep_first ? 1 : 0); ++i) {
    auto slot = std::make_unique<Slot>();
    // Preallocate parameter and buffer copies now; optimizer state appears after the first step.
    for (const auto& p : state_.parameters) slot->parameters.push_back(torch::empty_like(p));
    for (const auto& b : state_.buffers) slot->buffers.push_back(b.defined() ? torch::empty_like(b) : at::Tensor());
    slots_.push_back(std::move(slot));
  }
}

SnapshotRing::~SnapshotRing() = default;

void SnapshotRing::take(int64_t step) {
  const auto start = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  fill(*slots_[static_cast<size_t>(next_)], step);
  next_ = (next_ + 1) % capacity_;
  // The first snapshot is also kept besides the ring, which then behaves as without it.
  if (first_pending_) {
    fill(*slots_.back(), step);
    first_pending_ = false;
  }
  last_take_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void SnapshotRing::retake(int64_t step) {
  torch::NoGradGuard no_grad;
  for (auto& slot : slots_)
    if (slot->valid && slot->step == step) fill(*slot, step);
}

void SnapshotRing::fill(Slot& slot, int64_t step) {
  for (size_t i = 0; i < state_.parameters.size(); ++i) copy_into(slot.parameters[i], state_.parameters[i]);
  for (size_t i = 0; i < state_.buffers.size(); ++i) copy_into(slot.buffers[i], state_.buffers[i]);
  slot.optimizer.resize(state_.optimizers.size());
  slot.group_lrs.resize(state_.optimizers.size());
  for (size_t o = 0; o < state_.optimizers.size(); ++o) {
    const auto live = state_.optimizers[o]->state();
    auto& saved = slot.optimizer[o];
    // Reuse the buffers of the entry saved for the same parameter last time.
    std::vector<OptimizerParamStateView> next(live.size());
    size_t reuse = 0;
    for (size_t i = 0; i < live.size(); ++i) {
      while (reuse < saved.size() && saved[reuse].param < live[i].param) ++reuse;
      if (reuse < saved.size() && saved[reuse].param == live[i].param) next[i] = std::move(saved[reuse]);
      next[i].param = live[i].param;
      next[i].step = live[i].step;
      next[i].tensors.resize(live[i].tensors.size());
      for (size_t k = 0; k < live[i].tensors.size(); ++k) copy_into(next[i].tensors[k], live[i].tensors[k]);
    }
    saved = std::move(next);
    slot.group_lrs[o] = state_.optimizers[o]->learning_rates();
  }
  slot.rng.clear();
  for (const auto& device : generator_devices(state_)) {
    slot.rng.emplace_back(device, at::globalContext().defaultGenerator(device).get_state());
  }
  slot.extra = state_.save_extra ? state_.save_extra() : std::vector<double>{};
  slot.step = step;
  slot.valid = true;
}

double SnapshotRing::parameters_moved_since_oldest() const {
  const double unknown = std::numeric_limits<double>::quiet_NaN();
  const Slot* oldest = nullptr;
  for (const auto& slot : slots_)
    if (slot->valid && (oldest == nullptr || slot->step < oldest->step)) oldest = slot.get();
  if (oldest == nullptr) return unknown;
  // Asked on a rare step (a loss above the ceiling early in a run): one difference tensor at a
  // time, norms accumulated in double, and anything that fails to compare is "not known".
  try {
    torch::NoGradGuard no_grad;
    std::vector<at::Tensor> changes, norms;
    for (size_t i = 0; i < state_.parameters.size() && i < oldest->parameters.size(); ++i) {
      const at::Tensor& then = oldest->parameters[i];
      const at::Tensor& now = state_.parameters[i];
      if (!then.defined() || !now.defined() || then.sizes() != now.sizes() || then.device() != now.device()) continue;
      changes.push_back(at::linalg_vector_norm(now.detach() - then, 2, c10::nullopt, false, at::kDouble).to(at::kCPU));
      norms.push_back(at::linalg_vector_norm(then, 2, c10::nullopt, false, at::kDouble).to(at::kCPU));
    }
    if (changes.empty()) return unknown;
    const double change = torch::stack(changes).pow(2).sum().item<double>();
    const double norm = torch::stack(norms).pow(2).sum().item<double>();
    return norm > 0 ? std::sqrt(change / norm) : unknown;
  } catch (const std::exception&) {
    return unknown;
  }
}

void SnapshotRing::restore(const Slot& slot) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state_.parameters.size(); ++i) state_.parameters[i].copy_(slot.parameters[i]);
  for (size_t i = 0; i < state_.buffers.size(); ++i) {
    if (state_.buffers[i].defined()) state_.buffers[i].copy_(slot.buffers[i]);
  }
  for (size_t o = 0; o < state_.optimizers.size() && o < slot.optimizer.size(); ++o) {
    state_.optimizers[o]->load_state(slot.optimizer[o]);
    state_.optimizers[o]->set_learning_rates(slot.group_lrs[o]);
  }
  for (const auto& [device, rng_state] : slot.rng) {
    at::Generator generator = at::globalContext().defaultGenerator(device);  // shares the default one
    generator.set_state(rng_state);
  }
  if (state_.load_extra) state_.load_extra(slot.extra);
}

std::optional<int64_t> SnapshotRing::restore_at_or_before(int64_t max_step, bool include_first) {
  const Slot* best = nullptr;
  const size_t searched = include_first ? slots_.size() : static_cast<size_t>(capacity_);
  for (size_t i = 0; i < searched; ++i) {
    const Slot* s = slots_[i].get();
    if (s->valid && s->step <= max_step && (best == nullptr || s->step > best->step)) best = s;
  }
  if (best == nullptr) return std::nullopt;
  restore(*best);
  return best->step;
}

std::optional<int64_t> SnapshotRing::restore_newest() {
  return restore_at_or_before(std::numeric_limits<int64_t>::max());
}

std::vector<int64_t> SnapshotRing::steps() const {
  std::vector<int64_t> out;
  for (const auto& s : slots_) {
    if (s->valid) out.push_back(s->step);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int64_t> SnapshotRing::ring_steps() const {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < capacity_; ++i) {
    if (slots_[static_cast<size_t>(i)]->valid) out.push_back(slots_[static_cast<size_t>(i)]->step);
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t SnapshotRing::memory_bytes() const {
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined()) bytes += static_cast<int64_t>(t.numel() * t.element_size());
  };
  for (const auto& s : slots_) {
    for (const auto& t : s->parameters) add(t);
    for (const auto& t : s->buffers) add(t);
    for (const auto& per_optimizer : s->optimizer) {
      for (const auto& st : per_optimizer) {
        for (const auto& t : st.tensors) add(t);
      }
    }
  }
  return bytes;
}

void SnapshotRing::discard_after(int64_t step) {
  for (auto& s : slots_) {
    if (s->valid && s->step > step) s->valid = false;
  }
}

}  // namespace nanguard
