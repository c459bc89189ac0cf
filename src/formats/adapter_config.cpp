// adapter_config.json reading, writing and validation, with PEFT's names, defaults and rules.
// Unknown keys are kept so a PEFT config read and written again loses nothing.
#include "peft/formats/adapter_config.h"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <sstream>
#include <regex>
#include <stdexcept>
#include <type_traits>

#include "peft/core/file_io.h"

namespace peft {

void AdapterConfig::validate() const {
  std::vector<std::string> errors;
  auto num = [](double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  if (lora_dropout < 0 || lora_dropout >= 1) errors.push_back("lora_dropout (" + num(lora_dropout) + ") must be in [0, 1)");
  // No layer is wider than this; a larger rank is a typo, and rank sums over modules stay far from overflow.
  constexpr int64_t kMaxRank = int64_t{1} << 20;
  auto rank_ok = [&](const std::string& what, int64_t v) {
    if (v <= 0) errors.push_back(what + " (" + std::to_string(v) + ") must be > 0");
    else if (v > kMaxRank) errors.push_back(what + " (" + std::to_string(v) + ") is larger than any layer (at most 2^20)");
  };
  if (peft_type == PeftType::Lora) {
    rank_ok("r", r);
    for (auto& [k, v] : lora_rank_pattern) rank_ok("rank_pattern[\"" + k + "\"]", v);
  } else {
    rank_ok("init_r", init_r);
    rank_ok("target_r", target_r);
    if (target_r >= init_r && init_r > 0 && target_r > 0 && init_r <= kMaxRank) {
      errors.push_back("target_r (" + std::to_string(target_r) + ") must be smaller than init_r (" +
                       std::to_string(init_r) + "): AdaLoRA prunes from init_r down to target_r on average; "
                       "raise init_r or lower target_r");
    }
    if (tinit < 0) errors.push_back("tinit (" + std::to_string(tinit) + ") must be >= 0");
    if (tfinal < 0) errors.push_back("tfinal (" + std::to_string(tfinal) + ") must be >= 0");
    if (deltaT <= 0) errors.push_back("deltaT (" + std::to_string(deltaT) + ") must be > 0 (a mask every deltaT steps)");
    if (!(beta1 > 0 && beta1 < 1)) errors.push_back("beta1 (" + num(beta1) + ") must be in (0, 1)");
    if (!(beta2 > 0 && beta2 < 1)) errors.push_back("beta2 (" + num(beta2) + ") must be in (0, 1)");
    if (orth_reg_weight < 0) errors.push_back("orth_reg_weight (" + num(orth_reg_weight) + ") must be >= 0");
    if (total_step <= 0) {
      errors.push_back("total_step (" + std::to_string(total_step) +
                       ") must be > 0: the number of optimizer steps of the run (peft train derives it)");
    } else if (tinit >= 0 && tfinal >= 0 && tinit >= total_step - tfinal) {
      errors.push_back("tinit (" + std::to_string(tinit) + ") + tfinal (" + std::to_string(tfinal) +
                       ") leaves no budgeting phase in total_step (" + std::to_string(total_step) +
                       "): make tinit + tfinal < total_step, e.g. tinit " + std::to_string(total_step / 10) +
                       ", tfinal " + std::to_string(total_step / 5));
    }
  }
  if (extra.contains("use_dora") && extra["use_dora"].is_boolean() && extra["use_dora"].get<bool>() && peft_type == PeftType::AdaLora)
    errors.push_back("use_dora: AdaLoRA does not support DoRA; set use_dora to false");
  if (extra.contains("loftq_config") && extra["loftq_config"].is_object() && !extra["loftq_config"].empty() && peft_type == PeftType::AdaLora)
    errors.push_back("loftq_config: AdaLoRA does not support LoftQ; remove it");
  // PEFT options that change what the adapter computes and that peft.cpp does not implement: an
  // adapter using them would load without error and compute something else.
  auto set = [&](const char* key) {
    if (!extra.contains(key)) return false;
    const auto& v = extra[key];
    return !(v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_array() && v.empty()) ||
             (v.is_string() && v.get<std::string>().empty()));
  };
  if (peft_type == PeftType::Lora && set("use_dora"))
    errors.push_back("use_dora: DoRA (weight-decomposed LoRA) is not supported by peft.cpp; use an adapter trained "
                     "without it");
  if (set("lora_bias")) errors.push_back("lora_bias: LoRA with a bias on lora_B is not supported by peft.cpp");
  for (const char* key : {"layers_to_transform", "layers_pattern"})
    if (set(key))
      errors.push_back(std::string(key) + ": adapting only some layers this way is not supported by peft.cpp; "
                       "name the layers' modules in target_modules (a regex such as "
                       "\"model\\.layers\\.(0|1)\\..*(q_proj|v_proj)\") instead");
  for (const char* key : {"use_qalora", "layer_replication", "trainable_token_indices", "target_parameters",
                          "alora_invocation_tokens", "use_bdlora"})
    if (set(key)) errors.push_back(std::string(key) + ": this PEFT option is not supported by peft.cpp");
  if (errors.empty()) return;
  std::string msg = "invalid " + method() + " configuration:";
  for (auto& e : errors) msg += "\n  - " + e;
  throw std::invalid_argument(msg);
}

nlohmann::json AdapterConfig::to_json() const {
  nlohmann::json j = extra.is_object() ? extra : nlohmann::json::object();
  j["peft_type"] = peft_type == PeftType::Lora ? "LORA" : "ADALORA";
  j["task_type"] = task_type;
  j["base_model_name_or_path"] = base_model_name_or_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(base_model_name_or_path);
  if (target_modules_regex) j["target_modules"] = *target_modules_regex;
  // PEFT expands "all-linear" only when it is the whole string; in a list it is a module name.
  else if (target_modules == std::vector<std::string>{"all-linear"}) j["target_modules"] = "all-linear";
  else j["target_modules"] = target_modules;
  j["exclude_modules"] = exclude_modules.empty() ? nlohmann::json(nullptr) : nlohmann::json(exclude_modules);
  j["modules_to_save"] = modules_to_save.empty() ? nlohmann::json(nullptr) : nlohmann::json(modules_to_save);
  j["lora_alpha"] = lora_alpha;
  if (std::floor(lora_alpha) == lora_alpha && std::abs(lora_alpha) < 1e15) j["lora_alpha"] = static_cast<int64_t>(lora_alpha);
  j["lora_dropout"] = lora_dropout;
  j["fan_in_fan_out"] = fan_in_fan_out;
  j["r"] = r;
  j["use_rslora"] = use_rslora;
  j["bias"] = "none";
  j["init_lora_weights"] = true;
  j["inference_mode"] = true;
  j["peft_version"] = "0.21.0";
  nlohmann::json ap = nlohmann::json::object();
  for (auto& [k, v] : alpha_pattern) ap[k] = v;
  j["alpha_pattern"] = ap;
  if (peft_type == PeftType::Lora) {
    nlohmann::json rp = nlohmann::json::object();
    for (auto& [k, v] : lora_rank_pattern) rp[k] = v;
    j["rank_pattern"] = rp;
  } else {
    j["init_r"] = init_r;
    j["target_r"] = target_r;
    j["tinit"] = tinit;
    j["tfinal"] = tfinal;
    j["deltaT"] = deltaT;
    j["beta1"] = beta1;
    j["beta2"] = beta2;
    j["orth_reg_weight"] = orth_reg_weight;
    j["total_step"] = total_step > 0 ? nlohmann::json(total_step) : nlohmann::json(nullptr);
    if (rank_pattern.empty()) {
      j["rank_pattern"] = nullptr;
    } else {
      nlohmann::json rp = nlohmann::json::object();
      for (auto& [k, v] : rank_pattern) rp[k] = v;
      j["rank_pattern"] = rp;
    }
    j["use_dora"] = false;
    if (!j.contains("loftq_config")) j["loftq_config"] = nlohmann::json::object();
  }
  return j;
}

namespace {
// The value of `key`, or `dflt` when it is absent or null. Integers must be written as integers in
// int64 range (JSON's 2.5 or 1e300 is not a rank); numbers as numbers, strings as strings.
template <typename T>
T get(const nlohmann::json& j, const char* key, T dflt, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  const auto& v = j[key];
  auto wrong = [&](const std::string& expected) {
    return std::invalid_argument(origin + ": key \"" + key + "\" must be " + expected + ", got " + v.dump());
  };
  if constexpr (std::is_same_v<T, int64_t>) {
    if (!v.is_number_integer()) throw wrong("an integer");
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) throw wrong("an integer below 2^63");
  } else if constexpr (std::is_same_v<T, double>) {
    if (!v.is_number()) throw wrong("a number");
  } else if constexpr (std::is_same_v<T, std::map<std::string, int64_t>>) {
    if (!v.is_object()) throw wrong("an object of integers");
    for (auto it = v.begin(); it != v.end(); ++it)
      if (!it->is_number_integer() || (it->is_number_unsigned() && it->template get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)))
        throw std::invalid_argument(origin + ": key \"" + key + "\": \"" + it.key() + "\" must be an integer, got " +
                                    it->dump());
  }
  try {
    return v.get<T>();
  } catch (const std::exception&) {
    throw std::invalid_argument(origin + ": key \"" + key + "\" has the wrong type: " + v.dump());
  }
}
}  // namespace

AdapterConfig AdapterConfig::from_json(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) throw std::invalid_argument(origin + ": expected a JSON object");
  AdapterConfig c;
  std::string type = get<std::string>(j, "peft_type", "", origin);
  if (type == "LORA") c.peft_type = PeftType::Lora;
  else if (type == "ADALORA") c.peft_type = PeftType::AdaLora;
  else throw std::invalid_argument(origin + ": peft_type \"" + type + "\" is not supported (supported: LORA, ADALORA)");
  c.task_type = get<std::string>(j, "task_type", "CAUSAL_LM", origin);
  c.base_model_name_or_path = get<std::string>(j, "base_model_name_or_path", "", origin);
  if (j.contains("target_modules") && j["target_modules"].is_string()) {
    std::string t = j["target_modules"].get<std::string>();
    if (t == "all-linear") c.target_modules = {"all-linear"};
    else c.target_modules_regex = t;
  } else {
    c.target_modules = get<std::vector<std::string>>(j, "target_modules", {}, origin);
  }
  if (j.contains("exclude_modules") && j["exclude_modules"].is_string())
    c.exclude_modules = {j["exclude_modules"].get<std::string>()};
  else c.exclude_modules = get<std::vector<std::string>>(j, "exclude_modules", {}, origin);
  c.modules_to_save = get<std::vector<std::string>>(j, "modules_to_save", {}, origin);
  c.lora_alpha = get<double>(j, "lora_alpha", 8.0, origin);
  c.lora_dropout = get<double>(j, "lora_dropout", 0.0, origin);
  c.fan_in_fan_out = get<bool>(j, "fan_in_fan_out", false, origin);
  c.r = get<int64_t>(j, "r", 8, origin);
  c.use_rslora = get<bool>(j, "use_rslora", false, origin);
  c.alpha_pattern = get<std::map<std::string, double>>(j, "alpha_pattern", {}, origin);
  std::string bias = get<std::string>(j, "bias", "none", origin);
  if (bias != "none") throw std::invalid_argument(origin + ": bias \"" + bias + "\" is not supported (only \"none\")");
  if (c.peft_type == PeftType::Lora) {
    c.lora_rank_pattern = get<std::map<std::string, int64_t>>(j, "rank_pattern", {}, origin);
  } else {
    c.init_r = get<int64_t>(j, "init_r", 12, origin);
    c.target_r = get<int64_t>(j, "target_r", 8, origin);
    c.tinit = get<int64_t>(j, "tinit", 0, origin);
    c.tfinal = get<int64_t>(j, "tfinal", 0, origin);
    c.deltaT = get<int64_t>(j, "deltaT", 1, origin);
    c.beta1 = get<double>(j, "beta1", 0.85, origin);
    c.beta2 = get<double>(j, "beta2", 0.85, origin);
    c.orth_reg_weight = get<double>(j, "orth_reg_weight", 0.5, origin);
    c.total_step = get<int64_t>(j, "total_step", 0, origin);
    c.rank_pattern = get<std::map<std::string, std::vector<bool>>>(j, "rank_pattern", {}, origin);
  }
  static const char* known[] = {"peft_type", "task_type", "base_model_name_or_path", "target_modules",
                                "exclude_modules", "modules_to_save", "lora_alpha", "lora_dropout",
                                "fan_in_fan_out", "r", "use_rslora", "alpha_pattern", "rank_pattern",
                                "init_r", "target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2",
                                "orth_reg_weight", "total_step", "bias", "inference_mode"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool k = false;
    for (auto* n : known) k = k || it.key() == n;
    if (!k) c.extra[it.key()] = it.value();
  }
  if (c.extra.is_null()) c.extra = nlohmann::json::object();
  return c;
}

AdapterConfig AdapterConfig::from_file(const std::string& path) {
  return from_json(read_json_file(path, "a PEFT adapter_config.json"), path);
}

void AdapterConfig::save(const std::string& path) const {
  write_text_atomic(path, to_json().dump(2) + "\n");
}

namespace {

template <typename T>
const T* pattern_lookup(const std::map<std::string, T>& patterns, const std::string& path) {
  for (auto& [pat, v] : patterns)
    if (pat == path) return &v;
  for (auto& [pat, v] : patterns) {
    try {
      if (std::regex_match(path, std::regex("(.*\\.)?(" + pat + ")"))) return &v;
    } catch (const std::regex_error&) {
    }
  }
  return nullptr;
}

}  // namespace

int64_t AdapterConfig::rank_of(const std::string& path) const {
  const int64_t* v = pattern_lookup(lora_rank_pattern, path);
  return v ? *v : r;
}

double AdapterConfig::alpha_of(const std::string& path) const {
  const double* v = pattern_lookup(alpha_pattern, path);
  return v ? *v : lora_alpha;
}

}  // namespace peft
