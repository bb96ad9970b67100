#include "nanguard/data/idx.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

using nanguard::testing::read_bytes;
using nanguard::testing::TempDir;
using nanguard::testing::tensors_match;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

// An IDX header: magic, type code, rank and big-endian dims.
std::string idx_header(unsigned char type, const std::vector<uint32_t>& dims) {
  std::string h = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) h += be32(d);
  return h;
}

void write_gzip(const std::filesystem::path& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

// Reading must either succeed or throw one of nanguard's input errors.
void expect_parses_or_rejects(const std::filesystem::path& path, const std::string& what) {
  try {
    const torch::Tensor t = read_idx(path);
    EXPECT_TRUE(t.is_contiguous()) << what;
    EXPECT_GE(t.dim(), 1) << what;
  } catch (const ValueError&) {
  } catch (const IoError&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": unexpected exception: " << e.what();
  }
}

TEST(Idx, RoundTripsEveryDtypeAndRank) {
  TempDir dir;
  torch::manual_seed(0);
  const std::vector<std::vector<int64_t>> shapes = {{7}, {3, 4}, {2, 3, 4}, {1, 2, 1, 3}, {2, 1, 1, 1, 1, 1, 1, 2}};
  for (auto dtype : {torch::kUInt8, torch::kInt8, torch::kInt16, torch::kInt32, torch::kFloat32, torch::kFloat64}) {
    for (const auto& shape : shapes) {
      torch::Tensor t = (torch::rand(shape, torch::kFloat64) * 200 - 100);
      if (dtype == torch::kUInt8) t = t.abs();
      t = t.to(dtype);
      const auto path = dir / "t.idx";
      write_idx(path, t);
      const torch::Tensor back = read_idx(path);
      EXPECT_EQ(back.scalar_type(), dtype);
      EXPECT_TRUE(back.is_contiguous());
      EXPECT_TRUE(torch::equal(back, t)) << c10::toString(dtype) << " " << t.sizes();
    }
  }
}

TEST(Idx, KeepsNonFiniteFloats) {
  TempDir dir;
  const auto t = torch::tensor(std::vector<double>{1.5, std::nan(""), INFINITY, -INFINITY, -0.0, 1e-40}).to(torch::kFloat32);
  write_idx(dir / "f.idx", t);
  EXPECT_TRUE(tensors_match(read_idx(dir / "f.idx"), t, 0, 0));
}

TEST(Idx, WritesBigEndianBytes) {
  TempDir dir;
  write_idx(dir / "s.idx", torch::tensor({0x0102, -2}, torch::kInt16));
  EXPECT_EQ(read_bytes(dir / "s.idx"), idx_header(0x0B, {2}) + std::string("\x01\x02\xff\xfe", 4));
  write_idx(dir / "f.idx", torch::tensor({1.0f}, torch::kFloat32));
  EXPECT_EQ(read_bytes(dir / "f.idx"), idx_header(0x0D, {1}) + std::string("\x3f\x80\x00\x00", 4));
}

TEST(Idx, ReadsHandWrittenMnistStyleFiles) {
  TempDir dir;
  std::string images = idx_header(0x08, {2, 2, 3});
  for (int i = 0; i < 12; ++i) images += static_cast<char>(i * 20);
  write_bytes(dir / "images", images);
  const auto t = read_idx(dir / "images");
  EXPECT_EQ(t.scalar_type(), torch::kUInt8);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 2, 3}));
  EXPECT_EQ(t[1][1][2].item<int>(), 220);

  write_bytes(dir / "labels", idx_header(0x0C, {2}) + be32(7) + be32(0xFFFFFFFF));
  EXPECT_TRUE(torch::equal(read_idx(dir / "labels"), torch::tensor({7, -1}, torch::kInt32)));
  write_bytes(dir / "d", idx_header(0x0E, {1}) + std::string("\xc0\x00\x00\x00\x00\x00\x00\x00", 8));
  EXPECT_EQ(read_idx(dir / "d").item<double>(), -2.0);
}

TEST(Idx, ReadsZeroSizedDims) {
  TempDir dir;
  write_bytes(dir / "e.idx", idx_header(0x08, {0, 28}));
  EXPECT_EQ(read_idx(dir / "e.idx").sizes(), (std::vector<int64_t>{0, 28}));
}

TEST(Idx, ReadsGzipFiles) {
  TempDir dir;
  const auto t = torch::arange(60, torch::kFloat32).reshape({3, 4, 5}) / 7;
  write_idx(dir / "plain.idx", t);
  write_gzip(dir / "t.idx.gz", read_bytes(dir / "plain.idx"));
  EXPECT_TRUE(torch::equal(read_idx(dir / "t.idx.gz"), t));
  // Detected by content, not by name.
  write_gzip(dir / "noext", read_bytes(dir / "plain.idx"));
  EXPECT_TRUE(torch::equal(read_idx(dir / "noext"), t));
}

TEST(Idx, RejectsBadGzipFiles) {
  TempDir dir;
  const std::string plain = idx_header(0x08, {100}) + std::string(100, '\x05');
  write_gzip(dir / "ok.gz", plain);
  const std::string gz = read_bytes(dir / "ok.gz");
  write_bytes(dir / "cut.gz", gz.substr(0, gz.size() / 2));
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(dir / "cut.gz"); }, {"cut.gz", "truncated"}));

  write_gzip(dir / "short.gz", plain.substr(0, plain.size() - 10));
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(dir / "short.gz"); },
                                      {"short.gz", "truncated: expected 100 bytes of data, found 90"}));
  write_gzip(dir / "long.gz", plain + "xyz");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(dir / "long.gz"); }, {"long.gz", "3 trailing bytes"}));

  std::string corrupt = gz;
  corrupt[corrupt.size() - 6] ^= 0x55;  // inside the CRC-32 trailer
  write_bytes(dir / "crc.gz", corrupt);
  EXPECT_THROW(read_idx(dir / "crc.gz"), ValueError);

  write_bytes(dir / "fake.gz", "plain text, not gzip");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(dir / "fake.gz"); }, {"fake.gz", "not gzip"}));
}

TEST(Idx, RejectsBadHeaders) {
  TempDir dir;
  const auto path = dir / "bad.idx";
  auto rejects = [&](const std::string& bytes, std::initializer_list<std::string> needles) {
    write_bytes(path, bytes);
    return throws_with<ValueError>([&] { read_idx(path); }, needles);
  };
  EXPECT_TRUE(rejects("", {"bad.idx", "truncated", "4-byte header", "found 0"}));
  EXPECT_TRUE(rejects(std::string("\x00\x00\x08", 3), {"truncated", "found 3"}));
  EXPECT_TRUE(rejects(std::string("\x01\x00\x08\x01", 4) + be32(1) + "x", {"bad.idx", "magic", "found 01 00"}));
  EXPECT_TRUE(rejects(idx_header(0x0A, {1}) + "x", {"bad.idx", "type code 0x0a", "0x08 uint8"}));
  EXPECT_TRUE(rejects(idx_header(0x08, {}), {"rank 0", "1 to 8"}));
  EXPECT_TRUE(rejects(std::string("\x00\x00\x08\x09", 4) + std::string(36, '\x00'), {"rank 9"}));
  EXPECT_TRUE(rejects(idx_header(0x08, {2, 3}).substr(0, 9), {"truncated", "expected 8 bytes of dims", "found 5"}));
}

TEST(Idx, RejectsWrongDataLength) {
  TempDir dir;
  const auto path = dir / "len.idx";
  write_bytes(path, idx_header(0x0C, {2, 5}) + std::string(37, 'a'));
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(path); },
                                      {"len.idx", "truncated: expected 40 bytes of data, found 37", "2 x 5"}));
  write_bytes(path, idx_header(0x0C, {2, 5}) + std::string(43, 'a'));
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(path); }, {"len.idx", "3 trailing bytes", "40 bytes"}));
}

TEST(Idx, HugeDimsFailWithoutAllocating) {
  TempDir dir;
  const auto path = dir / "huge.idx";
  write_bytes(path, idx_header(0x0E, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}));
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(path); }, {"huge.idx", "64 bits"}));
  // Fits in 64 bits but would need 216 TB: must be refused before any allocation.
  write_bytes(path, idx_header(0x08, {60000, 60000, 60000}) + "abc");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(path); },
                                      {"truncated: expected 216000000000000 bytes of data, found 3"}));
  write_gzip(dir / "huge.gz", idx_header(0x0E, {60000, 60000, 60000}) + "abc");
  EXPECT_TRUE(throws_with<ValueError>([&] { read_idx(dir / "huge.gz"); },
                                      {"truncated: expected 1728000000000000 bytes of data, found 3"}));
}

TEST(Idx, IoErrorsNameTheFile) {
  TempDir dir;
  EXPECT_TRUE(throws_with<IoError>([&] { read_idx(dir / "missing.idx"); }, {"missing.idx"}));
  EXPECT_TRUE(throws_with<IoError>([&] { read_idx(dir.path()); }, {dir.path().string()}));
  write_bytes(dir / "file", "x");
  EXPECT_THROW(write_idx(dir / "file" / "sub.idx", torch::zeros({2})), IoError);
}

TEST(Idx, WriteRejectsUnsupportedTensors) {
  TempDir dir;
  EXPECT_TRUE(throws_with<ValueError>([&] { write_idx(dir / "a", torch::zeros({2}, torch::kInt64)); },
                                      {"Long", "IDX"}));
  EXPECT_TRUE(throws_with<ValueError>([&] { write_idx(dir / "a", torch::tensor(1.0f)); }, {"rank 0"}));
  EXPECT_THROW(write_idx(dir / "a", torch::Tensor()), ValueError);
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
}

TEST(Idx, WritesNonContiguousTensors) {
  TempDir dir;
  const auto t = torch::arange(12, torch::kInt32).reshape({3, 4}).t();
  write_idx(dir / "t.idx", t);
  EXPECT_TRUE(torch::equal(read_idx(dir / "t.idx"), t));
}

TEST(Idx, FuzzedFilesParseOrRaiseInputErrors) {
  TempDir dir;
  write_idx(dir / "good.idx", torch::arange(24, torch::kFloat32).reshape({2, 3, 4}));
  const std::string good = read_bytes(dir / "good.idx");
  const auto path = dir / "fuzz.idx";
  // Every proper prefix of a valid file is malformed.
  for (size_t n = 0; n < good.size(); ++n) {
    write_bytes(path, good.substr(0, n));
    EXPECT_THROW(read_idx(path), ValueError) << "prefix of " << n << " bytes";
  }
  std::mt19937 rng(1234);
  for (int i = 0; i < 400; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int f = 0; f < flips; ++f) {
      // Favour the header, where a flip changes the meaning of the whole file.
      const size_t at = (rng() % 2) ? rng() % 16 : rng() % bytes.size();
      bytes[at] = static_cast<char>(rng());
    }
    write_bytes(path, bytes);
    expect_parses_or_rejects(path, "mutation " + std::to_string(i));
  }
  write_gzip(dir / "good.gz", good);
  const std::string gz = read_bytes(dir / "good.gz");
  for (size_t n = 0; n < gz.size(); ++n) {
    write_bytes(path, gz.substr(0, n));
    EXPECT_THROW(read_idx(path), ValueError) << "gzip prefix of " << n << " bytes";
  }
  for (int i = 0; i < 200; ++i) {
    std::string bytes = gz;
    bytes[2 + rng() % (bytes.size() - 2)] = static_cast<char>(rng());
    write_bytes(path, bytes);
    expect_parses_or_rejects(path, "gzip mutation " + std::to_string(i));
  }
}

}  // namespace
}  // namespace nanguard::data
