// The guard's consensus point: in a data-parallel run every process must take the same
// decision (apply, skip, roll back to the same snapshot, the same learning-rate scale). The
// guard combines a few numbers per step through it, and averages the gradients through it
// before every update it applies; in one process there is none and the step costs nothing
// more. dist::DataParallel implements it on c10d.
#pragma once

#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace nanguard {

class Consensus {
 public:
  virtual ~Consensus() = default;
  // Every process ends with the element-wise maximum of everyone's values (same length on
  // every process).
  virtual void all_max(std::vector<double>& values) = 0;
  // Every process ends with the element-wise sum.
  virtual void all_sum(std::vector<double>& values) = 0;
  // Every process ends with the root's values (resized to the root's length).
  virtual void broadcast(std::vector<double>& values, int root) = 0;
  // Every process ends with the root's bytes (an incident, serialised).
  virtual void broadcast_bytes(std::string& bytes, int root) = 0;
  // Averages the gradients of `params` over every process, in place: called before every
  // update the guard applies (never in its local replays).
  virtual void average_gradients(const std::vector<at::Tensor>& params) = 0;
  // Averages the gradients as average_gradients does and sums `votes` over every process in
  // the same collective: the guard's vote rides the gradients' first bucket, so a guarded step
  // costs the round trips of an unguarded one. Each process writes only its own slots (the
  // others are 0), so a value comes back exactly as the gradients' precision (float32) holds
  // it. This default takes two collectives.
  virtual void average_gradients_and_sum(const std::vector<at::Tensor>& params, std::vector<double>& votes) {
    all_sum(votes);
    average_gradients(params);
  }
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // The host this process runs on (incidents name it with the rank).
  virtual std::string host() const = 0;
};

}  // namespace nanguard
