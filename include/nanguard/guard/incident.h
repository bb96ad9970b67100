// What the guard records: incidents (a failed check with its evidence, diagnosis and the
// repairs applied) and events (one line each in events.jsonl).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nanguard/diagnose/diagnosis.h"
#include "nanguard/diagnose/evidence.h"

namespace nanguard {

struct Incident {
  int64_t step = 0;
  Evidence evidence;
  Diagnosis diagnosis;
  std::vector<std::string> actions;  // names of the repair actions applied, in order
  std::string outcome;               // "skipped", "rolled_back to step 200", "recomputed", "stopped", ...
  double seconds_to_diagnosis = 0;   // from detection to diagnosis (replays included)
  // A few plain-language lines for the console.
  std::string summary() const;
};

struct GuardEvent {
  int64_t step = 0;
  std::string kind;  // "incident", "action", "warning"
  std::string cause;
  double confidence = 0;
  std::string phase;
  std::string op;
  std::string module;
  std::vector<int64_t> samples;
  std::string explanation;
  std::string action;
  std::string detail;  // e.g. "lr 0.5 -> 0.05", "rolled back to step 100"
  int rank = -1;  // data parallelism: the rank the incident happened on (-1 in one process)
};

}  // namespace nanguard
