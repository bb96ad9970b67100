// Log output of the library goes through one replaceable sink (stderr by default), so an
// application can route it to its own logger or silence it.
#pragma once

#include <functional>
#include <string_view>

namespace nanguard {

enum class LogLevel { debug, info, warning, error };

using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// Replaces the sink; an empty function restores the default (stderr, "nanguard: warning: ...").
void set_log_sink(LogSink sink);
// Messages below this level are dropped (default: info).
void set_log_level(LogLevel level);
void log(LogLevel level, std::string_view message);

inline void log_info(std::string_view message) { log(LogLevel::info, message); }
inline void log_warning(std::string_view message) { log(LogLevel::warning, message); }

}  // namespace nanguard
