// A trainer callback that logs a run to TensorBoard: per-step loss and gradient norms,
// per-epoch logs (loss, metrics, validation, learning rate) and guard events as text.
#pragma once

#include <cstdint>
#include <filesystem>

#include <torch/arg.h>

#include "nanguard/guard/incident.h"
#include "nanguard/report/tensorboard.h"
#include "nanguard/train/trainer.h"

namespace nanguard::report {

struct TensorBoardOptions {
  // Log the step loss every N optimizer steps (0: never).
  TORCH_ARG(int64_t, loss_every) = 1;
  // Log the total and per-layer gradient norms every N steps (0: never); costs one pass over the gradients.
  TORCH_ARG(int64_t, grad_norm_every) = 1;
};

// Tags: "step/loss", "grad_norm/total", "grad_norm/<layer>" (x: global step); "epoch/<log>"
// for every column of the epoch's logs (x: epoch); "guard/incident", "guard/action",
// "guard/warning" texts (x: step).
class TensorBoardCallback : public Callback {
 public:
  explicit TensorBoardCallback(const std::filesystem::path& dir, TensorBoardOptions options = {});
  void on_batch_end(Trainer& trainer, int64_t batch, const StepResult& result) override;
  void on_epoch_end(Trainer& trainer, int64_t epoch, const Logs& logs) override;
  void on_train_end(Trainer& trainer, const History& history) override;
  // Logs one guard event as text; call it from Trainer::set_event_handler.
  void add_event(const GuardEvent& event);
  TensorBoardWriter& writer() { return writer_; }

 private:
  TensorBoardWriter writer_;
  TensorBoardOptions options_;
};

// The Markdown text logged for a guard event.
std::string event_markdown(const GuardEvent& event);

}  // namespace nanguard::report
