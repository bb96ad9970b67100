#include "nanguard/core/log.h"

#include <iostream>
#include <mutex>

namespace nanguard {
namespace {

struct LogState {
  std::mutex mutex;
  LogSink sink;
  LogLevel level = LogLevel::info;
};

LogState& state() {
  static LogState s;
  return s;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "?";
}

}  // namespace

void set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().sink = std::move(sink);
}

void set_log_level(LogLevel level) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().level = level;
}

void log(LogLevel level, std::string_view message) {
  std::lock_guard<std::mutex> lock(state().mutex);
  if (level < state().level) return;
  if (state().sink) {
    state().sink(level, message);
  } else {
    std::cerr << "nanguard: " << level_name(level) << ": " << message << std::endl;
  }
}

}  // namespace nanguard
