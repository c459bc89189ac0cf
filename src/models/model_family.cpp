// The registry of model families: one line per family; parsing and building dispatch through it.
// A family's own file (llama.cpp, gpt2.cpp, bert.cpp) holds everything specific to it.
#include "peft/models/model_family.h"

#include <stdexcept>

#include "models/families.h"
#include "peft/core/file_io.h"

namespace peft {

const std::vector<ModelFamily>& model_families() {
  static const std::vector<ModelFamily> families = {llama_family(), gpt2_family(), bert_family()};
  return families;
}

std::string supported_models() {
  std::string out;
  for (const auto& f : model_families()) out += (out.empty() ? "" : "; ") + f.architectures;
  return out;
}

const ModelFamily& family_for(const std::string& model_type, const std::string& origin) {
  for (const auto& f : model_families())
    for (const auto& t : f.model_types)
      if (t == model_type) return f;
  throw std::runtime_error(origin + ": key \"model_type\": \"" + model_type + "\" is not supported; supported: " +
                           supported_models());
}

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& origin) {
  ModelConfig c = read_common_config(j, origin);
  const ModelFamily& family = family_for(c.model_type, origin);
  c.family = family.name;
  family.read_config(ConfigReader{j, origin}, c);
  return c;
}

ModelConfig read_model_config(const std::string& path) {
  return parse_model_config(read_json_file(path, "a Hugging Face config.json"), path);
}

}  // namespace peft
