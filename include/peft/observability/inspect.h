// What a model directory or an adapter directory holds, read from its JSON files and safetensors
// headers only (no weights loaded): the facts behind `peft inspect`, as text and as JSON.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace peft {

struct Inspection {
  std::string path;
  std::string kind;  // "model" or "adapter"
  std::vector<std::pair<std::string, std::string>> facts;  // label, value: in display order
  std::vector<std::string> notes;  // things worth knowing (unsupported parts, missing files)
  nlohmann::ordered_json json;     // the same facts, typed, under snake_case keys

  void add(const std::string& key, const std::string& label, nlohmann::ordered_json value, std::string text = "");
  std::string render() const;  // "label: value" lines, then the notes
};

// One adapted projection as the adapter's tensors show it.
struct AdapterModuleInfo {
  std::string path;  // module path in the model, e.g. "model.layers.0.self_attn.q_proj"
  int64_t rank = 0;  // rows of lora_A: AdaLoRA's kept rank, LoRA's r
  int64_t in_features = 0, out_features = 0;
};

// The adapted modules of an adapter directory, from adapter_model.safetensors' header, in key order.
std::vector<AdapterModuleInfo> adapter_modules(const std::string& adapter_dir);

// A directory with adapter_config.json is an adapter, one with config.json a model. Throws
// std::runtime_error naming the path and the file at fault when neither can be read.
Inspection inspect_path(const std::string& path);
Inspection inspect_model(const std::string& dir);
Inspection inspect_adapter(const std::string& dir);
Inspection inspect_gguf(const std::string& path);  // a llama.cpp GGUF model file, read as its Hugging Face counterpart

}  // namespace peft
