// Writes a run's History to the run folder: history.csv, history.json and the loss/metric
// curves as SVG images that open in any browser or image viewer. All writes are atomic.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "nanguard/train/history.h"

namespace nanguard::report {

// CSV with header "epoch,<columns...>", one row per epoch; values printed round-trip exact.
std::string history_csv(const History& history);
// {"epochs": [...], "columns": {"loss": [...], ...}}; NaN/Inf become null.
std::string history_json(const History& history);

struct CurveChart {
  std::string title;                  // "Loss"
  std::string y_label;                // "loss"
  std::vector<std::string> series;    // column names, e.g. {"loss", "val_loss"}
};

// One SVG line chart of the named history columns against the epoch.
std::string curves_svg(const History& history, const CurveChart& chart);

// Writes history.csv, history.json, loss.svg and one <metric>.svg per metric column into dir.
// Returns the paths written.
std::vector<std::filesystem::path> write_history_files(const std::filesystem::path& dir, const History& history);

}  // namespace nanguard::report
