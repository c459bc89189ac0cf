// config.json: the keys every model family shares, the typed key reader and the rotary settings.
// The family-specific keys are read by each family's file (src/models/llama.cpp, gpt2.cpp, bert.cpp).
#include "peft/formats/model_config.h"

#include <stdexcept>

namespace peft {

void ConfigReader::fail(const std::string& key, const std::string& what) const {
  throw std::runtime_error(origin + ": key \"" + key + "\": " + what);
}

int64_t ConfigReader::integer(const std::string& key) const {
  if (!has(key)) fail(key, "missing (an integer is required)");
  const auto& v = j.at(key);
  if (!v.is_number_integer()) fail(key, "expected an integer, got " + v.dump());
  return v.get<int64_t>();
}

int64_t ConfigReader::positive(const std::string& key) const {
  int64_t v = integer(key);
  if (v <= 0) fail(key, "must be > 0, got " + std::to_string(v));
  return v;
}

double ConfigReader::number(const std::string& key, double dflt) const {
  if (!has(key)) return dflt;
  const auto& v = j.at(key);
  if (!v.is_number()) fail(key, "expected a number, got " + v.dump());
  return v.get<double>();
}

bool ConfigReader::boolean(const std::string& key, bool dflt) const {
  if (!has(key)) return dflt;
  const auto& v = j.at(key);
  if (!v.is_boolean()) fail(key, "expected true or false, got " + v.dump());
  return v.get<bool>();
}

std::string ConfigReader::string(const std::string& key, const std::string& dflt) const {
  if (!has(key)) return dflt;
  const auto& v = j.at(key);
  if (!v.is_string()) fail(key, "expected a string, got " + v.dump());
  return v.get<std::string>();
}

std::optional<int64_t> ConfigReader::optional_int(const std::string& key) const {
  if (!has(key)) return std::nullopt;
  const auto& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int64_t>();
  return std::nullopt;
}

void read_rope(const ConfigReader& r, ModelConfig& c) {
  // Newer transformers: "rope_parameters": {"rope_theta", "rope_type", ...}; older: top-level
  // "rope_theta" and optional "rope_scaling": {"rope_type"|"type", "factor", ...}.
  const nlohmann::json* scaling = nullptr;
  c.rope_theta = r.number("rope_theta", 10000.0);
  if (r.has("rope_parameters")) {
    const auto& rp = r.j.at("rope_parameters");
    if (!rp.is_object()) r.fail("rope_parameters", "expected an object");
    ConfigReader sub{rp, r.origin};
    c.rope_theta = sub.number("rope_theta", c.rope_theta);
    scaling = &rp;
  }
  if (r.has("rope_scaling")) {
    if (!r.j.at("rope_scaling").is_object()) r.fail("rope_scaling", "expected an object");
    scaling = &r.j.at("rope_scaling");
  }
  if (!scaling) return;
  ConfigReader s{*scaling, r.origin};
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

ModelConfig read_common_config(const nlohmann::json& j, const std::string& origin) {
  if (!j.is_object()) throw std::runtime_error(origin + ": expected a JSON object");
  ConfigReader r{j, origin};
  ModelConfig c;
  c.raw = j;
  c.model_type = r.string("model_type", "");
  if (r.has("architectures")) {
    const auto& a = j.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string()) r.fail("architectures", "expected a list of names");
    c.architecture = a[0].get<std::string>();
  }
  c.bos_token_id = r.optional_int("bos_token_id");
  c.eos_token_id = r.optional_int("eos_token_id");
  return c;
}

}  // namespace peft
