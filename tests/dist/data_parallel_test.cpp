// Data parallelism on loopback: each test forks its ranks (2 or 3 processes joined by a
// TCPStore and ProcessGroupGloo), runs the guard or the group in each, and checks what every
// rank wrote. Every rank is killed if it has not ended within the test's timeout, so a hang
// fails the test instead of stalling the suite. The parent runs no LibTorch op before it forks.
#include "nanguard/dist/data_parallel.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "nanguard/dist/launcher.h"
#include "nanguard/guard/guard.h"
#include "support/test_support.h"

namespace nanguard::dist {
namespace {

using Clock = std::chrono::steady_clock;

struct RankRun {
  int exit_code = -1;   // -1: killed at the timeout
  std::string output;   // what the rank wrote to its file
};

// Runs body(group, out) in `world` forked ranks; out is the rank's own report file.
std::vector<RankRun> run_ranks(int world, const std::function<int(DataParallel&, std::ostream&)>& body,
                               std::chrono::seconds timeout = std::chrono::seconds(60),
                               std::chrono::seconds peer_timeout = std::chrono::seconds(20)) {
  nanguard::testing::TempDir dir;
  const int port = free_loopback_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::ofstream out(dir / ("rank" + std::to_string(r)));
      int code = 0;
      try {
        torch::set_num_threads(1);
        DistributedOptions o;
        o.rank = r;
        o.world_size = world;
        o.master_port = port;
        o.timeout = peer_timeout;
        DataParallel group(o);
        code = body(group, out);
      } catch (const std::exception& e) {
        out << "exception: " << e.what() << "\n";
        code = 90;
      }
      out.flush();
      _exit(code);
    }
    pids.push_back(pid);
  }
  std::vector<RankRun> runs(static_cast<size_t>(world));
  const auto deadline = Clock::now() + timeout;
  for (int r = 0; r < world; ++r) {
    int status = 0;
    while (waitpid(pids[static_cast<size_t>(r)], &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        for (pid_t p : pids) kill(p, SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    runs[static_cast<size_t>(r)].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream in(dir / ("rank" + std::to_string(r)));
    std::stringstream text;
    text << in.rdbuf();
    runs[static_cast<size_t>(r)].output = text.str();
  }
  return runs;
}

constexpr int64_t kFeatures = 6, kClasses = 3, kBatch = 8;

// Every rank holds the same data; rank r's batch of step t is the r-th slice of global batch t.
struct Data {
  at::Tensor x, y;
  explicit Data(int64_t n) {
    auto gen = at::detail::createCPUGenerator(7);
    x = torch::randn({n, kFeatures}, gen);
    y = std::get<1>(x.narrow(1, 0, kClasses).max(1));
  }
  data::Batch batch(int64_t step, int rank, int world) const {
    const int64_t begin = (step * world + rank) * kBatch;
    data::Batch b;
    b.x = x.narrow(0, begin, kBatch).clone();
    b.y = y.narrow(0, begin, kBatch);
    b.ids = torch::arange(begin, begin + kBatch, torch::kLong);
    return b;
  }
};

at::Tensor loss_of(torch::nn::Linear& net, const data::Batch& b) {
  auto loss = torch::nn::functional::cross_entropy(net->forward(b.x), b.y);
  loss.backward();
  return loss;
}

std::string weights_digest(torch::nn::Linear& net) { return digest(net->parameters()); }

// The digest line every rank writes; all ranks must agree on it.
std::string digest_line(const std::string& output) {
  const auto at = output.find("digest ");
  return at == std::string::npos ? std::string() : output.substr(at, output.find('\n', at) - at);
}

// The mean over 3 ranks of the weight's gradient at step 0, computed here from every rank's
// batch; leaves `net` holding the gradient of rank `rank`'s own batch.
at::Tensor mean_weight_gradient(torch::nn::Linear& net, const Data& data, int rank) {
  at::Tensor expected = torch::zeros_like(net->weight);
  for (int r = 0; r < 3; ++r) {
    net->zero_grad();
    loss_of(net, data.batch(0, r, 3));
    expected += net->weight.grad() / 3;
  }
  net->zero_grad();
  loss_of(net, data.batch(0, rank, 3));
  return expected;
}

TEST(DataParallel, AveragedGradientsAndBroadcastWeightsAreEveryRanksMean) {
  auto runs = run_ranks(3, [](DataParallel& g, std::ostream& out) {
    Data data(3 * kBatch);
    torch::manual_seed(100 + g.rank());  // different initial weights on every rank
    torch::nn::Linear net(kFeatures, kClasses);
    g.broadcast_state(net->parameters(), net->buffers());
    // The expected mean, computed here from every rank's batch on rank 0's weights.
    const at::Tensor expected = mean_weight_gradient(net, data, g.rank());
    g.average_gradients(net->parameters());
    const double error = (net->weight.grad() - expected).abs().max().item<double>();
    out << "error " << error << "\n" << "digest " << weights_digest(net) << "\n";
    return error < 1e-6 ? 0 : 1;
  });
  for (const auto& r : runs) EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(digest_line(runs[0].output).empty());
  EXPECT_EQ(digest_line(runs[0].output), digest_line(runs[1].output));
  EXPECT_EQ(digest_line(runs[0].output), digest_line(runs[2].output));
}

TEST(DataParallel, VotesRideTheGradientAverageAndComeBackExact) {
  auto runs = run_ranks(3, [](DataParallel& g, std::ostream& out) {
    Data data(3 * kBatch);
    torch::manual_seed(5);
    torch::nn::Linear net(kFeatures, kClasses);
    const at::Tensor expected = mean_weight_gradient(net, data, g.rank());
    // Each rank writes its own two slots: values float32 holds exactly come back exactly.
    std::vector<double> votes(6, 0.0);
    votes[static_cast<size_t>(2 * g.rank())] = 1;
    votes[static_cast<size_t>(2 * g.rank() + 1)] = 0.25 + g.rank();
    g.average_gradients_and_sum(net->parameters(), votes);
    const double error = (net->weight.grad() - expected).abs().max().item<double>();
    const bool exact = votes == std::vector<double>{1, 0.25, 1, 1.25, 1, 2.25};
    // Without gradients to ride on, the votes take an all-reduce of their own.
    std::vector<double> alone{static_cast<double>(g.rank())};
    g.average_gradients_and_sum({}, alone);
    out << "error " << error << " exact " << exact << " alone " << alone[0] << "\n";
    return error < 1e-6 && exact && alone[0] == 3.0 ? 0 : 1;
  });
  for (const auto& r : runs) EXPECT_EQ(r.exit_code, 0) << r.output;
}

// Trains `steps` guarded steps on every rank; `fault(step, rank, batch, context)` may poison
// the batch or the gradients. Writes the incidents this rank saw and its final digest.
using Fault = std::function<void(int64_t, int, data::Batch&, const StepContext&, torch::nn::Linear&)>;
int guarded_run(DataParallel& g, std::ostream& out, int steps, const Fault& fault, at::Tensor* final_weight = nullptr) {
  Data data(static_cast<int64_t>(steps) * g.world_size() * kBatch);
  torch::manual_seed(1);
  torch::nn::Linear net(kFeatures, kClasses);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  Guard guard(*net, opt, GuardOptions().snapshot_every(4));
  guard.set_consensus(std::shared_ptr<Consensus>(&g, [](Consensus*) {}));
  for (int64_t t = 0; t < steps; ++t) {
    const data::Batch batch = data.batch(t, g.rank(), g.world_size());
    guard.step(batch, [&](const data::Batch& b, const StepContext& ctx) {
      data::Batch mine = b;
      fault(t, g.rank(), mine, ctx, net);
      auto loss = torch::nn::functional::cross_entropy(net->forward(mine.x), mine.y);
      loss.backward();
      if (ctx.run == StepContext::Run::first) fault(-t - 1, g.rank(), mine, ctx, net);  // after backward
      return loss;
    });
  }
  for (const auto& inc : guard.incidents()) {
    out << "incident step " << inc->step << " rank " << inc->evidence.rank << " cause " << inc->diagnosis.top().cause
        << " samples";
    for (int64_t s : inc->diagnosis.top().samples) out << " " << s;
    out << " actions";
    for (const auto& a : inc->actions) out << " " << a;
    out << "\n";
  }
  out << "quarantined";
  for (int64_t id : guard.quarantined()) out << " " << id;
  out << "\n";
  out << "applied " << guard.applied_steps() << "\n";
  out << "digest " << weights_digest(net) << "\n";
  if (final_weight != nullptr) *final_weight = net->weight.detach().clone();
  return 0;
}

TEST(DataParallelGuard, BadSamplesOnOneRankAreQuarantinedOnEveryRank) {
  // Samples 2*16+8+3 = 43 and 45 (rank 1's batch of step 2) hold NaN.
  auto runs = run_ranks(2, [](DataParallel& g, std::ostream& out) {
    return guarded_run(g, out, 8, [](int64_t t, int rank, data::Batch& b, const StepContext&, torch::nn::Linear&) {
      if (t < 0) return;
      for (int64_t row = 0; row < b.size(); ++row) {
        const int64_t id = b.ids[row].item<int64_t>();
        if (id == 43 || id == 45) b.x[row][2] = std::nan("");
      }
    });
  });
  ASSERT_EQ(runs.size(), 2u);
  for (const auto& r : runs) {
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("incident step 2 rank 1 cause bad_input_data samples 43 45 actions"), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("quarantined 43 45\n"), std::string::npos) << r.output;
  }
  EXPECT_EQ(digest_line(runs[0].output), digest_line(runs[1].output));
  EXPECT_FALSE(digest_line(runs[0].output).empty());
}

TEST(DataParallelGuard, TransientNaNOnOneRankIsRecomputedAndNamesTheRank) {
  auto runs = run_ranks(2, [](DataParallel& g, std::ostream& out) {
    return guarded_run(g, out, 8, [](int64_t t, int rank, data::Batch&, const StepContext& ctx, torch::nn::Linear& net) {
      // After backward of step 5, first run only, on rank 1: one gradient value goes NaN.
      if (t == -6 && rank == 1 && ctx.run == StepContext::Run::first) {
        torch::NoGradGuard no_grad;
        net->weight.mutable_grad()[0][0] = std::nan("");
      }
    });
  });
  for (const auto& r : runs) {
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("incident step 5 rank 1 cause transient_fault"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("recompute"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("applied 8\n"), std::string::npos) << r.output;  // the recomputed step applied
  }
  EXPECT_EQ(digest_line(runs[0].output), digest_line(runs[1].output));
}

TEST(DataParallelGuard, HealthyRunsMatchOneProcessAtTheGlobalBatch) {
  // Two ranks at batch 8 are one process at batch 16 (up to the order of float sums).
  auto runs = run_ranks(2, [](DataParallel& g, std::ostream& out) {
    at::Tensor weight;
    guarded_run(g, out, 6, [](int64_t, int, data::Batch&, const StepContext&, torch::nn::Linear&) {}, &weight);
    // One process, unguarded, on the same samples at the global batch of 16.
    Data data(6 * 2 * kBatch);
    torch::manual_seed(1);
    torch::nn::Linear net(kFeatures, kClasses);
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
    for (int64_t t = 0; t < 6; ++t) {
      opt.zero_grad();
      torch::nn::functional::cross_entropy(net->forward(data.x.narrow(0, t * 16, 16)), data.y.narrow(0, t * 16, 16))
          .backward();
      opt.step();
    }
    const double gap = (net->weight - weight).abs().max().item<double>();
    out << "gap to one process " << gap << "\n";
    return gap < 1e-5 ? 0 : 1;
  });
  for (const auto& r : runs) {
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("incident"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("applied 6\n"), std::string::npos) << r.output;
  }
  EXPECT_EQ(digest_line(runs[0].output), digest_line(runs[1].output));
}

// `times` all-sums; a PeerError is written to `out` and gives exit code 7 (the CLI's).
int sums_until_peer_error(DataParallel& g, std::ostream& out, int times) {
  std::vector<double> v{1.0};
  try {
    for (int i = 0; i < times; ++i) g.all_sum(v);
  } catch (const PeerError& e) {
    out << e.what() << "\n";
    return 7;
  }
  return 0;
}

TEST(DataParallel, ADeadPeerEndsTheOthersWithAnErrorNamingIt) {
  const auto start = Clock::now();
  auto runs = run_ranks(
      3,
      [](DataParallel& g, std::ostream& out) {
        std::vector<double> v{1.0};
        g.all_sum(v);
        if (g.rank() == 2) _exit(3);  // dies between two collectives
        return sums_until_peer_error(g, out, 3);
      },
      std::chrono::seconds(60), std::chrono::seconds(10));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(runs[2].exit_code, 3);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(runs[static_cast<size_t>(r)].exit_code, 7) << runs[static_cast<size_t>(r)].output;
    EXPECT_NE(runs[static_cast<size_t>(r)].output.find("failed"), std::string::npos) << runs[static_cast<size_t>(r)].output;
  }
  EXPECT_LT(seconds, 30.0);
}

TEST(DataParallel, ASilentPeerFailsTheCollectiveAfterTheTimeout) {
  const auto start = Clock::now();
  auto runs = run_ranks(
      2,
      [](DataParallel& g, std::ostream& out) {
        std::vector<double> v{1.0};
        g.all_sum(v);
        if (g.rank() == 1) {
          std::this_thread::sleep_for(std::chrono::seconds(8));  // alive but silent
          return 0;
        }
        return sums_until_peer_error(g, out, 1);
      },
      std::chrono::seconds(60), std::chrono::seconds(3));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(runs[0].exit_code, 7) << runs[0].output;
  EXPECT_NE(runs[0].output.find("rank 0 of 2"), std::string::npos) << runs[0].output;
  EXPECT_LT(seconds, 30.0);
}

TEST(Launcher, NamesTheWorkerThatDiedAndReturnsItsCode) {
  const LaunchResult ok = launch_local_workers(2, {"/bin/sh", "-c", "test -n \"$MASTER_PORT\" && test \"$WORLD_SIZE\" = 2"});
  EXPECT_EQ(ok.failed_rank, -1) << ok.error;
  EXPECT_EQ(ok.exit_code, 0);
  const auto start = Clock::now();
  const LaunchResult bad = launch_local_workers(
      3, {"/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then kill -9 $$; fi; exec sleep 30"}, std::chrono::seconds(1));
  EXPECT_EQ(bad.failed_rank, 1) << bad.error;
  EXPECT_EQ(bad.exit_code, 128 + 9);
  EXPECT_NE(bad.error.find("rank 1"), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find("signal 9"), std::string::npos) << bad.error;
  // The others were killed after the grace period, not waited for.
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 15.0);
}

TEST(DistributedOptions, MalformedEnvironmentNamesTheVariable) {
  setenv("WORLD_SIZE", "2", 1);
  setenv("RANK", "two", 1);
  setenv("MASTER_PORT", "29555", 1);
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { options_from_environment(); }, {"RANK", "two"}));
  setenv("RANK", "2", 1);
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { options_from_environment(); }, {"RANK", "[0, 1]"}));
  setenv("RANK", "1", 1);
  unsetenv("MASTER_PORT");
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { options_from_environment(); }, {"MASTER_PORT"}));
  setenv("MASTER_PORT", "29555", 1);
  const auto o = options_from_environment();
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->rank, 1);
  EXPECT_EQ(o->world_size, 2);
  EXPECT_EQ(o->master_port, 29555);
  // The peer timeout, in seconds.
  setenv("NANGUARD_DIST_TIMEOUT", "soon", 1);
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { options_from_environment(); }, {"NANGUARD_DIST_TIMEOUT", "soon"}));
  setenv("NANGUARD_DIST_TIMEOUT", "0", 1);
  EXPECT_TRUE(nanguard::testing::throws_with<ValueError>([] { options_from_environment(); }, {"NANGUARD_DIST_TIMEOUT", "0"}));
  setenv("NANGUARD_DIST_TIMEOUT", "7", 1);
  EXPECT_EQ(options_from_environment()->timeout, std::chrono::seconds(7));
  unsetenv("NANGUARD_DIST_TIMEOUT");
  unsetenv("WORLD_SIZE");
  unsetenv("RANK");
  unsetenv("MASTER_PORT");
  EXPECT_FALSE(options_from_environment().has_value());
}

}  // namespace
}  // namespace nanguard::dist
