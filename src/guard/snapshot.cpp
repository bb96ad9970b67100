#include "nanguard/guard/snapshot.h"

#include <chrono>
#include <cstring>
#include <map>
#include <type_traits>

#include <torch/torch.h>

#include "core/check.h"
#include "guard/optimizer_state.h"

namespace nanguard {
namespace {

// The optimizer's state map is keyed by std::string in LibTorch 1.13 and by void* in 2.x.
using StateMap = std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using StateKey = typename StateMap::key_type;

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
  struct OptState {
    std::vector<at::Tensor> tensors;
    int64_t step = 0;
  };
  std::map<StateKey, OptState> optimizer;
  std::vector<std::pair<c10::Device, at::Tensor>> rng;
  std::vector<double> extra;
  std::vector<double> group_lrs;
};

SnapshotRing::SnapshotRing(TrainingStateRefs state, int64_t capacity) : state_(std::move(state)) {
  NANGUARD_CHECK(capacity > 0, "snapshot capacity must be positive, got {}", capacity);
  for (int64_t i = 0; i < capacity; ++i) {
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
  Slot& slot = *slots_[static_cast<size_t>(next_)];
  next_ = (next_ + 1) % capacity();
  for (size_t i = 0; i < state_.parameters.size(); ++i) copy_into(slot.parameters[i], state_.parameters[i]);
  for (size_t i = 0; i < state_.buffers.size(); ++i) copy_into(slot.buffers[i], state_.buffers[i]);
  if (state_.optimizer != nullptr) {
    auto& live = state_.optimizer->state();
    // Forget entries the optimizer no longer has; keep (and reuse) the buffers of the rest.
    for (auto it = slot.optimizer.begin(); it != slot.optimizer.end();) {
      it = live.count(it->first) ? std::next(it) : slot.optimizer.erase(it);
    }
    for (auto& [key, st] : live) {
      detail::ParamStateView v = detail::view_state(*st);
      auto& saved = slot.optimizer[key];
      saved.tensors.resize(v.tensors.size());
      for (size_t i = 0; i < v.tensors.size(); ++i) copy_into(saved.tensors[i], *v.tensors[i]);
      saved.step = v.step ? *v.step : 0;
    }
    slot.group_lrs.clear();
    for (auto& group : state_.optimizer->param_groups()) slot.group_lrs.push_back(group.options().get_lr());
  }
  slot.rng.clear();
  for (const auto& device : generator_devices(state_)) {
    slot.rng.emplace_back(device, at::globalContext().defaultGenerator(device).get_state());
  }
  slot.extra = state_.save_extra ? state_.save_extra() : std::vector<double>{};
  slot.step = step;
  slot.valid = true;
  last_take_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void SnapshotRing::restore(const Slot& slot) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state_.parameters.size(); ++i) state_.parameters[i].copy_(slot.parameters[i]);
  for (size_t i = 0; i < state_.buffers.size(); ++i) {
    if (state_.buffers[i].defined()) state_.buffers[i].copy_(slot.buffers[i]);
  }
  if (state_.optimizer != nullptr) {
    auto& live = state_.optimizer->state();
    // State created after the snapshot (e.g. before the first step) must disappear, so the
    // optimizer behaves exactly as it did then.
    for (auto it = live.begin(); it != live.end();) {
      if (slot.optimizer.count(it->first) == 0) {
        it = live.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [key, st] : live) {
      detail::ParamStateView v = detail::view_state(*st);
      const auto& saved = slot.optimizer.at(key);
      for (size_t i = 0; i < v.tensors.size(); ++i) {
        if (saved.tensors[i].defined() && v.tensors[i]->defined()) {
          v.tensors[i]->copy_(saved.tensors[i]);
        } else {
          *v.tensors[i] = saved.tensors[i].defined() ? saved.tensors[i].clone() : at::Tensor();
        }
      }
      if (v.step) *v.step = saved.step;
    }
    auto& groups = state_.optimizer->param_groups();
    for (size_t g = 0; g < groups.size() && g < slot.group_lrs.size(); ++g) groups[g].options().set_lr(slot.group_lrs[g]);
  }
  for (const auto& [device, rng_state] : slot.rng) {
    at::Generator generator = at::globalContext().defaultGenerator(device);  // shares the default one
    generator.set_state(rng_state);
  }
  if (state_.load_extra) state_.load_extra(slot.extra);
}

std::optional<int64_t> SnapshotRing::restore_at_or_before(int64_t max_step) {
  const Slot* best = nullptr;
  for (const auto& s : slots_) {
    if (s->valid && s->step <= max_step && (best == nullptr || s->step > best->step)) best = s.get();
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

int64_t SnapshotRing::memory_bytes() const {
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& t) {
    if (t.defined()) bytes += static_cast<int64_t>(t.numel() * t.element_size());
  };
  for (const auto& s : slots_) {
    for (const auto& t : s->parameters) add(t);
    for (const auto& t : s->buffers) add(t);
    for (const auto& [key, st] : s->optimizer) {
      for (const auto& t : st.tensors) add(t);
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
