// nanguard: keeps deep-learning training finite. Errors are caught once, here, and mapped
// to the documented exit codes.
#include <algorithm>
#include <iostream>
#include <string>

#include <c10/util/Exception.h>

#include "commands.h"
#include "nanguard/core/error.h"

namespace {

// CLI11 reports a misspelt subcommand ("nanguard data chek") as "A subcommand is required";
// this names it and the expected ones instead. Empty when the words before the first flag are
// known subcommands.
std::string unknown_subcommand(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  std::string path = "nanguard";
  for (int i = 1; i < argc && current->get_require_subcommand_min() > 0; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return {};
    const auto subcommands = current->get_subcommands([](CLI::App*) { return true; });
    const auto found = std::find_if(subcommands.begin(), subcommands.end(),
                                    [&](CLI::App* sub) { return sub->get_name() == word; });
    if (found == subcommands.end()) {
      std::string names;
      for (CLI::App* sub : subcommands) names += (names.empty() ? "" : ", ") + sub->get_name();
      return "unknown subcommand '" + word + "' of '" + path + "' (expected one of: " + names + ")";
    }
    current = *found;
    path += " " + word;
  }
  return {};
}

}  // namespace

namespace nanguard::cli {
namespace {
std::vector<std::string>& stored_command_line() {
  static std::vector<std::string> args;
  return args;
}
}  // namespace
void set_command_line(int argc, char** argv) { stored_command_line().assign(argv + 1, argv + argc); }
const std::vector<std::string>& command_line() { return stored_command_line(); }
}  // namespace nanguard::cli

int main(int argc, char** argv) {
  using namespace nanguard::cli;
  set_command_line(argc, argv);
  CLI::App app{"nanguard: detect, localize, diagnose and repair NaN/Inf in deep-learning training"};
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 training stopped, 2 bad input (flag, config, data), 3 I/O error, "
      "4 internal error, 5 checks warned (doctor), 6 checks failed (doctor, data check), 7 a data-parallel "
      "peer died or hung.");
  const std::vector<std::pair<std::string, Command>> commands{
      {"fit", add_fit(app)},
      {"evaluate", add_evaluate(app)},
      {"replay", add_replay(app)},
      {"doctor", add_doctor(app)},
      {"zoo", add_zoo(app)},
      {"data", add_data(app)},
      {"report", add_report(app)},
  };

  if (const std::string unknown = unknown_subcommand(app, argc, argv); !unknown.empty()) {
    std::cerr << "nanguard: " << unknown << "\n";
    return kBadInput;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kBadInput;
  }
  try {
    for (const auto& [name, run] : commands) {
      if (app.got_subcommand(name)) return run();
    }
    return kBadInput;
  } catch (const nanguard::ValueError& e) {
    std::cerr << "nanguard: error: " << e.what() << "\n";
    return kBadInput;
  } catch (const nanguard::IoError& e) {
    std::cerr << "nanguard: I/O error: " << e.what() << "\n";
    return kIoError;
  } catch (const nanguard::PeerError& e) {
    std::cerr << "nanguard: data-parallel peer failed: " << e.what() << "\n";
    return kPeerFailed;
  } catch (const nanguard::TrainingStopped& e) {
    std::cerr << "nanguard: training stopped: " << e.what() << "\n";
    return kTrainingStopped;
  } catch (const nanguard::NonFiniteError& e) {
    std::cerr << "nanguard: " << e.what() << "\n";
    return kTrainingStopped;
  } catch (const c10::Error& e) {
    std::cerr << "nanguard: LibTorch error: " << e.what_without_backtrace() << "\n";
    return kInternalError;
  } catch (const std::exception& e) {
    std::cerr << "nanguard: internal error: " << e.what() << "\n";
    return kInternalError;
  }
}
