// Writing GGUF files (version 3, little-endian): metadata key/values in the order given, F32 and F16
// tensors, data aligned to general.alignment (32); written atomically (temporary file, fsync, rename).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "peft/formats/gguf.h"

namespace peft {

class GgufWriter {
 public:
  // Metadata. Each key may be set once (std::invalid_argument naming it otherwise); the value's
  // elements must be in the vector of its kind (GgufValue), arrays of arrays are refused.
  // general.alignment is written first, as UINT32 32, unless set here (a power of two, UINT32).
  void set(const std::string& key, GgufValue value);
  void set_string(const std::string& key, const std::string& value);
  void set_uint32(const std::string& key, uint32_t value);
  void set_int32(const std::string& key, int32_t value);
  void set_uint64(const std::string& key, uint64_t value);
  void set_float32(const std::string& key, float value);
  void set_float64(const std::string& key, double value);
  void set_bool(const std::string& key, bool value);
  void set_string_array(const std::string& key, const std::vector<std::string>& values);
  void set_int32_array(const std::string& key, const std::vector<int32_t>& values);
  void set_float32_array(const std::string& key, const std::vector<float>& values);

  // A tensor of 1 to 4 dims, any floating dtype, stored as `type` (F32 or F16). Its ggml shape is
  // the PyTorch shape reversed: a (rows, cols) tensor has ne = [cols, rows]. The data is converted
  // and copied now. Throws std::invalid_argument naming the tensor for a repeated name, another
  // type, a non-floating tensor or one with NaN/infinite values (F16: also beyond its range).
  void add_tensor(const std::string& name, const at::Tensor& tensor, GgmlType type = GgmlType::F32);

  size_t tensor_count() const { return tensors_.size(); }
  // Writes the file to `path` through `path.tmp.<pid>`; throws std::runtime_error naming the file.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    std::vector<uint64_t> ne;
    GgmlType type;
    std::string data;  // the bytes as stored
  };
  uint64_t alignment() const;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<Entry> tensors_;
};

}  // namespace peft
