// safetensors: the tensor file format of Hugging Face checkpoints and PEFT adapters.
// Reads by memory map with every header rule checked (errors name file and tensor); writes atomically.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace peft {

// One tensor's entry in a safetensors header.
struct TensorInfo {
  std::string dtype;            // "F32", "BF16", ... as written in the file
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

// A safetensors file opened by memory map. Tensors are copied out on request, so the
// returned tensors stay valid after the file is closed.
class SafeTensorsFile {
 public:
  // Validates the whole header; throws std::runtime_error naming `path` (and the tensor) on any fault.
  explicit SafeTensorsFile(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> keys() const;  // in header order of offsets
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // A CPU tensor holding a copy of the named tensor, in its stored dtype.
  at::Tensor tensor(const std::string& name) const;

 private:
  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  size_t data_start_ = 0;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint: `path` is a .safetensors file, a sharded checkpoint's
// model.safetensors.index.json, or a directory holding either.
std::map<std::string, at::Tensor> load_safetensors(const std::string& path);

// Writes `tensors` (any device, contiguous or not) to `path` atomically (temp file + rename),
// with `metadata` in `__metadata__` (PEFT and transformers write {"format": "pt"}; an empty map writes none).
// Layout as the Python library writes it: larger dtypes first, then names in order, header padded to
// 8 bytes, so a file of ours and theirs holding the same tensors are the same bytes.
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Safetensors dtype name <-> ATen scalar type; throws on an unknown name.
at::ScalarType dtype_from_safetensors(const std::string& name);
std::string dtype_to_safetensors(at::ScalarType t);

}  // namespace peft
