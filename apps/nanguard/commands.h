// The subcommands of the nanguard CLI, one file each. Each `add_*` registers its options on
// the CLI11 app and returns the function main() runs when that subcommand is chosen.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace nanguard::cli {

using Command = std::function<int()>;

// A flag check for integers of at least `min`, whose message says what was expected: "--epochs:
// expected a positive integer, found '0'" (CLI11's PositiveNumber reports 0 as "not in range
// 0.000000 to 1797...", its smallest double and largest). `desc` is shown in --help.
inline CLI::Validator integer_at_least(int64_t min, const std::string& expected, const std::string& desc) {
  return CLI::Validator(
      [min, expected](std::string& text) -> std::string {
        int64_t value = 0;
        if (CLI::detail::lexical_cast(text, value) && value >= min) return {};
        return "expected " + expected + ", found '" + text + "'";
      },
      desc);
}

// The command line main() was given (argv[1..]), for `fit --nproc-per-node` to start its workers
// with.
void set_command_line(int argc, char** argv);
const std::vector<std::string>& command_line();

// Runs this command line again as `nproc` local workers with torchrun's environment, `flag` and
// its value left out; waits for them. Returns the exit code: 0, a worker's own code, or
// kPeerFailed when one died by a signal (the error naming it is printed).
int launch_workers(int nproc, const std::string& flag);

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
  kPeerFailed = 7,       // data parallelism: a peer process died or stayed silent
};

}  // namespace nanguard::cli
