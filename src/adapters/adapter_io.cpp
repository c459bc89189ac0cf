// PEFT's adapter files both ways: adapter_model.safetensors keys and shapes, AdaLoRA slicing by
// rank_pattern on save and resizing on load, modules_to_save weights, and AdaLoRA -> LoRA export.
#include <filesystem>
#include <set>
#include <sstream>
#include <stdexcept>

#include "peft/core/file_io.h"
#include "peft/adapters/peft_model.h"
#include "peft/formats/safetensors.h"

namespace peft {
namespace fs = std::filesystem;

namespace {

const char* kPrefix = "base_model.model.";

std::string key_of(const AdapterConfig& c, const std::string& path, const std::string& name) {
  return kPrefix + path + "." + name + (c.peft_type == PeftType::Lora ? ".weight" : "");
}

at::Tensor keep_index(const std::vector<bool>& keep) {
  std::vector<int64_t> idx;
  for (size_t i = 0; i < keep.size(); ++i)
    if (keep[i]) idx.push_back(static_cast<int64_t>(i));
  return at::tensor(idx, at::kLong);
}

std::map<std::string, at::Tensor> read_adapter_tensors(const std::string& dir) {
  auto file = (fs::path(dir) / "adapter_model.safetensors").string();
  if (!fs::exists(file)) {
    if (fs::exists(fs::path(dir) / "adapter_model.bin")) {
      throw std::runtime_error(dir + ": only adapter_model.bin (pickle) found; save the adapter with "
                                     "safe_serialization=True (PEFT's default) to get adapter_model.safetensors");
    }
    throw std::runtime_error(dir + ": no adapter_model.safetensors (expected a PEFT adapter directory)");
  }
  return load_safetensors(file);
}

// The rank a file's tensors give module `path` must be the one its adapter_config.json says:
// AdaLoRA, the true entries of its rank_pattern (which lists init_r of them), else init_r; LoRA
// without a rank_pattern, r. Throws std::runtime_error naming the module.
void check_rank(const AdapterConfig& c, const std::string& path, int64_t rank) {
  auto fail = [&](const std::string& expected) {
    throw std::runtime_error("adapter_config.json disagrees with adapter_model.safetensors at " + path + ": the tensors have rank " +
                             std::to_string(rank) + ", " + expected + " (the two files are from different adapters?)");
  };
  if (c.peft_type == PeftType::AdaLora) {
    auto it = c.rank_pattern.find(path + ".lora_E");
    if (it == c.rank_pattern.end()) {
      if (rank != c.init_r) fail("init_r is " + std::to_string(c.init_r) + " and rank_pattern does not name the module");
      return;
    }
    int64_t kept = 0;
    for (bool b : it->second) kept += b;
    if (static_cast<int64_t>(it->second.size()) != c.init_r)
      fail("its rank_pattern lists " + std::to_string(it->second.size()) + " entries where init_r is " + std::to_string(c.init_r));
    if (kept != rank) fail("its rank_pattern keeps " + std::to_string(kept));
  } else if (c.lora_rank_pattern.empty() && rank != c.r) {
    fail("r is " + std::to_string(c.r));
  }
}

}  // namespace

std::map<std::string, at::Tensor> PeftModel::adapter_state_dict() const {
  std::map<std::string, at::Tensor> out;
  bool ada = config_.peft_type == PeftType::AdaLora;
  for (auto& m : modules_) {
    at::Tensor idx;
    if (ada) {
      auto it = config_.rank_pattern.find(m.path + ".lora_E");
      if (it != config_.rank_pattern.end() &&
          static_cast<int64_t>(it->second.size()) == m.adapter->rank()) {
        idx = keep_index(it->second).to(m.linear->weight.device());
      }
    }
    for (auto& [name, t] : m.adapter->parameters()) {
      at::Tensor v = t->detach();
      if (idx.defined()) v = name == "lora_B" ? v.index_select(1, idx) : v.index_select(0, idx);
      out[key_of(config_, m.path, name)] = v.contiguous().cpu();
    }
  }
  auto* self = const_cast<PeftModel*>(this);
  for (auto& [name, t] : self->modules_to_save_params()) out[kPrefix + name] = t.detach().contiguous().cpu();
  return out;
}

void PeftModel::save(const std::string& dir) const {
  fs::create_directories(dir);
  save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), adapter_state_dict());
  config_.save((fs::path(dir) / "adapter_config.json").string());
}

std::unique_ptr<PeftModel> PeftModel::load(std::shared_ptr<Model> base, const std::string& dir) {
  auto config = AdapterConfig::from_file((fs::path(dir) / "adapter_config.json").string());
  auto tensors = read_adapter_tensors(dir);
  // Build with the ranks the file holds: AdaLoRA modules may have been pruned (even to 0).
  std::unique_ptr<PeftModel> pm(new PeftModel(base, config, tensors));
  pm->load_weights(dir);
  return pm;
}

PeftModel::PeftModel(std::shared_ptr<Model> base, AdapterConfig config, const std::map<std::string, at::Tensor>& tensors)
    : base_(std::move(base)), config_(std::move(config)) {
  fill_default_targets();
  attach([&](const std::string& path) -> int64_t {
    auto key = key_of(config_, path, "lora_A");
    auto it = tensors.find(key);
    if (it == tensors.end()) {
      throw std::runtime_error("adapter file has no " + key + " although adapter_config.json targets " + path +
                               " (was the adapter trained on another model?)");
    }
    const int64_t rank = it->second.size(0);
    check_rank(config_, path, rank);
    return rank;
  });
  pack();
}

void PeftModel::load_weights(const std::string& dir) {
  auto tensors = read_adapter_tensors(dir);
  std::set<std::string> used;
  at::NoGradGuard no_grad;
  auto copy_into = [&](const std::string& key, at::Tensor& dst) {
    auto it = tensors.find(key);
    if (it == tensors.end()) throw std::runtime_error(dir + ": adapter_model.safetensors lacks " + key);
    if (it->second.sizes() != dst.sizes()) {
      std::ostringstream os;
      os << dir << ": " << key << " has shape " << it->second.sizes() << ", the model expects " << dst.sizes();
      throw std::runtime_error(os.str());
    }
    dst.copy_(it->second.to(dst.scalar_type()));
    used.insert(key);
  };
  for (auto& m : modules_)
    for (auto& [name, t] : m.adapter->parameters()) copy_into(key_of(config_, m.path, name), *t);
  for (auto& [name, t] : modules_to_save_params()) {
    auto key = kPrefix + name;
    if (tensors.count(key)) copy_into(key, t);
  }
  std::vector<std::string> unused;
  for (auto& kv : tensors)
    if (!used.count(kv.first)) unused.push_back(kv.first);
  if (!unused.empty()) {
    throw std::runtime_error(dir + ": adapter_model.safetensors holds tensors this model has no place for, e.g. " +
                             unused[0] + " (was the adapter trained on another model?)");
  }
}

void export_adalora_as_lora(const std::string& src, const std::string& dst) {
  refuse_output_over_inputs("output", dst, {{"the AdaLoRA adapter", src}});
  auto config = AdapterConfig::from_file((fs::path(src) / "adapter_config.json").string());
  if (config.peft_type != PeftType::AdaLora) throw std::invalid_argument(src + ": not an AdaLoRA adapter (peft_type must be ADALORA)");
  auto tensors = read_adapter_tensors(src);
  // The AdaLoRA multiplier exactly as PEFT applies it: lora_alpha / (float32(init_r) + 1e-5f).
  double scaling = config.lora_alpha > 0 ? config.lora_alpha : static_cast<double>(config.init_r);
  double multiplier = scaling / static_cast<double>(static_cast<float>(config.init_r) + 1e-5f);
  AdapterConfig lora;
  lora.peft_type = PeftType::Lora;
  lora.task_type = config.task_type;
  lora.base_model_name_or_path = config.base_model_name_or_path;
  lora.modules_to_save = config.modules_to_save;
  lora.lora_dropout = config.lora_dropout;
  lora.fan_in_fan_out = config.fan_in_fan_out;
  lora.r = config.target_r;
  lora.lora_alpha = multiplier * static_cast<double>(lora.r);
  std::map<std::string, at::Tensor> out;
  std::set<std::string> paths;
  const std::string suffix = ".lora_A";
  for (auto& [key, t] : tensors) {
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
      paths.insert(key.substr(0, key.size() - suffix.size()));
    } else if (key.find(".lora_E") == std::string::npos && key.find(".lora_B") == std::string::npos) {
      out[key] = t;  // modules_to_save weights
    }
  }
  for (auto& full : paths) {
    auto A = tensors.at(full + ".lora_A"), E = tensors.at(full + ".lora_E"), B = tensors.at(full + ".lora_B");
    int64_t r = A.size(0);
    std::string path = full.substr(std::string(kPrefix).size());
    if (r == 0) continue;  // pruned away entirely: no LoRA module (PEFT LoRA needs r > 0)
    out[full + ".lora_A.weight"] = (A * E).contiguous();
    out[full + ".lora_B.weight"] = B.contiguous();
    lora.target_modules.push_back(path);
    lora.lora_rank_pattern[path] = r;
    lora.alpha_pattern[path] = multiplier * static_cast<double>(r);
  }
  if (lora.target_modules.empty()) throw std::runtime_error(src + ": every module was pruned to rank 0; nothing to export");
  lora.extra = nlohmann::json::object();
  fs::create_directories(dst);
  save_safetensors((fs::path(dst) / "adapter_model.safetensors").string(), out);
  lora.save((fs::path(dst) / "adapter_config.json").string());
}

}  // namespace peft
