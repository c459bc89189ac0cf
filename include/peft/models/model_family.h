// The model families (Llama, GPT-2, BERT/RoBERTa): each is one source file that reads its config.json
// keys and builds its model; this registry dispatches by model_type (docs/architecture.md: adding one).
#pragma once
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "peft/formats/model_config.h"
#include "peft/models/model.h"

namespace peft {

struct ModelFamily {
  std::string name;                      // "llama"
  std::vector<std::string> model_types;  // config.json model_type values it reads
  std::string architectures;             // what it builds, for messages: "LlamaForCausalLM (llama), ..."
  // Reads the family's keys into `c` (read_common_config has filled the shared ones); names a bad key.
  void (*read_config)(const ConfigReader& r, ModelConfig& c);
  std::shared_ptr<Model> (*build)(const ModelConfig& c);  // an initialised model of this architecture
};

// Every family, in the order of --help and error messages.
const std::vector<ModelFamily>& model_families();

// The family of a config's model_type; throws naming `origin` and listing the supported ones.
const ModelFamily& family_for(const std::string& model_type, const std::string& origin = "config.json");

// config.json parsed by its family; throws std::runtime_error naming `origin` and the key at fault.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& origin = "config.json");
ModelConfig read_model_config(const std::string& path);

// The architectures and model types we can build, for error messages and --help.
std::string supported_models();

}  // namespace peft
