// Reading and writing NumPy .npy files (format versions 1.0, 2.0 and 3.0).
#pragma once

#include <filesystem>

#include <torch/types.h>

namespace nanguard::data {

// Reads a C-ordered, little-endian .npy array into a contiguous CPU tensor. Supported dtypes:
// '|b1' -> kBool, '|u1' -> kUInt8, '|i1' -> kChar, '<i2' -> kShort, '<i4' -> kInt,
// '<i8' -> kLong, '<f2' -> kHalf, '<f4' -> kFloat, '<f8' -> kDouble. Shape () gives a 0-dim
// tensor. Throws ValueError for a malformed or unsupported file (Fortran order, big-endian or
// structured dtypes, data shorter or longer than the shape says) and IoError when the file
// cannot be read.
torch::Tensor read_npy(const std::filesystem::path& path);

// Writes tensor (any shape, one of the dtypes above) as a .npy file, atomically. Throws
// ValueError for an unsupported dtype and IoError on failure.
void write_npy(const std::filesystem::path& path, const torch::Tensor& tensor);

}  // namespace nanguard::data
