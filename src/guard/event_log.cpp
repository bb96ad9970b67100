#include "guard/event_log.h"

#include <fmt/format.h>

#include "nanguard/core/log.h"

namespace nanguard::detail {

std::string describe(const GuardEvent& e) {
  std::string s = fmt::format("step {}: {} {}", e.step, e.kind, e.kind == "action" ? e.action : e.cause);
  if (e.kind == "incident") {
    if (!e.op.empty()) s += fmt::format(", born in {} ({}{}{})", e.op, e.phase, e.module.empty() ? "" : ", ", e.module);
    if (!e.explanation.empty()) s += ": " + e.explanation;
  } else if (e.kind == "action") {
    if (!e.detail.empty()) s += ": " + e.detail;
  } else {
    if (!e.explanation.empty()) s += ": " + e.explanation;
    if (!e.detail.empty()) s += " (" + e.detail + ")";
  }
  return s;
}

void EventLog::emit(const GuardEvent& event) {
  events_.push_back(event);
  if (observer_) {
    observer_(event);
    return;
  }
  log(event.kind == "action" ? LogLevel::info : LogLevel::warning, describe(event));
}

void EventLog::warn(GuardEvent event) {
  event.kind = "warning";
  emit(event);
}

void EventLog::warn_about(int64_t step, const std::string& cause, const std::string& explanation,
                          const std::string& suggestion) {
  GuardEvent e;
  e.step = step;
  e.cause = cause;
  e.explanation = explanation;
  e.detail = "suggestion: " + suggestion;
  warn(e);
}

std::vector<std::string> EventLog::warning_causes() const {
  std::vector<std::string> out;
  for (const auto& e : events_) {
    if (e.kind == "warning") out.push_back(e.cause);
  }
  return out;
}

}  // namespace nanguard::detail
