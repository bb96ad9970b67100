#include "guard/rng_state.h"

#include <ATen/Context.h>

namespace nanguard::detail {
namespace {

at::CPUGeneratorImpl* default_cpu_generator() {
  auto gen = at::globalContext().defaultGenerator(c10::Device(c10::kCPU));
  return at::check_generator<at::CPUGeneratorImpl>(gen);
}

void write_to(at::CPUGeneratorImpl* impl, const at::mt19937& engine, c10::optional<float> f,
              c10::optional<double> d) {
  impl->set_engine(engine);
  impl->set_next_float_normal_sample(f);
  impl->set_next_double_normal_sample(d);
}

}  // namespace

void CpuRngState::capture() {
  auto* impl = default_cpu_generator();
  std::lock_guard<std::mutex> lock(impl->mutex_);
  engine_ = impl->engine();
  next_float_normal_ = impl->next_float_normal_sample();
  next_double_normal_ = impl->next_double_normal_sample();
  captured_ = true;
}

void CpuRngState::restore() const {
  if (!captured_) return;
  auto* impl = default_cpu_generator();
  std::lock_guard<std::mutex> lock(impl->mutex_);
  write_to(impl, engine_, next_float_normal_, next_double_normal_);
}

at::Tensor CpuRngState::to_tensor() const {
  auto gen = at::detail::createCPUGenerator();
  write_to(at::check_generator<at::CPUGeneratorImpl>(gen), engine_, next_float_normal_, next_double_normal_);
  return gen.get_state();
}

}  // namespace nanguard::detail
