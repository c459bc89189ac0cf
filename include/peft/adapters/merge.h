// Folding an adapter into its base model for good: base + adapter -> a plain Hugging Face
// checkpoint directory that transformers (and load_model) load with no PEFT involved.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace peft {

struct MergeOptions {
  std::string model_dir;    // the base model (config.json + safetensors)
  std::string adapter_dir;  // a PEFT LoRA or AdaLoRA adapter trained on it
  std::string output_dir;   // must not be model_dir or adapter_dir
  std::string dtype = "float32";  // of the written weights: float32 or bfloat16 (merging is in float32)
};

struct MergeResult {
  int64_t merged_modules = 0;               // projections that carried an adapter
  std::vector<std::string> modules_to_save;  // present in the model, taken from the adapter in full (e.g. a classifier)
  int64_t tensors = 0;                      // written to model.safetensors
  std::vector<std::string> copied_files;    // tokenizer / generation files copied from model_dir
};

// Loads the base in float32, attaches the adapter, checks every merged weight is finite (the error
// names the module), merges and unloads, and writes config.json + model.safetensors with the base
// checkpoint's key names and shapes (a tied lm_head is not written), plus copies of tokenizer.json,
// tokenizer_config.json, special_tokens_map.json and generation_config.json when present.
MergeResult merge_to_checkpoint(const MergeOptions& options);

}  // namespace peft
