// nanguard doctor [--json] [--quick]: checks the environment (LibTorch build, BLAS and its
// speed, CPU, threads, denormal state, determinism, CUDA) and runs the numerics self-test.
#include <iostream>

#include "commands.h"
#include "nanguard/env/doctor.h"

namespace nanguard::cli {
namespace {

struct DoctorArgs {
  bool json = false;
  bool quick = false;
  bool no_self_test = false;
};

int run_doctor_command(const DoctorArgs& args) {
  const env::DoctorReport report =
      env::run_doctor(env::DoctorOptions().set_quick(args.quick).set_run_self_test(!args.no_self_test));
  if (args.json)
    std::cout << env::report_json(report) << "\n";
  else
    env::print_report(report, std::cout);
  return env::exit_code_for(report.worst(), kChecksWarned, kChecksFailed);
}

}  // namespace

Command add_doctor(CLI::App& app) {
  auto args = std::make_shared<DoctorArgs>();
  CLI::App* sub = app.add_subcommand(
      "doctor", "Check the environment (LibTorch, BLAS, CPU, threads, denormals, CUDA) and run a numerics self-test");
  sub->add_flag("--json", args->json, "Print JSON instead of pass/warn/fail lines");
  sub->add_flag("--quick", args->quick, "Smaller BLAS timing and the quick self-test (well under a second)");
  sub->add_flag("--no-self-test", args->no_self_test, "Skip the numerics self-test");
  sub->footer("Exit codes: 0 all pass (info lines included), 5 warnings, 6 failures; 2, 3, 4 as for every command.");
  return [args] { return run_doctor_command(*args); };
}

}  // namespace nanguard::cli
