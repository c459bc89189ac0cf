// `peft inspect` in the library: summarises a model or adapter directory from config files and
// safetensors headers, turning every unreadable file into an error or note that names it.
#include "peft/observability/inspect.h"
#include "peft/core/strings.h"

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "peft/formats/adapter_config.h"
#include "peft/text/chat_format.h"
#include "peft/core/file_io.h"
#include "peft/formats/model_config.h"
#include "peft/formats/gguf.h"
#include "peft/formats/gguf_model.h"
#include "peft/models/model_tokenizer.h"
#include "peft/formats/safetensors.h"
#include "peft/text/tokenizer_config.h"
#include "peft/models/model_family.h"

namespace peft {
namespace fs = std::filesystem;

namespace {

nlohmann::json read_json_object(const fs::path& path, const std::string& what) {
  auto j = read_json_file(path.string(), what);
  if (!j.is_object()) throw std::runtime_error(path.string() + ": expected a JSON object (" + what + ")");
  return j;
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > (n < 0 ? 1 : 0); i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

std::string count_text(int64_t n) {
  std::ostringstream os;
  os << with_commas(n);
  if (n >= 1000000000) os << " (" << static_cast<double>(n) / 1e9 << "B)";
  else if (n >= 1000000) os << " (" << static_cast<double>(n) / 1e6 << "M)";
  return os.str();
}

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ", size_t max = 12) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max; ++i) out += (i ? sep : "") + v[i];
  if (v.size() > max) out += sep + "... (" + std::to_string(v.size()) + " in all)";
  return out;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// Weight files of a model directory: a single model.safetensors or the shards of an index.
std::vector<fs::path> weight_files(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors")) return {dir / "model.safetensors"};
  fs::path index = dir / "model.safetensors.index.json";
  if (!fs::exists(index)) return {};
  auto j = read_json_object(index, "a sharded checkpoint index");
  if (!j.contains("weight_map") || !j["weight_map"].is_object())
    throw std::runtime_error(index.string() + ": no \"weight_map\" object");
  std::set<std::string> shards;
  for (auto& [k, v] : j["weight_map"].items()) {
    if (!v.is_string()) throw std::runtime_error(index.string() + ": weight_map[\"" + k + "\"] is not a file name");
    shards.insert(v.get<std::string>());
  }
  std::vector<fs::path> out;
  for (auto& s : shards) out.push_back(dir / s);
  return out;
}

struct TensorStats {
  int64_t tensors = 0, parameters = 0;
  std::map<std::string, int64_t> by_dtype;  // dtype -> tensors
};

void add_stats(const SafeTensorsFile& f, TensorStats& s) {
  for (auto& k : f.keys()) {
    const auto& info = f.info(k);
    ++s.tensors;
    s.parameters += numel(info.shape);
    ++s.by_dtype[info.dtype];
  }
}

void add_dtypes(Inspection& r, const TensorStats& s) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  std::vector<std::string> parts;
  for (auto& [d, n] : s.by_dtype) {
    j[d] = n;
    parts.push_back(d + " (" + std::to_string(n) + " tensor" + (n == 1 ? "" : "s") + ")");
  }
  r.add("dtypes", "dtypes", j, join(parts));
}

}  // namespace

void Inspection::add(const std::string& key, const std::string& label, nlohmann::ordered_json value, std::string text) {
  if (text.empty()) text = value.is_string() ? value.get<std::string>() : value.dump();
  facts.emplace_back(label, text);
  json[key] = std::move(value);
}

std::string Inspection::render() const {
  size_t width = 0;
  for (auto& [label, v] : facts) width = std::max(width, label.size());
  std::ostringstream os;
  os << path << ": " << kind << "\n";
  for (auto& [label, v] : facts) os << "  " << label << ":" << std::string(width - label.size() + 1, ' ') << v << "\n";
  for (auto& n : notes) os << "  note: " << n << "\n";
  return os.str();
}

std::vector<AdapterModuleInfo> adapter_modules(const std::string& adapter_dir) {
  fs::path file = fs::path(adapter_dir) / "adapter_model.safetensors";
  if (!fs::exists(file)) {
    if (fs::exists(fs::path(adapter_dir) / "adapter_model.bin"))
      throw std::runtime_error(adapter_dir + ": only adapter_model.bin (pickle) found; save the adapter with "
                                             "safe_serialization=True to get adapter_model.safetensors");
    throw std::runtime_error(adapter_dir + ": no adapter_model.safetensors (expected a PEFT adapter directory)");
  }
  SafeTensorsFile f(file.string());
  const std::string prefix = "base_model.model.";
  std::vector<AdapterModuleInfo> out;
  for (auto& key : f.keys()) {
    std::string k = key;
    for (const std::string suffix : {".weight"})
      if (k.size() > suffix.size() && ends_with(k, suffix))
        k = k.substr(0, k.size() - suffix.size());
    const std::string a = ".lora_A";
    if (k.size() <= a.size() || !ends_with(k, a)) continue;
    std::string module = k.substr(0, k.size() - a.size());
    AdapterModuleInfo m;
    m.path = module.rfind(prefix, 0) == 0 ? module.substr(prefix.size()) : module;
    const auto& shape = f.info(key).shape;
    if (shape.size() != 2) throw std::runtime_error(file.string() + ": " + key + " is not a matrix");
    m.rank = shape[0];
    m.in_features = shape[1];
    std::string b = key;
    b.replace(b.rfind(".lora_A"), 7, ".lora_B");
    if (f.contains(b) && f.info(b).shape.size() == 2) m.out_features = f.info(b).shape[0];
    out.push_back(m);
  }
  return out;
}

namespace {

// config.json: architecture, family and shape, or why the family is not supported.
void inspect_config(Inspection& r, const nlohmann::json& raw, const std::string& origin) {
  std::string arch = "(none)";
  if (raw.contains("architectures") && raw["architectures"].is_array() && !raw["architectures"].empty() &&
      raw["architectures"][0].is_string())
    arch = raw["architectures"][0].get<std::string>();
  r.add("architecture", "architecture", arch);
  r.add("model_type", "model type", raw.value("model_type", std::string("(none)")));
  try {
    auto c = parse_model_config(raw, origin);
    std::string task = c.is_causal_lm ? "causal LM"
                       : c.num_labels > 0 ? "sequence classification, " + std::to_string(c.num_labels) + " labels"
                                          : "encoder";
    r.add("family", "family", c.family, c.family + " (" + task + ")");
    r.add("layers", "layers", c.num_hidden_layers);
    r.add("hidden_size", "hidden size", c.hidden_size);
    r.add("intermediate_size", "intermediate size", c.intermediate_size);
    r.add("attention_heads", "attention heads", c.num_attention_heads);
    r.add("kv_heads", "key/value heads", c.num_key_value_heads);
    r.add("vocab_size", "vocab size", c.vocab_size);
    r.add("max_position_embeddings", "max positions", c.max_position_embeddings);
    r.add("tie_word_embeddings", "tied embeddings", c.tie_word_embeddings, c.tie_word_embeddings ? "yes" : "no");
  } catch (const std::exception& e) {
    r.add("family", "family", nullptr, "not supported");
    r.notes.push_back(e.what());
  }
  for (auto* k : {"torch_dtype", "dtype"})
    if (raw.contains(k) && raw[k].is_string()) {
      r.add("config_dtype", "config dtype", raw[k].get<std::string>());
      break;
    }
}

// The weight files: count, tensors, dtypes, parameters.
void inspect_weights(Inspection& r, const fs::path& d, const std::string& dir) {
  auto files = weight_files(d);
  if (files.empty()) {
    r.add("weights", "weights", nullptr, "none");
    if (fs::exists(d / "pytorch_model.bin") || fs::exists(d / "pytorch_model.bin.index.json"))
      r.notes.push_back("only pytorch_model.bin (pickle) weights: convert them to safetensors to use this model");
    else
      r.notes.push_back(dir + ": no model.safetensors or model.safetensors.index.json");
  } else {
    TensorStats s;
    for (auto& f : files) add_stats(SafeTensorsFile(f.string()), s);
    r.add("weight_files", "weights", static_cast<int64_t>(files.size()),
          (files.size() == 1 ? files[0].filename().string() : std::to_string(files.size()) + " shards") + ", " +
              std::to_string(s.tensors) + " tensors");
    add_dtypes(r, s);
    r.add("parameters", "parameters", s.parameters, count_text(s.parameters));
  }
}

// tokenizer.json with tokenizer_config.json: vocabulary, special tokens, where generation stops.
// `source`: where the tokenizer comes from, for the line ("tokenizer.json").
void inspect_tokenizer(Inspection& r, const fs::path& d, const std::string& dir, const std::string& source) {
  if (fs::exists(d / "tokenizer.json") || is_gguf_path(dir)) {
    try {
      auto mt = ModelTokenizer::load(dir);
      const auto& tok = mt.tokenizer();
      r.add("tokenizer_vocab_size", "tokenizer", tok.vocab_size(), source + ", " + std::to_string(tok.vocab_size()) + " tokens");
      auto specials = tok.special_tokens();
      r.add("special_tokens", "special tokens", specials, specials.empty() ? "none" : join(specials, " "));
      nlohmann::ordered_json named = nlohmann::ordered_json::object();
      std::vector<std::string> parts;
      auto add_named = [&](const char* name, const std::optional<std::string>& t) {
        if (!t) return;
        named[name] = *t;
        auto id = tok.token_to_id(*t);
        parts.push_back(std::string(name) + " " + *t + (id ? " (" + std::to_string(*id) + ")" : " (not in the vocabulary)"));
      };
      add_named("bos", mt.config().bos_token);
      add_named("eos", mt.config().eos_token);
      add_named("pad", mt.config().pad_token);
      if (!parts.empty()) r.add("tokenizer_config_tokens", "bos/eos/pad", named, join(parts));
      auto eos_set = mt.eos_ids();
      std::vector<int64_t> eos(eos_set.begin(), eos_set.end());
      std::vector<std::string> eos_text;
      for (auto id : eos) eos_text.push_back(std::to_string(id));
      r.add("eos_token_ids", "generation stops at", eos, eos.empty() ? "no eos token declared (max tokens only)" : "token ids " + join(eos_text));
    } catch (const std::exception& e) {
      r.add("tokenizer_vocab_size", "tokenizer", nullptr, "tokenizer.json present but not usable");
      r.notes.push_back(e.what());
    }
  } else {
    r.add("tokenizer_vocab_size", "tokenizer", nullptr, "none (no tokenizer.json: train, eval and generate need it)");
  }
}

// The chat format recognised from tokenizer_config.json's chat_template (or a GGUF file's).
void inspect_chat_format(Inspection& r, const fs::path& d) {
  TokenizerConfig tc;
  bool have_tc = false;
  if (is_gguf_path(d.string())) {
    try {
      tc = ModelTokenizer::load(d.string()).config();
      have_tc = true;
    } catch (const std::exception&) {
      // inspect_tokenizer has noted why
    }
  } else if (fs::exists(d / "tokenizer_config.json")) {
    try {
      tc = read_tokenizer_config((d / "tokenizer_config.json").string());
      have_tc = true;
    } catch (const std::exception& e) {
      r.notes.push_back(e.what());
    }
  }
  if (!have_tc || tc.chat_template.empty()) {
    r.add("chat_format", "chat format", nullptr, have_tc ? "none (no chat_template in tokenizer_config.json)" : "none (no tokenizer_config.json)");
  } else {
    try {
      auto cf = ChatFormat::from_config(tc);
      r.add("chat_format", "chat format", cf.name(), cf.name() + " (recognised from chat_template)");
    } catch (const std::exception&) {
      r.add("chat_format", "chat format", nullptr, "not recognised (chat data and --chat need --chat-format " +
                                                      join(ChatFormat::known_names(), "|") + ")");
    }
  }
}

}  // namespace

Inspection inspect_model(const std::string& dir) {
  fs::path d(dir);
  Inspection r;
  r.path = dir;
  r.kind = "model";
  const fs::path cfg_path = d / "config.json";
  inspect_config(r, read_json_object(cfg_path, "a Hugging Face config.json"), cfg_path.string());
  inspect_weights(r, d, dir);
  inspect_tokenizer(r, d, dir, "tokenizer.json");
  inspect_chat_format(r, d);
  return r;
}

Inspection inspect_gguf(const std::string& path) {
  Inspection r;
  r.path = path;
  r.kind = "model";
  GgufFile file(path);
  r.add("format", "format", "gguf", "llama.cpp GGUF v" + std::to_string(file.version()));
  try {
    inspect_config(r, nlohmann::json::parse(gguf_model_config(file).dump()), path);
  } catch (const std::exception& e) {
    r.add("family", "family", nullptr, "not supported");
    r.notes.push_back(e.what());
  }
  std::map<std::string, int64_t> by_type;
  int64_t parameters = 0;
  for (const GgufTensorInfo& t : file.tensors()) {
    by_type[t.type_name()] += 1;
    parameters += static_cast<int64_t>(t.numel);
  }
  std::vector<std::string> types;
  for (const auto& [name, n] : by_type) types.push_back(name + " x" + std::to_string(n));
  r.add("weight_files", "weights", 1, std::to_string(file.tensors().size()) + " tensors: " + join(types) +
                                          " (dequantized to float32 on load)");
  r.add("parameters", "parameters", parameters, count_text(parameters));
  inspect_tokenizer(r, path, path, "tokenizer.ggml.* metadata");
  inspect_chat_format(r, path);
  return r;
}

Inspection inspect_adapter(const std::string& dir) {
  fs::path d(dir);
  Inspection r;
  r.path = dir;
  r.kind = "adapter";
  auto c = AdapterConfig::from_file((d / "adapter_config.json").string());
  bool ada = c.peft_type == PeftType::AdaLora;
  r.add("peft_type", "PEFT type", ada ? "ADALORA" : "LORA");
  r.add("task_type", "task type", c.task_type);
  if (!c.base_model_name_or_path.empty()) r.add("base_model", "base model", c.base_model_name_or_path);
  if (c.target_modules_regex) r.add("target_modules", "target modules", *c.target_modules_regex, "regex " + *c.target_modules_regex);
  else r.add("target_modules", "target modules", c.target_modules, join(c.target_modules));

  auto modules = adapter_modules(dir);
  std::map<std::string, int64_t> by_name;
  int64_t kept = 0, pruned = 0;
  for (auto& m : modules) {
    ++by_name[m.path.substr(m.path.rfind('.') + 1)];
    kept += m.rank;
    pruned += m.rank == 0;
  }
  std::vector<std::string> found;
  nlohmann::ordered_json found_json = nlohmann::ordered_json::object();
  for (auto& [n, k] : by_name) {
    found.push_back(n + " x" + std::to_string(k));
    found_json[n] = k;
  }
  r.add("modules_found", "modules found", found_json, found.empty() ? "none" : join(found));
  r.add("modules", "adapted modules", static_cast<int64_t>(modules.size()));
  if (ada) {
    r.add("init_r", "init_r", c.init_r);
    r.add("target_r", "target_r", c.target_r);
    r.add("total_step", "total_step", c.total_step);
    r.add("tinit", "tinit", c.tinit);
    r.add("tfinal", "tfinal", c.tfinal);
    r.add("deltaT", "deltaT", c.deltaT);
    int64_t budget = c.target_r * static_cast<int64_t>(modules.size());
    r.add("kept_rank_total", "kept rank total", kept,
          std::to_string(kept) + " (budget target_r x modules = " + std::to_string(budget) + ", start init_r x modules = " +
              std::to_string(c.init_r * static_cast<int64_t>(modules.size())) + ")");
    r.add("rank_pattern", "rank_pattern", !c.rank_pattern.empty(),
          c.rank_pattern.empty() ? "empty (no allocation recorded yet)" : std::to_string(c.rank_pattern.size()) + " modules");
    if (pruned) r.add("pruned_modules", "pruned to rank 0", pruned);
  } else {
    r.add("r", "r", c.r);
    r.add("kept_rank_total", "rank total", kept);
    if (!c.lora_rank_pattern.empty()) r.add("rank_pattern", "rank_pattern", static_cast<int64_t>(c.lora_rank_pattern.size()), std::to_string(c.lora_rank_pattern.size()) + " modules");
    if (!c.alpha_pattern.empty()) r.add("alpha_pattern", "alpha_pattern", static_cast<int64_t>(c.alpha_pattern.size()), std::to_string(c.alpha_pattern.size()) + " modules");
    if (c.use_rslora) r.add("use_rslora", "rsLoRA", true, "yes (scaling alpha/sqrt(r))");
  }
  r.add("lora_alpha", "lora_alpha", c.lora_alpha);
  if (c.lora_dropout > 0) r.add("lora_dropout", "lora_dropout", c.lora_dropout);
  if (c.fan_in_fan_out) r.add("fan_in_fan_out", "fan_in_fan_out", true, "yes (Conv1D weights, GPT-2)");

  SafeTensorsFile f((d / "adapter_model.safetensors").string());
  TensorStats s;
  add_stats(f, s);
  r.add("trainable_parameters", "trainable parameters", s.parameters, count_text(s.parameters));
  add_dtypes(r, s);
  std::vector<std::string> saved;
  for (auto& m : c.modules_to_save) {
    int64_t n = 0;
    for (auto& k : f.keys())
      if (k.find(".lora_") == std::string::npos && (k.find("." + m + ".") != std::string::npos)) ++n;
    saved.push_back(m + (n ? " (" + std::to_string(n) + " tensors)" : " (no tensors in the adapter)"));
  }
  r.add("modules_to_save", "modules_to_save", c.modules_to_save, saved.empty() ? "none" : join(saved));
  return r;
}

Inspection inspect_path(const std::string& path) {
  fs::path p(path);
  if (!fs::exists(p)) throw std::runtime_error(path + ": no such file or directory");
  if (is_gguf_path(path)) return inspect_gguf(path);
  if (!fs::is_directory(p))
    throw std::runtime_error(path + ": not a directory or a .gguf file (give a model directory with config.json, an "
                             "adapter directory with adapter_config.json or a llama.cpp GGUF file)");
  if (fs::exists(p / "adapter_config.json")) return inspect_adapter(path);
  if (fs::exists(p / "config.json")) return inspect_model(path);
  throw std::runtime_error(path + ": neither config.json (a model) nor adapter_config.json (an adapter) is here");
}

}  // namespace peft
