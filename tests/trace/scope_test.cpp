#include "nanguard/trace/scope.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

namespace nanguard::trace {
namespace {

TEST(Scope, EmptyWhenNoneOpen) {
  EXPECT_EQ(Scope::current(), "");
  EXPECT_EQ(Scope::depth(), 0u);
}

TEST(Scope, NestedScopesJoinWithDots) {
  NANGUARD_SCOPE("encoder");
  EXPECT_EQ(Scope::current(), "encoder");
  {
    NANGUARD_SCOPE("attn");
    EXPECT_EQ(Scope::current(), "encoder.attn");
    EXPECT_EQ(Scope::depth(), 2u);
  }
  EXPECT_EQ(Scope::current(), "encoder");
  EXPECT_EQ(Scope::depth(), 1u);
}

TEST(Scope, TwoScopesInOneBlock) {
  NANGUARD_SCOPE("a");
  NANGUARD_SCOPE("b");
  EXPECT_EQ(Scope::current(), "a.b");
}

TEST(Scope, ClosesWhenAnExceptionLeavesTheBlock) {
  try {
    NANGUARD_SCOPE("layer");
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(Scope::depth(), 0u);
}

TEST(Scope, IsPerThread) {
  NANGUARD_SCOPE("main");
  std::string seen = "unset";
  std::thread t([&] { seen = Scope::current(); });
  t.join();
  EXPECT_EQ(seen, "");
  EXPECT_EQ(Scope::current(), "main");
}

}  // namespace
}  // namespace nanguard::trace
