// Per-epoch training logs, like Keras's History: one row per epoch, named columns.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nanguard {

// Named values of one epoch (or one evaluation), in insertion order.
class Logs {
 public:
  void set(const std::string& name, double value);
  bool has(const std::string& name) const;
  // Throws ValueError naming the missing key.
  double get(const std::string& name) const;
  const std::vector<std::pair<std::string, double>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, double>> items_;
};

struct History {
  std::vector<int64_t> epochs;  // 1-based epoch numbers
  std::vector<Logs> logs;       // one per epoch

  void append(int64_t epoch, Logs epoch_logs);
  // Column names in order of first appearance across epochs.
  std::vector<std::string> columns() const;
  // The values of one column (NaN where an epoch lacks it).
  std::vector<double> column(const std::string& name) const;
  size_t size() const { return epochs.size(); }
};

}  // namespace nanguard
