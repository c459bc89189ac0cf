// GgufWriter: GGUF v3 metadata, tensor infos and aligned tensor data, built in memory and written
// through a temporary file that is fsynced and renamed, so a crash never leaves half a file.
#include "peft/formats/gguf_writer.h"

#include <ATen/ops/isfinite.h>
#include <c10/core/ScalarType.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "peft/core/file_io.h"

namespace peft {
namespace {

const uint32_t kVersion = 3;
const char* kAlignmentKey = "general.alignment";

[[noreturn]] void bad_key(const std::string& key, const std::string& what) {
  throw std::invalid_argument("gguf writer: metadata key \"" + key + "\": " + what);
}
[[noreturn]] void bad_tensor(const std::string& name, const std::string& what) {
  throw std::invalid_argument("gguf writer: tensor '" + name + "': " + what);
}

// Little-endian serialisation (the machines peft.cpp runs on are little-endian, as GGUF is).
template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

size_t kind_size(GgufType t, const GgufValue& v) {
  switch (t) {
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64: case GgufType::BOOL:
      return v.uints.size();
    case GgufType::INT8: case GgufType::INT16: case GgufType::INT32: case GgufType::INT64:
      return v.ints.size();
    case GgufType::FLOAT32: case GgufType::FLOAT64:
      return v.floats.size();
    case GgufType::STRING:
      return v.strings.size();
    default:
      return 0;
  }
}

bool fits(GgufType t, const GgufValue& v, size_t i) {
  switch (t) {
    case GgufType::UINT8: return v.uints[i] <= 0xff;
    case GgufType::UINT16: return v.uints[i] <= 0xffff;
    case GgufType::UINT32: return v.uints[i] <= 0xffffffffu;
    case GgufType::BOOL: return v.uints[i] <= 1;
    case GgufType::INT8: return v.ints[i] >= -128 && v.ints[i] <= 127;
    case GgufType::INT16: return v.ints[i] >= -32768 && v.ints[i] <= 32767;
    case GgufType::INT32: return v.ints[i] >= std::numeric_limits<int32_t>::min() && v.ints[i] <= std::numeric_limits<int32_t>::max();
    default: return true;
  }
}

void put_element(std::string& out, GgufType t, const GgufValue& v, size_t i) {
  switch (t) {
    case GgufType::UINT8: case GgufType::BOOL: put<uint8_t>(out, static_cast<uint8_t>(v.uints[i])); break;
    case GgufType::UINT16: put<uint16_t>(out, static_cast<uint16_t>(v.uints[i])); break;
    case GgufType::UINT32: put<uint32_t>(out, static_cast<uint32_t>(v.uints[i])); break;
    case GgufType::UINT64: put<uint64_t>(out, v.uints[i]); break;
    case GgufType::INT8: put<int8_t>(out, static_cast<int8_t>(v.ints[i])); break;
    case GgufType::INT16: put<int16_t>(out, static_cast<int16_t>(v.ints[i])); break;
    case GgufType::INT32: put<int32_t>(out, static_cast<int32_t>(v.ints[i])); break;
    case GgufType::INT64: put<int64_t>(out, v.ints[i]); break;
    case GgufType::FLOAT32: put<float>(out, static_cast<float>(v.floats[i])); break;
    case GgufType::FLOAT64: put<double>(out, v.floats[i]); break;
    case GgufType::STRING: put_string(out, v.strings[i]); break;
    default: break;
  }
}

GgufValue scalar(GgufType t) {
  GgufValue v;
  v.type = v.elem_type = t;
  return v;
}

uint64_t pad_to(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

std::string errno_text() { return std::strerror(errno); }

}  // namespace

void GgufWriter::set(const std::string& key, GgufValue v) {
  if (key.empty()) bad_key(key, "empty key");
  for (auto& [k, _] : metadata_)
    if (k == key) bad_key(key, "set twice");
  const GgufType elem = v.is_array() ? v.elem_type : v.type;
  if (elem == GgufType::ARRAY) bad_key(key, "arrays of arrays are not written");
  if (static_cast<uint32_t>(elem) > static_cast<uint32_t>(GgufType::FLOAT64)) bad_key(key, "unknown value type " + v.type_text());
  if (!v.is_array()) v.elem_type = v.type;
  const size_t n = kind_size(elem, v);
  if (!v.is_array() && n != 1) bad_key(key, "a scalar " + v.type_text() + " needs exactly one element, has " + std::to_string(n));
  for (size_t i = 0; i < n; ++i)
    if (!fits(elem, v, i)) bad_key(key, "element " + std::to_string(i) + " does not fit " + std::string(gguf_type_name(elem)));
  if (key == kAlignmentKey) {
    if (v.type != GgufType::UINT32) bad_key(key, "must be UINT32, got " + v.type_text());
    uint64_t a = v.uints[0];
    if (a == 0 || (a & (a - 1)) != 0) bad_key(key, "must be a power of two, got " + std::to_string(a));
  }
  metadata_.emplace_back(key, std::move(v));
}

void GgufWriter::set_string(const std::string& key, const std::string& value) {
  auto v = scalar(GgufType::STRING);
  v.strings = {value};
  set(key, std::move(v));
}
void GgufWriter::set_uint32(const std::string& key, uint32_t value) {
  auto v = scalar(GgufType::UINT32);
  v.uints = {value};
  set(key, std::move(v));
}
void GgufWriter::set_int32(const std::string& key, int32_t value) {
  auto v = scalar(GgufType::INT32);
  v.ints = {value};
  set(key, std::move(v));
}
void GgufWriter::set_uint64(const std::string& key, uint64_t value) {
  auto v = scalar(GgufType::UINT64);
  v.uints = {value};
  set(key, std::move(v));
}
void GgufWriter::set_float32(const std::string& key, float value) {
  auto v = scalar(GgufType::FLOAT32);
  v.floats = {value};
  set(key, std::move(v));
}
void GgufWriter::set_float64(const std::string& key, double value) {
  auto v = scalar(GgufType::FLOAT64);
  v.floats = {value};
  set(key, std::move(v));
}
void GgufWriter::set_bool(const std::string& key, bool value) {
  auto v = scalar(GgufType::BOOL);
  v.uints = {value ? 1u : 0u};
  set(key, std::move(v));
}
void GgufWriter::set_string_array(const std::string& key, const std::vector<std::string>& values) {
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.elem_type = GgufType::STRING;
  v.strings = values;
  set(key, std::move(v));
}
void GgufWriter::set_int32_array(const std::string& key, const std::vector<int32_t>& values) {
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.elem_type = GgufType::INT32;
  v.ints.assign(values.begin(), values.end());
  set(key, std::move(v));
}
void GgufWriter::set_float32_array(const std::string& key, const std::vector<float>& values) {
  GgufValue v;
  v.type = GgufType::ARRAY;
  v.elem_type = GgufType::FLOAT32;
  v.floats.assign(values.begin(), values.end());
  set(key, std::move(v));
}

void GgufWriter::add_tensor(const std::string& name, const at::Tensor& tensor, GgmlType type) {
  if (name.empty()) bad_tensor(name, "empty name");
  if (name.size() >= 64) bad_tensor(name, "names of 64 bytes or more do not fit ggml's tensor name (63 bytes at most)");
  for (auto& e : tensors_)
    if (e.name == name) bad_tensor(name, "added twice");
  if (type != GgmlType::F32 && type != GgmlType::F16)
  {
    auto* traits = ggml_type_traits(static_cast<uint32_t>(type));
    bad_tensor(name, std::string("type ") + (traits ? traits->name : std::to_string(static_cast<uint32_t>(type))) +
                         " is not written (F32 or F16)");
  }
  if (!tensor.defined() || !c10::isFloatingType(tensor.scalar_type()))
    bad_tensor(name, "expected a floating-point tensor");
  if (tensor.dim() < 1 || tensor.dim() > 4) bad_tensor(name, "has " + std::to_string(tensor.dim()) + " dims; GGUF tensors have 1 to 4");
  if (tensor.numel() == 0) bad_tensor(name, "is empty");
  at::Tensor t = tensor.detach().to(at::kCPU);
  if (!at::isfinite(t).all().item<bool>()) bad_tensor(name, "has NaN or infinite values");
  t = t.to(type == GgmlType::F32 ? at::kFloat : at::kHalf).contiguous();
  if (type == GgmlType::F16 && !at::isfinite(t).all().item<bool>())
    bad_tensor(name, "has values beyond F16's range (65504); write it as F32");
  Entry e{name, {}, type, {}};
  for (int64_t d = t.dim() - 1; d >= 0; --d) e.ne.push_back(static_cast<uint64_t>(t.size(d)));
  e.data.assign(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  tensors_.push_back(std::move(e));
}

uint64_t GgufWriter::alignment() const {
  for (auto& [k, v] : metadata_)
    if (k == kAlignmentKey) return v.uints[0];
  return 32;
}

void GgufWriter::write(const std::string& path) const {
  const uint64_t align = alignment();
  bool has_alignment = false;
  for (auto& [k, _] : metadata_) has_alignment |= k == kAlignmentKey;

  std::string head;
  head.append("GGUF", 4);
  put<uint32_t>(head, kVersion);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, metadata_.size() + (has_alignment ? 0 : 1));
  auto put_kv = [&](const std::string& key, const GgufValue& v) {
    put_string(head, key);
    put<uint32_t>(head, static_cast<uint32_t>(v.type));
    const GgufType elem = v.is_array() ? v.elem_type : v.type;
    if (v.is_array()) {
      put<uint32_t>(head, static_cast<uint32_t>(elem));
      put<uint64_t>(head, kind_size(elem, v));
    }
    for (size_t i = 0, n = kind_size(elem, v); i < n; ++i) put_element(head, elem, v, i);
  };
  if (!has_alignment) {
    auto v = scalar(GgufType::UINT32);
    v.uints = {align};
    put_kv(kAlignmentKey, v);
  }
  for (auto& [k, v] : metadata_) put_kv(k, v);
  uint64_t offset = 0;
  for (auto& e : tensors_) {
    put_string(head, e.name);
    put<uint32_t>(head, static_cast<uint32_t>(e.ne.size()));
    for (auto n : e.ne) put<uint64_t>(head, n);
    put<uint32_t>(head, static_cast<uint32_t>(e.type));
    put<uint64_t>(head, offset);
    offset = pad_to(offset + e.data.size(), align);
  }
  head.resize(pad_to(head.size(), align), '\0');

  auto fail = [&](const std::string& what) { throw std::runtime_error("gguf: " + path + ": " + what); };
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot create " + tmp + ": " + errno_text() + " (does the directory exist and is it writable?)");
  auto write_all = [&](const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        std::string why = errno_text();
        ::close(fd);
        ::unlink(tmp.c_str());
        fail("write to " + tmp + " failed: " + why + " (disk full?)");
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  };
  write_all(head.data(), head.size());
  const std::string zeros(align, '\0');
  for (auto& e : tensors_) {
    write_all(e.data.data(), e.data.size());
    write_all(zeros.data(), pad_to(e.data.size(), align) - e.data.size());
  }
  const bool synced = ::fsync(fd) == 0;
  std::string why = synced ? "" : errno_text();
  if (::close(fd) != 0 && synced) why = errno_text();
  if (!why.empty()) {
    ::unlink(tmp.c_str());
    fail("cannot flush " + tmp + ": " + why);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail("cannot replace the file (" + ec.message() + ")");
  }
  auto dir = std::filesystem::path(path).parent_path();
  fsync_path(dir.empty() ? "." : dir.string());
}

}  // namespace peft
