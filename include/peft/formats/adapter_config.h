// adapter_config.json: the settings of a LoRA or AdaLoRA adapter with PEFT's names and defaults,
// validation whose messages say what to change, and the AdaLoRA budget schedule they imply.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace peft {

enum class PeftType { Lora, AdaLora };

struct AdapterConfig {
  PeftType peft_type = PeftType::AdaLora;
  std::string task_type = "CAUSAL_LM";  // CAUSAL_LM or SEQ_CLS
  std::string base_model_name_or_path;

  // Which Linear modules get an adapter: names matched against the end of the module path, or
  // (target_modules_regex) one regex matched against the whole path, or "all-linear".
  std::vector<std::string> target_modules;
  std::optional<std::string> target_modules_regex;
  std::vector<std::string> exclude_modules;
  std::vector<std::string> modules_to_save;  // trained in full and saved with the adapter

  double lora_alpha = 8;
  double lora_dropout = 0.0;
  bool fan_in_fan_out = false;

  // LoRA
  int64_t r = 8;
  bool use_rslora = false;
  std::map<std::string, int64_t> lora_rank_pattern;  // module pattern -> r (JSON: "rank_pattern")
  std::map<std::string, double> alpha_pattern;       // module pattern -> lora_alpha

  // AdaLoRA
  int64_t init_r = 12;
  int64_t target_r = 8;
  int64_t tinit = 0;
  int64_t tfinal = 0;
  int64_t deltaT = 1;
  double beta1 = 0.85, beta2 = 0.85;
  double orth_reg_weight = 0.5;
  int64_t total_step = 0;  // optimizer steps; 0 = not set yet (the trainer derives it)
  // The allocator's output: module path (relative to the model, ending in ".lora_E") -> kept triplets.
  std::map<std::string, std::vector<bool>> rank_pattern;

  nlohmann::json extra;  // keys we do not interpret, written back unchanged

  // PEFT's checks plus the ones PEFT lacks; throws std::invalid_argument with every problem
  // found, each with the numbers and what to change.
  void validate() const;
  nlohmann::json to_json() const;  // as PEFT 0.21 writes it
  static AdapterConfig from_json(const nlohmann::json& j, const std::string& origin = "adapter_config.json");
  static AdapterConfig from_file(const std::string& path);
  void save(const std::string& path) const;  // atomic
  std::string method() const { return peft_type == PeftType::Lora ? "lora" : "adalora"; }

  // LoRA's rank and lora_alpha of the module at `path`, as PEFT reads rank_pattern / alpha_pattern:
  // the key equal to the path, else the first key k with (.*\.)?(k) matching the whole path, else r / lora_alpha.
  int64_t rank_of(const std::string& path) const;
  double alpha_of(const std::string& path) const;
};

}  // namespace peft
