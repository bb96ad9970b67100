// A NaN-zoo scenario defined outside the library and run through the same harness: a
// hand-written loss takes sqrt of a difference that can go negative, on generated data.
// It prints the result JSON of nanguard and of the unguarded baseline.
#include <iostream>

#include <torch/torch.h>

#include <nanguard/nanguard.h>
#include <nanguard/zoo/scenario.h>

namespace zoo = nanguard::zoo;

// Four Gaussian clusters in 8 dimensions.
nanguard::data::TensorDataset clusters(int64_t n, uint64_t seed) {
  auto centers = torch::randn({4, 8}, at::detail::createCPUGenerator(7)) * 3.0;
  auto gen = at::detail::createCPUGenerator(seed);
  auto y = torch::randint(0, 4, {n}, gen, torch::kLong);
  return {centers.index_select(0, y) + torch::randn({n, 8}, gen), y};
}

zoo::Scenario sqrt_loss_scenario() {
  zoo::Scenario s;
  s.id = "X1";
  s.title = "sqrt of a negative number in a hand-written loss";
  s.trigger = "loss = sqrt(ce - 0.5): negative once the cross-entropy drops below 0.5";
  s.true_cause = "unsafe_loss";
  s.true_subkind = "sqrt_of_negative";
  s.expected_birth_op = "aten::sqrt";
  s.expected_phase = "forward";
  s.needs_mnist = false;
  s.build = [](const zoo::BuildContext& ctx) {
    zoo::ScenarioRun run;
    run.train = clusters(512, 1);
    run.test = clusters(256, 2);
    auto model = torch::nn::Sequential(torch::nn::Linear(8, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
    run.model = model.ptr();
    run.forward = [model](const at::Tensor& x) mutable { return model->forward(x); };
    auto stable = std::make_shared<bool>(!ctx.inject_fault);
    run.loss = [stable](const at::Tensor& out, const at::Tensor& y) {
      auto ce = torch::nn::functional::cross_entropy(out, y);
      return *stable ? ce : torch::sqrt(ce - 0.5);
    };
    run.use_stable_loss = [stable] { return *stable = true; };
    run.optimizer = std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(0.01));
    run.epochs = 3;
    run.batch_size = 32;
    return run;
  };
  return s;
}

int main() {
  const zoo::Scenario scenario = sqrt_loss_scenario();
  int status = 0;
  for (const char* baseline : {"nanguard", "none"}) {
    const zoo::ScenarioResult r = zoo::run_scenario(scenario, zoo::RunOptions().baseline(baseline));
    std::cout << r.to_json() << "\n";
    // Exit non-zero when the guard misses the scenario, so a build script can rely on it.
    if (r.baseline == "nanguard" && !(r.detected && r.cause_correct)) status = 1;
  }
  return status;
}
