// The subcommands of the nanguard CLI, one file each. Each `add_*` registers its options on
// the CLI11 app and returns the function main() runs when that subcommand is chosen.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace nanguard::cli {

using Command = std::function<int()>;

Command add_fit(CLI::App& app);
Command add_evaluate(CLI::App& app);
Command add_replay(CLI::App& app);
Command add_doctor(CLI::App& app);
Command add_zoo(CLI::App& app);
Command add_data(CLI::App& app);
Command add_report(CLI::App& app);

// Exit codes (documented in `nanguard --help` and the README).
enum ExitCode : int {
  kOk = 0,
  kTrainingStopped = 1,  // training was stopped (e.g. a repair budget was spent)
  kBadInput = 2,         // bad flag, config, data file or argument
  kIoError = 3,          // a file could not be read or written
  kInternalError = 4,    // a bug in nanguard
  kChecksWarned = 5,     // `doctor`: no check failed but at least one warned
  kChecksFailed = 6,     // `doctor`: a check failed (e.g. the numerics self-test);
                         // `data check`: findings beyond its rules
};

}  // namespace nanguard::cli
