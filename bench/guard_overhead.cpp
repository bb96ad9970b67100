// Overhead of the guard's cheap path on the article's MNIST MLP: guarded and unguarded training
// steps interleaved in one process (same binary, same data), blocks alternating so both see the
// same machine state. Prints median step time, spread and the ratio.
// Usage: bench_guard_overhead MNIST_DIR [ROUNDS] [STEPS_PER_BLOCK] [MODE] [DEVICE]
//   MODE: both (default), guarded or plain (one variant only, for callgrind instruction counts)
//   DEVICE: cpu (default), cuda or cuda:N (step times then include a synchronisation)
#include <algorithm>
#include <chrono>
#include <iostream>
#include <string>

#include <fmt/format.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "article_model.h"
#include "nanguard/guard/snapshot.h"

namespace {

using namespace nanguard;

using bench::percentile;

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench_guard_overhead MNIST_DIR [ROUNDS] [STEPS_PER_BLOCK] [both|guarded|plain] [cpu|cuda]\n";
    return 2;
  }
  auto mnist = data::load_mnist(argv[1]);
  const int rounds = argc > 2 ? std::stoi(argv[2]) : 40;
  const int block = argc > 3 ? std::stoi(argv[3]) : 100;
  const std::string mode = argc > 4 ? argv[4] : "both";
  const c10::Device device = parse_device(argc > 5 ? argv[5] : "cpu");
  auto plain = bench::make_article_trainer(false, device), guarded = bench::make_article_trainer(true, device);
  // A GPU step is asynchronous: wait for it so the time covers its kernels.
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  data::BatchLoader loader(mnist.train, 32, true, 0);
  bench::StepTimes s_plain, s_guarded;
  int64_t next = 0;
  auto run_block = [&](Trainer& trainer, bench::StepTimes& times) {
    for (int i = 0; i < block; ++i) {
      data::Batch batch = loader.batch(next++ % loader.num_batches());
      times.time([&] {
        trainer.train_step(batch);
        sync();
      });
    }
  };
  for (int r = 0; r < rounds; ++r) {
    // Alternate which goes first so neither always runs on a warmer cache.
    const bool plain_first = r % 2 == 0;
    if (mode != "guarded" && plain_first) run_block(*plain, s_plain);
    if (mode != "plain") run_block(*guarded, s_guarded);
    if (mode != "guarded" && !plain_first) run_block(*plain, s_plain);
  }
  const auto& t_plain = s_plain.wall_us;
  const auto& t_guarded = s_guarded.wall_us;
  if (mode != "both") {
    std::cout << fmt::format("{} steps of {}: median {:.1f} us\n", mode == "plain" ? t_plain.size() : t_guarded.size(),
                             mode, percentile(mode == "plain" ? t_plain : t_guarded, 0.5));
    return 0;
  }
  const double mp = percentile(t_plain, 0.5), mg = percentile(t_guarded, 0.5);
  std::cout << fmt::format("device: {}; steps per variant: {} ({} rounds of {} interleaved)\n", device.str(),
                           t_plain.size(), rounds, block);
  std::cout << fmt::format("unguarded step: median {:.1f} us (p10 {:.1f}, p90 {:.1f})\n", mp, percentile(t_plain, 0.1),
                           percentile(t_plain, 0.9));
  std::cout << fmt::format("guarded step:   median {:.1f} us (p10 {:.1f}, p90 {:.1f})\n", mg, percentile(t_guarded, 0.1),
                           percentile(t_guarded, 0.9));
  std::cout << fmt::format("guard overhead: {:+.2f}% of the median step\n", (mg / mp - 1.0) * 100.0);
  const double cp = percentile(s_plain.cpu_us, 0.5), cg = percentile(s_guarded.cpu_us, 0.5);
  std::cout << fmt::format("CPU time of this thread (whole step only with OMP_NUM_THREADS=1): median unguarded {:.1f} us, "
                           "guarded {:.1f} us, overhead {:+.2f}%\n", cp, cg, (cg / cp - 1.0) * 100.0);
  Guard& g = *guarded->guard();
  std::cout << fmt::format("snapshots: {} held, {:.2f} MB, last take {:.1f} us; incidents: {}\n", g.snapshots().steps().size(),
                           static_cast<double>(g.snapshots().memory_bytes()) / 1e6, g.snapshots().last_take_seconds() * 1e6,
                           g.incidents().size());
  return 0;
}
