// Private helpers shared by the binary readers and writers (IDX, NPY): checked file access,
// byte order and overflow-safe size arithmetic.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "nanguard/core/error.h"

namespace nanguard::data::detail {

constexpr bool kHostIsLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

// Reverses the byte order of count items of itemsize bytes each (itemsize 1, 2, 4 or 8).
inline void swap_bytes(void* data, int64_t count, size_t itemsize) {
  auto* p = static_cast<unsigned char*>(data);
  for (int64_t i = 0; i < count; ++i, p += itemsize) {
    if (itemsize == 2) {
      uint16_t v;
      std::memcpy(&v, p, 2);
      v = __builtin_bswap16(v);
      std::memcpy(p, &v, 2);
    } else if (itemsize == 4) {
      uint32_t v;
      std::memcpy(&v, p, 4);
      v = __builtin_bswap32(v);
      std::memcpy(p, &v, 4);
    } else if (itemsize == 8) {
      uint64_t v;
      std::memcpy(&v, p, 8);
      v = __builtin_bswap64(v);
      std::memcpy(p, &v, 8);
    }
  }
}

// a * b, or false when the product does not fit in int64.
inline bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// A file opened for binary reading; every failure is an IoError naming the file.
class InputFile {
 public:
  explicit InputFile(const std::filesystem::path& path) : path_(path) {
    file_ = std::fopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      throw IoError(fmt::format("cannot open '{}': {}", path.string(), std::strerror(errno)));
    }
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      std::fclose(file_);
      throw IoError(fmt::format("cannot read '{}': it is a directory", path.string()));
    }
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) {
      std::fclose(file_);
      throw IoError(fmt::format("cannot get the size of '{}': {}", path.string(), ec.message()));
    }
    size_ = static_cast<uint64_t>(size);
  }
  ~InputFile() {
    if (file_ != nullptr) std::fclose(file_);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  uint64_t size() const { return size_; }

  // Reads up to n bytes; fewer only at the end of the file.
  size_t read(void* dst, size_t n) {
    const size_t got = std::fread(dst, 1, n, file_);
    if (got < n && std::ferror(file_)) {
      throw IoError(fmt::format("cannot read '{}': {}", path_.string(), std::strerror(errno)));
    }
    return got;
  }

  // Counts the bytes left until the end of the file (bounded by the file itself).
  uint64_t count_rest() {
    char buffer[1 << 16];
    uint64_t total = 0;
    size_t got;
    while ((got = read(buffer, sizeof buffer)) > 0) total += got;
    return total;
  }

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
  uint64_t size_ = 0;
};

// A file opened for binary writing; close() reports a failed flush (e.g. a full disk).
class OutputFile {
 public:
  explicit OutputFile(const std::filesystem::path& path) : path_(path) {
    file_ = std::fopen(path.c_str(), "wb");
    if (file_ == nullptr) {
      throw IoError(fmt::format("cannot open '{}' for writing: {}", path.string(), std::strerror(errno)));
    }
  }
  ~OutputFile() {
    if (file_ != nullptr) std::fclose(file_);
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, file_) != n) {
      throw IoError(fmt::format("cannot write '{}': {}", path_.string(), std::strerror(errno)));
    }
  }

  void close() {
    std::FILE* f = file_;
    file_ = nullptr;
    if (std::fclose(f) != 0) {
      throw IoError(fmt::format("cannot write '{}': {}", path_.string(), std::strerror(errno)));
    }
  }

 private:
  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

// Writes count items of itemsize bytes from data, reversing each item's bytes when
// swap is true; large arrays go through a bounded scratch buffer.
inline void write_items(OutputFile& out, const void* data, int64_t count, size_t itemsize, bool swap) {
  const auto* p = static_cast<const unsigned char*>(data);
  const uint64_t total = static_cast<uint64_t>(count) * itemsize;
  if (!swap || itemsize == 1) {
    out.write(p, total);
    return;
  }
  constexpr size_t kChunk = 1 << 20;
  std::string scratch;
  for (uint64_t offset = 0; offset < total; offset += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, total - offset));
    scratch.assign(reinterpret_cast<const char*>(p + offset), n);
    swap_bytes(scratch.data(), static_cast<int64_t>(n / itemsize), itemsize);
    out.write(scratch.data(), n);
  }
}

}  // namespace nanguard::data::detail
