// Writes a run's History to the run folder: history.csv, history.json and the loss/metric
// curves as SVG images that open in any browser or image viewer. All writes are atomic.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "nanguard/guard/incident.h"
#include "nanguard/report/chart.h"
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

// The curve charts of a run: "Loss" (loss, val_loss), then one per metric (accuracy,
// val_accuracy, ...). The report and the SVG files both draw these.
std::vector<CurveChart> history_curves(const History& history);
// The chart of the named history columns against the epoch, with markers (epoch units).
Chart history_chart(const History& history, const CurveChart& curves, const std::vector<ChartMarker>& markers = {});
// One SVG line chart of the named history columns against the epoch.
std::string curves_svg(const History& history, const CurveChart& chart);

// Guard events as chart markers. With steps_per_epoch > 0 each marker sits on the epoch its
// step belongs to (for epoch charts); otherwise at the step itself (for per-step charts).
std::vector<ChartMarker> event_markers(const std::vector<GuardEvent>& events, double steps_per_epoch);

// Writes history.csv, history.json, loss.svg and one <metric>.svg per metric column into dir,
// with markers on every curve. Returns the paths written.
std::vector<std::filesystem::path> write_history_files(const std::filesystem::path& dir, const History& history,
                                                       const std::vector<ChartMarker>& markers = {});

}  // namespace nanguard::report
