// nanguard fit CONFIG: trains and evaluates a model described by a TOML file and writes the
// run folder (history, curves, summary, weights).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"
#include "nanguard/data/audit.h"
#include "nanguard/dist/data_parallel.h"
#include "nanguard/env/blas.h"
#include "nanguard/guard/snapshot.h"
#include "nanguard/monitor/monitor.h"
#include "nanguard/report/console_summary.h"
#include "nanguard/report/events.h"
#include "nanguard/report/history_files.h"
#include "nanguard/report/html_report.h"
#include "nanguard/report/tensorboard_callback.h"
#include "nanguard/report/verdict.h"
#include "nanguard/train/progress.h"
#include "run_folder.h"

namespace nanguard::cli {
namespace {

struct FitArgs {
  std::string config;
  Overrides overrides;
  std::string out;
  bool quiet = false;
  bool dump_incidents = false;
  std::string tensorboard;  // "" = off
  int nproc_per_node = 0;   // 0: one process (or as torchrun started this one)
};

// The median wall time of a training step (on_batch_begin to on_batch_end), in seconds.
class StepTimer : public Callback {
 public:
  void on_batch_begin(Trainer&, int64_t) override { start_ = std::chrono::steady_clock::now(); }
  void on_batch_end(Trainer&, int64_t, const StepResult&) override {
    seconds_.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  double median() const {
    if (seconds_.empty()) return 0;
    std::vector<double> s = seconds_;
    std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(s.size() / 2), s.end());
    return s[s.size() / 2];
  }

 private:
  std::chrono::steady_clock::time_point start_;
  std::vector<double> seconds_;
};

// What summary.json says of each rank of a data-parallel run.
nlohmann::json rank_record(const dist::DataParallel& group, Trainer& trainer, const StepTimer& timer) {
  std::vector<at::Tensor> state = trainer.model()->parameters();
  for (const auto& b : trainer.model()->buffers()) state.push_back(b);
  nlohmann::json j;
  j["rank"] = group.rank();
  j["host"] = group.host();
  j["pid"] = static_cast<int64_t>(getpid());
  j["steps"] = trainer.global_step();
  j["step_seconds_median"] = timer.median();
  j["weights_digest"] = dist::digest(state);
  return j;
}

nlohmann::json logs_json(const Logs& logs) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : logs.items()) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
  return j;
}

// ReLU layers with every unit dead at the monitor's last sampled step.
std::vector<std::string> dead_layers(Trainer& trainer) {
  std::vector<std::string> dead;
  const Guard* guard = trainer.guard();
  if (guard == nullptr || guard->monitor() == nullptr) return dead;
  const auto& history = guard->monitor()->history();
  for (auto it = history.rbegin(); it != history.rend(); ++it) {
    if (!it->sampled) continue;
    for (const auto& a : it->activations)
      if (a.kind == "relu" && a.units > 0 && a.dead_fraction >= 1.0) dead.push_back(a.layer.empty() ? "a ReLU layer" : a.layer);
    break;
  }
  return dead;
}

// Did the run learn: first and last losses, held-out accuracy against chance and the majority
// class, dead layers.
report::RunVerdict judge(Trainer& trainer, const History& history, const data::TensorDataset& held_out,
                         const Logs* held_out_logs) {
  report::VerdictInputs in;
  in.initial_loss = trainer.first_loss();
  if (history.size() && history.logs.back().has("loss")) in.final_loss = history.logs.back().get("loss");
  const bool classifier = trainer.options().loss.type() == LossType::sparse_categorical_crossentropy ||
                          trainer.options().loss.type() == LossType::categorical_crossentropy;
  const auto& shape = trainer.model()->output_shape();
  if (classifier && !shape.empty()) in.classes = shape.back();
  if (held_out_logs != nullptr && held_out_logs->has("accuracy") && held_out.size() > 0) {
    in.accuracy = held_out_logs->get("accuracy");
    in.evaluated = held_out.size();
    const at::Tensor y = held_out.y();
    if (y.defined() && !y.is_floating_point() && y.dim() == 1 && in.classes > 0) {
      const at::Tensor counts = torch::bincount(y.clamp(0, in.classes - 1), {}, in.classes);
      in.majority_fraction = counts.max().item<double>() / static_cast<double>(y.size(0));
    }
  }
  in.dead_layers = dead_layers(trainer);
  in.stopped = trainer.guard() != nullptr && trainer.guard()->stopped();
  return report::judge_run(in);
}

int run_fit(const FitArgs& args_in) {
  const auto start = std::chrono::steady_clock::now();
  if (args_in.nproc_per_node > 1 && std::getenv("WORLD_SIZE") == nullptr) return launch_workers(args_in.nproc_per_node, "--nproc-per-node");
  // Under torchrun (or our own launcher) this process is one rank; rank 0 leads: it alone
  // talks and writes the run folder, the others train beside it.
  const std::shared_ptr<dist::DataParallel> group = dist::DataParallel::from_environment();
  const bool lead = !group || group->rank() == 0;
  FitArgs args = args_in;
  if (!lead) {
    args.quiet = true;
    args.dump_incidents = false;
    args.tensorboard.clear();
  }
  RunConfig config = load_config_with(args.config, args.overrides);
  config.compile.data_parallel = group;
  const std::filesystem::path out = args.out.empty() ? std::filesystem::path("runs") / config.name : std::filesystem::path(args.out);
  const env::BlasInfo blas = env::warn_if_reference_blas();

  data::LoadedData data = data::load_data(config.data);
  auto trainer = make_trainer(config);
  if (config.data.audit) {
    // A quick look at the training data before fit; the guard names flagged samples as such.
    data::AuditOptions audit_options;
    if (config.data.kind == "mnist") audit_options.range_min(0).range_max(255.0 / config.data.scale);
    const data::QuickAudit audit = data::quick_audit(data.train.x(), data.train.y(), data.train.ids(), audit_options);
    if (lead) write_text_atomic(out / "audit.json", audit.to_json());
    AuditFlags flags(audit.flagged_ids);
    for (const auto& f : audit.flags) flags.add(f.kind, f.samples);
    trainer->set_audit_flagged_samples(std::move(flags));
    for (const auto& f : audit.flags) {
      if (!lead) break;
      std::cerr << fmt::format("nanguard: data audit: {} {} training samples ({}), e.g. ids {}\n", f.count, f.kind,
                               f.detail, fmt::join(f.samples.begin(), f.samples.begin() + std::min<size_t>(f.samples.size(), 8), ", "));
    }
  }
  if (args.dump_incidents) trainer->set_incident_dump_dir(out / "incidents");
  if (!args.quiet) {
    std::cout << trainer->model()->summary();
    std::cout << fmt::format("Training on {} samples, validating on {}, {} epochs of batch {}\n", data.train.size(),
                             data.validation.size(), config.fit.epochs, config.fit.batch_size);
    if (group) {
      std::cout << fmt::format("Data parallel: {} processes (gloo), batch {} per process, global batch {}\n",
                               group->world_size(), config.fit.batch_size, config.fit.batch_size * group->world_size());
    }
  }
  // Every guard event goes to events.jsonl as it happens; incidents are also told on the console.
  std::unique_ptr<report::EventLog> events;
  env::EnvSummary environment;
  if (lead) {
    events = std::make_unique<report::EventLog>(out / "events.jsonl");
    environment = write_environment(out);
  }
  std::vector<GuardEvent> all_events;
  std::unique_ptr<report::TensorBoardCallback> tensorboard;
  if (!args.tensorboard.empty()) tensorboard = std::make_unique<report::TensorBoardCallback>(args.tensorboard);
  trainer->set_event_handler([&](const GuardEvent& e) {
    if (!lead) return;
    events->write(e);
    all_events.push_back(e);
    if (tensorboard) tensorboard->add_event(e);
    if (args.quiet) return;
    if (e.kind == "incident") {
      const std::string what = e.detail == "divergence" ? "divergence (every value finite)" : "non-finite " + e.detail;
      std::cout << fmt::format("\n[nanguard] step {}{}: {} - {} ({:.0f}%){}\n  {}\n", e.step,
                               e.rank >= 0 ? fmt::format(" (rank {})", e.rank) : "", what, e.cause,
                               e.confidence * 100, e.op.empty() ? "" : ", born in " + e.op + (e.module.empty() ? "" : " (" + e.module + ")"),
                               e.explanation);
    } else if (e.kind == "action") {
      std::cout << fmt::format("[nanguard]   repair: {} - {}\n", e.action, e.detail);
    } else {
      std::cout << fmt::format("[nanguard] warning at step {}: {}\n", e.step, e.explanation);
    }
  });
  ProgressBar progress(std::cout);
  StepTimer timer;
  std::vector<Callback*> callbacks{&timer};
  if (!args.quiet) callbacks.push_back(&progress);
  if (tensorboard) callbacks.push_back(tensorboard.get());
  History history = trainer->fit(data.train, data.validation.size() > 0 ? &data.validation : nullptr, config.fit,
                                 callbacks);

  nlohmann::json summary;
  summary["name"] = config.name;
  summary["config"] = std::filesystem::absolute(config.source).string();
  summary["epochs"] = static_cast<int64_t>(history.size());
  summary["steps"] = trainer->global_step();
  summary["train_samples"] = data.train.size();
  if (group) {
    // Every rank's record reaches rank 0 (one all-gather): equal digests mean equal weights.
    nlohmann::json ranks = nlohmann::json::array();
    for (const std::string& r : group->all_gather_bytes(rank_record(*group, *trainer, timer).dump()))
      ranks.push_back(nlohmann::json::parse(r));
    bool same = true;
    for (const auto& r : ranks) same = same && r["weights_digest"] == ranks[0]["weights_digest"];
    summary["distributed"] = {{"world_size", group->world_size()},
                              {"backend", "gloo"},
                              {"batch_size_per_rank", config.fit.batch_size},
                              {"global_batch_size", config.fit.batch_size * group->world_size()},
                              {"weights_identical", same},
                              {"ranks", ranks}};
  }
  summary["final_epoch"] = history.size() ? logs_json(history.logs.back()) : nlohmann::json::object();
  Logs test;
  if (data.test.size() > 0) {
    test = trainer->evaluate(data.test);
    for (const auto& [k, v] : test.items()) summary["test_" + k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
    if (!args.quiet) {
      std::string line = "Test:";
      for (const auto& [k, v] : test.items()) line += fmt::format(" {} {:.4f}", k, v);
      std::cout << line << "\n";
    }
  }
  // Accuracy on the test split, else the last epoch's validation accuracy.
  const bool tested = data.test.size() > 0;
  Logs held_out = test;
  if (!tested && history.size() && history.logs.back().has("val_accuracy"))
    held_out.set("accuracy", history.logs.back().get("val_accuracy"));
  const report::RunVerdict verdict = judge(*trainer, history, tested ? data.test : data.validation, &held_out);
  if (!args.quiet) std::cout << "Verdict: " << verdict.headline << "\n";
  summary["verdict"] = {{"learned", verdict.learned}, {"headline", verdict.headline}, {"reasons", verdict.reasons}};
  if (std::isfinite(verdict.chance)) summary["verdict"]["chance"] = verdict.chance;
  if (trainer->input_scale() != 1.0) summary["input_scale"] = trainer->input_scale();
  summary["parameters"] = trainer->model()->parameter_count();
  summary["environment"] = {{"libtorch", TORCH_VERSION}, {"blas", blas.name}, {"threads", torch::get_num_threads()},
                            {"self_test_passed", environment.self_test_passed}};

  if (Guard* guard = trainer->guard()) {
    summary["guard"] = {{"steps", guard->steps()},
                        {"applied_steps", guard->applied_steps()},
                        {"skipped_steps", guard->skipped_steps()},
                        {"rerun_steps", guard->rerun_steps()},
                        {"incidents", static_cast<int64_t>(guard->incidents().size())},
                        {"quarantined", guard->quarantined()},
                        {"lr_scale", guard->lr_scale()},
                        {"clip_norm", guard->clip_norm()},
                        {"clip_per_tensor", guard->clip_per_tensor()},
                        {"stopped", guard->stopped()},
                        {"snapshot_bytes", guard->snapshots().memory_bytes()},
                        {"snapshot_seconds", guard->snapshots().last_take_seconds()}};
    if (!args.quiet) {
      std::cout << guard->summary();  // incidents are summarised in plain words once the report is written
    }
  }
  if (!lead) {
    // The run folder is rank 0's; this rank ends as the run did.
    if (trainer->guard() && trainer->guard()->stopped()) throw TrainingStopped("the guard stopped the run (rank " + std::to_string(group->rank()) + ")");
    return kOk;
  }
  const double steps_per_epoch = history.size() ? static_cast<double>(trainer->global_step()) / history.size() : 0;
  std::vector<std::filesystem::path> written =
      report::write_history_files(out, history, report::event_markers(all_events, steps_per_epoch));
  if (trainer->guard() && trainer->guard()->monitor()) {  // the monitor's signals, for the report
    trainer->guard()->monitor()->write_csv(out / "monitor.csv");
    written.push_back(out / "monitor.csv");
  }
  bool weights_refused = false;
  try {
    trainer->save_weights(out / "weights.pt");
    written.push_back(out / "weights.pt");
  } catch (const NonFiniteError& e) {
    // A poisoned model is never written; the rest of the run folder still is.
    summary["weights_refused"] = e.what();
    weights_refused = true;
    std::cerr << "nanguard: " << e.what() << "\n";
  }
  write_text_atomic(out / "config.toml", read_text_file(config.source));
  summary["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  write_text_atomic(out / "summary.json", summary.dump(2) + "\n");
  // The report is a view of the files above; failing to write it must not fail the run.
  try {
    const report::RunRecord record = report::read_run(out);
    write_text_atomic(out / "report.html", report::render_html(record));
    if (!args.quiet) std::cout << report::console_summary(record, out / "report.html");
  } catch (const std::exception& e) {
    std::cerr << "nanguard: warning: no report written: " << e.what() << "\n";
  }
  if (tensorboard && !args.quiet) std::cout << "TensorBoard: tensorboard --logdir " << args.tensorboard << "\n";
  if (weights_refused) throw TrainingStopped("the model holds non-finite weights; no weights file was written");
  if (trainer->guard() && trainer->guard()->stopped()) {
    throw TrainingStopped("the guard stopped the run (repair budget spent); see " + (out / "events.jsonl").string());
  }
  if (!args.quiet) std::cout << "Run folder: " << out.string() << " (report.html, history.csv, loss.svg, summary.json, weights.pt)\n";
  return kOk;
}

}  // namespace

Command add_fit(CLI::App& app) {
  auto args = std::make_shared<FitArgs>();
  CLI::App* sub = app.add_subcommand("fit", "Train and evaluate a model described by a TOML config");
  sub->add_option("config", args->config, "Run config (TOML), e.g. examples/mnist_mlp.toml")->required();
  sub->add_option("--epochs", args->overrides.epochs, "Override fit.epochs")
      ->check(integer_at_least(1, "a positive integer", "POSITIVE"));
  sub->add_option("--batch-size", args->overrides.batch_size, "Override fit.batch_size")
      ->check(integer_at_least(1, "a positive integer", "POSITIVE"));
  sub->add_option("--seed", args->overrides.seed, "Override fit.seed")
      ->check(integer_at_least(0, "a non-negative integer", "NONNEGATIVE"));
  sub->add_option("--device", args->overrides.device, "Override device: cpu, cuda or cuda:N");
  sub->add_option("--out", args->out, "Run folder (default: runs/<name>)");
  sub->add_flag("--quiet", args->quiet, "No progress output");
  sub->add_option("--tensorboard", args->tensorboard,
                  "Also log to TensorBoard event files in this folder (open with: tensorboard --logdir DIR)");
  sub->add_option("--nproc-per-node", args->nproc_per_node,
                  "Data parallelism: train as N local processes (gloo on loopback), batch_size per process; "
                  "the same as torchrun --standalone --nproc_per_node N --no_python nanguard fit ...")
      ->check(integer_at_least(1, "a positive integer", "POSITIVE"));
  sub->add_flag("--dump-incidents", args->dump_incidents,
                "Write each incident's batch and pre-step state to OUT/incidents/step_N for `nanguard replay`");
  return [args] { return run_fit(*args); };
}

}  // namespace nanguard::cli
