#include "nanguard/report/events.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "nanguard/core/error.h"

namespace nanguard::report {

std::string event_json(const GuardEvent& e) {
  nlohmann::json j;
  j["step"] = e.step;
  j["kind"] = e.kind;
  j["cause"] = e.cause;
  j["confidence"] = std::isfinite(e.confidence) ? nlohmann::json(e.confidence) : nlohmann::json();
  j["phase"] = e.phase;
  j["op"] = e.op;
  j["module"] = e.module;
  j["samples"] = e.samples;
  j["explanation"] = e.explanation;
  j["action"] = e.action;
  j["detail"] = e.detail;
  if (e.rank >= 0) j["rank"] = e.rank;  // data parallelism only
  // Replace invalid UTF-8 rather than throwing on an odd module name.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

EventLog::EventLog(const std::filesystem::path& path) : path_(path) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  out_.open(path, std::ios::trunc);
  if (!out_) throw IoError("cannot open " + path.string() + " for writing");
}

void EventLog::write(const GuardEvent& event) {
  out_ << event_json(event) << '\n';
  out_.flush();
  if (!out_) throw IoError("cannot write to " + path_.string());
}

}  // namespace nanguard::report
