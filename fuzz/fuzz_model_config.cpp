// libFuzzer target: a Hugging Face config.json parsed by peft::parse_model_config, whose errors must
// be std::runtime_error naming the key; an accepted config must have the sizes a model is built from.
#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

#include "fuzz_util.h"
#include "peft/formats/model_config.h"
#include "peft/models/model_family.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // not JSON (or a number like 1e400): read_json_file reports that before the parser sees it
  }
  peft::ModelConfig c;
  try {
    c = peft::parse_model_config(j, "config.json");
  } catch (const std::runtime_error&) {
    return 0;
  }
  const std::string arch = c.architecture;
  PEFT_FUZZ_CHECK(c.vocab_size > 0 && c.hidden_size > 0 && c.num_hidden_layers > 0, arch);
  PEFT_FUZZ_CHECK(c.num_attention_heads > 0 && c.num_key_value_heads > 0, arch);
  PEFT_FUZZ_CHECK(c.num_attention_heads % c.num_key_value_heads == 0, arch);
  PEFT_FUZZ_CHECK(c.head_dim > 0, arch + " head_dim " + std::to_string(c.head_dim));
  PEFT_FUZZ_CHECK(c.intermediate_size > 0, arch + " intermediate_size " + std::to_string(c.intermediate_size));
  PEFT_FUZZ_CHECK(c.max_position_embeddings > 0,
                  arch + " max_position_embeddings " + std::to_string(c.max_position_embeddings));
  PEFT_FUZZ_CHECK(c.is_causal_lm || c.num_labels >= 0, arch);
  return 0;
}
