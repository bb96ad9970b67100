// Private check macros, split like c10's TORCH_CHECK / TORCH_INTERNAL_ASSERT:
// NANGUARD_CHECK reports a user error, NANGUARD_INTERNAL_ASSERT a bug in nanguard.
#pragma once

#include <fmt/format.h>

#include "nanguard/core/error.h"

#define NANGUARD_CHECK(cond, ...)                                 \
  do {                                                            \
    if (!(cond)) throw ::nanguard::ValueError(fmt::format(__VA_ARGS__)); \
  } while (0)

#define NANGUARD_INTERNAL_ASSERT(cond, ...)                                                   \
  do {                                                                                        \
    if (!(cond))                                                                              \
      throw ::nanguard::InternalError(fmt::format("internal error at {}:{}: {} ({})", __FILE__, \
                                                  __LINE__, #cond, fmt::format(__VA_ARGS__)));  \
  } while (0)
