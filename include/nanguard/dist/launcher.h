// `nanguard fit --nproc-per-node N`: N local worker processes with the environment torchrun
// gives its workers (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a
// free MASTER_PORT), so a worker cannot tell the two launchers apart.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace nanguard::dist {

struct LaunchResult {
  int exit_code = 0;   // 0 when every worker exited 0; else the first failing worker's code
  int failed_rank = -1;
  std::string error;   // "rank 1 (pid 4242) was killed by signal 9", "" when all succeeded
};

// Runs `argv` (argv[0] an executable path) as `nproc` workers and waits for them. When one
// fails, the others get `grace` to end by themselves (their collectives fail on the dead peer)
// and are then killed, so the launch never hangs on a dead worker.
LaunchResult launch_local_workers(int nproc, const std::vector<std::string>& argv,
                                  std::chrono::seconds grace = std::chrono::seconds(30));

// A TCP port on 127.0.0.1 that was free a moment ago (the rendezvous binds it next).
int free_loopback_port();

}  // namespace nanguard::dist
