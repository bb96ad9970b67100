// Times epochs of the article's MNIST MLP trained by nanguard's Trainer (guard on).
// Usage: bench_epoch MNIST_DIR EPOCHS   -> one line per epoch: "epoch_seconds <s>"
#include <chrono>
#include <iostream>

#include <torch/torch.h>

#include "article_model.h"

int main(int argc, char** argv) {
  using namespace nanguard;
  if (argc < 3) {
    std::cerr << "usage: bench_epoch MNIST_DIR EPOCHS\n";
    return 2;
  }
  auto mnist = data::load_mnist(argv[1]);
  const int64_t epochs = std::stoll(argv[2]);
  // Guarded, as `nanguard fit` trains by default.
  auto trainer = bench::make_article_trainer(/*guarded=*/true);
  data::BatchLoader loader(mnist.train, 32, true, 0);
  for (int64_t e = 0; e < epochs; ++e) {
    const auto start = std::chrono::steady_clock::now();
    Logs logs = trainer->run_epoch(loader, e);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "epoch_seconds " << s << " loss " << logs.get("loss") << std::endl;
  }
  return 0;
}
