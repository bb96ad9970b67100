// Times epochs of the article's MNIST MLP trained by nanguard's Trainer.
// Usage: bench_epoch MNIST_DIR EPOCHS   -> one line per epoch: "epoch_seconds <s>"
#include <chrono>
#include <iostream>

#include <torch/torch.h>

#include "nanguard/nanguard.h"

int main(int argc, char** argv) {
  using namespace nanguard;
  if (argc < 3) {
    std::cerr << "usage: bench_epoch MNIST_DIR EPOCHS\n";
    return 2;
  }
  auto mnist = data::load_mnist(argv[1]);
  const int64_t epochs = std::stoll(argv[2]);
  torch::manual_seed(0);
  ModelSpec spec;
  spec.input_shape = {28, 28};
  spec.add(layers::flatten()).add(layers::dense(128, "relu")).add(layers::dense(10, "softmax"));
  CompileOptions compile;
  compile.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  compile.optimizer = OptimizerSpec().type(OptimizerType::adam);
  Trainer trainer(SequentialModel(spec), compile);
  data::BatchLoader loader(mnist.train, 32, true, 0);
  for (int64_t e = 0; e < epochs; ++e) {
    const auto start = std::chrono::steady_clock::now();
    Logs logs = trainer.run_epoch(loader, e);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "epoch_seconds " << s << " loss " << logs.get("loss") << std::endl;
  }
  return 0;
}
