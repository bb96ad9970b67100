#include "nanguard/data/npy.h"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "core/check.h"
#include "core/text.h"
#include "data/binary_file.h"
#include "nanguard/core/atomic_file.h"
#include "nanguard/core/error.h"

namespace nanguard::data {
namespace fs = std::filesystem;

namespace {

struct NpyType {
  char kind;
  size_t itemsize;
  c10::ScalarType dtype;
};

constexpr std::array<NpyType, 9> kTypes = {{
    {'b', 1, torch::kBool},
    {'u', 1, torch::kUInt8},
    {'i', 1, torch::kInt8},
    {'i', 2, torch::kInt16},
    {'i', 4, torch::kInt32},
    {'i', 8, torch::kInt64},
    {'f', 2, torch::kFloat16},
    {'f', 4, torch::kFloat32},
    {'f', 8, torch::kFloat64},
}};
constexpr const char* kTypeList = "|b1, |u1, |i1, <i2, <i4, <i8, <f2, <f4, <f8";
constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
// numpy itself refuses headers over 10000 bytes by default; this is generous and still bounded.
constexpr uint64_t kMaxHeaderSize = 1 << 20;
constexpr size_t kMaxRank = 64;

std::string where(const fs::path& path) { return fmt::format("NPY file '{}'", path.string()); }

// Printable excerpt of untrusted text for an error message.
std::string excerpt(std::string_view text, size_t limit = 60) {
  return nanguard::detail::printable_excerpt(text, limit);
}

struct Header {
  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<std::vector<int64_t>> shape;
};

// Parses the header, a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Every loop advances through the text, so it ends within its length.
class HeaderParser {
 public:
  HeaderParser(std::string_view text, const fs::path& path) : s_(text), path_(path) {}

  Header parse() {
    Header header;
    skip_space();
    expect('{', "'{' opening the header dict");
    skip_space();
    while (!at('}')) {
      const std::string key = parse_string("a quoted key");
      skip_space();
      expect(':', "':' after a key");
      skip_space();
      if (key == "descr") {
        NANGUARD_CHECK(!header.descr, "{}: header has key 'descr' twice", where(path_));
        if (at('[')) {
          throw ValueError(fmt::format("{}: structured dtypes are unsupported (descr is a list)", where(path_)));
        }
        header.descr = parse_string("a quoted dtype string for 'descr'");
      } else if (key == "fortran_order") {
        NANGUARD_CHECK(!header.fortran_order, "{}: header has key 'fortran_order' twice", where(path_));
        header.fortran_order = parse_bool();
      } else if (key == "shape") {
        NANGUARD_CHECK(!header.shape, "{}: header has key 'shape' twice", where(path_));
        header.shape = parse_shape();
      } else {
        throw ValueError(fmt::format("{}: unexpected header key '{}' (expected 'descr', 'fortran_order', 'shape')",
                                     where(path_), excerpt(key)));
      }
      skip_space();
      if (at(',')) {
        ++i_;
        skip_space();
      } else if (!at('}')) {
        fail("',' or '}' after a value");
      }
    }
    ++i_;
    skip_space();
    if (i_ != s_.size()) fail("only padding after the header dict");
    NANGUARD_CHECK(header.descr && header.fortran_order && header.shape,
                   "{}: header lacks {} (found '{}')", where(path_),
                   !header.descr ? "'descr'" : !header.fortran_order ? "'fortran_order'" : "'shape'",
                   excerpt(s_, 120));
    return header;
  }

 private:
  bool at(char c) const { return i_ < s_.size() && s_[i_] == c; }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c, const char* what) {
    if (!at(c)) fail(what);
    ++i_;
  }
  [[noreturn]] void fail(const char* expected) const {
    const std::string found = i_ < s_.size() ? "'" + excerpt(s_.substr(i_), 20) + "'" : "the end of the header";
    throw ValueError(fmt::format("{}: garbled header at offset {}: expected {}, found {} (header '{}')",
                                 where(path_), i_, expected, found, excerpt(s_, 120)));
  }

  std::string parse_string(const char* what) {
    if (!at('\'') && !at('"')) fail(what);
    const char quote = s_[i_++];
    std::string out;
    while (i_ < s_.size() && s_[i_] != quote) {
      if (s_[i_] == '\\' && i_ + 1 < s_.size()) ++i_;
      out += s_[i_++];
    }
    if (i_ >= s_.size()) fail("a closing quote");
    ++i_;
    return out;
  }

  bool parse_bool() {
    if (s_.substr(i_, 4) == "True") {
      i_ += 4;
      return true;
    }
    if (s_.substr(i_, 5) == "False") {
      i_ += 5;
      return false;
    }
    fail("True or False for 'fortran_order'");
  }

  int64_t parse_int() {
    if (at('-')) fail("a non-negative dimension");
    if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9') fail("a dimension (an integer)");
    int64_t value = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      if (!detail::checked_mul(value, 10, &value) || __builtin_add_overflow(value, s_[i_] - '0', &value)) {
        fail("a dimension that fits in 64 bits");
      }
      ++i_;
    }
    if (at('L')) ++i_;  // Python 2 long literal, written by old numpy versions.
    return value;
  }

  std::vector<int64_t> parse_shape() {
    char close;
    if (at('(')) close = ')';
    else if (at('[')) close = ']';
    else fail("a tuple such as (3, 4) for 'shape'");
    ++i_;
    std::vector<int64_t> shape;
    skip_space();
    while (!at(close)) {
      NANGUARD_CHECK(shape.size() < kMaxRank, "{}: shape has more than {} dimensions", where(path_), kMaxRank);
      shape.push_back(parse_int());
      skip_space();
      if (at(',')) {
        ++i_;
        skip_space();
      } else if (!at(close)) {
        fail("',' or the end of the shape tuple");
      }
    }
    ++i_;
    return shape;
  }

  std::string_view s_;
  const fs::path& path_;
  size_t i_ = 0;
};

const NpyType& parse_descr(const std::string& descr, const fs::path& path) {
  std::string_view d = descr;
  char order = '=';
  if (!d.empty() && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=')) {
    order = d[0];
    d.remove_prefix(1);
  }
  const NpyType* found = nullptr;
  if (d.size() == 2 && d[1] >= '1' && d[1] <= '9') {
    for (const auto& t : kTypes) {
      if (t.kind == d[0] && t.itemsize == static_cast<size_t>(d[1] - '0')) found = &t;
    }
  }
  NANGUARD_CHECK(found != nullptr, "{}: unsupported dtype '{}' (supported: {})", where(path), excerpt(descr),
                 kTypeList);
  const bool big = order == '>' || (order == '=' && !detail::kHostIsLittleEndian);
  NANGUARD_CHECK(found->itemsize == 1 || !big,
                 "{}: big-endian dtype '{}' is unsupported; save the array little-endian "
                 "(e.g. arr.astype('<{}{}'))",
                 where(path), excerpt(descr), found->kind, found->itemsize);
  return *found;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace

torch::Tensor read_npy(const fs::path& path) {
  detail::InputFile file(path);
  const uint64_t file_size = file.size();

  unsigned char preamble[12];
  const size_t got = file.read(preamble, 8);
  const size_t magic_got = std::min(got, kMagicSize);
  NANGUARD_CHECK(got > 0 && std::memcmp(preamble, kMagic, magic_got) == 0,
                 "{}: not an NPY file: expected magic bytes 93 4e 55 4d 50 59 (\\x93NUMPY), found '{}'", where(path),
                 excerpt(std::string_view(reinterpret_cast<const char*>(preamble), magic_got)));
  NANGUARD_CHECK(got == 8, "{}: truncated: expected an 8-byte preamble, found {} bytes", where(path), got);
  const int major = preamble[6], minor = preamble[7];
  NANGUARD_CHECK(major >= 1 && major <= 3 && minor == 0,
                 "{}: unsupported format version {}.{} (expected 1.0, 2.0 or 3.0)", where(path), major, minor);
  uint64_t header_size = 0;
  size_t preamble_size = 0;
  if (major == 1) {
    NANGUARD_CHECK(file.read(preamble + 8, 2) == 2, "{}: truncated: the header length is cut off", where(path));
    header_size = preamble[8] | (uint64_t{preamble[9]} << 8);
    preamble_size = 10;
  } else {
    NANGUARD_CHECK(file.read(preamble + 8, 4) == 4, "{}: truncated: the header length is cut off", where(path));
    header_size = preamble[8] | (uint64_t{preamble[9]} << 8) | (uint64_t{preamble[10]} << 16) |
                  (uint64_t{preamble[11]} << 24);
    preamble_size = 12;
  }
  NANGUARD_CHECK(header_size <= kMaxHeaderSize, "{}: header length {} exceeds the limit of {} bytes", where(path),
                 header_size, kMaxHeaderSize);
  NANGUARD_CHECK(preamble_size + header_size <= file_size,
                 "{}: truncated: expected a {}-byte header, found {} bytes after the preamble", where(path),
                 header_size, file_size - preamble_size);
  std::string header_text(header_size, '\0');
  NANGUARD_CHECK(file.read(header_text.data(), header_size) == header_size, "{}: truncated header", where(path));

  const Header header = HeaderParser(header_text, path).parse();
  const NpyType& type = parse_descr(*header.descr, path);
  NANGUARD_CHECK(!*header.fortran_order,
                 "{}: Fortran order is unsupported (save a C-ordered array, e.g. np.ascontiguousarray(arr))",
                 where(path));
  const std::vector<int64_t>& shape = *header.shape;
  int64_t numel = 1;
  bool overflow = false;
  for (int64_t d : shape) overflow = overflow || !detail::checked_mul(numel, d, &numel);
  int64_t nbytes = 0;
  overflow = overflow || !detail::checked_mul(numel, static_cast<int64_t>(type.itemsize), &nbytes);
  NANGUARD_CHECK(!overflow, "{}: shape {} describes more bytes than fit in 64 bits", where(path), shape_text(shape));

  // Compare with the file size before allocating, so absurd shapes cost nothing.
  const uint64_t expected = static_cast<uint64_t>(nbytes);
  const uint64_t available = file_size - preamble_size - header_size;
  NANGUARD_CHECK(available >= expected, "{}: truncated: expected {} bytes of data, found {} (shape {}, dtype '{}')",
                 where(path), expected, available, shape_text(shape), *header.descr);
  NANGUARD_CHECK(available == expected,
                 "{}: {} trailing bytes after the {} bytes of data that shape {} (dtype '{}') describes", where(path),
                 available - expected, expected, shape_text(shape), *header.descr);

  torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(type.dtype));
  if (expected > 0) {
    const size_t got_data = file.read(tensor.data_ptr(), expected);
    NANGUARD_CHECK(got_data == expected, "{}: truncated: expected {} bytes of data, found {}", where(path),
                   expected, got_data);
  }
  if (!detail::kHostIsLittleEndian && type.itemsize > 1) {
    detail::swap_bytes(tensor.data_ptr(), numel, type.itemsize);
  }
  if (type.dtype == torch::kBool) {
    // numpy reads any non-zero byte as True; a bool tensor must hold only 0 or 1.
    auto* p = static_cast<unsigned char*>(tensor.data_ptr());
    for (int64_t i = 0; i < numel; ++i) p[i] = p[i] != 0;
  }
  return tensor;
}

void write_npy(const fs::path& path, const torch::Tensor& tensor) {
  NANGUARD_CHECK(tensor.defined(), "write_npy('{}'): the tensor is undefined", path.string());
  const NpyType* type = nullptr;
  for (const auto& t : kTypes) {
    if (t.dtype == tensor.scalar_type()) type = &t;
  }
  NANGUARD_CHECK(type != nullptr, "write_npy('{}'): dtype {} is not supported (supported: {})", path.string(),
                 c10::toString(tensor.scalar_type()), kTypeList);
  const char order = type->itemsize == 1 ? '|' : (detail::kHostIsLittleEndian ? '<' : '>');
  const std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
  std::string header = fmt::format("{{'descr': '{}{}{}', 'fortran_order': False, 'shape': {}, }}", order, type->kind,
                                   type->itemsize, shape_text(shape));
  // numpy pads the header with spaces and a newline so the data starts 64-byte aligned.
  size_t preamble_size = 10;
  if (header.size() + 1 + 63 + preamble_size > 65535) preamble_size = 12;
  const size_t unpadded = preamble_size + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string preamble(kMagic, kMagicSize);
  preamble += static_cast<char>(preamble_size == 10 ? 1 : 2);
  preamble += '\0';
  const auto n = static_cast<uint32_t>(header.size());
  preamble += static_cast<char>(n & 0xff);
  preamble += static_cast<char>((n >> 8) & 0xff);
  if (preamble_size == 12) {
    preamble += static_cast<char>((n >> 16) & 0xff);
    preamble += static_cast<char>((n >> 24) & 0xff);
  }
  const torch::Tensor data = tensor.detach().cpu().contiguous();
  write_file_atomic(path, [&](const fs::path& tmp) {
    detail::OutputFile out(tmp);
    out.write(preamble.data(), preamble.size());
    out.write(header.data(), header.size());
    detail::write_items(out, data.data_ptr(), data.numel(), type->itemsize, false);
    out.close();
  });
}

}  // namespace nanguard::data
