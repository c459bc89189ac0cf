// config.json of a Hugging Face checkpoint, reduced to what our model families need, and the typed
// reader of its keys (errors name the file and key). Each family parses its keys (peft/models/model_family.h).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace peft {

struct RopeScaling {
  std::string type = "default";  // "default", "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string family;        // the model family that reads this config: "llama", "gpt2", "bert", "roberta"
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
  int64_t position_limit = 0;  // learned absolute positions (GPT-2): no longer sequence can run; 0: none
  // Encoders
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  int64_t num_labels = 0;             // 0: no classification head
  std::string problem_type;          // "", "regression", "single_label_classification"
  std::optional<int64_t> bos_token_id, eos_token_id;

  nlohmann::json raw;  // the whole file, written back unchanged when saving a merged model
};

// Typed access to the keys of one JSON object of a config file; every error names `origin` and the key.
struct ConfigReader {
  const nlohmann::json& j;
  const std::string& origin;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const;
  bool has(const std::string& key) const { return j.contains(key) && !j.at(key).is_null(); }
  int64_t integer(const std::string& key) const;  // required
  int64_t integer(const std::string& key, int64_t dflt) const { return has(key) ? integer(key) : dflt; }
  int64_t positive(const std::string& key) const;  // required, > 0
  double number(const std::string& key, double dflt) const;
  bool boolean(const std::string& key, bool dflt) const;
  std::string string(const std::string& key, const std::string& dflt) const;
  std::optional<int64_t> optional_int(const std::string& key) const;  // an integer, or the first of a list
};

// The keys every family shares: model_type, architectures (the first), bos/eos ids, the raw file.
// Throws naming `origin` when `j` is not an object or a shared key is malformed.
ModelConfig read_common_config(const nlohmann::json& j, const std::string& origin);

// Rotary embedding settings, in both forms transformers writes: top-level rope_theta (+ rope_scaling)
// and the newer rope_parameters. Refuses rope types other than default, linear and llama3.
void read_rope(const ConfigReader& r, ModelConfig& c);

}  // namespace peft
