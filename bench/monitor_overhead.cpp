// Overhead of the training monitor on the article's MNIST MLP: unguarded steps, the guard's
// cheap path alone, the guard with the monitor at its default sampling, and the same without
// the divergence watch, interleaved in one process (same binary, same data, blocks rotating so
// each sees the same machine state). Prints median step time, spread and each overhead over
// unguarded training, and the watch's cost (guard + monitor against the same without it).
// Usage: bench_monitor_overhead MNIST_DIR [ROUNDS] [STEPS_PER_BLOCK] [SAMPLE_EVERY] [ACTIVATIONS 0|1]
//   (the last two override the monitor's defaults, to see what each part costs)
//        bench_monitor_overhead MNIST_DIR scenarios [EPOCHS]
//   scenarios: healthy runs (Adam 1e-3, seeds 0-2), a diverging run (SGD lr 5 on raw 0-255
//   pixels) and a 20-layer sigmoid MLP with N(0,1) weights; prints the warnings of each and,
//   for the diverging run, how many steps before the first non-finite value it warned.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>

#include <fmt/format.h>
#include <torch/torch.h>

#include "article_model.h"
#include "nanguard/monitor/monitor.h"

namespace {

using namespace nanguard;

using bench::percentile;

std::unique_ptr<Trainer> make_trainer(const ModelSpec& spec, OptimizerSpec optimizer, GuardOptions guard) {
  CompileOptions compile;
  compile.loss = LossSpec().type(LossType::sparse_categorical_crossentropy);
  compile.optimizer = std::move(optimizer);
  compile.guard = std::move(guard);
  return std::make_unique<Trainer>(SequentialModel(spec), compile);
}

ModelSpec article_spec() {
  ModelSpec spec;
  spec.input_shape = {28, 28};
  spec.add(layers::flatten()).add(layers::dense(128, "relu")).add(layers::dense(10, "softmax"));
  return spec;
}

struct ScenarioResult {
  std::vector<GuardEvent> warnings;
  int64_t first_incident = -1;
  int64_t steps = 0;
};

ScenarioResult run_scenario(Trainer& trainer, const data::TensorDataset& train, int64_t epochs, int64_t max_steps) {
  ScenarioResult r;
  data::BatchLoader loader(train, 32, true, 0);
  for (int64_t e = 0; e < epochs && r.first_incident < 0; ++e) {
    loader.start_epoch(e);
    for (int64_t b = 0; b < loader.num_batches(); ++b) {
      auto step = trainer.train_step(loader.batch(b));
      ++r.steps;
      if (step.incident && r.first_incident < 0) r.first_incident = trainer.guard()->steps() - 1;
      if (r.first_incident >= 0 || (max_steps > 0 && r.steps >= max_steps)) break;
    }
    if (max_steps > 0 && r.steps >= max_steps) break;
  }
  for (const auto& ev : trainer.guard()->events())
    if (ev.kind == "warning") r.warnings.push_back(ev);
  return r;
}

void print(const std::string& name, const ScenarioResult& r, const monitor::Monitor& m) {
  std::cout << fmt::format("{}: {} steps, {} warnings, first incident at step {}\n", name, r.steps, r.warnings.size(),
                           r.first_incident);
  // The first sampled step's per-layer gradients, for tuning the vanishing-gradient threshold.
  for (const auto& s : m.history()) {
    if (!s.sampled || s.layers.size() < 2) continue;
    const auto &a = s.layers.front(), &b = s.layers.back();
    std::cout << fmt::format("  step {}: {} grad norm {:.3g} ({} elements), {} grad norm {:.3g} ({} elements)\n", s.step,
                             a.layer, a.grad_norm, a.numel, b.layer, b.grad_norm, b.numel);
    break;
  }
  size_t shown = 0;
  for (const auto& w : r.warnings) {
    if (++shown > 8) break;
    std::cout << fmt::format("  step {} {} {}: {}\n", w.step, w.cause, w.module, w.explanation);
  }
  if (r.first_incident >= 0 && !r.warnings.empty())
    std::cout << fmt::format("  warned {} steps ahead\n", r.first_incident - r.warnings.front().step);
}

int scenarios(const std::string& dir, int64_t epochs) {
  auto mnist = data::load_mnist(dir);
  for (int seed = 0; seed < 3; ++seed) {
    torch::manual_seed(seed);
    auto t = make_trainer(article_spec(), OptimizerSpec().type(OptimizerType::adam), GuardOptions());
    print(fmt::format("healthy seed {}", seed), run_scenario(*t, mnist.train, epochs, 0), *t->guard()->monitor());
  }
  {
    auto raw = data::load_mnist(dir, 1.0);
    for (double lr : {5.0, 0.5, 0.05, 0.005}) {
      torch::manual_seed(0);
      auto t = make_trainer(article_spec(), OptimizerSpec().type(OptimizerType::sgd).learning_rate(lr), GuardOptions());
      print(fmt::format("diverging? (SGD lr {}, raw pixels)", lr), run_scenario(*t, raw.train, 1, 400), *t->guard()->monitor());
    }
  }
  {
    torch::manual_seed(0);
    ModelSpec spec;
    spec.input_shape = {28, 28};
    spec.add(layers::flatten());
    for (int i = 0; i < 20; ++i) spec.add(layers::dense(64, "sigmoid"));
    spec.add(layers::dense(10, "softmax"));
    auto t = make_trainer(spec, OptimizerSpec().type(OptimizerType::adam), GuardOptions());
    {
      torch::NoGradGuard no_grad;
      for (auto& p : t->model()->named_parameters())
        if (p.key().find("weight") != std::string::npos) p.value().normal_(0.0, 1.0);
    }
    print("20-layer sigmoid, N(0,1)", run_scenario(*t, mnist.train, 1, 300), *t->guard()->monitor());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench_monitor_overhead MNIST_DIR [ROUNDS] [STEPS_PER_BLOCK] | MNIST_DIR scenarios [EPOCHS]\n";
    return 2;
  }
  if (argc > 2 && std::string(argv[2]) == "scenarios") return scenarios(argv[1], argc > 3 ? std::stoi(argv[3]) : 1);
  auto mnist = data::load_mnist(argv[1]);
  const int rounds = argc > 2 ? std::stoi(argv[2]) : 30;
  const int block = argc > 3 ? std::stoi(argv[3]) : 100;
  monitor::MonitorOptions mon;
  if (argc > 4) mon.sample_every(std::stoi(argv[4]));
  if (argc > 5) mon.activations(std::stoi(argv[5]) != 0);
  torch::manual_seed(0);
  auto plain = make_trainer(article_spec(), OptimizerSpec().type(OptimizerType::adam), GuardOptions().enabled(false));
  torch::manual_seed(0);
  auto cheap = make_trainer(article_spec(), OptimizerSpec().type(OptimizerType::adam),
                            GuardOptions().monitor(monitor::MonitorOptions().enabled(false)));
  torch::manual_seed(0);
  auto monitored = make_trainer(article_spec(), OptimizerSpec().type(OptimizerType::adam), GuardOptions().monitor(mon));
  torch::manual_seed(0);
  auto unwatched = make_trainer(article_spec(), OptimizerSpec().type(OptimizerType::adam),
                                GuardOptions().monitor(mon).divergence(DivergenceOptions().enabled(false)));
  data::BatchLoader loader(mnist.train, 32, true, 0);
  constexpr int kVariants = 4;
  bench::StepTimes clocks[kVariants];
  Trainer* trainers[kVariants] = {plain.get(), cheap.get(), monitored.get(), unwatched.get()};
  int64_t next = 0;
  auto run_block = [&](int which) {
    for (int i = 0; i < block; ++i) {
      data::Batch batch = loader.batch(next++ % loader.num_batches());
      clocks[which].time([&] { trainers[which]->train_step(batch); });
    }
  };
  for (int r = 0; r < rounds; ++r) {
    // Rotate the order so no variant always runs first (on a cold cache) or last.
    for (int k = 0; k < kVariants; ++k) run_block((r + k) % kVariants);
  }
  const std::vector<double> times[kVariants] = {clocks[0].wall_us, clocks[1].wall_us, clocks[2].wall_us, clocks[3].wall_us};
  const char* names[kVariants] = {"unguarded        ", "guard cheap path ", "guard + monitor  ", "  without watch  "};
  const double base = percentile(times[0], 0.5);
  std::cout << fmt::format("steps per variant: {} ({} rounds of {} interleaved); monitor sampling every {} steps, "
                           "activations {}\n",
                           times[0].size(), rounds, block, mon.sample_every(), mon.activations() ? "on" : "off");
  for (int k = 0; k < kVariants; ++k) {
    const double m = percentile(times[k], 0.5);
    std::cout << fmt::format("{} median {:7.1f} us (p10 {:7.1f}, p90 {:7.1f})  overhead {:+.2f}%\n", names[k], m,
                             percentile(times[k], 0.1), percentile(times[k], 0.9), (m / base - 1.0) * 100.0);
  }
  // CPU time of this thread: what the step cost, without the time spent waiting for a core.
  const double cpu_base = percentile(clocks[0].cpu_us, 0.5);
  std::cout << "CPU time of this thread (whole step only with OMP_NUM_THREADS=1):\n";
  for (int k = 0; k < kVariants; ++k) {
    const double m = percentile(clocks[k].cpu_us, 0.5);
    std::cout << fmt::format("{} median {:7.1f} us  overhead {:+.2f}%\n", names[k], m, (m / cpu_base - 1.0) * 100.0);
  }
  // The divergence watch: the monitored trainer against the same without the watch.
  std::cout << fmt::format("divergence watch: {:+.2f}% of the median step (wall), {:+.2f}% (CPU time)\n",
                           (percentile(times[2], 0.5) / percentile(times[3], 0.5) - 1.0) * 100.0,
                           (percentile(clocks[2].cpu_us, 0.5) / percentile(clocks[3].cpu_us, 0.5) - 1.0) * 100.0);
  // Mean step time includes the sampled steps the median hides.
  auto mean = [](const std::vector<double>& v) { double s = 0; for (double x : v) s += x; return s / v.size(); };
  const double mb = mean(times[0]);
  std::cout << fmt::format("mean step: unguarded {:.1f} us, cheap path {:.1f} us ({:+.2f}%), monitor {:.1f} us ({:+.2f}%)\n",
                           mb, mean(times[1]), (mean(times[1]) / mb - 1) * 100, mean(times[2]),
                           (mean(times[2]) / mb - 1) * 100);
  // Each trainer's steps are recorded in order, one per guard step, and both guarded trainers
  // take their snapshots at the same steps: the cost of a sampled step (per-layer signals,
  // activations) is the median difference between the monitored trainer's sampled steps and
  // the cheap-path trainer's steps of the same index.
  const int64_t every = mon.sample_every();
  std::vector<double> sampled, extra_each;
  for (size_t i = 0; i < times[2].size(); i += static_cast<size_t>(every)) {
    sampled.push_back(times[2][i]);
    extra_each.push_back(times[2][i] - times[1][i]);
  }
  const double extra = percentile(extra_each, 0.5);
  std::cout << fmt::format("monitor sampled steps ({}): median {:.1f} us, {:.1f} us more than the cheap path's step of the "
                           "same index: {:.1f} us ({:.2f}% of the unguarded median) per step amortised\n",
                           sampled.size(), percentile(sampled, 0.5), extra, extra / static_cast<double>(every),
                           extra / static_cast<double>(every) / base * 100.0);
  std::cout << fmt::format("monitor: {} warnings, {} steps of history\n",
                           monitored->guard()->monitor()->warnings().size(),
                           monitored->guard()->monitor()->history().size());
  return 0;
}
