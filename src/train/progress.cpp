#include "nanguard/train/progress.h"

#include <cmath>
#include <iostream>

#include <fmt/format.h>
#include <unistd.h>

namespace nanguard {
namespace {

constexpr int kBarWidth = 30;
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);

double elapsed(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

std::string bar(int64_t done, int64_t total) {
  const int filled = total > 0 ? static_cast<int>(kBarWidth * done / total) : kBarWidth;
  std::string s = "[";
  for (int i = 0; i < kBarWidth; ++i) s += i < filled ? '=' : (i == filled ? '>' : '.');
  return s + "]";
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 1e-3) return fmt::format("{:.0f}us", seconds * 1e6);
  if (seconds < 1.0) return fmt::format("{:.0f}ms", seconds * 1000.0);
  if (seconds < 60.0) return fmt::format("{:.0f}s", seconds);
  const auto total = static_cast<int64_t>(std::llround(seconds));
  if (total < 3600) return fmt::format("{}m{:02d}s", total / 60, static_cast<int>(total % 60));
  return fmt::format("{}h{:02d}m", total / 3600, static_cast<int>(total % 3600 / 60));
}

ProgressBar::ProgressBar(std::ostream& out, bool interactive) : out_(out), interactive_(interactive) {}

ProgressBar::ProgressBar(std::ostream& out)
    : ProgressBar(out, &out == &std::cout && ::isatty(STDOUT_FILENO) != 0) {}

void ProgressBar::on_train_begin(Trainer&, const FitOptions& options) { epochs_ = options.epochs; }

void ProgressBar::on_epoch_begin(Trainer&, int64_t epoch, int64_t num_batches) {
  num_batches_ = num_batches;
  loss_sum_ = 0.0;
  loss_count_ = 0;
  epoch_start_ = last_draw_ = std::chrono::steady_clock::now();
  if (interactive_) out_ << fmt::format("Epoch {}/{}\n", epoch + 1, epochs_) << std::flush;
}

void ProgressBar::on_batch_end(Trainer&, int64_t batch, const StepResult& step) {
  if (!interactive_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < kRedrawInterval && batch + 1 < num_batches_) return;
  last_draw_ = now;
  // Reading the loss syncs; it happens at most ten times a second.
  loss_sum_ += step.loss.item<double>();
  ++loss_count_;
  const int64_t done = batch + 1;
  const double per_step = elapsed(epoch_start_) / static_cast<double>(done);
  draw(done, fmt::format(" - ETA: {} - loss: {:.4f}", format_duration(per_step * (num_batches_ - done)),
                         loss_sum_ / static_cast<double>(loss_count_)));
}

void ProgressBar::on_epoch_end(Trainer&, int64_t epoch, const Logs& logs) {
  const double seconds = elapsed(epoch_start_);
  std::string tail = fmt::format(" - {} {}/step", format_duration(seconds),
                                 format_duration(seconds / static_cast<double>(std::max<int64_t>(num_batches_, 1))));
  for (const auto& [name, value] : logs.items()) {
    if (name == "seconds") continue;
    tail += name == "lr" ? fmt::format(" - {}: {:.3g}", name, value) : fmt::format(" - {}: {:.4f}", name, value);
  }
  if (interactive_) {
    draw(num_batches_, tail);
    out_ << "\n" << std::flush;
  } else {
    out_ << fmt::format("Epoch {}/{} - {} steps{}\n", epoch + 1, epochs_, num_batches_, tail) << std::flush;
  }
}

void ProgressBar::draw(int64_t done, const std::string& tail) {
  const int width = static_cast<int>(std::to_string(num_batches_).size());
  // \r then clear-to-end-of-line: the new text may be shorter than the old one.
  out_ << fmt::format("\r{:>{}}/{} {}{}\x1b[K", done, width, num_batches_, bar(done, num_batches_), tail)
       << std::flush;
}

}  // namespace nanguard
