#include "nanguard/data/idx.h"

#include <array>
#include <climits>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>
#include <zlib.h>

#include "core/check.h"
#include "data/binary_file.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"

namespace nanguard::data {
namespace fs = std::filesystem;

namespace {

struct IdxType {
  uint8_t code;
  c10::ScalarType dtype;
  size_t itemsize;
  const char* name;
};

constexpr std::array<IdxType, 6> kTypes = {{
    {0x08, torch::kUInt8, 1, "uint8"},
    {0x09, torch::kInt8, 1, "int8"},
    {0x0B, torch::kInt16, 2, "int16"},
    {0x0C, torch::kInt32, 4, "int32"},
    {0x0D, torch::kFloat32, 4, "float32"},
    {0x0E, torch::kFloat64, 8, "float64"},
}};
constexpr const char* kTypeList =
    "0x08 uint8, 0x09 int8, 0x0b int16, 0x0c int32, 0x0d float32, 0x0e float64";
constexpr int kMaxRank = 8;

std::string where(const fs::path& path) { return fmt::format("IDX file '{}'", path.string()); }

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string text;
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? " x " : "") + std::to_string(dims[i]);
  return text;
}

// Bytes after the header, from a plain or a gzip-compressed file.
class Source {
 public:
  virtual ~Source() = default;
  // Reads up to n bytes; fewer only at the end of the data.
  virtual size_t read(void* dst, size_t n) = 0;
  // An upper bound on the bytes still to come, known without reading them.
  virtual uint64_t max_remaining() const = 0;
  // Counts the bytes still to come (bounded by the file).
  virtual uint64_t count_rest() = 0;
  // Extra words for a truncation message.
  virtual std::string truncation_note() const { return ""; }
  // Throws if the data ended early in a way the byte count cannot show.
  virtual void check_complete() const {}

  size_t read_fully(void* dst, uint64_t n) {
    auto* p = static_cast<char*>(dst);
    uint64_t total = 0;
    while (total < n) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(n - total, 1u << 30));
      const size_t got = read(p + total, want);
      total += got;
      if (got < want) break;
    }
    return static_cast<size_t>(total);
  }
};

class PlainSource : public Source {
 public:
  explicit PlainSource(const fs::path& path) : file_(path) {}
  size_t read(void* dst, size_t n) override {
    const size_t got = file_.read(dst, n);
    position_ += got;
    return got;
  }
  uint64_t max_remaining() const override {
    return file_.size() > position_ ? file_.size() - position_ : 0;
  }
  uint64_t count_rest() override { return max_remaining(); }

 private:
  detail::InputFile file_;
  uint64_t position_ = 0;
};

class GzipSource : public Source {
 public:
  GzipSource(const fs::path& path, uint64_t compressed_size)
      : path_(path), compressed_size_(compressed_size) {
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      throw IoError(fmt::format("cannot open '{}': {}", path.string(), std::strerror(errno)));
    }
    gzbuffer(file_, 1 << 18);
  }
  ~GzipSource() override { gzclose(file_); }

  size_t read(void* dst, size_t n) override {
    auto* p = static_cast<char*>(dst);
    size_t total = 0;
    while (total < n) {
      const auto want = static_cast<unsigned>(std::min<size_t>(n - total, 1u << 30));
      const int got = gzread(file_, p + total, want);
      if (got < 0) fail();
      total += static_cast<size_t>(got);
      if (static_cast<unsigned>(got) < want) {
        int code = Z_OK;
        gzerror(file_, &code);
        if (code == Z_BUF_ERROR) cut_off_ = true;
        else if (code != Z_OK) fail();
        break;
      }
    }
    return total;
  }

  // Deflate expands at most 1032:1, so a file cannot hold more than this; checking against it
  // keeps a header with absurd dims from allocating memory the file could never fill.
  uint64_t max_remaining() const override { return compressed_size_ * 1032 + (1u << 20); }

  uint64_t count_rest() override {
    char buffer[1 << 16];
    uint64_t total = 0;
    size_t got;
    while ((got = read(buffer, sizeof buffer)) > 0) total += got;
    return total;
  }

  std::string truncation_note() const override {
    return cut_off_ ? " (the gzip stream ends early)" : "";
  }

  // All the data may have arrived while the end of the stream, with its checksum, is missing.
  void check_complete() const override {
    NANGUARD_CHECK(!cut_off_, "{}: truncated: the gzip stream ends before its checksum", where(path_));
  }

 private:
  [[noreturn]] void fail() {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    if (code == Z_ERRNO) {
      throw IoError(fmt::format("cannot read '{}': {}", path_.string(), std::strerror(errno)));
    }
    throw ValueError(fmt::format("{}: corrupt gzip data: {}", where(path_), message ? message : "?"));
  }

  fs::path path_;
  uint64_t compressed_size_;
  gzFile file_ = nullptr;
  bool cut_off_ = false;
};

std::unique_ptr<Source> open_source(const fs::path& path) {
  uint64_t size = 0;
  bool gzip = false;
  {
    detail::InputFile probe(path);
    size = probe.size();
    unsigned char magic[2] = {0, 0};
    gzip = probe.read(magic, 2) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  }
  if (gzip) return std::make_unique<GzipSource>(path, size);
  return std::make_unique<PlainSource>(path);
}

}  // namespace

torch::Tensor read_idx(const fs::path& path) {
  auto source = open_source(path);

  unsigned char head[4];
  const size_t got_head = source->read_fully(head, 4);
  NANGUARD_CHECK(got_head == 4, "{}: truncated: expected a 4-byte header, found {} bytes{}", where(path),
                 got_head, source->truncation_note());
  if (head[0] != 0 || head[1] != 0) {
    const bool named_gz = path.extension() == ".gz";
    throw ValueError(fmt::format("{}: not an IDX file: expected magic bytes 00 00, found {:02x} {:02x}{}",
                                 where(path), head[0], head[1],
                                 named_gz ? " (the name ends in .gz but the content is not gzip)" : ""));
  }
  const IdxType* type = nullptr;
  for (const auto& t : kTypes) {
    if (t.code == head[2]) type = &t;
  }
  NANGUARD_CHECK(type != nullptr, "{}: unknown type code 0x{:02x} (expected one of {})", where(path), head[2],
                 kTypeList);
  const int rank = head[3];
  NANGUARD_CHECK(rank >= 1 && rank <= kMaxRank, "{}: rank {} is not supported (expected 1 to {} dimensions)",
                 where(path), rank, kMaxRank);

  unsigned char dim_bytes[4 * kMaxRank];
  const size_t want_dims = 4 * static_cast<size_t>(rank);
  const size_t got_dims = source->read_fully(dim_bytes, want_dims);
  NANGUARD_CHECK(got_dims == want_dims, "{}: truncated: expected {} bytes of dims for rank {}, found {}{}",
                 where(path), want_dims, rank, got_dims, source->truncation_note());
  std::vector<int64_t> dims(rank);
  int64_t numel = 1;
  bool overflow = false;
  for (int i = 0; i < rank; ++i) {
    const unsigned char* b = dim_bytes + 4 * i;
    dims[i] = (int64_t{b[0]} << 24) | (int64_t{b[1]} << 16) | (int64_t{b[2]} << 8) | int64_t{b[3]};
    overflow = overflow || !detail::checked_mul(numel, dims[i], &numel);
  }
  int64_t nbytes = 0;
  overflow = overflow || !detail::checked_mul(numel, static_cast<int64_t>(type->itemsize), &nbytes);
  NANGUARD_CHECK(!overflow, "{}: dims {} ({}) describe more bytes than fit in 64 bits", where(path),
                 dims_text(dims), type->name);

  const auto expected = static_cast<uint64_t>(nbytes);
  auto truncated = [&](uint64_t found) {
    return ValueError(fmt::format("{}: truncated: expected {} bytes of data, found {} (dims {}, {}){}",
                                  where(path), expected, found, dims_text(dims), type->name,
                                  source->truncation_note()));
  };
  // Compare with what the file can hold before allocating, so absurd dims cost nothing.
  if (expected > source->max_remaining()) throw truncated(source->count_rest());

  torch::Tensor tensor = torch::empty(dims, torch::TensorOptions().dtype(type->dtype));
  const size_t got = source->read_fully(tensor.data_ptr(), expected);
  if (got < expected) throw truncated(got);
  const uint64_t trailing = source->count_rest();
  NANGUARD_CHECK(trailing == 0, "{}: {} trailing bytes after the {} bytes of data that dims {} ({}) describe",
                 where(path), trailing, expected, dims_text(dims), type->name);
  source->check_complete();
  if (detail::kHostIsLittleEndian && type->itemsize > 1) {
    detail::swap_bytes(tensor.data_ptr(), numel, type->itemsize);
  }
  return tensor;
}

void write_idx(const fs::path& path, const torch::Tensor& tensor) {
  NANGUARD_CHECK(tensor.defined(), "write_idx('{}'): the tensor is undefined", path.string());
  const IdxType* type = nullptr;
  for (const auto& t : kTypes) {
    if (t.dtype == tensor.scalar_type()) type = &t;
  }
  NANGUARD_CHECK(type != nullptr, "write_idx('{}'): dtype {} has no IDX type code (supported: {})", path.string(),
                 c10::toString(tensor.scalar_type()), kTypeList);
  const int64_t rank = tensor.dim();
  NANGUARD_CHECK(rank >= 1 && rank <= kMaxRank, "write_idx('{}'): rank {} is not supported (expected 1 to {})",
                 path.string(), rank, kMaxRank);
  std::vector<unsigned char> header = {0, 0, type->code, static_cast<unsigned char>(rank)};
  for (int64_t d : tensor.sizes()) {
    NANGUARD_CHECK(d <= int64_t{UINT32_MAX}, "write_idx('{}'): dim {} does not fit in 32 bits", path.string(), d);
    const auto u = static_cast<uint32_t>(d);
    header.insert(header.end(), {static_cast<unsigned char>(u >> 24), static_cast<unsigned char>(u >> 16),
                                 static_cast<unsigned char>(u >> 8), static_cast<unsigned char>(u)});
  }
  const torch::Tensor data = tensor.detach().cpu().contiguous();
  write_file_atomic(path, [&](const fs::path& tmp) {
    detail::OutputFile out(tmp);
    out.write(header.data(), header.size());
    detail::write_items(out, data.data_ptr(), data.numel(), type->itemsize, detail::kHostIsLittleEndian);
    out.close();
  });
}

}  // namespace nanguard::data
