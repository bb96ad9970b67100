// A GAN under one guard: a generator and a discriminator, each with its own optimizer, batches
// from a torch::data pipeline that keeps each sample's dataset index, and a binary
// cross-entropy written by hand. Two records of the data are bad: one holds a NaN, and one is
// 10,000 times too large, which saturates the discriminator's sigmoid to exactly 1 so that the
// hand-written loss computes 0 * log(0) = NaN. Unguarded, the run is NaN from the first batch
// that holds either; guarded, it goes on and the generator still learns the data's mean.
// Exits 0 when the run learned, 1 otherwise.
#include <cstdio>
#include <iostream>

#include <torch/torch.h>

#include <nanguard/nanguard.h>

namespace {

constexpr int64_t kSamples = 2048, kNoise = 8, kNaNRecord = 77, kHugeRecord = 300;

// Points from N((2, -1), 0.3^2): the distribution the generator must learn.
class Blob : public torch::data::datasets::Dataset<Blob> {
 public:
  Blob() {
    auto gen = at::detail::createCPUGenerator(7);
    points_ = torch::randn({kSamples, 2}, gen) * 0.3 + torch::tensor({2.0f, -1.0f});
    points_[kNaNRecord][1] = std::numeric_limits<float>::quiet_NaN();  // a corrupt record
    points_[kHugeRecord] *= 1e4;                                          // a unit error
  }
  torch::data::Example<> get(size_t index) override {
    return {points_[static_cast<int64_t>(index)], torch::ones({1})};
  }
  c10::optional<size_t> size() const override { return kSamples; }

 private:
  at::Tensor points_;
};

// The textbook formula: unsafe once the sigmoid saturates (log(0) = -inf, 0 * -inf = NaN).
at::Tensor handwritten_bce(const at::Tensor& logits, double label) {
  auto p = torch::sigmoid(logits);
  return -(label * torch::log(p) + (1 - label) * torch::log(1 - p)).mean();
}

void set_requires_grad(torch::nn::Module& module, bool on) {
  for (auto& p : module.parameters()) p.requires_grad_(on);
}

}  // namespace

int main() {
  torch::manual_seed(0);
  torch::nn::Sequential generator(torch::nn::Linear(kNoise, 32), torch::nn::ReLU(), torch::nn::Linear(32, 2));
  torch::nn::Sequential discriminator(torch::nn::Linear(2, 32), torch::nn::LeakyReLU(), torch::nn::Linear(32, 1));
  torch::optim::Adam gen_opt(generator->parameters(), torch::optim::AdamOptions(2e-3).betas({0.5, 0.999}));
  torch::optim::Adam disc_opt(discriminator->parameters(), torch::optim::AdamOptions(2e-3).betas({0.5, 0.999}));
  // One guard for both: one snapshot, one decision, one rollback.
  nanguard::Guard guard({nanguard::GuardedModel(*generator, gen_opt, "generator"),
                         nanguard::GuardedModel(*discriminator, disc_opt, "discriminator")});

  auto loader = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
      nanguard::data::with_ids(Blob()).map(nanguard::data::StackBatch()),
      torch::data::DataLoaderOptions().batch_size(64));

  auto generated_mean = [&] {
    torch::NoGradGuard no_grad;
    torch::manual_seed(123);
    return generator->forward(torch::randn({1000, kNoise})).mean(0);
  };
  const auto target = torch::tensor({2.0f, -1.0f});
  const double start_distance = (generated_mean() - target).norm().item<double>();

  // Both losses from the pre-step state (the guard then steps both optimizers). The closure may
  // run again for the same batch (replay, recompute), so it makes its fakes itself every time.
  auto closure = [&](const nanguard::data::Batch& b, const nanguard::StepContext&) {
    auto noise = torch::randn({b.size(), kNoise});
    set_requires_grad(*discriminator, false);  // the generator's loss must not train the discriminator
    auto fake = generator->forward(noise);
    auto g_loss = handwritten_bce(discriminator->forward(fake), 1.0);
    g_loss.backward();
    set_requires_grad(*discriminator, true);
    at::Tensor d_loss;
    {
      NANGUARD_SCOPE("discriminator_loss");
      d_loss = handwritten_bce(discriminator->forward(b.x), 1.0) +
               handwritten_bce(discriminator->forward(fake.detach()), 0.0);
    }
    d_loss.backward();
    return torch::stack({g_loss, d_loss});
  };

  for (int epoch = 0; epoch < 8 && !guard.stopped(); ++epoch) {
    for (nanguard::data::Batch& batch : *loader) {
      auto verdict = guard.step(batch, closure);
      if (verdict.incident) std::cout << verdict.incident->summary();
      if (verdict.stopped()) break;
    }
  }
  const double distance = (generated_mean() - target).norm().item<double>();
  std::cout << guard.summary();
  std::printf("generated mean: %.3f from the data's mean (%.3f at the start)\n", distance, start_distance);

  const auto& q = guard.quarantined();
  const bool nan_record_quarantined = std::find(q.begin(), q.end(), kNaNRecord) != q.end();
  const bool learned = distance < 0.5 && distance < start_distance / 3;
  const bool ok = !guard.stopped() && nan_record_quarantined && learned;
  std::printf("verdict: %s\n", ok ? "the run went on and learned"
                               : guard.stopped() ? "the guard stopped the run"
                               : !nan_record_quarantined ? "the NaN record was not quarantined"
                                                         : "the generator did not learn");
  return ok ? 0 : 1;
}
