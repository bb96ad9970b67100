// events.jsonl: every guard event (incident, action, warning) as one JSON object per line,
// written as it happens so a crashed run still leaves its log.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include "nanguard/guard/incident.h"

namespace nanguard::report {

// One line of JSON (no trailing newline) with the keys step, kind, cause, confidence, phase,
// op, module, samples, explanation, action, detail.
std::string event_json(const GuardEvent& event);

class EventLog {
 public:
  // Creates (truncates) the file; throws IoError naming it when it cannot.
  explicit EventLog(const std::filesystem::path& path);
  void write(const GuardEvent& event);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace nanguard::report
