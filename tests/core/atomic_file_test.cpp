#include "nanguard/core/atomic_file.h"

#include <gtest/gtest.h>

#include "nanguard/core/error.h"
#include "support/test_support.h"

namespace nanguard {
namespace {

using testing::TempDir;

TEST(AtomicFile, WritesAndReplaces) {
  TempDir dir;
  auto path = dir / "a.txt";
  write_text_atomic(path, "first");
  EXPECT_EQ(read_text_file(path), "first");
  write_text_atomic(path, "second");
  EXPECT_EQ(read_text_file(path), "second");
}

TEST(AtomicFile, FailedWriteLeavesPreviousFileIntact) {
  TempDir dir;
  auto path = dir / "weights.pt";
  write_text_atomic(path, "good");
  EXPECT_THROW(write_file_atomic(path,
                                 [](const std::filesystem::path& tmp) {
                                   testing::write_bytes(tmp, "half-writ");
                                   throw IoError("simulated disk full");
                                 }),
               IoError);
  EXPECT_EQ(read_text_file(path), "good");
  // No temporary file is left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(AtomicFile, WriterThatProducesNothingIsAnError) {
  TempDir dir;
  EXPECT_THROW(write_file_atomic(dir / "x", [](const std::filesystem::path&) {}), IoError);
  EXPECT_FALSE(std::filesystem::exists(dir / "x"));
}

TEST(AtomicFile, CreatesMissingParentFolders) {
  TempDir dir;
  write_text_atomic(dir / "a" / "b" / "c.txt", "x");
  EXPECT_EQ(read_text_file(dir / "a" / "b" / "c.txt"), "x");
}

TEST(AtomicFile, ReadingMissingFileNamesIt) {
  EXPECT_TRUE(testing::throws_with<IoError>([] { read_text_file("/nonexistent/nanguard.txt"); },
                                            {"/nonexistent/nanguard.txt"}));
}

}  // namespace
}  // namespace nanguard
