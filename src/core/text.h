// Private text helpers for error messages: printable excerpts of untrusted input and
// "did you mean" suggestions for misspelt names.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace nanguard::detail {

// At most `limit` characters of text, non-printable bytes as \xNN, "..." when cut.
std::string printable_excerpt(std::string_view text, size_t limit);

// Levenshtein distance (insertions, deletions, substitutions).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate closest to name within max_distance edits, "" when none is.
std::string closest_name(std::string_view name, const std::vector<std::string>& candidates, size_t max_distance);

// " (did you mean \"x\"?)" for the closest candidate within max_distance edits, else "".
std::string did_you_mean(std::string_view name, const std::vector<std::string>& candidates, size_t max_distance);

}  // namespace nanguard::detail
