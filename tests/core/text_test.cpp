#include "core/text.h"

#include <gtest/gtest.h>

namespace nanguard::detail {
namespace {

TEST(Text, ExcerptEscapesAndCuts) {
  EXPECT_EQ(printable_excerpt("abc", 10), "abc");
  EXPECT_EQ(printable_excerpt(std::string_view("a\nb\x01", 4), 10), "a\\x0ab\\x01");
  EXPECT_EQ(printable_excerpt("abcdef", 3), "abc...");
}

TEST(Text, EditDistanceAndSuggestions) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(closest_name("epochz", {"epochs", "seed"}, 2), "epochs");
  EXPECT_EQ(closest_name("zzzzzz", {"epochs", "seed"}, 2), "");
  EXPECT_EQ(did_you_mean("aadm", {"adam", "sgd"}, 2), " (did you mean \"adam\"?)");
  EXPECT_EQ(did_you_mean("xyz", {"adam", "sgd"}, 1), "");
}

}  // namespace
}  // namespace nanguard::detail
