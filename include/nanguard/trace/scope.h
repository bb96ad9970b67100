// Named regions of user code. Ops that run inside NANGUARD_SCOPE("encoder.attn") are
// attributed to that module by the op tracer; scopes nest ("encoder" then "attn" gives
// "encoder.attn"). Layers built from a model spec are scoped automatically ("layers.1.dense").
// Outside a replay a scope costs one push and one pop on a thread-local stack.
#pragma once

#include <string>
#include <string_view>

namespace nanguard::trace {

class Scope {
 public:
  explicit Scope(std::string_view name);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  // The dotted path of the scopes open on this thread ("" when none).
  static std::string current();
  // Number of scopes open on this thread.
  static size_t depth();
};

}  // namespace nanguard::trace

#define NANGUARD_SCOPE_CONCAT_INNER(a, b) a##b
#define NANGUARD_SCOPE_CONCAT(a, b) NANGUARD_SCOPE_CONCAT_INNER(a, b)
// Attributes the ops of the enclosing C++ block to the named module.
#define NANGUARD_SCOPE(name) \
  ::nanguard::trace::Scope NANGUARD_SCOPE_CONCAT(nanguard_scope_, __LINE__)(name)
