// Reading and writing IDX files, the format of MNIST and Fashion-MNIST.
#pragma once

#include <filesystem>

#include <torch/types.h>

namespace nanguard::data {

// Reads an IDX file (gzip-compressed or not) into a contiguous CPU tensor with the file's
// dims and dtype: 0x08 -> kUInt8, 0x09 -> kChar, 0x0B -> kShort, 0x0C -> kInt,
// 0x0D -> kFloat, 0x0E -> kDouble. Throws ValueError for a malformed file (bad magic or type
// code, rank outside 1..8, data shorter or longer than the dims say) and IoError when the file
// cannot be read.
torch::Tensor read_idx(const std::filesystem::path& path);

// Writes tensor (rank 1..8, dtype one of those above, every dim < 2^32) as an uncompressed
// IDX file, atomically. Throws ValueError for an unsupported tensor and IoError on failure.
void write_idx(const std::filesystem::path& path, const torch::Tensor& tensor);

}  // namespace nanguard::data
