#include "nanguard/data/npy.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard::data {
namespace {

using nanguard::testing::read_bytes;
using nanguard::testing::TempDir;
using nanguard::testing::tensors_match;
using nanguard::testing::throws_with;
using nanguard::testing::write_bytes;

// A .npy file with the given header text (padded as numpy pads it) and raw data.
std::string npy_file(const std::string& dict, const std::string& data, int major = 1) {
  const size_t preamble = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((preamble + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const auto n = static_cast<uint32_t>(header.size());
  out += static_cast<char>(n & 0xff);
  out += static_cast<char>(n >> 8);
  if (major != 1) {
    out += static_cast<char>(n >> 16);
    out += static_cast<char>(n >> 24);
  }
  return out + header + data;
}

std::string f32_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), 4);
  return out;
}

void expect_parses_or_rejects(const std::filesystem::path& path, const std::string& what) {
  try {
    const torch::Tensor t = read_npy(path);
    EXPECT_TRUE(t.is_contiguous()) << what;
  } catch (const ValueError&) {
  } catch (const IoError&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": unexpected exception: " << e.what();
  }
}

TEST(Npy, RoundTripsEveryDtypeAndShape) {
  TempDir dir;
  torch::manual_seed(0);
  const std::vector<std::vector<int64_t>> shapes = {{}, {0}, {5}, {2, 3}, {2, 1, 3}, {0, 4}};
  for (auto dtype : {torch::kBool, torch::kUInt8, torch::kInt8, torch::kInt16, torch::kInt32, torch::kInt64,
                     torch::kFloat16, torch::kFloat32, torch::kFloat64}) {
    for (const auto& shape : shapes) {
      torch::Tensor t = torch::rand(shape, torch::kFloat64) * 100 - (dtype == torch::kUInt8 ? 0 : 50);
      t = dtype == torch::kBool ? (t > 0) : t.to(dtype);
      const auto path = dir / "t.npy";
      write_npy(path, t);
      const torch::Tensor back = read_npy(path);
      EXPECT_EQ(back.scalar_type(), dtype);
      EXPECT_EQ(back.sizes(), t.sizes());
      EXPECT_TRUE(torch::equal(back, t)) << c10::toString(dtype) << " " << t.sizes();
    }
  }
}

TEST(Npy, KeepsNonFiniteValuesAndLargeIntegers) {
  TempDir dir;
  const auto f = torch::tensor(std::vector<double>{1.5, std::nan(""), INFINITY, -INFINITY, -0.0});
  write_npy(dir / "f.npy", f);
  EXPECT_TRUE(tensors_match(read_npy(dir / "f.npy"), f, 0, 0));
  const auto i = torch::tensor({INT64_MIN, int64_t{0}, INT64_MAX}, torch::kInt64);
  write_npy(dir / "i.npy", i);
  EXPECT_TRUE(torch::equal(read_npy(dir / "i.npy"), i));
}

TEST(Npy, WritesTheLayoutNumpyWrites) {
  TempDir dir;
  write_npy(dir / "a.npy", torch::tensor({1.0f, 2.0f}));
  const std::string bytes = read_bytes(dir / "a.npy");
  EXPECT_EQ(bytes, npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", f32_bytes({1, 2})));
  EXPECT_EQ((bytes.size() - 8) % 64, 0u);  // data starts 64-byte aligned
  write_npy(dir / "s.npy", torch::tensor(3.0));
  EXPECT_NE(read_bytes(dir / "s.npy").find("'shape': ()"), std::string::npos);
  write_npy(dir / "b.npy", torch::zeros({2, 3}, torch::kUInt8));
  EXPECT_NE(read_bytes(dir / "b.npy").find("'descr': '|u1'"), std::string::npos);
}

TEST(Npy, ParsesHeadersWrittenInOtherStyles) {
  TempDir dir;
  const auto path = dir / "h.npy";
  const std::string data = f32_bytes({1, 2, 3, 4, 5, 6});
  const auto expected = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}).reshape({2, 3});
  for (const std::string& dict : {
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"),
           std::string("{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}"),
           std::string("{ \"descr\" :\"<f4\",'fortran_order':False,'shape':(2,3)}"),
           std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }"),
           std::string("{'descr': '<f4',\n 'fortran_order': False,\t'shape': [2, 3],}"),
       }) {
    write_bytes(path, npy_file(dict, data));
    EXPECT_TRUE(torch::equal(read_npy(path), expected)) << dict;
  }
  for (int major : {2, 3}) {
    write_bytes(path, npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", data, major));
    EXPECT_TRUE(torch::equal(read_npy(path), expected)) << "version " << major;
  }
  write_bytes(path, npy_file("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", std::string("\x00\x01\x07", 3)));
  EXPECT_TRUE(torch::equal(read_npy(path), torch::tensor({false, true, true})));
  write_bytes(path, npy_file("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", std::string("\x05\0\0\0\0\0\0\0", 8)));
  const auto scalar = read_npy(path);
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.item<int64_t>(), 5);
}

TEST(Npy, RejectsUnsupportedArrays) {
  TempDir dir;
  const auto path = dir / "u.npy";
  auto rejects = [&](const std::string& dict, const std::string& data, std::initializer_list<std::string> needles) {
    write_bytes(path, npy_file(dict, data));
    return throws_with<ValueError>([&] { read_npy(path); }, needles);
  };
  const std::string four = f32_bytes({1, 2, 3, 4});
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", four, {"u.npy", "Fortran order is unsupported"}));
  EXPECT_TRUE(rejects("{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", four, {"big-endian", "'>f4'"}));
  EXPECT_TRUE(rejects("{'descr': '<u4', 'fortran_order': False, 'shape': (4,), }", four, {"unsupported dtype '<u4'"}));
  EXPECT_TRUE(rejects("{'descr': '<U3', 'fortran_order': False, 'shape': (4,), }", four, {"unsupported dtype"}));
  EXPECT_TRUE(rejects("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }", four, {"structured"}));
}

TEST(Npy, RejectsGarbledHeaders) {
  TempDir dir;
  const auto path = dir / "g.npy";
  auto rejects = [&](const std::string& dict, std::initializer_list<std::string> needles) {
    write_bytes(path, npy_file(dict, f32_bytes({1, 2})));
    return throws_with<ValueError>([&] { read_npy(path); }, needles);
  };
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': False}", {"g.npy", "lacks 'shape'"}));
  EXPECT_TRUE(rejects("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", {"'descr' twice"}));
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", {"unexpected header key 'x'"}));
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': Fals, 'shape': (2,)}", {"garbled header", "True or False"}));
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", {"non-negative"}));
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", {"garbled header"}));
  EXPECT_TRUE(rejects("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", {"garbled header"}));
  EXPECT_TRUE(rejects("('descr', '<f4')", {"garbled header", "'{'"}));
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", {"only padding"}));
  EXPECT_TRUE(rejects("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", {"64 bits"}));
}

TEST(Npy, RejectsBadPreambleAndLengths) {
  TempDir dir;
  const auto path = dir / "p.npy";
  auto rejects = [&](const std::string& bytes, std::initializer_list<std::string> needles) {
    write_bytes(path, bytes);
    return throws_with<ValueError>([&] { read_npy(path); }, needles);
  };
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
  const std::string good = npy_file(dict, f32_bytes({1, 2, 3}));
  EXPECT_TRUE(rejects("", {"p.npy", "not an NPY file"}));
  EXPECT_TRUE(rejects("PK\x03\x04 zip archive", {"not an NPY file", "PK"}));
  std::string version = good;
  version[6] = 4;
  EXPECT_TRUE(rejects(version, {"version 4.0"}));
  EXPECT_TRUE(rejects(good.substr(0, 9), {"truncated"}));
  EXPECT_TRUE(rejects(good.substr(0, 40), {"truncated", "header"}));
  EXPECT_TRUE(rejects(good.substr(0, good.size() - 1), {"truncated: expected 12 bytes of data, found 11"}));
  EXPECT_TRUE(rejects(good + "ab", {"2 trailing bytes"}));
  std::string huge_header = good.substr(0, 8) + std::string("\xff\xff\xff\x7f", 4);
  huge_header[6] = 2;
  EXPECT_TRUE(rejects(huge_header, {"header length", "limit"}));
  EXPECT_TRUE(rejects(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967295, 4294967295, 4294967295), }", ""),
                      {"64 bits"}));
  // Fits in 64 bits but would need 1.7 PB: refused before any allocation.
  EXPECT_TRUE(rejects(npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (60000, 60000, 60000), }", "xyz"),
                      {"truncated: expected 1728000000000000 bytes of data, found 3"}));
}

TEST(Npy, IoErrorsNameTheFile) {
  TempDir dir;
  EXPECT_TRUE(throws_with<IoError>([&] { read_npy(dir / "missing.npy"); }, {"missing.npy"}));
  EXPECT_THROW(read_npy(dir.path()), IoError);
}

TEST(Npy, WriteRejectsUnsupportedDtypes) {
  TempDir dir;
  EXPECT_TRUE(throws_with<ValueError>([&] { write_npy(dir / "c.npy", torch::zeros({2}, torch::kBFloat16)); },
                                      {"BFloat16", "not supported"}));
  EXPECT_THROW(write_npy(dir / "c.npy", torch::Tensor()), ValueError);
  EXPECT_FALSE(std::filesystem::exists(dir / "c.npy"));
}

TEST(Npy, FuzzedFilesParseOrRaiseInputErrors) {
  TempDir dir;
  write_npy(dir / "good.npy", torch::arange(12, torch::kInt64).reshape({3, 4}));
  const std::string good = read_bytes(dir / "good.npy");
  const auto path = dir / "fuzz.npy";
  for (size_t n = 0; n < good.size(); ++n) {
    write_bytes(path, good.substr(0, n));
    EXPECT_THROW(read_npy(path), ValueError) << "prefix of " << n << " bytes";
  }
  std::mt19937 rng(42);
  std::string alphabet = "{}()[],:'\" 0123456789-LTrueFalsdcpf<>|iu\n";
  alphabet += '\0';
  alphabet += '\xff';
  for (int i = 0; i < 500; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly the header text: that is where a parser can go wrong.
      const size_t at = (rng() % 4) ? rng() % 128 : rng() % bytes.size();
      bytes[at] = (rng() % 2) ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng());
    }
    write_bytes(path, bytes);
    expect_parses_or_rejects(path, "mutation " + std::to_string(i));
  }
}

}  // namespace
}  // namespace nanguard::data
