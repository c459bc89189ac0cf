// libFuzzer target: a safetensors file (header length, JSON header, data) opened by SafeTensorsFile and
// load_safetensors; every tensor is read, and what loads is written back and must read back identical.
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

#include "fuzz_util.h"
#include "peft/formats/safetensors.h"

namespace {

// Bytes equal, NaNs included (at::equal would call NaN != NaN).
bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const size_t n = static_cast<size_t>(a.numel()) * a.element_size();
  return n == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), n) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = peft_fuzz::scratch_dir();
  const std::string path = dir + "/input.safetensors";
  // An input starting with '{' is a header alone or a header and data: the length prefix is made here,
  // so mutations of the JSON reach the header checks instead of failing the length test.
  if (size > 0 && data[0] == '{') {
    const void* close = memrchr(data, '}', size);
    const size_t n = static_cast<const uint8_t*>(close) - data + 1;
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((static_cast<uint64_t>(n) >> (8 * i)) & 0xff);
    file.append(reinterpret_cast<const char*>(data), size);
    peft_fuzz::write_file(path, file.data(), file.size());
  } else {
    peft_fuzz::write_file(path, data, size);
  }

  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
  try {
    peft::SafeTensorsFile f(path);
    metadata = f.metadata();
    for (const auto& name : f.keys()) {
      const peft::TensorInfo& info = f.info(name);
      at::Tensor t = f.tensor(name);
      PEFT_FUZZ_CHECK(t.numel() * t.element_size() == static_cast<int64_t>(info.end - info.begin), name);
      tensors[name] = t;
    }
    try {
      f.info(tensors.empty() ? std::string("x") : tensors.begin()->first + "_");  // the "similar" suggestion
      PEFT_FUZZ_CHECK(false, "info() found a tensor that is not in the file");
    } catch (const std::runtime_error&) {
    }
  } catch (const std::runtime_error&) {
    return 0;  // a clear error naming the file: expected for most inputs
  }

  // What one reader accepted, the other must too, with the same tensors.
  std::map<std::string, at::Tensor> loaded = peft::load_safetensors(path);
  PEFT_FUZZ_CHECK(loaded.size() == tensors.size(), path);
  for (const auto& [name, t] : tensors) PEFT_FUZZ_CHECK(loaded.count(name) && same_bytes(loaded.at(name), t), name);

  // Written back, it reads back the same (every name and metadata string came from valid JSON).
  const std::string copy = dir + "/copy.safetensors";
  peft::save_safetensors(copy, tensors, metadata);
  peft::SafeTensorsFile g(copy);
  PEFT_FUZZ_CHECK(g.metadata() == metadata, "metadata after a round trip");
  PEFT_FUZZ_CHECK(g.keys().size() == tensors.size(), "tensor count after a round trip");
  for (const auto& [name, t] : tensors) PEFT_FUZZ_CHECK(same_bytes(g.tensor(name), t), name);
  return 0;
}
