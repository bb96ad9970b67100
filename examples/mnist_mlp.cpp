// The article's example through the C++ API: Flatten -> Dense(128, relu) -> Dense(10, softmax),
// Adam, sparse categorical cross-entropy, 10 epochs of batch 32 on MNIST.
// Usage: mnist_mlp [MNIST_DIR] [EPOCHS]   (MNIST_DIR defaults to data/mnist)
#include <iostream>
#include <string>

#include <torch/torch.h>

#include <nanguard/nanguard.h>

int main(int argc, char** argv) {
  using namespace nanguard;
  const std::string dir = argc > 1 ? argv[1] : "data/mnist";
  const int64_t epochs = argc > 2 ? std::stoll(argv[2]) : 10;
  auto mnist = data::load_mnist(dir);  // pixels scaled to [0, 1]

  torch::manual_seed(42);
  ModelSpec spec;
  spec.input_shape = {28, 28};
  spec.add(layers::flatten()).add(layers::dense(128, "relu")).add(layers::dense(10, "softmax"));

  CompileOptions compile;
  compile.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  compile.optimizer = OptimizerSpec().type(OptimizerType::adam);
  compile.metrics = {"accuracy"};

  Trainer trainer(SequentialModel(spec), compile);
  ProgressBar progress(std::cout);
  FitOptions fit;
  fit.epochs = epochs;
  fit.batch_size = 32;
  History history = trainer.fit(mnist.train, &mnist.test, fit, {&progress});
  Logs test = trainer.evaluate(mnist.test);
  std::cout << "test accuracy: " << test.get("accuracy") << "\n";
  return 0;
}
