// The guard's events (incidents, actions, warnings) in order, passed to the caller's observer
// as they happen, or, without one, printed through the library's log sink (core/log.h), so a
// user's loop sees them without reading events().
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "nanguard/guard/incident.h"

namespace nanguard::detail {

class EventLog {
 public:
  explicit EventLog(std::function<void(const GuardEvent&)> observer) : observer_(std::move(observer)) {}

  void emit(const GuardEvent& event);
  // A warning event.
  void warn(GuardEvent event);
  // A warning of the guard itself, with what to do about it.
  void warn_about(int64_t step, const std::string& cause, const std::string& explanation, const std::string& suggestion);
  const std::vector<GuardEvent>& events() const { return events_; }
  // Causes of the warnings so far, oldest first.
  std::vector<std::string> warning_causes() const;

 private:
  std::function<void(const GuardEvent&)> observer_;
  std::vector<GuardEvent> events_;
};

// One line for a log: "nanguard: step 12: incident unsafe_loss/log_of_zero at aten::log ...".
std::string describe(const GuardEvent& event);

}  // namespace nanguard::detail
