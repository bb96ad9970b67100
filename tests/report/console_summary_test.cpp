#include "nanguard/report/console_summary.h"

#include <gtest/gtest.h>

namespace nanguard::report {
namespace {

RunRecord run_with_events() {
  RunRecord run;
  GuardEvent inc;
  inc.step = 12, inc.kind = "incident", inc.cause = "unsafe_loss/log_of_zero", inc.confidence = 0.9;
  inc.op = "aten::log", inc.module = "loss", inc.phase = "forward", inc.detail = "loss", inc.samples = {3, 7};
  GuardEvent act;
  act.step = 12, act.kind = "action", act.action = "stable_loss", act.detail = "loss switched to its stable form";
  GuardEvent warn;
  warn.step = 30, warn.kind = "warning", warn.cause = "lr_too_high", warn.explanation = "the loss is rising fast";
  run.events = {inc, act, warn};
  return run;
}

TEST(ConsoleSummary, SaysWhatHappenedWhatWasDoneAndWhereTheReportIs) {
  const std::string text = console_summary(run_with_events(), "runs/demo/report.html");
  for (const char* needle :
       {"1 incident, 1 repair action and 1 warning", "Step 12: the loss went non-finite",
        "an unsafe loss (log of zero) (90% confidence)", "samples 3, 7", "aten::log in module loss during the forward pass",
        "Repaired by: stable_loss (loss switched to its stable form)", "Warning at step 30: the loss is rising fast",
        "Report: runs/demo/report.html"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << "lacks \"" << needle << "\" in:\n" << text;
  }
}

TEST(ConsoleSummary, ACleanRunSaysSo) {
  const std::string text = console_summary(RunRecord{});
  EXPECT_EQ(text, "nanguard: no incidents and no warnings; every step was finite.\n");
}

TEST(ConsoleSummary, CausesInWords) {
  EXPECT_EQ(cause_in_words("bad_input_data"), "bad input data (NaN or Inf in the batch)");
  EXPECT_EQ(cause_in_words("unsafe_loss/exp_overflow"), "an unsafe loss (exp overflow)");
  EXPECT_EQ(cause_in_words("something_new/odd"), "something_new (odd)");
  EXPECT_EQ(cause_in_words(""), "an unknown cause");
}

}  // namespace
}  // namespace nanguard::report
