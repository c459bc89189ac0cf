// The model interface shared by every family: a torch::nn::Module whose parameter names are the
// Hugging Face state-dict keys, built from config.json and loaded from safetensors by name.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <map>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "peft/layers/linear.h"
#include "peft/formats/model_config.h"

namespace peft {

// Per-layer key/value cache for incremental decoding (causal LMs).
struct KVCache {
  std::vector<at::Tensor> k, v;  // per layer: (B, kv_heads, T_past, head_dim)
  int64_t length() const { return k.empty() || !k[0].defined() ? 0 : k[0].size(2); }
  // Appends this step's keys and values of `layer` (B, kv_heads, T, head_dim) to the cache and
  // replaces them with the whole past plus the new positions.
  void append(size_t layer, at::Tensor& new_k, at::Tensor& new_v);
};

struct Batch {
  at::Tensor input_ids;       // (B, T) int64
  at::Tensor attention_mask;  // (B, T), 1 = token, 0 = padding; undefined = no padding
  at::Tensor token_type_ids;  // encoders only; undefined = zeros
  at::Tensor position_ids;    // causal LMs: (B, T); undefined = 0, 1, 2, ... (after the cache)
  at::Tensor labels;          // causal LM: (B, T) token ids, -100 = ignored (shifted inside);
                              // classification: (B) class ids, or (B) floats for regression
  KVCache* cache = nullptr;   // causal LMs: appended to, positions continue after it
};

struct ModelOutput {
  at::Tensor logits;  // causal LM: (B, T, vocab); classification: (B, num_labels); encoder: hidden states
  at::Tensor loss;    // defined when labels were given (with an adapter: regularisers included)
  at::Tensor task_loss;  // the model's own loss, without regularisers
};

class Model : public torch::nn::Module {
 public:
  explicit Model(ModelConfig config) : config_(std::move(config)) {}
  virtual ModelOutput forward(const Batch& batch) = 0;

  const ModelConfig& config() const { return config_; }
  // Recompute each block's activations in backward instead of keeping them (train --gradient-checkpointing):
  // less memory for one more forward of every block. Applies in training mode without a KV cache.
  bool gradient_checkpointing = false;
  // Where the weights live (the first parameter's device; the CPU for a model without any).
  at::Device device() const;
  // Every Linear by its state-dict path, e.g. "model.layers.0.self_attn.q_proj", in module order.
  std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> linear_modules();
  // PEFT's default LoRA target modules for this model type, and its AdaLoRA defaults where they differ.
  virtual std::vector<std::string> default_target_modules() const = 0;
  virtual std::vector<std::string> default_adalora_target_modules() const { return default_target_modules(); }
  // Modules trained in full with an adapter on a classification task (PEFT: "classifier", "score").
  virtual std::vector<std::string> head_modules() const { return {}; }
  // State-dict keys that checkpoints may hold but that are not parameters (buffers, tied copies).
  virtual bool ignorable_key(const std::string& key) const;

  // Copies `tensors` into the parameters by name (converted to each parameter's dtype/device).
  // Every parameter must be present and every tensor used, except ignorable keys; otherwise
  // throws naming `origin` and the missing / unexpected names.
  void load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& origin);
  std::map<std::string, at::Tensor> state_dict_tensors();
  // Hugging Face's initialisation for training from scratch: normal(0, initializer_range), zero
  // biases, unit norms.
  void init_weights(double initializer_range = 0.02);

 protected:
  // block(x), through peft::checkpoint when gradient_checkpointing applies (training, grad mode, no cache).
  // The block must hold what it uses by value: backward runs it again after forward has returned.
  at::Tensor run_block(const std::function<at::Tensor(const at::Tensor&)>& block, const at::Tensor& x,
                       bool has_cache) const;
  // The additive mask (B, 1, 1, T) for a causal LM's padding, or none. A gradient being recorded, no
  // cache, every row right-padded and the loss ignoring every padding position (label -100): none is
  // needed, since the causal mask already hides the padding from every token, and the causal kernel runs.
  static at::Tensor causal_padding_mask(const Batch& b, at::ScalarType dtype);

  ModelConfig config_;
};

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

// A model of the family config.json names, with initialised (not loaded) weights.
std::shared_ptr<Model> build_model(const ModelConfig& config, const LoadOptions& options = {});
// `model`: a Hugging Face checkpoint directory (config.json + safetensors) or a llama.cpp .gguf file
// (dequantized to float32, read as its Hugging Face counterpart: formats/gguf_model.h).
ModelConfig model_config_of(const std::string& model);
std::shared_ptr<Model> load_model(const std::string& model, const LoadOptions& options = {});
// Writes config.json and model.safetensors (atomically) into `dir`.
void save_model(Model& model, const std::string& dir);

// Causal-LM loss as transformers computes it: logits at t predict labels at t+1, -100 ignored,
// mean over counted tokens, in float32 (src/models/causal_lm_loss.cpp: one autograd function, one softmax).
at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels);

at::ScalarType parse_dtype(const std::string& name);  // "float32"/"fp32", "bfloat16"/"bf16", "float16"
// LoadOptions from the names a user types; std::invalid_argument naming --dtype or --device if one is bad.
LoadOptions load_options(const std::string& dtype, const std::string& device);

}  // namespace peft
