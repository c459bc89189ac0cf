// The family-independent part of a model: loading weights by state-dict name, initialisation,
// saving a Hugging Face checkpoint, the causal-LM loss, and the factory from config.json.
#include "peft/models/model.h"
#include "peft/core/strings.h"

#include <sys/stat.h>

#include <cmath>
#include <iostream>
#include <filesystem>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/compat.h"
#include "peft/models/model_family.h"
#include "peft/layers/checkpoint.h"
#include "peft/layers/layers.h"
#include "peft/core/file_io.h"
#include "peft/formats/safetensors.h"
#include "peft/formats/gguf_model.h"

namespace peft {

void KVCache::append(size_t layer, at::Tensor& new_k, at::Tensor& new_v) {
  if (k.size() <= layer) k.resize(layer + 1), v.resize(layer + 1);
  if (k[layer].defined()) {
    new_k = at::cat({k[layer], new_k}, 2);
    new_v = at::cat({v[layer], new_v}, 2);
  }
  k[layer] = new_k;
  v[layer] = new_v;
}

std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> Model::linear_modules() {
  std::vector<std::pair<std::string, std::shared_ptr<LinearImpl>>> out;
  for (const auto& item : named_modules("", /*include_self=*/false)) {
    if (auto lin = std::dynamic_pointer_cast<LinearImpl>(item.value())) out.emplace_back(item.key(), lin);
  }
  return out;
}

at::Tensor Model::run_block(const std::function<at::Tensor(const at::Tensor&)>& block, const at::Tensor& x,
                            bool has_cache) const {
  if (!gradient_checkpointing || !is_training() || has_cache || !at::GradMode::is_enabled()) return block(x);
  // The first block's input (frozen embeddings) needs no gradient, but the checkpoint's output must
  // have one for backward to reach the adapters inside: a leaf that asks for it.
  return checkpoint(block, x.requires_grad() ? x : x.detach().requires_grad_(true));
}

at::Tensor Model::causal_padding_mask(const Batch& b, at::ScalarType dtype) {
  const at::Tensor& m = b.attention_mask;
  if (!m.defined()) return {};
  const int64_t T = m.size(-1);
  // Padding seen by no token: right padding (each row's mask never rises again) whose outputs the loss ignores.
  const bool unseen = at::GradMode::is_enabled() && !b.cache && m.dim() == 2 && b.labels.defined() &&
                      b.labels.sizes() == m.sizes() &&
                      (T < 2 || at::le(m.narrow(1, 1, T - 1), m.narrow(1, 0, T - 1)).all().item<bool>()) &&
                      b.labels.masked_select(m.eq(0)).eq(-100).all().item<bool>();
  return unseen ? at::Tensor() : padding_mask(m, dtype);
}

bool Model::ignorable_key(const std::string& key) const {
  return ends_with(key, "rotary_emb.inv_freq") || ends_with(key, ".attn.bias") ||
         ends_with(key, ".attn.masked_bias") || ends_with(key, "embeddings.position_ids") ||
         (config_.tie_word_embeddings && key == "lm_head.weight");
}

static std::string list_names(const std::vector<std::string>& names, size_t max = 8) {
  std::ostringstream os;
  for (size_t i = 0; i < names.size() && i < max; ++i) os << (i ? ", " : "") << names[i];
  if (names.size() > max) os << ", ... (" << names.size() << " in all)";
  return os.str();
}

void Model::load_state(const std::map<std::string, at::Tensor>& tensors, const std::string& origin) {
  auto params = named_parameters(/*recurse=*/true);
  // A head model (BertForSequenceClassification) from a checkpoint of its base model (BertModel, as
  // sentence-transformers ship them), as transformers loads one: a key "bert.x" is read as "x" when
  // the checkpoint has no key under "bert.", and head parameters it lacks start from the initialisation.
  auto has_prefix = [&](const std::string& prefix) {
    auto it = tensors.lower_bound(prefix);
    return it != tensors.end() && it->first.compare(0, prefix.size(), prefix) == 0;
  };
  auto find = [&](const std::string& key) {
    auto it = tensors.find(key);
    if (it != tensors.end()) return it;
    const auto dot = key.find('.');
    if (dot == std::string::npos || has_prefix(key.substr(0, dot + 1))) return tensors.end();
    return tensors.find(key.substr(dot + 1));
  };
  const auto heads = head_modules();
  auto in_head = [&](const std::string& key) {
    for (const auto& h : heads)
      if (key.rfind(h + ".", 0) == 0) return true;
    return false;
  };
  std::vector<std::string> missing, unexpected, bad_shape, new_head;
  std::set<std::string> used;
  std::map<std::string, std::string> source;  // parameter -> checkpoint key
  for (const auto& p : params) {
    auto it = find(p.key());
    if (it == tensors.end()) {
      (in_head(p.key()) ? new_head : missing).push_back(p.key());
      continue;
    }
    used.insert(it->first);
    source[p.key()] = it->first;
    if (it->second.sizes() != p.value().sizes()) {
      std::ostringstream os;
      os << p.key() << " has shape " << it->second.sizes() << " in the file, the model expects "
         << p.value().sizes();
      bad_shape.push_back(os.str());
    }
  }
  for (const auto& kv : tensors) {
    if (!used.count(kv.first) && !ignorable_key(kv.first)) unexpected.push_back(kv.first);
  }
  std::string hint = " (is this checkpoint of a different model or size than its config.json says?)";
  if (!bad_shape.empty()) throw std::runtime_error(origin + ": shape mismatch: " + list_names(bad_shape, 4) + hint);
  if (!missing.empty()) throw std::runtime_error(origin + ": missing tensors for " + config_.architecture + ": " + list_names(missing) + hint);
  if (!unexpected.empty()) throw std::runtime_error(origin + ": tensors the model does not have: " + list_names(unexpected) + hint);
  at::NoGradGuard no_grad;
  for (auto& p : params)
    if (source.count(p.key())) p.value().copy_(tensors.at(source.at(p.key())).to(p.value().scalar_type()));
  if (!new_head.empty()) {
    const double range = ConfigReader{config_.raw, origin}.number("initializer_range", 0.02);
    for (auto& p : params) {
      if (source.count(p.key())) continue;
      if (ends_with(p.key(), ".bias")) p.value().zero_();
      else p.value().normal_(0.0, range);
    }
    std::cerr << "note: " << origin << " has no " << list_names(new_head) << " (a checkpoint of the base model without "
              << config_.architecture << "'s head): newly initialised; train them (peft train does, as modules_to_save)\n";
  }
}

std::map<std::string, at::Tensor> Model::state_dict_tensors() {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : named_parameters(true)) out[p.key()] = p.value().detach();
  return out;
}

void Model::init_weights(double initializer_range) {
  at::NoGradGuard no_grad;
  for (auto& p : named_parameters(true)) {
    const std::string& n = p.key();
    bool is_norm = n.find("norm") != std::string::npos || n.find("LayerNorm") != std::string::npos ||
                   n.find("ln_") != std::string::npos;
    if (ends_with(n, ".bias")) {
      p.value().zero_();
    } else if (is_norm) {
      p.value().fill_(1.0);
    } else {
      p.value().normal_(0.0, initializer_range);
    }
  }
}

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return at::kHalf;
  throw std::runtime_error("unknown dtype \"" + name + "\" (use float32, bfloat16, or float16 on CUDA)");
}

at::Device Model::device() const {
  auto params = parameters();
  return params.empty() ? at::Device(at::kCPU) : params.front().device();
}

LoadOptions load_options(const std::string& dtype, const std::string& device) {
  LoadOptions lo;
  try {
    lo.dtype = parse_dtype(dtype);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("--dtype: ") + e.what());
  }
  try {
    lo.device = compat::device_from_name(device);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("--device: ") + e.what() + " (see README: building with CUDA)");
  }
  if (lo.dtype == at::kHalf && lo.device.is_cpu()) {
    throw std::invalid_argument("--dtype " + dtype + ": float16 is not supported on the CPU (libtorch lacks CPU kernels "
                                "this model needs in half precision); use bfloat16 or float32, or --device cuda");
  }
  return lo;
}

std::shared_ptr<Model> build_model(const ModelConfig& c, const LoadOptions& options) {
  std::shared_ptr<Model> m = family_for(c.model_type).build(c);
  const std::string origin = "config.json";
  m->init_weights(ConfigReader{c.raw, origin}.number("initializer_range", 0.02));
  m->to(options.device, options.dtype);
  return m;
}

ModelConfig model_config_of(const std::string& model) {
  namespace fs = std::filesystem;
  if (is_gguf_path(model)) return parse_model_config(nlohmann::json::parse(gguf_model_config(GgufFile(model)).dump()), model);
  if (!fs::is_directory(model))
    throw std::runtime_error(model + ": not a directory or a .gguf file (expected a Hugging Face model directory with "
                             "config.json and model.safetensors, or a llama.cpp GGUF file)");
  return read_model_config((fs::path(model) / "config.json").string());
}

std::shared_ptr<Model> load_model(const std::string& model, const LoadOptions& options) {
  std::shared_ptr<Model> m;
  if (is_gguf_path(model)) {
    GgufFile file(model);
    auto config = parse_model_config(nlohmann::json::parse(gguf_model_config(file).dump()), model);
    m = family_for(config.model_type, model).build(config);
    m->load_state(gguf_state_dict(file), model);
  } else {
    auto config = model_config_of(model);
    m = family_for(config.model_type).build(config);
    m->load_state(load_safetensors(model), model);
  }
  m->to(options.device, options.dtype);
  return m;
}

void save_model(Model& model, const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  auto config = model.config().raw;
  write_text_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
  auto tensors = model.state_dict_tensors();
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
}

}  // namespace peft
