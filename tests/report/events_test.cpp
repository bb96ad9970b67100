#include "nanguard/report/events.h"

#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::report {
namespace {

TEST(Events, JsonHasEveryDocumentedKey) {
  GuardEvent e;
  e.step = 12;
  e.kind = "incident";
  e.cause = "unsafe_loss/log_of_zero";
  e.confidence = 0.9;
  e.phase = "forward";
  e.op = "aten::log";
  e.module = "loss";
  e.samples = {3, 4};
  e.explanation = "log received zeros";
  auto j = nlohmann::json::parse(event_json(e));
  for (const char* key : {"step", "kind", "cause", "confidence", "phase", "op", "module", "samples", "explanation",
                          "action", "detail"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["step"], 12);
  EXPECT_EQ(j["samples"], nlohmann::json({3, 4}));
  EXPECT_EQ(j["op"], "aten::log");
}

TEST(Events, LogWritesOneLinePerEvent) {
  testing::TempDir dir;
  {
    EventLog log(dir / "events.jsonl");
    GuardEvent a, b;
    a.kind = "incident";
    b.kind = "action";
    b.action = "skip_step";
    log.write(a);
    log.write(b);
  }
  std::ifstream in(dir / "events.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    EXPECT_TRUE(nlohmann::json::accept(line)) << line;
    ++n;
  }
  EXPECT_EQ(n, 2);
}

TEST(Events, UnwritablePathIsAnIoErrorNamingIt) {
  EXPECT_TRUE(testing::throws_with<IoError>([] { EventLog log("/proc/nanguard/events.jsonl"); },
                                            {"/proc/nanguard/events.jsonl"}));
}

}  // namespace
}  // namespace nanguard::report
