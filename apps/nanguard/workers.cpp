// Starting a command's data-parallel workers: this command line again, N times, with torchrun's
// environment (`fit --nproc-per-node N`, `zoo run --nproc N`).
#include <filesystem>
#include <iostream>

#include "commands.h"
#include "nanguard/core/error.h"
#include "nanguard/dist/launcher.h"

namespace nanguard::cli {

int launch_workers(int nproc, const std::string& flag) {
  std::vector<std::string> argv;
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw IoError("cannot find this program's path to start its workers: " + ec.message());
  argv.push_back(self.string());
  const auto& args = command_line();
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == flag) {
      ++i;  // and its value
      continue;
    }
    if (args[i].rfind(flag + "=", 0) == 0) continue;
    argv.push_back(args[i]);
  }
  const dist::LaunchResult result = dist::launch_local_workers(nproc, argv);
  if (result.failed_rank < 0) return kOk;
  std::cerr << "nanguard: data-parallel run failed: " << result.error << "\n";
  // A worker's own exit code says why (1 stopped, 2 bad input, ...); a death by signal is a peer failure.
  return result.exit_code > 0 && result.exit_code < 128 ? result.exit_code : kPeerFailed;
}

}  // namespace nanguard::cli
