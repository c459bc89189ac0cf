// libFuzzer target: a GGUF file opened by GgufFile; every metadata value is read through each typed
// accessor and every tensor of a readable type is dequantized; what opens must keep the reader's promises.
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "peft/formats/gguf.h"

namespace {

// Each accessor either returns or throws std::runtime_error; which one is not checked here.
template <class Fn>
void try_access(Fn&& fn) {
  try {
    fn();
  } catch (const std::runtime_error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = peft_fuzz::scratch_dir() + "/input.gguf";
  peft_fuzz::write_file(path, data, size);

  try {
    peft::GgufFile f(path);
    PEFT_FUZZ_CHECK(f.version() == 2 || f.version() == 3, std::to_string(f.version()));
    PEFT_FUZZ_CHECK(f.alignment() && (f.alignment() & (f.alignment() - 1)) == 0, std::to_string(f.alignment()));
    PEFT_FUZZ_CHECK(f.data_offset() % f.alignment() == 0, std::to_string(f.data_offset()));

    for (const std::string& key : f.keys()) {
      const peft::GgufValue& v = f.value(key);
      PEFT_FUZZ_CHECK(v.is_array() || v.size() == 1, key);
      try_access([&] { f.get_string(key); });
      try_access([&] { f.get_uint(key); });
      try_access([&] { f.get_int(key); });
      try_access([&] { f.get_float(key); });
      try_access([&] { f.get_bool(key); });
      try_access([&] { f.get_string_array(key); });
      try_access([&] { f.get_int_array(key); });
      try_access([&] { f.get_float_array(key); });
    }
    try {
      f.value(f.keys().empty() ? std::string("x") : f.keys().front() + "_");
      PEFT_FUZZ_CHECK(false, "value() found a key that is not in the file");
    } catch (const std::runtime_error&) {
    }

    for (const peft::GgufTensorInfo& t : f.tensors()) {
      PEFT_FUZZ_CHECK(t.ne.size() <= 4, t.name);
      PEFT_FUZZ_CHECK(f.data_offset() + t.offset + t.nbytes <= size, t.name);
      PEFT_FUZZ_CHECK(t.offset % f.alignment() == 0, t.name);
      uint64_t numel = 1;
      for (int64_t d : t.torch_shape()) numel *= static_cast<uint64_t>(d);
      PEFT_FUZZ_CHECK(numel == t.numel, t.name);
      const peft::GgmlTypeTraits* traits = peft::ggml_type_traits(t.type);
      PEFT_FUZZ_CHECK(traits != nullptr, t.name);
      PEFT_FUZZ_CHECK(t.numel / traits->block_size * traits->type_size == t.nbytes, t.name);
      if (!traits->can_dequantize) {
        try {
          f.dequantize(t.name);
          PEFT_FUZZ_CHECK(false, "dequantize() read a type it does not list: " + std::string(traits->name));
        } catch (const std::runtime_error&) {
        }
        continue;
      }
      const std::vector<float> values = f.dequantize(t.name);
      PEFT_FUZZ_CHECK(values.size() == t.numel, t.name);
      if (t.ggml_type() == peft::GgmlType::F32 && t.nbytes)  // float32 is copied bit for bit
        PEFT_FUZZ_CHECK(std::memcmp(values.data(), f.tensor_data(t), t.nbytes) == 0, t.name);
    }
  } catch (const std::runtime_error&) {
    return 0;  // a clear error naming the file: expected for most inputs
  }
  return 0;
}
