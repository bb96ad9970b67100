#include "nanguard/train/history.h"

#include <algorithm>
#include <limits>

#include "nanguard/core/error.h"

namespace nanguard {

void Logs::set(const std::string& name, double value) {
  for (auto& item : items_) {
    if (item.first == name) {
      item.second = value;
      return;
    }
  }
  items_.emplace_back(name, value);
}

bool Logs::has(const std::string& name) const {
  return std::any_of(items_.begin(), items_.end(), [&](const auto& item) { return item.first == name; });
}

double Logs::get(const std::string& name) const {
  for (const auto& item : items_) {
    if (item.first == name) return item.second;
  }
  throw ValueError("logs have no value named '" + name + "'");
}

void History::append(int64_t epoch, Logs epoch_logs) {
  epochs.push_back(epoch);
  logs.push_back(std::move(epoch_logs));
}

std::vector<std::string> History::columns() const {
  std::vector<std::string> names;
  for (const auto& l : logs) {
    for (const auto& item : l.items()) {
      if (std::find(names.begin(), names.end(), item.first) == names.end()) names.push_back(item.first);
    }
  }
  return names;
}

std::vector<double> History::column(const std::string& name) const {
  std::vector<double> values;
  values.reserve(logs.size());
  for (const auto& l : logs) {
    values.push_back(l.has(name) ? l.get(name) : std::numeric_limits<double>::quiet_NaN());
  }
  return values;
}

}  // namespace nanguard
