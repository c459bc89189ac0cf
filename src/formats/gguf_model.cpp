// A llama.cpp GGUF model read as a Hugging Face checkpoint: config.json from `<arch>.*` metadata,
// tensors dequantized and renamed, q/k rows put back in Hugging Face's rotary order.
#include "peft/formats/gguf_model.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <stdexcept>
#include <utility>

namespace peft {
namespace {

using nlohmann::ordered_json;

// One block's tensors: llama.cpp's name after "blk.N." and Hugging Face's after "model.layers.N.".
constexpr std::pair<const char*, const char*> kBlockNames[] = {
    {"attn_norm", "input_layernorm"},     {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},       {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"},  {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},        {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};
// The tensors outside the blocks.
constexpr std::pair<const char*, const char*> kGlobalNames[] = {
    {"token_embd", "model.embed_tokens"}, {"output_norm", "model.norm"}, {"output", "lm_head"}};

[[noreturn]] void fail(const GgufFile& f, const std::string& what) {
  throw std::runtime_error("gguf: " + f.path() + ": " + what);
}

// "blk.12.attn_q.weight" -> {12, "attn_q", "weight"}; false when the name has another shape.
bool split_block_name(const std::string& name, const std::string& prefix, int64_t& block, std::string& base,
                      std::string& kind) {
  if (name.rfind(prefix, 0) != 0) return false;
  size_t i = prefix.size(), j = i;
  while (j < name.size() && std::isdigit(static_cast<unsigned char>(name[j]))) ++j;
  if (j == i || j - i > 6 || j >= name.size() || name[j] != '.') return false;
  block = std::stoll(name.substr(i, j - i));
  const std::string rest = name.substr(j + 1);
  const size_t dot = rest.rfind('.');
  if (dot == std::string::npos) return false;
  base = rest.substr(0, dot);
  kind = rest.substr(dot + 1);
  return kind == "weight" || kind == "bias";
}

// "model.embed_tokens.weight" -> {"model.embed_tokens", "weight"}.
bool split_kind(const std::string& name, std::string& base, std::string& kind) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  base = name.substr(0, dot);
  kind = name.substr(dot + 1);
  return kind == "weight" || kind == "bias";
}

at::Tensor reorder_rows(const at::Tensor& rows, int64_t n_head, bool to_gguf) {
  if (rows.dim() < 1 || n_head <= 0 || rows.size(0) % (2 * n_head) != 0)
    throw std::invalid_argument("rotary row order: " + std::to_string(rows.dim() ? rows.size(0) : 0) +
                                " rows are not a whole number of heads of even size (" + std::to_string(n_head) + " heads)");
  std::vector<int64_t> shape = {n_head, 2, rows.size(0) / n_head / 2};
  if (to_gguf == false) std::swap(shape[1], shape[2]);
  for (int64_t d = 1; d < rows.dim(); ++d) shape.push_back(rows.size(d));
  return rows.reshape(shape).transpose(1, 2).reshape(rows.sizes()).contiguous();
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

bool is_gguf_path(const std::string& path) {
  const std::string name = lower(std::filesystem::path(path).filename().string());
  return name.size() > 5 && name.compare(name.size() - 5, 5, ".gguf") == 0 && std::filesystem::is_regular_file(path);
}

std::string gguf_supported_architectures() { return "llama (Llama, Mistral, SmolLM), qwen2"; }

bool gguf_permutes_rope_rows(const std::string& architecture) { return architecture == "llama"; }

std::optional<std::string> hf_name_of_gguf(const std::string& g) {
  int64_t block = 0;
  std::string base, kind;
  if (split_block_name(g, "blk.", block, base, kind)) {
    for (const auto& [gguf, hf] : kBlockNames)
      if (base == gguf) return "model.layers." + std::to_string(block) + "." + hf + "." + kind;
    return std::nullopt;
  }
  if (!split_kind(g, base, kind)) return std::nullopt;
  for (const auto& [gguf, hf] : kGlobalNames)
    if (base == gguf) return std::string(hf) + "." + kind;
  return std::nullopt;
}

std::optional<std::string> gguf_name_of_hf(const std::string& h) {
  int64_t block = 0;
  std::string base, kind;
  if (split_block_name(h, "model.layers.", block, base, kind)) {
    for (const auto& [gguf, hf] : kBlockNames)
      if (base == hf) return "blk." + std::to_string(block) + "." + gguf + "." + kind;
    return std::nullopt;
  }
  if (!split_kind(h, base, kind)) return std::nullopt;
  for (const auto& [gguf, hf] : kGlobalNames)
    if (base == hf) return std::string(gguf) + "." + kind;
  return std::nullopt;
}

at::Tensor gguf_rope_rows(const at::Tensor& rows, int64_t n_head) { return reorder_rows(rows, n_head, true); }
at::Tensor hf_rope_rows(const at::Tensor& rows, int64_t n_head) { return reorder_rows(rows, n_head, false); }

ordered_json gguf_model_config(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2")
    fail(f, "general.architecture is \"" + arch + "\", which peft.cpp does not read from GGUF (supported: " +
                gguf_supported_architectures() + "); convert the original Hugging Face checkpoint instead");
  auto key = [&](const char* k) { return arch + "." + k; };

  const int64_t hidden = static_cast<int64_t>(f.get_uint(key("embedding_length")));
  const int64_t heads = static_cast<int64_t>(f.get_uint(key("attention.head_count")));
  const int64_t kv_heads = static_cast<int64_t>(f.find_uint(key("attention.head_count_kv")).value_or(heads));
  if (heads <= 0 || hidden <= 0) fail(f, key("attention.head_count") + " and " + key("embedding_length") + " must be positive");
  const int64_t head_dim = static_cast<int64_t>(f.find_uint(key("attention.key_length")).value_or(hidden / heads));
  if (auto rot = f.find_uint(key("rope.dimension_count")); rot && static_cast<int64_t>(*rot) != head_dim)
    fail(f, "metadata key \"" + key("rope.dimension_count") + "\" is " + std::to_string(*rot) + ", but heads have " +
                std::to_string(head_dim) + " dimensions: partial rotary embeddings are not supported");
  if (f.contains("rope_freqs.weight"))
    fail(f, "tensor 'rope_freqs.weight' (Llama 3.1-style rotary frequency factors) is not supported");

  const GgufTensorInfo& embed = f.tensor("token_embd.weight");
  if (embed.ne.size() != 2 || static_cast<int64_t>(embed.ne[0]) != hidden)
    fail(f, "tensor 'token_embd.weight' is not [vocab, " + std::to_string(hidden) + "]");

  ordered_json c;
  c["architectures"] = {arch == "llama" ? "LlamaForCausalLM" : "Qwen2ForCausalLM"};
  c["model_type"] = arch;
  c["hidden_size"] = hidden;
  c["intermediate_size"] = f.get_uint(key("feed_forward_length"));
  c["num_hidden_layers"] = f.get_uint(key("block_count"));
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = kv_heads;
  if (head_dim != hidden / heads) c["head_dim"] = head_dim;
  c["max_position_embeddings"] = f.find_uint(key("context_length")).value_or(2048);
  c["rms_norm_eps"] = f.get_float(key("attention.layer_norm_rms_epsilon"));
  c["rope_theta"] = f.find_float(key("rope.freq_base")).value_or(10000.0);
  if (auto scaling = f.find_string(key("rope.scaling.type")); scaling && *scaling != "none") {
    if (*scaling != "linear")
      fail(f, "metadata key \"" + key("rope.scaling.type") + "\" is \"" + *scaling + "\": only linear rotary scaling is supported");
    c["rope_scaling"] = {{"type", "linear"}, {"factor", f.get_float(key("rope.scaling.factor"))}};
  }
  c["vocab_size"] = embed.ne[1];
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = !f.contains("output.weight");
  if (arch == "llama") {
    c["attention_bias"] = f.contains("blk.0.attn_q.bias");
    c["mlp_bias"] = false;
  } else {
    c["use_sliding_window"] = false;
  }
  for (const char* id : {"bos_token_id", "eos_token_id", "padding_token_id"})
    if (auto v = f.find_uint(std::string("tokenizer.ggml.") + id))
      c[std::string(id) == "padding_token_id" ? "pad_token_id" : id] = *v;
  c["torch_dtype"] = "float32";
  return c;
}

std::map<std::string, at::Tensor> gguf_state_dict(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  const ordered_json config = gguf_model_config(f);  // refuses what cannot be read, before any work
  const bool permuted = gguf_permutes_rope_rows(arch);
  for (const GgufTensorInfo& info : f.tensors()) {
    if (!hf_name_of_gguf(info.name))
      fail(f, "tensor '" + info.name + "' has no Hugging Face name in the " + arch +
                  " layout (token_embd, output_norm, output and blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,"
                  "ffn_norm,ffn_gate,ffn_up,ffn_down})");
    f.readable(info.name);
  }
  std::map<std::string, at::Tensor> out;
  for (const GgufTensorInfo& info : f.tensors()) {
    at::Tensor t = at::empty(info.torch_shape(), at::TensorOptions().dtype(at::kFloat));
    f.dequantize(info.name, t.data_ptr<float>());
    std::string hf = *hf_name_of_gguf(info.name);
    const bool q = hf.find(".self_attn.q_proj.") != std::string::npos;
    const bool k = hf.find(".self_attn.k_proj.") != std::string::npos;
    if (permuted && (q || k)) {
      const int64_t n_head = (q ? config["num_attention_heads"] : config["num_key_value_heads"]).get<int64_t>();
      try {
        t = hf_rope_rows(t, n_head);
      } catch (const std::exception& e) {
        fail(f, "tensor '" + info.name + "': " + e.what());
      }
    }
    out.emplace(std::move(hf), std::move(t));
  }
  return out;
}

}  // namespace peft
