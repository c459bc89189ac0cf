// config.json parsing for the Llama (Llama, Mistral, Qwen2), GPT-2 and BERT/RoBERTa families.
// Reads both rope forms (top-level rope_theta and the newer rope_parameters) and names any bad key.
#include "peft/model_config.h"

#include <sstream>
#include <stdexcept>

#include "peft/file_io.h"

namespace peft {
namespace {

struct Reader {
  const nlohmann::json& j;
  const std::string& origin;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error(origin + ": key \"" + key + "\": " + what);
  }
  bool has(const std::string& key) const { return j.contains(key) && !j.at(key).is_null(); }
  int64_t integer(const std::string& key) const {
    if (!has(key)) fail(key, "missing (an integer is required)");
    const auto& v = j.at(key);
    if (!v.is_number_integer()) fail(key, "expected an integer, got " + v.dump());
    return v.get<int64_t>();
  }
  int64_t integer(const std::string& key, int64_t dflt) const { return has(key) ? integer(key) : dflt; }
  int64_t positive(const std::string& key) const {
    int64_t v = integer(key);
    if (v <= 0) fail(key, "must be > 0, got " + std::to_string(v));
    return v;
  }
  double number(const std::string& key, double dflt) const {
    if (!has(key)) return dflt;
    const auto& v = j.at(key);
    if (!v.is_number()) fail(key, "expected a number, got " + v.dump());
    return v.get<double>();
  }
  bool boolean(const std::string& key, bool dflt) const {
    if (!has(key)) return dflt;
    const auto& v = j.at(key);
    if (!v.is_boolean()) fail(key, "expected true or false, got " + v.dump());
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& dflt) const {
    if (!has(key)) return dflt;
    const auto& v = j.at(key);
    if (!v.is_string()) fail(key, "expected a string, got " + v.dump());
    return v.get<std::string>();
  }
  std::optional<int64_t> optional_int(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    const auto& v = j.at(key);
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
    return std::nullopt;
  }
};

void read_rope(const Reader& r, ModelConfig& c) {
  // Newer transformers: "rope_parameters": {"rope_theta", "rope_type", ...}; older: top-level
  // "rope_theta" and optional "rope_scaling": {"rope_type"|"type", "factor", ...}.
  const nlohmann::json* scaling = nullptr;
  c.rope_theta = r.number("rope_theta", 10000.0);
  if (r.has("rope_parameters")) {
    const auto& rp = r.j.at("rope_parameters");
    if (!rp.is_object()) r.fail("rope_parameters", "expected an object");
    Reader sub{rp, r.origin};
    c.rope_theta = sub.number("rope_theta", c.rope_theta);
    scaling = &rp;
  }
  if (r.has("rope_scaling")) {
    if (!r.j.at("rope_scaling").is_object()) r.fail("rope_scaling", "expected an object");
    scaling = &r.j.at("rope_scaling");
  }
  if (!scaling) return;
  Reader s{*scaling, r.origin};
  std::string type = s.string("rope_type", s.string("type", "default"));
  if (type != "default" && type != "linear" && type != "llama3") {
    r.fail("rope_type", "\"" + type + "\" is not supported (supported: default, linear, llama3)");
  }
  c.rope_scaling.type = type;
  c.rope_scaling.factor = s.number("factor", 1.0);
  c.rope_scaling.low_freq_factor = s.number("low_freq_factor", 1.0);
  c.rope_scaling.high_freq_factor = s.number("high_freq_factor", 4.0);
  c.rope_scaling.original_max_position_embeddings = s.integer("original_max_position_embeddings", 8192);
}

}  // namespace

std::string ModelConfig::supported() {
  return "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (model_type llama, mistral, qwen2); "
         "GPT2LMHeadModel (gpt2); BertModel, BertForSequenceClassification (bert); "
         "RobertaModel, RobertaForSequenceClassification (roberta)";
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) throw std::runtime_error(origin + ": expected a JSON object");
  Reader r{j, origin};
  ModelConfig c;
  c.raw = j;
  c.model_type = r.string("model_type", "");
  if (r.has("architectures")) {
    const auto& a = j.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string()) r.fail("architectures", "expected a list of names");
    c.architecture = a[0].get<std::string>();
  }
  const std::string& mt = c.model_type;
  if (mt == "llama" || mt == "mistral" || mt == "qwen2") {
    c.family = Family::Llama;
    if (c.architecture.empty()) c.architecture = mt == "llama" ? "LlamaForCausalLM"
                                               : mt == "mistral" ? "MistralForCausalLM" : "Qwen2ForCausalLM";
    c.vocab_size = r.positive("vocab_size");
    c.hidden_size = r.positive("hidden_size");
    c.intermediate_size = r.positive("intermediate_size");
    c.num_hidden_layers = r.positive("num_hidden_layers");
    c.num_attention_heads = r.positive("num_attention_heads");
    c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads);
    c.head_dim = r.has("head_dim") ? r.positive("head_dim") : c.hidden_size / c.num_attention_heads;
    if (c.head_dim <= 0)
      r.fail("num_attention_heads", "more heads (" + std::to_string(c.num_attention_heads) + ") than hidden_size (" +
                                        std::to_string(c.hidden_size) + ") leaves no head_dim");
    c.max_position_embeddings = r.has("max_position_embeddings") ? r.positive("max_position_embeddings") : 2048;
    c.norm_eps = r.number("rms_norm_eps", 1e-6);
    c.hidden_act = r.string("hidden_act", "silu");
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
    if (mt == "qwen2") {
      c.attention_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
    } else if (mt == "llama") {
      c.attention_bias = r.boolean("attention_bias", false);
      c.o_proj_bias = c.attention_bias;
      c.mlp_bias = r.boolean("mlp_bias", false);
    }
    if (mt != "llama" && r.boolean("use_sliding_window", mt == "mistral")) {
      c.sliding_window = r.optional_int("sliding_window");
    }
    read_rope(r, c);
    if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0) {
      r.fail("num_key_value_heads", "must divide num_attention_heads (" +
                                        std::to_string(c.num_attention_heads) + "), got " +
                                        std::to_string(c.num_key_value_heads));
    }
    if (c.hidden_act != "silu") r.fail("hidden_act", "\"" + c.hidden_act + "\" is not supported (supported: silu)");
    if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM" &&
        c.architecture != "Qwen2ForCausalLM") {
      r.fail("architectures", "\"" + c.architecture + "\" is not supported; supported: " + supported());
    }
  } else if (mt == "gpt2") {
    c.family = Family::GPT2;
    if (c.architecture.empty()) c.architecture = "GPT2LMHeadModel";
    if (c.architecture != "GPT2LMHeadModel") {
      r.fail("architectures", "\"" + c.architecture + "\" is not supported; supported: " + supported());
    }
    c.vocab_size = r.positive("vocab_size");
    c.hidden_size = r.positive("n_embd");
    c.num_hidden_layers = r.positive("n_layer");
    c.num_attention_heads = r.positive("n_head");
    c.num_key_value_heads = c.num_attention_heads;
    c.head_dim = c.hidden_size / c.num_attention_heads;
    if (r.has("n_inner"))
      c.intermediate_size = r.positive("n_inner");
    else if (__builtin_mul_overflow(c.hidden_size, int64_t{4}, &c.intermediate_size))
      r.fail("n_embd", "too large for the default n_inner (4 * n_embd), got " + std::to_string(c.hidden_size));
    c.max_position_embeddings = r.positive("n_positions");
    c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
    c.hidden_act = r.string("activation_function", "gelu_new");
    c.tie_word_embeddings = r.boolean("tie_word_embeddings", true);
    if (c.hidden_act != "gelu_new" && c.hidden_act != "gelu" && c.hidden_act != "relu") {
      r.fail("activation_function", "\"" + c.hidden_act + "\" is not supported (supported: gelu_new, gelu, relu)");
    }
    if (r.boolean("scale_attn_by_inverse_layer_idx", false) || r.boolean("reorder_and_upcast_attn", false)) {
      r.fail("scale_attn_by_inverse_layer_idx", "GPT-2 attention variants are not supported");
    }
  } else if (mt == "bert" || mt == "roberta") {
    c.family = mt == "bert" ? Family::Bert : Family::Roberta;
    const std::string base = mt == "bert" ? "Bert" : "Roberta";
    if (c.architecture.empty()) c.architecture = base + "Model";
    c.is_causal_lm = false;
    if (c.architecture == base + "ForSequenceClassification") {
      c.num_labels = 2;
      if (r.has("id2label") && j.at("id2label").is_object()) c.num_labels = static_cast<int64_t>(j.at("id2label").size());
      c.num_labels = r.integer("num_labels", c.num_labels);
      if (c.num_labels <= 0) r.fail("num_labels", "must be > 0");
    } else if (c.architecture != base + "Model") {
      r.fail("architectures", "\"" + c.architecture + "\" is not supported; supported: " + supported());
    }
    c.vocab_size = r.positive("vocab_size");
    c.hidden_size = r.positive("hidden_size");
    c.intermediate_size = r.positive("intermediate_size");
    c.num_hidden_layers = r.positive("num_hidden_layers");
    c.num_attention_heads = r.positive("num_attention_heads");
    c.num_key_value_heads = c.num_attention_heads;
    c.head_dim = c.hidden_size / c.num_attention_heads;
    c.max_position_embeddings = r.positive("max_position_embeddings");
    c.norm_eps = r.number("layer_norm_eps", 1e-12);
    c.hidden_act = r.string("hidden_act", "gelu");
    c.type_vocab_size = r.integer("type_vocab_size", 2);
    c.pad_token_id = r.integer("pad_token_id", mt == "roberta" ? 1 : 0);
    c.problem_type = r.string("problem_type", "");
    c.attention_bias = true;
    c.o_proj_bias = true;
    c.mlp_bias = true;
    if (c.hidden_act != "gelu" && c.hidden_act != "gelu_new" && c.hidden_act != "relu") {
      r.fail("hidden_act", "\"" + c.hidden_act + "\" is not supported (supported: gelu, gelu_new, relu)");
    }
    if (r.string("position_embedding_type", "absolute") != "absolute") {
      r.fail("position_embedding_type", "only \"absolute\" is supported");
    }
  } else {
    r.fail("model_type", "\"" + mt + "\" is not supported; supported: " + supported());
  }
  c.bos_token_id = r.optional_int("bos_token_id");
  c.eos_token_id = r.optional_int("eos_token_id");
  if (c.hidden_size % c.num_attention_heads != 0 && c.family != Family::Llama) {
    throw std::runtime_error(origin + ": hidden_size (" + std::to_string(c.hidden_size) +
                             ") is not a multiple of the number of heads (" +
                             std::to_string(c.num_attention_heads) + ")");
  }
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  return from_json(read_json_file(path, "a Hugging Face config.json"), path);
}

}  // namespace peft
