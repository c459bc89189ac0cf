// GGUF: llama.cpp's model file (metadata key/values, tensor infos, block-quantized tensor data).
// Read by memory map with every rule checked (errors name the file and the key or tensor); dequantized to float32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace peft {

// The value types of GGUF metadata, with their numbers in the file.
enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_type_name(GgufType t);  // "UINT8", ..., "FLOAT64"; "type N" for other numbers

// ggml's tensor types, with their numbers in the file (the numbers that ggml retired are absent).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

// What ggml's type tables say of one tensor type: elements per block and bytes per block.
struct GgmlTypeTraits {
  const char* name;        // "Q4_K"
  uint32_t block_size;     // elements in one block (1 for plain types)
  uint32_t type_size;      // bytes of one block
  bool can_dequantize;     // dequantize() reads this type
};
// The traits of type number `type`, or nullptr when ggml has no such type.
const GgmlTypeTraits* ggml_type_traits(uint32_t type);
// "F32, F16, BF16, Q4_0, ...": the types dequantize() reads, for messages.
std::string ggml_dequantizable_types();

// One metadata value. Scalars hold one element; arrays (type ARRAY) hold elem_type elements
// (GGUF has arrays of arrays, which this reader refuses). The elements live in the vector of their kind.
struct GgufValue {
  GgufType type = GgufType::UINT8;
  GgufType elem_type = GgufType::UINT8;  // the type of the elements: `type` itself for a scalar
  std::vector<uint64_t> uints;           // UINT8, UINT16, UINT32, UINT64, and BOOL as 0 or 1
  std::vector<int64_t> ints;             // INT8, INT16, INT32, INT64
  std::vector<double> floats;            // FLOAT32 (exactly), FLOAT64
  std::vector<std::string> strings;      // STRING (bytes as stored; GGUF means UTF-8)

  bool is_array() const { return type == GgufType::ARRAY; }
  size_t size() const;                   // number of elements (1 for a scalar)
  std::string type_text() const;         // "UINT32", "ARRAY of STRING"
};

// One tensor's entry in a GGUF file.
struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ggml dims: ne[0] varies fastest (a PyTorch shape reversed)
  uint32_t type = 0;         // a GgmlType number
  uint64_t offset = 0;       // byte offset of the data, from the start of the data section
  uint64_t numel = 0;        // product of ne (1 for no dims)
  uint64_t nbytes = 0;       // bytes of the data: numel / block_size * type_size

  GgmlType ggml_type() const { return static_cast<GgmlType>(type); }
  const char* type_name() const;             // "Q4_K"
  std::vector<int64_t> torch_shape() const;  // ne reversed: the shape of the PyTorch / Hugging Face tensor
};

// A GGUF file (versions 2 and 3, little-endian) opened by memory map. The header, every metadata
// key/value and every tensor info are read and checked when it opens; tensor data is read on request.
class GgufFile {
 public:
  // Throws std::runtime_error("gguf: <path>: <what>") on any fault, naming the key or tensor.
  explicit GgufFile(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }        // general.alignment, 32 when absent
  uint64_t data_offset() const { return data_offset_; }    // where the data section starts in the file

  // Metadata, in file order of the keys.
  const std::vector<std::string>& keys() const { return keys_; }
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  // The value of `key`; throws naming the key (and similar keys) when it is absent.
  const GgufValue& value(const std::string& key) const;

  // Typed access. get_* throws naming the key when it is absent or holds another type; find_*
  // returns nullopt when the key is absent and throws like get_* when it holds another type.
  // Integers: any integer type whose value fits; floats: FLOAT32, FLOAT64 or an integer type.
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;
  std::optional<std::string> find_string(const std::string& key) const;
  std::optional<uint64_t> find_uint(const std::string& key) const;
  std::optional<int64_t> find_int(const std::string& key) const;
  std::optional<double> find_float(const std::string& key) const;
  std::optional<bool> find_bool(const std::string& key) const;
  std::optional<std::vector<std::string>> find_string_array(const std::string& key) const;

  // Tensors, in file order of their infos.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return tensor_index_.count(name) != 0; }
  // Throws naming the tensor (and similar names) when the file has no such tensor.
  const GgufTensorInfo& tensor(const std::string& name) const;
  // The tensor's bytes as stored (info.nbytes of them); valid while this file is open.
  const uint8_t* tensor_data(const GgufTensorInfo& info) const { return map_ + data_offset_ + info.offset; }

  // Writes the tensor's info.numel elements as float32 to `out`, in ggml's element order (ne[0]
  // fastest, which is row-major for torch_shape()). Throws naming the tensor for a type dequantize
  // cannot read, listing those it can.
  void dequantize(const std::string& name, float* out) const;
  // tensor(name), after the check of its type that dequantize makes (to refuse a file before any work).
  const GgufTensorInfo& readable(const std::string& name) const;
  std::vector<float> dequantize(const std::string& name) const;

 private:
  [[noreturn]] void fail_key(const std::string& key, const std::string& what) const;
  [[noreturn]] void missing_key(const std::string& key) const;
  // The value a get_* accessor found, or the error naming the missing key.
  template <typename T>
  T required(const std::string& key, std::optional<T> value) const;
  const GgufValue* typed(const std::string& key, const char* wanted, bool (*accepts)(const GgufValue&)) const;

  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Dequantizes `numel` elements of type `type` from `data` (numel / block_size * type_size bytes,
// numel a multiple of the block size) into `out`. Throws std::invalid_argument for a type it
// cannot read or a numel that is not whole blocks. Each value is ggml's formula (d * q - m and the
// like) computed exactly and rounded once to float32: the same bits as ggml and the gguf Python package.
void ggml_dequantize(GgmlType type, const uint8_t* data, uint64_t numel, float* out);

}  // namespace peft
