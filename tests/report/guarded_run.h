// A real guarded run for the report tests: a tiny MLP with an unsafe loss (log of a softmax
// that underflows) on data with one NaN-poisoned sample, so the guard records incidents and
// repairs. It writes the run folder as `nanguard fit` does, plus the files of the monitor,
// the data audit and the environment summary.
#pragma once

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "nanguard/core/atomic_file.h"
#include "nanguard/report/events.h"
#include "nanguard/report/history_files.h"
#include "nanguard/report/tensorboard_callback.h"
#include "nanguard/train/trainer.h"

namespace nanguard::testing {

// Writes monitor.csv rows: step, loss, grad_norm, grad_norm/<layer>.
class SignalsWriter : public Callback {
 public:
  explicit SignalsWriter(const std::filesystem::path& path) : out_(path) {}
  void on_batch_end(Trainer& trainer, int64_t, const StepResult& r) override {
    std::vector<std::pair<std::string, double>> layers;
    double total = 0;
    for (const auto& item : trainer.model()->named_parameters(true)) {
      // Every parameter, with or without a gradient yet, so each row has the header's columns.
      const at::Tensor& g = item.value().grad();
      const double sq = g.defined() ? g.to(torch::kDouble).pow(2).sum().item<double>() : 0.0;
      const std::string layer = item.key().substr(0, item.key().rfind('.'));
      if (layers.empty() || layers.back().first != layer) layers.push_back({layer, 0});
      layers.back().second += sq;
      total += sq;
    }
    if (!header_written_) {
      out_ << "step,loss,grad_norm";
      for (const auto& l : layers) out_ << ",grad_norm/" << l.first;
      out_ << "\n";
      header_written_ = true;
    }
    out_ << trainer.global_step() << "," << fmt::format("{}", r.loss.defined() ? r.loss.item<double>() : std::nan("")) << "," << std::sqrt(total);
    for (const auto& l : layers) out_ << "," << std::sqrt(l.second);
    out_ << "\n";
  }

 private:
  std::ofstream out_;
  bool header_written_ = false;
};

struct GuardedRun {
  size_t incidents = 0;
  size_t events = 0;
};

inline GuardedRun write_guarded_run(const std::filesystem::path& dir, const std::filesystem::path& tensorboard = {}) {
  constexpr int64_t kClasses = 10, kFeatures = 20, kSamples = 400;
  auto centers = torch::randn({kClasses, kFeatures}, at::detail::createCPUGenerator(1234)) * 2.0;
  auto gen = at::detail::createCPUGenerator(1);
  auto y = torch::randint(0, kClasses, {kSamples}, gen, torch::kLong);
  auto x = (centers.index_select(0, y) + torch::randn({kSamples, kFeatures}, gen)) * 40.0;
  x[123][4] = std::numeric_limits<float>::quiet_NaN();
  data::TensorDataset train(x, y);

  ModelSpec spec;
  spec.input_shape = {kFeatures};
  spec.add(layers::dense(32, "relu")).add(layers::dense(kClasses, "softmax"));
  CompileOptions c;
  c.loss = LossSpec().type(LossType::sparse_categorical_crossentropy).fused(false);
  c.optimizer = OptimizerSpec().type(OptimizerType::adam).learning_rate(0.01);
  torch::manual_seed(0);
  Trainer trainer(SequentialModel(spec), c);

  std::filesystem::create_directories(dir);
  report::EventLog log(dir / "events.jsonl");
  std::unique_ptr<report::TensorBoardCallback> tb;
  if (!tensorboard.empty()) tb = std::make_unique<report::TensorBoardCallback>(tensorboard);
  std::vector<GuardEvent> events;
  trainer.set_event_handler([&](const GuardEvent& e) {
    log.write(e);
    events.push_back(e);
    if (tb) tb->add_event(e);
  });
  SignalsWriter signals(dir / "monitor.csv");
  std::vector<Callback*> callbacks{&signals};
  if (tb) callbacks.push_back(tb.get());
  FitOptions f;
  f.epochs = 3;
  f.batch_size = 32;
  f.seed = 5;
  History history = trainer.fit(train, nullptr, f, callbacks);

  const double steps_per_epoch = static_cast<double>(trainer.global_step()) / static_cast<double>(history.size());
  report::write_history_files(dir, history, report::event_markers(events, steps_per_epoch));
  const double final_loss = history.logs.back().get("loss");
  nlohmann::json summary = {{"name", "guarded"},
                            {"epochs", history.size()},
                            {"steps", trainer.global_step()},
                            {"final_epoch", {{"loss", std::isfinite(final_loss) ? nlohmann::json(final_loss) : nlohmann::json()}}},
                            {"environment", {{"libtorch", TORCH_VERSION}}},
                            {"guard", {{"incidents", trainer.guard()->incidents().size()}}}};
  write_text_atomic(dir / "summary.json", summary.dump(2) + "\n");
  write_text_atomic(dir / "config.toml", "name = \"guarded\"\n[fit]\nepochs = 3\nbatch_size = 32\n");
  write_text_atomic(dir / "env.json", R"({"os": "Linux", "libtorch": "1.13.1", "blas": {"name": "openblas", "ok": true}})");
  write_text_atomic(dir / "audit.json",
                    R"({"samples": 400, "findings": [{"kind": "nan", "sample": 123, "column": 4}], "ok": false})");
  std::filesystem::create_directories(dir / "audit");
  write_text_atomic(dir / "audit" / "feature_4.svg",
                    "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"120\" height=\"60\" class=\"audit-hist\">"
                    "<rect x=\"10\" y=\"20\" width=\"20\" height=\"40\" fill=\"#888\"/></svg>");
  GuardedRun run;
  run.incidents = trainer.guard()->incidents().size();
  run.events = events.size();
  return run;
}

}  // namespace nanguard::testing
