// Cost of the guard, and of its vote, in a data-parallel step of the article's MNIST MLP
// (Flatten, Dense 128 relu, Dense 10 softmax; Adam 1e-3, sparse categorical cross-entropy; batch
// 32 per rank) at 2 processes on loopback (c10d ProcessGroupGloo). Three ways in the same pair of
// processes, each with its own model and optimizer (same seed, rank 0's weights):
//   (a) unguarded: zero grads, forward, backward, average the gradients, optimizer step;
//   (b) guarded, no vote: a Guard without consensus, the gradients averaged inside the closure
//       right after backward (the check then sees the averaged gradients, the same on every
//       rank, so a healthy run decides what (c) decides);
//   (c) guarded with the vote: guard.set_consensus(group), which checks this rank's gradients,
//       votes with one small all-reduce and averages the gradients before the update.
// The ways take turns in blocks (round r runs a,b,c rotated by r), every rank running the same
// way at the same time (a barrier starts each block), so all three see the same machine state.
// Every way sees the same batches in the same order: global batch i (64 samples) is split in
// two and each rank trains on its half. Prints the median step time of each way per rank, the
// guard's overhead (c vs a), the vote's cost (c vs b) and that of the vote apart (e vs b).
//
// Usage: bench_dist_overhead MNIST_DIR [ROUNDS] [STEPS_PER_BLOCK] [THREADS]
//   Without WORLD_SIZE in the environment it re-runs itself as 2 local workers (RANK,
//   WORLD_SIZE, MASTER_ADDR, MASTER_PORT set as torchrun sets them) and waits for them.
//   THREADS: torch::set_num_threads of each rank (default 1; bench/dist_overhead.sh passes the
//   same number to bench/pytorch_ddp.py).
//   Lines starting "row\t" are for bench/dist_overhead.sh's table.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "article_model.h"
#include "nanguard/dist/data_parallel.h"
#include "nanguard/dist/launcher.h"
#include "nanguard/guard/guard.h"

namespace {

using namespace nanguard;
using bench::percentile;
using Clock = std::chrono::steady_clock;

constexpr int kWorld = 2;
constexpr int64_t kBatchPerRank = 32;

// The article's MLP by hand, so the three ways differ by the guard only. Glorot-uniform
// weights and zero biases (Keras's defaults); the softmax and the cross-entropy as
// log_softmax + nll_loss.
struct MlpImpl : torch::nn::Module {
  MlpImpl()
      : dense(register_module("dense", torch::nn::Linear(784, 128))),
        logits(register_module("logits", torch::nn::Linear(128, 10))) {
    for (torch::nn::Linear* layer : {&dense, &logits}) {
      torch::nn::init::xavier_uniform_((*layer)->weight);
      torch::nn::init::zeros_((*layer)->bias);
    }
  }
  at::Tensor forward(const at::Tensor& x) { return torch::log_softmax(logits(torch::relu(dense(x.flatten(1)))), 1); }
  torch::nn::Linear dense, logits;
};
TORCH_MODULE(Mlp);

at::Tensor loss_and_backward(Mlp& model, const data::Batch& b) {
  auto loss = torch::nll_loss(model->forward(b.x), b.y);
  loss.backward();
  return loss;
}

enum Way { kPlain = 0, kGuardNoVote = 1, kGuardVote = 2, kGuardVoteApart = 3, kWays = 4 };
const char* const kLabels[kWays] = {"(a) unguarded DP step", "(b) guard, no vote", "(c) guard + vote",
                                    "(e) guard + vote apart"};

// The group, but the vote takes an all-reduce of its own (Consensus's default
// average_gradients_and_sum): the design (c) replaces, measured beside it.
class VoteApart : public Consensus {
 public:
  explicit VoteApart(std::shared_ptr<dist::DataParallel> g) : g_(std::move(g)) {}
  void all_max(std::vector<double>& v) override { g_->all_max(v); }
  void all_sum(std::vector<double>& v) override { g_->all_sum(v); }
  void broadcast(std::vector<double>& v, int root) override { g_->broadcast(v, root); }
  void broadcast_bytes(std::string& b, int root) override { g_->broadcast_bytes(b, root); }
  void average_gradients(const std::vector<at::Tensor>& p) override { g_->average_gradients(p); }
  int rank() const override { return g_->rank(); }
  int world_size() const override { return g_->world_size(); }
  std::string host() const override { return g_->host(); }

 private:
  std::shared_ptr<dist::DataParallel> g_;
};

struct Runner {
  Mlp model{nullptr};
  std::unique_ptr<torch::optim::Adam> optimizer;
  std::unique_ptr<Guard> guard;
  std::vector<at::Tensor> params;
  std::vector<double> step_us;       // every recorded step
  std::vector<double> block_median;  // per round
  int64_t next_batch = 0;            // every way walks the same batch sequence
  int64_t not_applied = 0;           // guarded steps the guard did not apply (0 in a healthy run)
};

void make_runner(Runner& r, Way way, const std::shared_ptr<dist::DataParallel>& group) {
  torch::manual_seed(0);
  r.model = Mlp();
  group->broadcast_state(r.model->parameters(), r.model->buffers());
  r.params = r.model->parameters();
  r.optimizer = std::make_unique<torch::optim::Adam>(r.params, torch::optim::AdamOptions(1e-3).eps(1e-7));
  if (way == kPlain) return;
  r.guard = std::make_unique<Guard>(*r.model, *r.optimizer);
  if (way == kGuardVote) r.guard->set_consensus(group);
  if (way == kGuardVoteApart) r.guard->set_consensus(std::make_shared<VoteApart>(group));
}

// One training step of `way` on this rank's batch.
void train_step(Way way, Runner& r, dist::DataParallel& group, const data::Batch& batch) {
  switch (way) {
    case kPlain: {
      // As the guard zeroes them: the gradients set to none.
      for (auto& p : r.params)
        if (p.grad().defined()) p.mutable_grad() = at::Tensor();
      loss_and_backward(r.model, batch);
      group.average_gradients(r.params);
      r.optimizer->step();
      break;
    }
    case kGuardNoVote: {
      const StepVerdict v = r.guard->step(batch, [&](const data::Batch& b, const StepContext& ctx) {
        at::Tensor loss = loss_and_backward(r.model, b);
        // Only the loop's own run averages: a replay or recompute (after a failed check, which a
        // healthy run never has) runs on one rank only, and a collective there would hang.
        if (ctx.run == StepContext::Run::first) group.average_gradients(r.params);
        return loss;
      });
      if (!v.applied()) ++r.not_applied;
      break;
    }
    case kGuardVote:
    case kGuardVoteApart: {
      const StepVerdict v = r.guard->step(batch, [&](const data::Batch& b) { return loss_and_backward(r.model, b); });
      if (!v.applied()) ++r.not_applied;
      break;
    }
    default:
      break;
  }
}

double max_abs_diff(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (a[i] - b[i]).abs().max().item<double>());
  return m;
}

int worker(int argc, char** argv) {
  const int rounds = argc > 2 ? std::stoi(argv[2]) : 20;
  const int block = argc > 3 ? std::stoi(argv[3]) : 50;
  const int threads = argc > 4 ? std::stoi(argv[4]) : 1;
  torch::set_num_threads(threads);
  std::shared_ptr<dist::DataParallel> group = dist::DataParallel::from_environment();
  if (!group) {
    std::cerr << "bench_dist_overhead: WORLD_SIZE must be at least 2 in a worker\n";
    return 2;
  }
  const int rank = group->rank(), world = group->world_size();

  auto mnist = data::load_mnist(argv[1]);
  data::BatchLoader loader(mnist.train, kBatchPerRank, /*shuffle=*/true, /*seed=*/0);
  loader.set_shard(rank, world);
  loader.start_epoch(0);

  std::vector<Runner> runners(kWays);
  for (int w = 0; w < kWays; ++w) make_runner(runners[static_cast<size_t>(w)], static_cast<Way>(w), group);

  auto run_block = [&](Way way, int steps, bool record) {
    Runner& r = runners[static_cast<size_t>(way)];
    group->barrier();  // every rank starts the block together
    const size_t first = r.step_us.size();
    for (int i = 0; i < steps; ++i) {
      const data::Batch batch = loader.batch(r.next_batch++ % loader.num_batches());  // outside the timed region
      const auto t0 = Clock::now();
      train_step(way, r, *group, batch);
      const auto t1 = Clock::now();
      if (record) r.step_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    if (record)
      r.block_median.push_back(
          percentile(std::vector<double>(r.step_us.begin() + static_cast<std::ptrdiff_t>(first), r.step_us.end()), 0.5));
  };

  // One unrecorded block of each way first: allocator, gloo buffers and caches warm.
  for (int w = 0; w < kWays; ++w) run_block(static_cast<Way>(w), block, false);
  for (int round = 0; round < rounds; ++round)
    for (int k = 0; k < kWays; ++k) run_block(static_cast<Way>((round + k) % kWays), block, true);
  group->barrier();

  // Every rank's median, p10, p90 of each way (and its per-round overheads), gathered by one sum.
  enum Slot { kMedian, kP10, kP90, kSlots };
  const size_t per_rank = kWays * kSlots + 3;
  std::vector<double> stats(static_cast<size_t>(world) * per_rank, 0.0);
  double* mine = &stats[static_cast<size_t>(rank) * per_rank];
  for (int w = 0; w < kWays; ++w) {
    const auto& t = runners[static_cast<size_t>(w)].step_us;
    mine[w * kSlots + kMedian] = percentile(t, 0.5);
    mine[w * kSlots + kP10] = percentile(t, 0.1);
    mine[w * kSlots + kP90] = percentile(t, 0.9);
  }
  // Per round, the ratio of block medians: the machine's slow and fast phases cancel out of it.
  std::vector<double> vs_plain, vs_novote, apart_vs_novote;
  for (int i = 0; i < rounds; ++i) {
    const double a = runners[kPlain].block_median[static_cast<size_t>(i)];
    const double b = runners[kGuardNoVote].block_median[static_cast<size_t>(i)];
    const double c = runners[kGuardVote].block_median[static_cast<size_t>(i)];
    const double e = runners[kGuardVoteApart].block_median[static_cast<size_t>(i)];
    vs_plain.push_back(c / a);
    vs_novote.push_back(c / b);
    apart_vs_novote.push_back(e / b);
  }
  mine[kWays * kSlots] = percentile(vs_plain, 0.5);
  mine[kWays * kSlots + 1] = percentile(vs_novote, 0.5);
  mine[kWays * kSlots + 2] = percentile(apart_vs_novote, 0.5);
  group->all_sum(stats);

  // The three ways trained the same batches from the same weights: their weights should agree
  // (up to float rounding), and every rank's copy of each must be the same.
  std::string digests;
  for (const auto& r : runners) digests += dist::digest(r.params) + " ";
  const std::vector<std::string> all_digests = group->all_gather_bytes(digests);
  const bool ranks_agree = std::all_of(all_digests.begin(), all_digests.end(),
                                       [&](const std::string& d) { return d == all_digests.front(); });
  const double diff_ab = max_abs_diff(runners[kPlain].params, runners[kGuardNoVote].params);
  const double diff_ac = max_abs_diff(runners[kPlain].params, runners[kGuardVote].params);
  const double diff_ae = max_abs_diff(runners[kPlain].params, runners[kGuardVoteApart].params);
  std::vector<double> not_applied{static_cast<double>(runners[kGuardNoVote].not_applied + runners[kGuardVote].not_applied +
                                                      runners[kGuardVoteApart].not_applied)};
  group->all_sum(not_applied);

  if (rank == 0) {
    auto at = [&](int r, int w, Slot s) { return stats[static_cast<size_t>(r) * per_rank + static_cast<size_t>(w * kSlots + s)]; };
    std::cout << fmt::format(
        "dist_overhead: the article's MLP, Adam 1e-3, batch {} per rank, {} ranks on loopback (gloo), {} thread(s) "
        "per rank, LibTorch {}\n",
        kBatchPerRank, world, threads, TORCH_VERSION);
    std::cout << fmt::format("  {} rounds x {} steps per way, rotating a,b,c,e; {} recorded steps per way and rank\n", rounds,
                             block, runners[kPlain].step_us.size());
    for (int w = 0; w < kWays; ++w) {
      std::string line = fmt::format("  {:<22}", kLabels[w]);
      for (int r = 0; r < world; ++r)
        line += fmt::format("  rank {}: median {:7.1f} us (p10 {:7.1f}, p90 {:7.1f})", r, at(r, w, kMedian),
                            at(r, w, kP10), at(r, w, kP90));
      std::cout << line << "\n";
    }
    for (int r = 0; r < world; ++r) {
      const double a = at(r, kPlain, kMedian), b = at(r, kGuardNoVote, kMedian), c = at(r, kGuardVote, kMedian);
      const double e = at(r, kGuardVoteApart, kMedian);
      const double* s = &stats[static_cast<size_t>(r) * per_rank + kWays * kSlots];
      std::cout << fmt::format(
          "  rank {}: guard overhead (c vs a) {:+.2f}%   vote cost (c vs b) {:+.2f}%   vote apart (e vs b) {:+.2f}%   "
          "[per-round medians: {:+.2f}%, {:+.2f}%, {:+.2f}%]\n",
          r, (c / a - 1) * 100, (c / b - 1) * 100, (e / b - 1) * 100, (s[0] - 1) * 100, (s[1] - 1) * 100,
          (s[2] - 1) * 100);
    }
    std::cout << fmt::format(
        "  checks: ranks hold the same weights: {}; max |w(a) - w(b)| {:.3g}, max |w(a) - w(c)| {:.3g}, max |w(a) - w(e)| {:.3g}; "
        "guarded steps not applied: {}\n",
        ranks_agree ? "yes" : "NO", diff_ab, diff_ac, diff_ae, static_cast<int64_t>(not_applied[0]));
    // For bench/dist_overhead.sh: label, then every rank's median in microseconds.
    for (int w = 0; w < kWays; ++w) {
      std::string row = fmt::format("row\t{}", kLabels[w]);
      for (int r = 0; r < world; ++r) row += fmt::format("\t{:.1f}", at(r, w, kMedian));
      std::cout << row << "\n";
    }
    std::cout << std::flush;
  }
  group->barrier();
  return ranks_agree && not_applied[0] == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench_dist_overhead MNIST_DIR [ROUNDS] [STEPS_PER_BLOCK] [THREADS]\n";
    return 2;
  }
  if (std::getenv("WORLD_SIZE") == nullptr) {
    // The launcher: no LibTorch op here, only the workers run any.
    std::vector<std::string> args{std::filesystem::read_symlink("/proc/self/exe").string()};
    for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
    const dist::LaunchResult result = dist::launch_local_workers(kWorld, args);
    if (result.exit_code != 0) std::cerr << "bench_dist_overhead: " << result.error << "\n";
    return result.exit_code;
  }
  try {
    return worker(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_dist_overhead (rank " << (std::getenv("RANK") ? std::getenv("RANK") : "?") << "): " << e.what()
              << "\n";
    return 1;
  }
}
