// The process group behind DataParallel: a c10d TCPStore for the rendezvous (served by rank 0,
// or by torchrun's agent when it says so) and ProcessGroupGloo for every collective.
// ProcessGroupGloo.hpp compiles only with USE_C10D_GLOO, which LibTorch's CMake package defines
// for its users when it was built with Gloo (Debian's libtorch_cpu links libgloo).
#include "nanguard/dist/data_parallel.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>

#include "core/check.h"
#include "nanguard/core/error.h"

namespace nanguard::dist {
namespace {

// An integer environment variable, or nothing when unset; ValueError naming it when malformed.
std::optional<int64_t> int_env(const char* name, int64_t min, int64_t max) {
  const char* text = std::getenv(name);
  if (text == nullptr) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
    throw ValueError(fmt::format("environment variable {}='{}': expected an integer in [{}, {}]", name, text, min, max));
  return value;
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* text = std::getenv(name);
  return text == nullptr || *text == '\0' ? fallback : std::string(text);
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}

// A process that no longer runs: gone, or a zombie its launcher has not reaped yet.
bool process_gone(int64_t pid) {
  if (kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && (text[close + 2] == 'Z' || text[close + 2] == 'X');
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

std::optional<DistributedOptions> options_from_environment() {
  const auto world = int_env("WORLD_SIZE", 1, 1 << 20);
  if (!world) return std::nullopt;
  DistributedOptions o;
  o.world_size = static_cast<int>(*world);
  const auto rank = int_env("RANK", 0, o.world_size - 1);
  if (!rank) throw ValueError(fmt::format("WORLD_SIZE={} is set but RANK is not (expected 0..{})", o.world_size, o.world_size - 1));
  o.rank = static_cast<int>(*rank);
  o.local_rank = static_cast<int>(int_env("LOCAL_RANK", 0, 1 << 20).value_or(0));
  o.master_addr = env_or("MASTER_ADDR", "127.0.0.1");
  const auto port = int_env("MASTER_PORT", 1, 65535);
  if (!port && o.world_size > 1) throw ValueError("WORLD_SIZE > 1 but MASTER_PORT is not set (the rendezvous port)");
  if (port) o.master_port = static_cast<int>(*port);
  if (const auto t = int_env("NANGUARD_DIST_TIMEOUT", 1, 24 * 3600)) o.timeout = std::chrono::seconds(*t);
  return o;
}

struct DataParallel::Impl {
  DistributedOptions options;
  std::string host = host_name();
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  // Every rank's host and process id, read once at the rendezvous: a later failure can then
  // tell which local peer is gone even when the store (served by rank 0) went with it.
  std::vector<std::pair<std::string, int64_t>> peers;

  // The ranks whose process is gone, among those on this host.
  std::string gone_peers() const {
    std::string gone;
    for (size_t r = 0; r < peers.size(); ++r) {
      if (static_cast<int>(r) == options.rank || peers[r].first != host) continue;
      if (process_gone(peers[r].second))
        gone += fmt::format("{}rank {} (pid {} on {})", gone.empty() ? "" : ", ", r, peers[r].second, host);
    }
    return gone;
  }

  // Runs a collective; a peer's death or silence becomes a PeerError naming what it can.
  template <typename F>
  void run(const char* what, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      std::string message = e.what();
      if (auto cut = message.find("\nException raised from"); cut != std::string::npos) message.resize(cut);
      std::string gone = gone_peers();
      throw PeerError(fmt::format("rank {} of {}: {} failed{}: {}", options.rank, options.world_size, what,
                                  gone.empty() ? "" : ", peer gone: " + gone, message));
    }
  }

  void wait(const c10::intrusive_ptr<c10d::Work>& work) { work->wait(options.timeout); }

  void all_reduce(at::Tensor& t, c10d::ReduceOp op, const char* what) {
    run(what, [&] {
      std::vector<at::Tensor> ts{t};
      c10d::AllreduceOptions o;
      o.reduceOp = op;
      wait(group->allreduce(ts, o));
    });
  }

  void broadcast(at::Tensor& t, int root, const char* what) {
    run(what, [&] {
      std::vector<at::Tensor> ts{t};
      c10d::BroadcastOptions o;
      o.rootRank = root;
      wait(group->broadcast(ts, o));
    });
  }
};

DataParallel::DataParallel(const DistributedOptions& options) : impl_(std::make_unique<Impl>()) {
  NANGUARD_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
                 "rank {} is outside a world of {} processes", options.rank, options.world_size);
  NANGUARD_CHECK(options.master_port > 0 && options.master_port < 65536, "master port {} is not a TCP port",
                 options.master_port);
  NANGUARD_CHECK(options.bucket_bytes > 0, "bucket_bytes must be positive, got {}", options.bucket_bytes);
  Impl& g = *impl_;
  g.options = options;
  g.run("the rendezvous", [&] {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(options.master_port);
    // torchrun's agent serves the store itself when it says so; otherwise rank 0 does.
    so.isServer = options.rank == 0 && env_or("TORCHELASTIC_USE_AGENT_STORE", "False") != "True";
    so.numWorkers = static_cast<std::size_t>(options.world_size);
    so.waitWorkers = false;
    so.timeout = options.timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(options.master_addr, so);
    g.store = c10::make_intrusive<c10d::PrefixStore>("nanguard", tcp);
    auto go = c10d::ProcessGroupGloo::Options::create(options.timeout);
    const std::string ifname = env_or("GLOO_SOCKET_IFNAME", "");
    if (!ifname.empty()) {
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (is_loopback(options.master_addr)) {
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    go->threads = 2;
    g.group = c10::make_intrusive<c10d::ProcessGroupGloo>(g.store, options.rank, options.world_size, go);
  });
  // Who is who: one small all-gather, kept for the error messages of later collectives.
  const std::vector<std::string> who = all_gather_bytes(fmt::format("{} {}", g.host, static_cast<int64_t>(getpid())));
  for (const std::string& w : who) {
    const auto space = w.rfind(' ');
    g.peers.emplace_back(w.substr(0, space), std::stoll(w.substr(space + 1)));
  }
}

DataParallel::~DataParallel() = default;

std::shared_ptr<DataParallel> DataParallel::from_environment() {
  const auto options = options_from_environment();
  if (!options || options->world_size <= 1) return nullptr;
  return std::make_shared<DataParallel>(*options);
}

int DataParallel::rank() const { return impl_->options.rank; }
int DataParallel::world_size() const { return impl_->options.world_size; }
const DistributedOptions& DataParallel::options() const { return impl_->options; }
std::string DataParallel::host() const { return impl_->host; }

namespace {

at::Tensor to_tensor(const std::vector<double>& values) {
  return torch::tensor(values, torch::kDouble).reshape({static_cast<int64_t>(values.size())});
}

void from_tensor(const at::Tensor& t, std::vector<double>& values) {
  const double* p = t.data_ptr<double>();
  values.assign(p, p + t.numel());
}

}  // namespace

void DataParallel::all_max(std::vector<double>& values) {
  if (values.empty()) return;
  at::Tensor t = to_tensor(values);
  impl_->all_reduce(t, c10d::ReduceOp::MAX, "the guard's vote (max)");
  from_tensor(t, values);
}

void DataParallel::all_sum(std::vector<double>& values) {
  if (values.empty()) return;
  at::Tensor t = to_tensor(values);
  impl_->all_reduce(t, c10d::ReduceOp::SUM, "the guard's vote (sum)");
  from_tensor(t, values);
}

void DataParallel::broadcast(std::vector<double>& values, int root) {
  at::Tensor n = torch::tensor({static_cast<double>(values.size())}, torch::kDouble);
  impl_->broadcast(n, root, "the guard's broadcast");
  at::Tensor t = torch::zeros({static_cast<int64_t>(n.item<double>())}, torch::kDouble);
  if (rank() == root && !values.empty()) t.copy_(to_tensor(values));
  if (t.numel() > 0) impl_->broadcast(t, root, "the guard's broadcast");
  from_tensor(t, values);
}

void DataParallel::broadcast_bytes(std::string& bytes, int root) {
  at::Tensor n = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kLong);
  impl_->broadcast(n, root, "the incident's broadcast");
  const int64_t size = n.item<int64_t>();
  at::Tensor t = torch::empty({size}, torch::kUInt8);
  if (rank() == root && size > 0) std::memcpy(t.data_ptr<uint8_t>(), bytes.data(), static_cast<size_t>(size));
  if (size > 0) impl_->broadcast(t, root, "the incident's broadcast");
  bytes.assign(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), static_cast<size_t>(size));
}

void DataParallel::average_gradients(const std::vector<at::Tensor>& params) { average(params, nullptr); }

void DataParallel::average_gradients_and_sum(const std::vector<at::Tensor>& params, std::vector<double>& votes) {
  average(params, &votes);
}

void DataParallel::average(const std::vector<at::Tensor>& params, std::vector<double>* votes) {
  torch::NoGradGuard no_grad;
  // Buckets of consecutive parameters of one dtype and device, up to bucket_bytes each.
  struct Bucket {
    std::vector<at::Tensor> grads;
    at::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Bucket> buckets;
  int64_t bytes = 0;
  for (const at::Tensor& p : params) {
    at::Tensor& g = const_cast<at::Tensor&>(p).mutable_grad();
    if (!g.defined()) g = torch::zeros_like(p);  // a parameter this rank's batch did not reach
    const int64_t size = g.numel() * static_cast<int64_t>(g.element_size());
    const bool fits = !buckets.empty() && bytes + size <= impl_->options.bucket_bytes &&
                      buckets.back().grads.front().scalar_type() == g.scalar_type() &&
                      buckets.back().grads.front().device() == g.device();
    if (!fits) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().grads.push_back(g);
    bytes += size;
  }
  // The votes ride the first bucket when its precision is float32 or more.
  const bool ride = votes != nullptr && !votes->empty() && !buckets.empty() &&
                    (buckets.front().grads.front().scalar_type() == at::kFloat ||
                     buckets.front().grads.front().scalar_type() == at::kDouble);
  if (votes != nullptr && !ride) all_sum(*votes);
  // Every bucket's all-reduce is started before the first is waited for.
  impl_->run(ride ? "the guard's vote and the gradient all-reduce" : "the gradient all-reduce", [&] {
    for (size_t i = 0; i < buckets.size(); ++i) {
      Bucket& b = buckets[i];
      std::vector<at::Tensor> flat_views;
      for (const at::Tensor& g : b.grads) flat_views.push_back(g.reshape({-1}));
      if (i == 0 && ride) {
        flat_views.push_back(torch::tensor(*votes, torch::kDouble).to(b.grads.front().options()));
      }
      b.flat = torch::cat(flat_views);
      std::vector<at::Tensor> ts{b.flat};
      b.work = impl_->group->allreduce(ts);
    }
    for (size_t i = 0; i < buckets.size(); ++i) {
      Bucket& b = buckets[i];
      impl_->wait(b.work);
      if (i == 0 && ride) {
        const int64_t n = static_cast<int64_t>(votes->size());
        const at::Tensor sums = b.flat.narrow(0, b.flat.numel() - n, n).to(torch::kDouble).cpu().contiguous();
        std::copy(sums.data_ptr<double>(), sums.data_ptr<double>() + n, votes->begin());
      }
      b.flat.div_(static_cast<double>(world_size()));
      int64_t offset = 0;
      for (const at::Tensor& g : b.grads) {
        const_cast<at::Tensor&>(g).copy_(b.flat.narrow(0, offset, g.numel()).view_as(g));
        offset += g.numel();
      }
    }
  });
}

void DataParallel::broadcast_state(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& buffers) {
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> all = params;
  all.insert(all.end(), buffers.begin(), buffers.end());
  // One broadcast per dtype.
  std::map<c10::ScalarType, std::vector<at::Tensor>> by_dtype;
  for (const at::Tensor& t : all)
    if (t.defined() && t.numel() > 0) by_dtype[t.scalar_type()].push_back(t);
  for (auto& [dtype, tensors] : by_dtype) {
    std::vector<at::Tensor> views;
    for (const at::Tensor& t : tensors) views.push_back(t.reshape({-1}));
    at::Tensor flat = torch::cat(views);
    impl_->broadcast(flat, 0, "the broadcast of rank 0's weights");
    int64_t offset = 0;
    for (const at::Tensor& t : tensors) {
      const_cast<at::Tensor&>(t).copy_(flat.narrow(0, offset, t.numel()).view_as(t));
      offset += t.numel();
    }
  }
}

std::vector<std::string> DataParallel::all_gather_bytes(const std::string& bytes) {
  const int w = world_size();
  std::vector<std::string> out;
  impl_->run("an all-gather", [&] {
    std::vector<at::Tensor> in{torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kLong)};
    std::vector<std::vector<at::Tensor>> sizes(1);
    for (int r = 0; r < w; ++r) sizes[0].push_back(torch::zeros({1}, torch::kLong));
    impl_->wait(impl_->group->allgather(sizes, in));
    int64_t longest = 0;
    for (const at::Tensor& s : sizes[0]) longest = std::max(longest, s.item<int64_t>());
    at::Tensor mine = torch::zeros({std::max<int64_t>(longest, 1)}, torch::kUInt8);
    if (!bytes.empty()) std::memcpy(mine.data_ptr<uint8_t>(), bytes.data(), bytes.size());
    std::vector<at::Tensor> in2{mine};
    std::vector<std::vector<at::Tensor>> all(1);
    for (int r = 0; r < w; ++r) all[0].push_back(torch::zeros_like(mine));
    impl_->wait(impl_->group->allgather(all, in2));
    for (int r = 0; r < w; ++r) {
      out.emplace_back(reinterpret_cast<const char*>(all[0][r].data_ptr<uint8_t>()),
                       static_cast<size_t>(sizes[0][r].item<int64_t>()));
    }
  });
  return out;
}

void DataParallel::barrier() {
  impl_->run("a barrier", [&] { impl_->wait(impl_->group->barrier()); });
}

std::string digest(const std::vector<at::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ULL;
  for (const at::Tensor& t : tensors) {
    const at::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const auto* p = static_cast<const unsigned char*>(c.data_ptr());
    const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ULL;
    }
  }
  return fmt::format("{:016x}", h);
}

}  // namespace nanguard::dist
