// Keras-like progress output as an ordinary callback. On a terminal it redraws one line per
// epoch (bar, ETA, running loss and metrics); elsewhere (logs, CI) it prints one plain line
// per epoch, so files never fill with carriage returns.
#pragma once

#include <chrono>
#include <ostream>

#include "nanguard/train/trainer.h"

namespace nanguard {

class ProgressBar : public Callback {
 public:
  // interactive: redraw in place; by default true when `out` is std::cout on a terminal.
  explicit ProgressBar(std::ostream& out, bool interactive);
  explicit ProgressBar(std::ostream& out);

  void on_train_begin(Trainer&, const FitOptions&) override;
  void on_epoch_begin(Trainer&, int64_t epoch, int64_t num_batches) override;
  void on_batch_end(Trainer&, int64_t batch, const StepResult&) override;
  void on_epoch_end(Trainer&, int64_t epoch, const Logs&) override;

 private:
  void draw(int64_t done, const std::string& tail);

  std::ostream& out_;
  bool interactive_;
  int64_t epochs_ = 0;
  int64_t num_batches_ = 0;
  double loss_sum_ = 0.0;
  int64_t loss_count_ = 0;
  std::chrono::steady_clock::time_point epoch_start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// Formats a duration like Keras ("3s", "1m05s", "250ms").
std::string format_duration(double seconds);

}  // namespace nanguard
