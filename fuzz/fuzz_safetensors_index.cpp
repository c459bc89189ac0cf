// libFuzzer target: a sharded checkpoint's model.safetensors.index.json, read by load_safetensors next to
// fixed shards (two valid, one truncated), both as a directory and as the index file itself.
#include <sys/stat.h>

#include <map>
#include <stdexcept>
#include <string>

#include "fuzz_util.h"
#include "peft/formats/safetensors.h"

namespace {

// The shards the index may name: model-00001-of-00002 holds "a" and "b", model-00002-of-00002 holds
// "c", and broken.safetensors stops inside its header.
const std::string& shard_dir() {
  static const std::string dir = [] {
    const std::string d = peft_fuzz::scratch_dir() + "/sharded";
    if (mkdir(d.c_str(), 0755) != 0) std::abort();
    peft::save_safetensors(d + "/model-00001-of-00002.safetensors",
                           {{"a", at::arange(6, at::kFloat).reshape({2, 3})}, {"b", at::ones({2}, at::kBFloat16)}});
    peft::save_safetensors(d + "/model-00002-of-00002.safetensors", {{"c", at::zeros({1, 1}, at::kLong)}}, {});
    const char broken[] = "\x40\x00\x00\x00\x00\x00\x00\x00{\"c\":{\"dtype\":\"F32\"";
    peft_fuzz::write_file(d + "/broken.safetensors", broken, sizeof broken - 1);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = shard_dir();
  const std::string index = dir + "/model.safetensors.index.json";
  peft_fuzz::write_file(index, data, size);
  for (const std::string& path : {dir, index}) {
    try {
      std::map<std::string, at::Tensor> tensors = peft::load_safetensors(path);
      // Only tensors the valid shards hold can come back.
      for (const auto& [name, t] : tensors)
        PEFT_FUZZ_CHECK(name == "a" || name == "b" || name == "c", name);
    } catch (const std::runtime_error&) {
    }
  }
  return 0;
}
