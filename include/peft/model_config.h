// config.json of a Hugging Face checkpoint, reduced to what our model families need.
// Parsing validates the architecture and names the key at fault; unknown families list the supported ones.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace peft {

enum class Family { Llama, GPT2, Bert, Roberta };

struct RopeScaling {
  std::string type = "default";  // "default", "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Family family = Family::Llama;
  std::string model_type;    // "llama", "mistral", "qwen2", "gpt2", "bert", "roberta"
  std::string architecture;  // e.g. "LlamaForCausalLM", "BertForSequenceClassification"
  bool is_causal_lm = true;  // false: an encoder (with a sequence-classification head if num_labels > 0)
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and o for llama's attention_bias) projections carry a bias
  bool o_proj_bias = false;
  bool mlp_bias = false;
  std::optional<int64_t> sliding_window;  // Mistral / Qwen2: informational, see docs
  // Encoders
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  int64_t num_labels = 0;             // 0: no classification head
  std::string problem_type;          // "", "regression", "single_label_classification"
  std::optional<int64_t> bos_token_id, eos_token_id;

  nlohmann::json raw;  // the whole file, written back unchanged when saving a merged model

  static ModelConfig from_json(const nlohmann::json& j, const std::string& origin = "config.json");
  static ModelConfig from_file(const std::string& path);
  // The architectures and model types we can build, for error messages and --help.
  static std::string supported();
};

}  // namespace peft
