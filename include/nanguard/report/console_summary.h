// The end-of-run summary in plain language: what went wrong, what was done about it, what
// to look at next.
#pragma once

#include <filesystem>
#include <string>

#include "nanguard/report/run_record.h"

namespace nanguard::report {

// A cause identifier in words, e.g. "unsafe_loss/log_of_zero" -> "an unsafe loss (log of zero)".
std::string cause_in_words(const std::string& cause);

// A few lines: counts, one line per incident (cause, birth op, samples, repairs, outcome),
// one per warning, and where the report is (when report is not empty).
std::string console_summary(const RunRecord& run, const std::filesystem::path& report = {});

}  // namespace nanguard::report
