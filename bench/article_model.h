// The article's MNIST model, as every benchmark trains it: Flatten, Dense 128 relu,
// Dense 10 softmax, Adam with Keras defaults, sparse categorical cross-entropy, seed 0.
#pragma once

#include <algorithm>
#include <chrono>
#include <ctime>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "nanguard/nanguard.h"

namespace nanguard::bench {

inline std::unique_ptr<Trainer> make_article_trainer(bool guarded, c10::Device device = c10::Device(c10::kCPU)) {
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {28, 28};
  spec.add(layers::flatten()).add(layers::dense(128, "relu")).add(layers::dense(10, "softmax"));
  CompileOptions compile;
  compile.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  compile.optimizer = OptimizerSpec().type(OptimizerType::adam);
  compile.guard = GuardOptions().enabled(guarded);
  compile.device = device;
  return std::make_unique<Trainer>(SequentialModel(spec), compile);
}

inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

// Per-step wall time and CPU time of the calling thread. On a loaded machine the CPU time
// leaves out the time the thread waited for a core, the largest source of noise; it covers the
// whole step only when LibTorch and BLAS run on this thread (OMP_NUM_THREADS=1).
struct StepTimes {
  std::vector<double> wall_us, cpu_us;

  template <class Fn>
  void time(Fn&& step) {
    timespec c0{}, c1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    const auto w0 = std::chrono::steady_clock::now();
    step();
    const auto w1 = std::chrono::steady_clock::now();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    wall_us.push_back(std::chrono::duration<double, std::micro>(w1 - w0).count());
    cpu_us.push_back(static_cast<double>(c1.tv_sec - c0.tv_sec) * 1e6 + static_cast<double>(c1.tv_nsec - c0.tv_nsec) / 1e3);
  }
};

}  // namespace nanguard::bench
