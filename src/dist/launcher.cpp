#include "nanguard/dist/launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "core/check.h"
#include "nanguard/core/error.h"

namespace nanguard::dist {

int free_loopback_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw IoError(fmt::format("cannot open a socket to find a free port: {}", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    throw IoError("cannot bind a loopback port for the rendezvous: " + why);
  }
  close(fd);
  return ntohs(addr.sin_port);
}

namespace {

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "ended";
}

}  // namespace

LaunchResult launch_local_workers(int nproc, const std::vector<std::string>& argv, std::chrono::seconds grace) {
  NANGUARD_CHECK(nproc >= 1, "--nproc-per-node must be at least 1, got {}", nproc);
  NANGUARD_CHECK(!argv.empty(), "no worker command to launch");
  const int port = free_loopback_port();
  std::vector<pid_t> pids(static_cast<size_t>(nproc), -1);
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = fork();
    if (pid < 0) {
      for (pid_t p : pids)
        if (p > 0) kill(p, SIGKILL);
      throw IoError(fmt::format("cannot start worker {}: {}", r, std::strerror(errno)));
    }
    if (pid == 0) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      std::fprintf(stderr, "nanguard: cannot run worker %d (%s): %s\n", r, args[0], std::strerror(errno));
      _exit(127);
    }
    pids[static_cast<size_t>(r)] = pid;
  }
  LaunchResult result;
  int running = nproc;
  auto rank_of = [&](pid_t pid) {
    for (int r = 0; r < nproc; ++r)
      if (pids[static_cast<size_t>(r)] == pid) return r;
    return -1;
  };
  // Every failure, a death by signal (the cause, usually) before an exit with an error (the
  // peers that found it gone).
  struct Failure {
    int rank;
    int code;
    bool signaled;
    std::string what;
  };
  std::vector<Failure> failures;
  std::chrono::steady_clock::time_point deadline{};
  while (running > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, failures.empty() ? 0 : WNOHANG);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (pid == 0) {  // a worker failed: the others have until the deadline to end by themselves
      if (std::chrono::steady_clock::now() > deadline) {
        for (int r = 0; r < nproc; ++r)
          if (pids[static_cast<size_t>(r)] > 0) kill(pids[static_cast<size_t>(r)], SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    const int r = rank_of(pid);
    if (r < 0) continue;
    pids[static_cast<size_t>(r)] = -1;
    --running;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    if (failures.empty()) deadline = std::chrono::steady_clock::now() + grace;
    const bool signaled = WIFSIGNALED(status);
    failures.push_back(Failure{r, signaled ? 128 + WTERMSIG(status) : WEXITSTATUS(status), signaled,
                               fmt::format("rank {} (pid {}) {}", r, pid, describe_status(status))});
  }
  if (failures.empty()) return result;
  std::stable_sort(failures.begin(), failures.end(),
                   [](const Failure& a, const Failure& b) { return a.signaled && !b.signaled; });
  result.failed_rank = failures.front().rank;
  result.exit_code = failures.front().code;
  for (const Failure& f : failures) result.error += (result.error.empty() ? "" : "; ") + f.what;
  return result;
}

}  // namespace nanguard::dist
