#include "nanguard/report/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <fstream>

#include <fmt/format.h>

#include "nanguard/core/error.h"
#include "tensorboard.pb.h"

namespace nanguard::report {
namespace {

namespace pb = nanguard::tensorboard;

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli
    table[i] = c;
  }
  return table;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  static const std::array<uint32_t, 256> table = make_crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

struct TensorBoardWriter::Impl {
  std::filesystem::path path;
  std::ofstream out;
  int64_t records = 0;

  void write_record(const std::string& data) {
    char header[12];
    const uint64_t length = data.size();
    for (int i = 0; i < 8; ++i) header[i] = static_cast<char>((length >> (8 * i)) & 0xFF);  // little endian
    const uint32_t length_crc = masked_crc32c(header, 8);
    for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<char>((length_crc >> (8 * i)) & 0xFF);
    const uint32_t data_crc = masked_crc32c(data.data(), data.size());
    char footer[4];
    for (int i = 0; i < 4; ++i) footer[i] = static_cast<char>((data_crc >> (8 * i)) & 0xFF);
    out.write(header, sizeof(header));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.write(footer, sizeof(footer));
    if (!out) throw IoError("cannot write to " + path.string());
    ++records;
  }

  void write_event(const pb::Event& event) {
    std::string data;
    if (!event.SerializeToString(&data)) throw InternalError("cannot serialize a TensorBoard event");
    write_record(data);
  }
};

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& dir) : impl_(std::make_unique<Impl>()) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw IoError("cannot create the TensorBoard folder " + dir.string() + ": " + ec.message());
  const double t = now_seconds();
  impl_->path = dir / fmt::format("events.out.tfevents.{}.{}.nanguard", static_cast<int64_t>(t), host_name());
  impl_->out.open(impl_->path, std::ios::binary | std::ios::trunc);
  if (!impl_->out) throw IoError("cannot open " + impl_->path.string() + " for writing");
  pb::Event first;
  first.set_wall_time(t);
  first.set_step(0);
  first.set_file_version("brain.Event:2");
  impl_->write_event(first);
  flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (impl_ && impl_->out.is_open()) impl_->out.flush();
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  pb::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  pb::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->set_simple_value(static_cast<float>(value));
  impl_->write_event(event);
}

void TensorBoardWriter::add_text(const std::string& tag, const std::string& text, int64_t step) {
  pb::Event event;
  event.set_wall_time(now_seconds());
  event.set_step(step);
  pb::Summary::Value* v = event.mutable_summary()->add_value();
  v->set_tag(tag);
  v->mutable_metadata()->mutable_plugin_data()->set_plugin_name("text");
  pb::TensorProto* tensor = v->mutable_tensor();
  tensor->set_dtype(pb::DT_STRING);
  tensor->mutable_tensor_shape()->add_dim()->set_size(1);
  tensor->add_string_val(text);
  impl_->write_event(event);
  flush();
}

void TensorBoardWriter::flush() {
  impl_->out.flush();
  if (!impl_->out) throw IoError("cannot write to " + impl_->path.string());
}

const std::filesystem::path& TensorBoardWriter::path() const { return impl_->path; }
int64_t TensorBoardWriter::records() const { return impl_->records; }

}  // namespace nanguard::report
