// TensorBoard event files: scalars and text in TensorFlow's record format (uint64 length,
// masked CRC32C of the length, an Event protocol buffer, masked CRC32C of the data), so
// `tensorboard --logdir DIR` shows a run's curves and incidents.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace nanguard::report {

// CRC-32C (Castagnoli), as TFRecord uses it.
uint32_t crc32c(const void* data, size_t size);
// TFRecord's masked form: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
uint32_t masked_crc32c(const void* data, size_t size);

class TensorBoardWriter {
 public:
  // Creates dir (if needed) and a new file events.out.tfevents.<seconds>.<host>.nanguard in
  // it, starting with the file-version record. Throws IoError naming the file when it cannot.
  explicit TensorBoardWriter(const std::filesystem::path& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One scalar point of the curve `tag` (e.g. "epoch/loss"); non-finite values are written as is.
  void add_scalar(const std::string& tag, double value, int64_t step);
  // One text entry (shown in TensorBoard's Text tab; Markdown).
  void add_text(const std::string& tag, const std::string& text, int64_t step);
  // Pushes buffered records to the file (also done after every add_text and on destruction).
  void flush();
  const std::filesystem::path& path() const;
  // Records written so far, the file-version record included.
  int64_t records() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nanguard::report
