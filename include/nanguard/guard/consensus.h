// The guard's consensus point: in a data-parallel run every process must take the same
// decision (apply, skip, roll back to the same snapshot, the same learning-rate scale). The
// guard combines a few numbers per step through it; in one process there is none and the
// step costs nothing more.
#pragma once

#include <vector>

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
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
};

}  // namespace nanguard
