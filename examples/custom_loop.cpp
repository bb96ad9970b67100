// The Guard in a plain LibTorch loop: the loss below is written by hand and goes NaN
// (log of a softmax that underflows); the guard localizes the op, explains it and keeps the
// loop alive by skipping the poisoned updates.
#include <iostream>

#include <torch/torch.h>

#include <nanguard/nanguard.h>

int main() {
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(20, 64), torch::nn::ReLU(), torch::nn::Linear(64, 10));
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(1e-3));
  nanguard::Guard guard(*model, optimizer);

  auto x = torch::randn({512, 20}) * 300;  // unnormalised inputs: huge logits
  auto y = torch::randint(0, 10, {512}, torch::kLong);
  nanguard::data::TensorDataset dataset(x, y);
  nanguard::data::BatchLoader loader(dataset, 64, /*shuffle=*/true, /*seed=*/1);
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    auto verdict = guard.step(loader.batch(b), [&](const nanguard::data::Batch& batch) {
      NANGUARD_SCOPE("loss");
      auto p = torch::softmax(model->forward(batch.x), 1);
      auto loss = -(torch::one_hot(batch.y, 10) * torch::log(p)).sum(1).mean();  // unsafe
      loss.backward();
      return loss;
    });
    if (verdict.incident) std::cout << verdict.incident->summary();
    if (verdict.stopped()) break;
  }
  std::cout << guard.summary();
  return 0;
}
