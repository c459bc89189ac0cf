// export_gguf_lora: PEFT adapter -> llama.cpp LoRA GGUF. Only the adapter's files and the base's
// configuration (and tensor shapes, for a GGUF base) are read, never the base's weights.
#include "peft/adapters/gguf_lora.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <tuple>

#include "peft/formats/adapter_config.h"
#include "peft/core/file_io.h"
#include "peft/formats/gguf_model.h"
#include "peft/formats/gguf_writer.h"
#include "peft/formats/safetensors.h"
#include "peft/layers/adapter.h"
#include "peft/models/model.h"

namespace peft {
namespace fs = std::filesystem;

namespace {

const char* kPrefix = "base_model.model.";

// llama.cpp's general.architecture for a Hugging Face model_type; "" when llama.cpp's LoRA path is not
// offered for it.
std::string llama_cpp_architecture(const ModelConfig& c) {
  if (c.model_type == "llama" || c.model_type == "mistral") return "llama";
  if (c.model_type == "qwen2") return "qwen2";
  return "";
}

// The projections llama.cpp applies a LoRA to in its llama and qwen2 graphs.
bool is_adaptable(const std::string& gguf_name) {
  static const std::set<std::string> kinds = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"};
  if (gguf_name.rfind("blk.", 0) != 0) return false;
  auto a = gguf_name.find('.', 4);
  auto b = a == std::string::npos ? a : gguf_name.find('.', a + 1);
  if (b == std::string::npos || gguf_name.substr(b) != ".weight") return false;
  return kinds.count(gguf_name.substr(a + 1, b - a - 1)) != 0;
}


int64_t layer_of(const std::string& gguf_name) { return std::strtol(gguf_name.c_str() + 4, nullptr, 10); }

// (in, out) features of a projection of the base, from its configuration.
std::pair<int64_t, int64_t> projection_shape(const ModelConfig& c, const std::string& gguf_name) {
  const int64_t head_dim = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  const int64_t q = c.num_attention_heads * head_dim, kv = c.num_key_value_heads * head_dim;
  auto is = [&](const char* kind) { return gguf_name.find(std::string(".") + kind + ".") != std::string::npos; };
  if (is("attn_q")) return {c.hidden_size, q};
  if (is("attn_k") || is("attn_v")) return {c.hidden_size, kv};
  if (is("attn_output")) return {q, c.hidden_size};
  if (is("ffn_down")) return {c.intermediate_size, c.hidden_size};
  return {c.hidden_size, c.intermediate_size};  // ffn_gate, ffn_up
}

// The value most modules share (ties: the first seen), for the one alpha of the file.
float most_common(const std::vector<float>& values) {
  std::map<float, int> count;
  float best = values.front();
  for (float v : values)
    if (++count[v] > count[best]) best = v;
  return best;
}

}  // namespace

GgufLoraResult export_gguf_lora(const GgufLoraOptions& o) {
  if (o.adapter_dir.empty()) throw std::invalid_argument("--gguf is required (a PEFT adapter directory)");
  if (o.output.empty()) throw std::invalid_argument("--output is required (the .gguf file to write)");
  if (o.dtype != GgmlType::F32 && o.dtype != GgmlType::F16)
    throw std::invalid_argument("the adapter's tensors are written as F32 or F16");
  if (fs::is_directory(o.output))
    throw std::invalid_argument("--output " + o.output + " is a directory; give the .gguf file to write");
  const std::string config_path = (fs::path(o.adapter_dir) / "adapter_config.json").string();
  const auto config = AdapterConfig::from_file(config_path);

  GgufLoraResult r;
  r.base = o.model.empty() ? config.base_model_name_or_path : o.model;
  if (r.base.empty())
    throw std::invalid_argument(config_path + " names no base_model_name_or_path: give the base with --model DIR|FILE.gguf");
  if (!fs::exists(r.base))
    throw std::invalid_argument("the base model " + r.base + (o.model.empty() ? " (base_model_name_or_path of " + config_path + ")" : "") +
                                " is not a local directory or .gguf file: give it with --model DIR|FILE.gguf");
  refuse_output_over_inputs("output", o.output, {{"the adapter", o.adapter_dir}, {"the base model", r.base}});

  const ModelConfig model_config = model_config_of(r.base);
  std::optional<GgufFile> base_file;
  if (is_gguf_path(r.base)) {
    base_file.emplace(r.base);
    r.architecture = base_file->get_string("general.architecture");
  } else {
    r.architecture = llama_cpp_architecture(model_config);
  }
  if (r.architecture != "llama" && r.architecture != "qwen2")
    throw std::invalid_argument("the base model " + r.base + " is a " + model_config.architecture + " (model_type " +
                                model_config.model_type + "): GGUF LoRA adapters are written for llama.cpp's \"llama\" "
                                "(Llama, Mistral, SmolLM) and \"qwen2\" models only");

  // What llama.cpp's LoRA cannot hold, refused before any work.
  auto refuse = [&](const std::string& what) {
    throw std::invalid_argument(o.adapter_dir + ": " + what + "; llama.cpp's LoRA adapters cannot hold it");
  };
  if (config.task_type != "CAUSAL_LM")
    refuse("task_type is " + config.task_type + " (llama.cpp applies LoRA adapters to causal language models only)");
  if (!config.modules_to_save.empty()) {
    std::string names;
    for (auto& m : config.modules_to_save) names += (names.empty() ? "" : ", ") + m;
    refuse("modules_to_save (" + names + ") are full weights, not low-rank factors");
  }
  if (config.fan_in_fan_out) refuse("fan_in_fan_out is set (transposed Conv1D weights)");
  for (const char* key : {"use_dora", "lora_bias"})
    if (config.extra.contains(key) && config.extra[key].is_boolean() && config.extra[key].get<bool>())
      refuse(std::string(key) + " is true");

  // The modules are those the file holds factors for (as PEFT loads them); ranks come from the
  // factors, checked against the config as PeftModel::load checks them.
  const bool ada = config.peft_type == PeftType::AdaLora;
  const auto tensors = load_safetensors((fs::path(o.adapter_dir) / "adapter_model.safetensors").string());
  const std::string a_suffix = ada ? ".lora_A" : ".lora_A.weight";
  std::vector<std::string> paths;
  for (auto& [key, t] : tensors) {
    if (key.rfind(kPrefix, 0) != 0 || key.size() <= a_suffix.size() + std::strlen(kPrefix) ||
        key.compare(key.size() - a_suffix.size(), a_suffix.size(), a_suffix) != 0)
      continue;
    paths.push_back(key.substr(std::strlen(kPrefix), key.size() - a_suffix.size() - std::strlen(kPrefix)));
  }
  // In llama.cpp's order: by layer, then q, k, v, output, gate, up, down.
  std::sort(paths.begin(), paths.end(), [](const std::string& x, const std::string& y) {
    auto rank = [](const std::string& p) {
      static const char* order[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
      auto n = p.find(".layers.");
      long layer = n == std::string::npos ? -1L : std::strtol(p.c_str() + n + 8, nullptr, 10);
      int kind = 7;
      for (int i = 0; i < 7; ++i)
        if (p.size() > std::strlen(order[i]) && p.compare(p.size() - std::strlen(order[i]), std::string::npos, order[i]) == 0) kind = i;
      return std::make_tuple(layer, kind, p);
    };
    return rank(x) < rank(y);
  });
  if (paths.empty()) throw std::runtime_error(o.adapter_dir + ": adapter_model.safetensors holds no " + a_suffix.substr(1) + " factors");
  auto factor = [&](const std::string& path, const std::string& name) {
    auto key = kPrefix + path + "." + name + (ada ? "" : ".weight");
    auto it = tensors.find(key);
    if (it == tensors.end()) throw std::runtime_error(o.adapter_dir + ": adapter_model.safetensors lacks " + key);
    return it->second.to(at::kFloat);
  };
  for (auto& [key, t] : tensors) {
    bool known = false;
    for (auto& p : paths)
      for (const char* part : {".lora_A", ".lora_B", ".lora_E"}) known = known || key.rfind(kPrefix + p + part, 0) == 0;
    if (!known) throw std::invalid_argument(o.adapter_dir + ": adapter_model.safetensors holds " + key +
                                            ", which is not a LoRA factor; llama.cpp's LoRA adapters cannot hold it");
  }

  struct Factors {
    at::Tensor a, b;
  };
  std::vector<Factors> factors;
  std::vector<float> products;  // scale * rank of each kept module: the alpha that needs no baking
  const bool permuted = gguf_permutes_rope_rows(r.architecture);
  const auto cpu = at::TensorOptions().dtype(at::kFloat);
  for (auto& path : paths) {
    GgufLoraModule mod;
    mod.path = path;
    auto name = gguf_name_of_hf(path + ".weight");
    if (!name || !is_adaptable(*name))
      throw std::invalid_argument(o.adapter_dir + ": module " + path + " has an adapter, but llama.cpp applies LoRA "
                                  "adapters only to the attention and MLP projections (q_proj, k_proj, v_proj, o_proj, "
                                  "gate_proj, up_proj, down_proj) of every layer: leave it out of target_modules");
    mod.tensor = *name;
    at::Tensor a = factor(path, "lora_A"), b = factor(path, "lora_B");
    mod.rank = a.size(0);
    if (a.dim() != 2 || b.dim() != 2 || b.size(1) != mod.rank)
      throw std::runtime_error(o.adapter_dir + ": the factors of " + path + " do not have the shapes (r, in) and (out, r)");
    // Each module's scale from the adapter layers' own formulas, with the module's settings as PeftModel gives them.
    if (ada) {
      int64_t kept = config.init_r;
      if (auto it = config.rank_pattern.find(path + ".lora_E"); it != config.rank_pattern.end())
        kept = std::count(it->second.begin(), it->second.end(), true);
      if (mod.rank != kept)
        throw std::runtime_error(o.adapter_dir + ": " + path + " has rank " + std::to_string(mod.rank) +
                                 " in adapter_model.safetensors, but adapter_config.json's rank_pattern keeps " + std::to_string(kept));
      AdaLoraLayer layer(1, 1, config.init_r, config.lora_alpha, 0.0, cpu);
      mod.scale = layer.multiplier();
      if (mod.rank > 0) a = a * factor(path, "lora_E");  // A as PEFT multiplies it: A * E, in float32
    } else {
      const int64_t want = config.rank_of(path);
      if (mod.rank != want)
        throw std::runtime_error(o.adapter_dir + ": " + path + " has rank " + std::to_string(mod.rank) +
                                 " in adapter_model.safetensors, but adapter_config.json gives it " + std::to_string(want));
      const double alpha = config.alpha_of(path);
      mod.scale = LoraLayer(1, 1, mod.rank, alpha, config.use_rslora, 0.0, cpu).scaling;
    }
    r.modules.push_back(mod);
    if (mod.rank == 0) {
      factors.push_back({});
      continue;  // pruned by AdaLoRA: nothing to add
    }
    if (!at::isfinite(a).all().item<bool>() || !at::isfinite(b).all().item<bool>())
      throw std::runtime_error(o.adapter_dir + ": the adapter of " + path + " has NaN or infinite values; it cannot be exported");
    const auto want = projection_shape(model_config, mod.tensor);
    if (base_file) {
      if (!base_file->contains(mod.tensor))
        throw std::runtime_error(r.base + " has no tensor " + mod.tensor + " for the adapter of " + path);
      auto& info = base_file->tensor(mod.tensor);
      if (info.ne.size() != 2 || info.ne[0] != static_cast<uint64_t>(a.size(1)) || info.ne[1] != static_cast<uint64_t>(b.size(0)))
        throw std::runtime_error(r.base + ": tensor " + mod.tensor + " does not have the shape of the adapter of " + path +
                                 " (in " + std::to_string(a.size(1)) + ", out " + std::to_string(b.size(0)) + ")");
    } else if (a.size(1) != want.first || b.size(0) != want.second) {
      throw std::runtime_error(o.adapter_dir + ": the adapter of " + path + " maps " + std::to_string(a.size(1)) + " -> " +
                               std::to_string(b.size(0)) + " features, the base " + r.base + " has " +
                               std::to_string(want.first) + " -> " + std::to_string(want.second) + " (another base model?)");
    }
    if (model_config.num_hidden_layers > 0 && layer_of(mod.tensor) >= model_config.num_hidden_layers)
      throw std::runtime_error(o.adapter_dir + ": " + path + " is beyond the base's " + std::to_string(model_config.num_hidden_layers) + " layers");
    if (permuted && (mod.tensor.find(".attn_q.") != std::string::npos || mod.tensor.find(".attn_k.") != std::string::npos)) {
      const bool q = mod.tensor.find(".attn_q.") != std::string::npos;
      b = gguf_rope_rows(b, q ? model_config.num_attention_heads : model_config.num_key_value_heads);
      r.modules.back().rope_rows = true;
    }
    factors.push_back({a.contiguous(), b.contiguous()});
    products.push_back(static_cast<float>(mod.scale * static_cast<double>(mod.rank)));
  }
  if (products.empty()) throw std::runtime_error(o.adapter_dir + ": every module was pruned to rank 0; nothing to export");

  // One alpha for the file: llama.cpp scales module k by alpha / r_k (float32), or by 1 when alpha is 0.
  r.alpha = most_common(products);
  GgufWriter w;
  w.set_string("general.architecture", r.architecture);
  w.set_string("general.type", "adapter");
  w.set_string("general.name", fs::path(o.adapter_dir).filename().empty() ? fs::path(o.adapter_dir).parent_path().filename().string()
                                                                         : fs::path(o.adapter_dir).filename().string());
  w.set_string("adapter.type", "lora");
  w.set_float32("adapter.lora.alpha", r.alpha);
  for (size_t i = 0; i < r.modules.size(); ++i) {
    auto& mod = r.modules[i];
    if (mod.rank == 0) continue;
    const float llama_scale = r.alpha != 0 ? r.alpha / static_cast<float>(mod.rank) : 1.0f;
    at::Tensor b = factors[i].b;
    if (static_cast<float>(mod.scale) != llama_scale) {
      mod.baked = mod.scale / static_cast<double>(llama_scale);
      b = b * mod.baked;
    }
    w.add_tensor(mod.tensor + ".lora_a", factors[i].a, o.dtype);
    w.add_tensor(mod.tensor + ".lora_b", b, o.dtype);
  }
  auto parent = fs::path(o.output).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  w.write(o.output);
  return r;
}

}  // namespace peft
