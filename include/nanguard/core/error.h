// The exception hierarchy of nanguard. Every error derives from a standard exception so that
// callers (and a future Python binding) can map them: ValueError -> ValueError, IoError and
// NonFiniteError -> RuntimeError.
#pragma once

#include <stdexcept>
#include <string>

namespace nanguard {

// Bad user input: a config key, a flag, an API argument, or a malformed data file.
// The message names the file/line/key and what was expected.
class ValueError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A file could not be opened, read, written or renamed.
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A tensor that must be finite is not (e.g. a checkpoint that would be poisoned).
class NonFiniteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Training was stopped on purpose (for example by the guard when a repair budget is spent).
class TrainingStopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A data-parallel peer died or stayed silent past the group's timeout: the run cannot go on.
// The message names the rank where it can be told.
class PeerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A broken invariant inside nanguard itself: a bug, never the user's fault.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace nanguard
