// Data parallelism on c10d: one process per rank, a TCPStore for the rendezvous and
// ProcessGroupGloo for the collectives (NCCL is not in Debian's CPU LibTorch). DataParallel is
// also the guard's Consensus, so the vote, the decision and the gradient average go over the
// same group, in the same order on every rank.
//
//   auto group = DataParallel::from_environment();   // torchrun's RANK, WORLD_SIZE, MASTER_*
//   group->broadcast_state(params, buffers);         // every rank starts from rank 0's weights
//   ... backward; group->average_gradients(params); optimizer.step() ...
//
// Every collective fails, instead of hanging, when a peer dies (its connection closes) or stays
// silent for longer than `timeout`: a PeerError names the rank where the group can tell.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "nanguard/guard/consensus.h"

namespace nanguard::dist {

struct DistributedOptions {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  // How long a collective (or the rendezvous) waits for a silent peer before it fails.
  std::chrono::milliseconds timeout = std::chrono::seconds(60);
  // Bytes per gradient bucket: gradients are flattened into buckets this large (at least one
  // tensor each) and every bucket is one all-reduce.
  int64_t bucket_bytes = 25 << 20;
};

// The process group of this process as torchrun (or `nanguard fit --nproc-per-node`) set it up:
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, and NANGUARD_DIST_TIMEOUT (seconds,
// optional). None when WORLD_SIZE is unset; ValueError naming the variable when one is malformed
// or missing.
std::optional<DistributedOptions> options_from_environment();

class DataParallel : public Consensus {
 public:
  // Joins the group (blocks until every rank has joined, or throws PeerError after `timeout`).
  explicit DataParallel(const DistributedOptions& options);
  ~DataParallel() override;
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // The group of this process's environment; null when it is not part of one.
  static std::shared_ptr<DataParallel> from_environment();

  int rank() const override;
  int world_size() const override;
  const DistributedOptions& options() const;
  // This machine's host name, as the report names it.
  std::string host() const override;

  // Consensus: element-wise over every rank's vector.
  void all_max(std::vector<double>& values) override;
  void all_sum(std::vector<double>& values) override;
  void broadcast(std::vector<double>& values, int root) override;
  void broadcast_bytes(std::string& bytes, int root) override;
  // Averages the gradients of `params` over every rank, in place (bucketed and coalesced);
  // parameters without a gradient count as zeros on that rank.
  void average_gradients(const std::vector<at::Tensor>& params) override;
  // The votes travel at the end of the first bucket when its gradients are float32 or float64
  // (else in an all-reduce of their own).
  void average_gradients_and_sum(const std::vector<at::Tensor>& params, std::vector<double>& votes) override;

  // Every rank ends with rank 0's parameters and buffers.
  void broadcast_state(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& buffers);
  // Every rank's bytes, in rank order.
  std::vector<std::string> all_gather_bytes(const std::string& bytes);
  void barrier();

 private:
  void average(const std::vector<at::Tensor>& params, std::vector<double>* votes);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A short digest of tensors' bytes (FNV-1a, hex): equal weights give equal digests.
std::string digest(const std::vector<at::Tensor>& tensors);

}  // namespace nanguard::dist
