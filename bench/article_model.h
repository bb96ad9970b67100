// The article's MNIST model, as every benchmark trains it: Flatten, Dense 128 relu,
// Dense 10 softmax, Adam with Keras defaults, sparse categorical cross-entropy, seed 0.
#pragma once

#include <memory>

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

}  // namespace nanguard::bench
