// safetensors: reading (memory map, every header rule checked before any data is touched)
// and atomic writing (temp file, fsync, rename) with the header layout of the reference library.
#include "peft/formats/safetensors.h"
#include "peft/core/strings.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace peft {
namespace {

using nlohmann::json;

struct DtypeEntry {
  const char* name;
  at::ScalarType type;
  size_t size;
  int rank;  // the reference library's dtype order: larger alignment first when writing
};

const DtypeEntry kDtypes[] = {
    {"BOOL", at::kBool, 1, 0},  {"U8", at::kByte, 1, 1},       {"I8", at::kChar, 1, 2},
    {"I16", at::kShort, 2, 5},  {"F16", at::kHalf, 2, 7},      {"BF16", at::kBFloat16, 2, 8},
    {"I32", at::kInt, 4, 9},    {"F32", at::kFloat, 4, 11},    {"F64", at::kDouble, 8, 12},
    {"I64", at::kLong, 8, 13},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeEntry& dtype_entry(at::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d;
  throw std::runtime_error(std::string("safetensors: no safetensors dtype for ") + c10::toString(t));
}

std::string errno_text() { return std::strerror(errno); }

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("safetensors: " + path + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& path, const std::string& name, const std::string& what) {
  fail(path, "tensor '" + name + "': " + what);
}

// A JSON value as a u64, or why it is not one.
bool as_u64(const json& v, uint64_t& out) {
  if (!v.is_number_unsigned()) return false;  // negative, fractional, too large or not a number
  out = v.get<uint64_t>();
  return true;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Parses and checks one tensor entry of the header (offsets against the data section are checked later).
TensorInfo parse_entry(const std::string& path, const std::string& name, const json& v, uint64_t data_size) {
  if (!v.is_object()) fail_tensor(path, name, "header entry is not an object (" + v.dump() + ")");
  auto dt = v.find("dtype");
  auto sh = v.find("shape");
  auto off = v.find("data_offsets");
  if (dt == v.end()) fail_tensor(path, name, "header entry lacks \"dtype\"");
  if (sh == v.end()) fail_tensor(path, name, "header entry lacks \"shape\"");
  if (off == v.end()) fail_tensor(path, name, "header entry lacks \"data_offsets\"");
  if (!dt->is_string()) fail_tensor(path, name, "\"dtype\" is not a string (" + dt->dump() + ")");

  TensorInfo info;
  info.dtype = dt->get<std::string>();
  const DtypeEntry* d = find_dtype(info.dtype);
  if (!d) fail_tensor(path, name, "unknown dtype '" + info.dtype + "'");

  if (!sh->is_array()) fail_tensor(path, name, "\"shape\" is not an array (" + sh->dump() + ")");
  // The product of the non-zero dims must fit in int64, as ATen checks sizes that way (zero dims or not).
  int64_t numel = 1;
  bool overflow = false, has_zero = false;
  for (const auto& dim : *sh) {
    uint64_t n = 0;
    if (!as_u64(dim, n) || n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail_tensor(path, name, "shape " + sh->dump() + " has a dimension that is not a non-negative integer: " + dim.dump());
    info.shape.push_back(static_cast<int64_t>(n));
    if (n == 0)
      has_zero = true;
    else if (__builtin_mul_overflow(numel, static_cast<int64_t>(n), &numel))
      overflow = true;
  }
  uint64_t nbytes = 0;
  if (overflow || __builtin_mul_overflow(static_cast<uint64_t>(numel), static_cast<uint64_t>(d->size), &nbytes) ||
      nbytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail_tensor(path, name, "shape " + sh->dump() + " overflows: its size does not fit in 64 bits");
  if (has_zero) nbytes = 0;

  if (!off->is_array() || off->size() != 2 || !as_u64((*off)[0], info.begin) || !as_u64((*off)[1], info.end))
    fail_tensor(path, name, "\"data_offsets\" is not a pair of non-negative integers (" + off->dump() + ")");
  if (info.begin > info.end)
    fail_tensor(path, name, "data_offsets " + off->dump() + " begin after end");
  if (info.end > data_size)
    fail_tensor(path, name, "data_offsets " + off->dump() + " end beyond the data section (" +
                                std::to_string(data_size) + " bytes; file truncated?)");
  if (info.end - info.begin != nbytes)
    fail_tensor(path, name, "data_offsets " + off->dump() + " hold " + std::to_string(info.end - info.begin) +
                                " bytes but " + info.dtype + " shape " + shape_text(info.shape) + " needs " +
                                std::to_string(nbytes));
  return info;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dir_of(const std::string& p) {
  auto slash = p.find_last_of('/');
  return slash == std::string::npos ? "." : p.substr(0, slash == 0 ? 1 : slash);
}

std::map<std::string, at::Tensor> load_file(const std::string& path) {
  SafeTensorsFile f(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& name : f.keys()) out[name] = f.tensor(name);
  return out;
}

std::map<std::string, at::Tensor> load_index(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  if (!in) fail(index_path, "cannot open index: " + errno_text());
  json index;
  try {
    index = json::parse(in);
  } catch (const json::exception& e) {
    fail(index_path, std::string("malformed index JSON: ") + e.what());
  }
  auto wm = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || wm == index.end() || !wm->is_object())
    fail(index_path, "index has no \"weight_map\" object");

  // Group tensors by shard and check that every shard exists before reading any.
  const std::string dir = dir_of(index_path);
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it->is_string())
      fail(index_path, "tensor '" + it.key() + "': weight_map value is not a shard file name (" + it->dump() + ")");
    const auto shard = it->get<std::string>();
    if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos)
      fail(index_path, "tensor '" + it.key() + "': shard \"" + shard + "\" is not a file name inside the model directory");
    by_shard[shard].push_back(it.key());
  }
  auto shard_path = [&](const std::string& shard) { return dir + "/" + shard; };
  for (const auto& [shard, names] : by_shard) {
    if (!is_file(shard_path(shard)))
      fail(index_path, "shard '" + shard + "' (holding tensor '" + names.front() + "') is missing: " + shard_path(shard));
  }

  std::map<std::string, at::Tensor> out;
  for (const auto& [shard, names] : by_shard) {
    SafeTensorsFile f(shard_path(shard));
    for (const auto& name : names) {
      if (!f.contains(name))
        fail(index_path, "tensor '" + name + "' is mapped to shard '" + shard + "' which does not hold it");
      out[name] = f.tensor(name);
    }
  }
  return out;
}

// write(2) until done; false with errno set on failure.
bool write_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

at::ScalarType dtype_from_safetensors(const std::string& name) {
  const DtypeEntry* d = find_dtype(name);
  if (!d) throw std::runtime_error("safetensors: unknown dtype '" + name + "'");
  return d->type;
}

std::string dtype_to_safetensors(at::ScalarType t) { return dtype_entry(t).name; }

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, "cannot open: " + errno_text());
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) fail(path, "cannot stat: " + errno_text());
    if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
    size_ = static_cast<size_t>(st.st_size);
    if (size_ < 8)
      fail(path, "file truncated: " + std::to_string(size_) + " bytes, shorter than the 8-byte header length");
    void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (m == MAP_FAILED) fail(path, "cannot memory-map: " + errno_text());
    map_ = static_cast<const uint8_t*>(m);

    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | map_[i];  // little-endian u64
    if (n > size_ - 8)
      fail(path, "header length " + std::to_string(n) + " is beyond the file size (" + std::to_string(size_) +
                     " bytes; file truncated or not safetensors?)");
    data_start_ = 8 + static_cast<size_t>(n);
    const uint64_t data_size = size_ - data_start_;

    // JSON text never holds a NUL byte, and the parser would take one for the end of input.
    if (const void* nul = std::memchr(map_ + 8, 0, static_cast<size_t>(n)))
      fail(path, "malformed header JSON: NUL byte at header offset " +
                     std::to_string(static_cast<const uint8_t*>(nul) - (map_ + 8)));
    json header;
    try {
      header = json::parse(map_ + 8, map_ + data_start_);
    } catch (const json::exception& e) {
      fail(path, std::string("malformed header JSON: ") + e.what());
    }
    if (!header.is_object()) fail(path, "header is not a JSON object");

    std::vector<std::pair<const TensorInfo*, const std::string*>> order;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) fail(path, "__metadata__ is not an object");
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (!m->is_string()) fail(path, "__metadata__ value '" + m.key() + "' is not a string (" + m->dump() + ")");
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      infos_[it.key()] = parse_entry(path, it.key(), *it, data_size);
    }

    // No two tensors may share bytes: sort by offsets and compare each with the furthest end so far
    // (zero-sized tensors hold no bytes, so they overlap nothing).
    for (const auto& [name, info] : infos_) order.emplace_back(&info, &name);
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return std::tie(a.first->begin, a.first->end, *a.second) < std::tie(b.first->begin, b.first->end, *b.second);
    });
    const std::pair<const TensorInfo*, const std::string*>* furthest = nullptr;
    for (const auto& cur : order) {
      if (cur.first->end == cur.first->begin) continue;
      if (furthest && furthest->first->end > cur.first->begin)
        fail_tensor(path, *cur.second,
                    "data_offsets [" + std::to_string(cur.first->begin) + ", " + std::to_string(cur.first->end) +
                        "] overlap those of tensor '" + *furthest->second + "' [" +
                        std::to_string(furthest->first->begin) + ", " + std::to_string(furthest->first->end) + "]");
      if (!furthest || cur.first->end > furthest->first->end) furthest = &cur;
    }
  } catch (...) {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
    ::close(fd_);
    throw;
  }
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
  if (fd_ >= 0) ::close(fd_);
}

std::vector<std::string> SafeTensorsFile::keys() const {
  std::vector<std::string> names;
  for (const auto& kv : infos_) names.push_back(kv.first);
  std::stable_sort(names.begin(), names.end(), [this](const std::string& a, const std::string& b) {
    const TensorInfo &x = infos_.at(a), &y = infos_.at(b);
    return std::tie(x.begin, x.end) < std::tie(y.begin, y.end);
  });
  return names;
}

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  if (it != infos_.end()) return it->second;

  // Not found: suggest up to three close names.
  std::vector<std::pair<size_t, std::string>> near;
  for (const auto& kv : infos_) {
    size_t d = edit_distance(name, kv.first);
    if (d <= std::max<size_t>(3, name.size() / 3)) near.emplace_back(d, kv.first);
  }
  std::sort(near.begin(), near.end());
  std::string msg = "no such tensor (the file holds " + std::to_string(infos_.size()) + ")";
  for (size_t i = 0; i < near.size() && i < 3; ++i) msg += (i ? ", '" : "; similar: '") + near[i].second + "'";
  fail_tensor(path_, name, msg);
}

at::Tensor SafeTensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  at::Tensor t;
  try {
    t = at::empty(ti.shape, at::TensorOptions().dtype(dtype_from_safetensors(ti.dtype)));
  } catch (const std::exception& e) {
    fail_tensor(path_, name, std::string("cannot allocate: ") + e.what());
  }
  if (ti.end > ti.begin) std::memcpy(t.data_ptr(), map_ + data_start_ + ti.begin, ti.end - ti.begin);
  return t;
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path) {
  if (is_dir(path)) {
    if (is_file(path + "/model.safetensors")) return load_file(path + "/model.safetensors");
    if (is_file(path + "/model.safetensors.index.json")) return load_index(path + "/model.safetensors.index.json");
    throw std::runtime_error("safetensors: no model.safetensors or model.safetensors.index.json in " + path);
  }
  if (ends_with(path, ".json")) return load_index(path);
  return load_file(path);
}

namespace {

// One tensor to save, with its dtype entry and byte size.
struct SaveItem {
  const std::string* name;
  const at::Tensor* t;
  const DtypeEntry* d;
  uint64_t nbytes;
};

// The tensors checked (everything that can be checked is, before any file exists) and in the
// reference library's order: larger dtypes first (keeps every tensor aligned), then by name.
std::vector<SaveItem> save_items(const std::string& path, const std::map<std::string, at::Tensor>& tensors) {
  std::vector<SaveItem> items;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail_tensor(path, name, "the name is reserved for metadata");
    if (!t.defined()) fail_tensor(path, name, "tensor is undefined");
    if (t.is_sparse()) fail_tensor(path, name, "sparse tensors cannot be saved");
    const DtypeEntry* d = nullptr;
    try {
      d = &dtype_entry(t.scalar_type());
    } catch (const std::exception& e) {
      fail_tensor(path, name, e.what());
    }
    items.push_back({&name, &t, d, static_cast<uint64_t>(t.numel()) * d->size});
  }
  std::stable_sort(items.begin(), items.end(), [](const SaveItem& a, const SaveItem& b) { return a.d->rank > b.d->rank; });
  return items;
}

// The JSON header with data offsets, padded to 8 bytes with spaces.
std::string save_header(const std::string& path, const std::vector<SaveItem>& items,
                        const std::map<std::string, std::string>& metadata) {
  std::string header = "{";
  try {
    bool first = true;
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      for (const auto& [k, v] : metadata) {
        header += (first ? "" : ",") + json(k).dump() + ":" + json(v).dump();
        first = false;
      }
      header += "}";
    }
    uint64_t offset = 0;
    for (const SaveItem& it : items) {
      header += std::string(header.size() > 1 ? "," : "") + json(*it.name).dump() + ":{\"dtype\":\"" + it.d->name +
                "\",\"shape\":[";
      for (int64_t i = 0; i < it.t->dim(); ++i) header += (i ? "," : "") + std::to_string(it.t->size(i));
      header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + it.nbytes) + "]}";
      offset += it.nbytes;
    }
  } catch (const json::exception& e) {
    fail(path, std::string("cannot encode header (names and metadata must be UTF-8): ") + e.what());
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  return header;
}

// Length, header and data written to a temporary file, fsynced and renamed over `path`.
void write_atomic(const std::string& path, const std::string& header, const std::vector<SaveItem>& items) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create " + tmp + ": " + errno_text());
  try {
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
    if (!write_all(fd, len, 8) || !write_all(fd, header.data(), header.size()))
      fail(path, "write to " + tmp + " failed: " + errno_text());
    for (const SaveItem& it : items) {
      at::Tensor c;
      try {
        c = it.t->detach().to(at::kCPU).contiguous();
      } catch (const std::exception& e) {
        fail_tensor(path, *it.name, std::string("cannot bring the tensor to the CPU: ") + e.what());
      }
      if (it.nbytes && !write_all(fd, c.data_ptr(), it.nbytes))
        fail_tensor(path, *it.name, "write to " + tmp + " failed: " + errno_text());
    }
    if (::fsync(fd) != 0) fail(path, "fsync of " + tmp + " failed: " + errno_text());
    int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail(path, "close of " + tmp + " failed: " + errno_text());
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "rename from " + tmp + " failed: " + errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable; failure here leaves a complete file, so it is not an error.
  int dfd = ::open(dir_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::vector<SaveItem> items = save_items(path, tensors);
  write_atomic(path, save_header(path, items, metadata), items);
}

}  // namespace peft
