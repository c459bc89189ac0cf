// A PEFT LoRA or AdaLoRA adapter as a llama.cpp LoRA adapter file (GGUF, general.type "adapter"):
// llama.cpp's tensor names and rotary row order, each module's own rank and scale baked into its factors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "peft/formats/gguf.h"

namespace peft {

struct GgufLoraOptions {
  std::string adapter_dir;  // a PEFT adapter directory (LoRA, rsLoRA, rank/alpha patterns, AdaLoRA)
  std::string model;        // the base: a Hugging Face directory or a .gguf file; "" = base_model_name_or_path
  std::string output;       // the .gguf file to write (replaced atomically; never an input)
  GgmlType dtype = GgmlType::F32;  // of lora_a / lora_b: F32 or F16
};

struct GgufLoraModule {
  std::string path;    // "model.layers.0.self_attn.q_proj"
  std::string tensor;  // the base tensor in llama.cpp: "blk.0.attn_q.weight" (+ ".lora_a" / ".lora_b")
  int64_t rank = 0;    // 0: pruned by AdaLoRA, left out of the file
  double scale = 0;    // PEFT's multiplier of B A x for this module (alpha/r, alpha/sqrt(r), AdaLoRA's)
  double baked = 1;    // the factor multiplied into lora_b so that llama.cpp's alpha / rank gives `scale`
  bool rope_rows = false;  // lora_b's rows reordered as llama.cpp's converter reorders q / k
};

struct GgufLoraResult {
  std::string base;          // the base model the adapter was checked against
  std::string architecture;  // llama.cpp's general.architecture: "llama" or "qwen2"
  float alpha = 0;           // adapter.lora.alpha written (0: llama.cpp scales by 1)
  std::vector<GgufLoraModule> modules;  // in the adapter's module order, pruned ones included
};

// Reads the adapter (PEFT's format, with PeftModel's own selection of modules, patterns and scalings)
// against the base's configuration, and writes `output`. llama.cpp loads it with
// `llama-cli -m base.gguf --lora output` and gives the adapter's outputs: for module k,
// lora_b' lora_a * alpha / r_k == scale_k * B_k A_k (AdaLoRA: A_k * E_k over the kept triplets).
// Refuses, naming the module or setting, what llama.cpp cannot load as a LoRA: bases other than
// llama.cpp's "llama" (Llama, Mistral) and "qwen2" (GPT-2 and BERT are refused by name), modules
// other than the attention and MLP projections, modules_to_save, classification adapters, DoRA,
// LoRA biases, fan_in_fan_out, non-finite weights, and an adapter whose modules were all pruned.
GgufLoraResult export_gguf_lora(const GgufLoraOptions& options);

}  // namespace peft
