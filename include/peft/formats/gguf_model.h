// A llama.cpp GGUF model read as a Hugging Face checkpoint: config.json from its metadata, the
// state dict under Hugging Face names (llama.cpp's rotary row order undone), and the name mapping both ways.
#pragma once

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>

#include "peft/formats/gguf.h"

namespace peft {

// True when `path` names a regular file whose name ends in ".gguf" (any case).
bool is_gguf_path(const std::string& path);

// The architectures (general.architecture) read as Hugging Face models: "llama" (Llama, Mistral,
// SmolLM; rotary rows permuted by llama.cpp's converter) and "qwen2" (rows as they are).
std::string gguf_supported_architectures();

// config.json of the file's model, from `<arch>.*` and `tokenizer.ggml.*` metadata. Throws naming
// the file and the key (or the architecture, with those supported) when the file cannot be read as one.
nlohmann::ordered_json gguf_model_config(const GgufFile& file);

// Every tensor of the file dequantized to float32 under its Hugging Face name and shape, with q/k
// rows (and biases) back in Hugging Face's order. A tensor without a Hugging Face name is refused by name.
std::map<std::string, at::Tensor> gguf_state_dict(const GgufFile& file);

// The name mapping of the llama layout: "blk.3.attn_q.weight" <-> "model.layers.3.self_attn.q_proj.weight".
// nullopt for a name the mapping does not know.
std::optional<std::string> hf_name_of_gguf(const std::string& gguf_name);
std::optional<std::string> gguf_name_of_hf(const std::string& hf_name);

// llama.cpp's converter reorders the rows of q and k (weights and biases: dim 0) from Hugging Face's
// rotary layout (the two halves of each head) to interleaved pairs. `n_head`: the heads of that
// projection (num_key_value_heads for k). gguf_rope_rows goes Hugging Face -> GGUF, hf_rope_rows back.
at::Tensor gguf_rope_rows(const at::Tensor& rows, int64_t n_head);
at::Tensor hf_rope_rows(const at::Tensor& rows, int64_t n_head);

// True when the architecture's q/k rows are stored permuted (llama), false when as they are (qwen2).
bool gguf_permutes_rope_rows(const std::string& architecture);

}  // namespace peft
