// Atomic file writes: the content goes to a temporary file beside the target, is flushed to
// disk, and only then renamed over the target. A failed write leaves the previous file intact.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

namespace nanguard {

// Calls write(tmp_path) to produce the file, then renames tmp_path to path. If write throws
// or the rename fails, the temporary file is removed and path is untouched. Throws IoError.
void write_file_atomic(const std::filesystem::path& path,
                       const std::function<void(const std::filesystem::path& tmp_path)>& write);

// Writes text to path atomically.
void write_text_atomic(const std::filesystem::path& path, const std::string& text);

// Reads a whole file; throws IoError naming the file if it cannot be read.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace nanguard
