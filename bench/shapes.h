// The model shape and adapter settings the benchmarks share: SmolLM2-135M's shape, and LoRA r=8 /
// AdaLoRA 12 -> 8 (alpha 16) on all seven projections, so that their figures can be read together.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "peft/formats/adapter_config.h"

namespace peft::bench {

inline const std::vector<std::string>& all_projections() {
  static const std::vector<std::string> names = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"};
  return names;
}

// SmolLM2-135M's config.json without num_hidden_layers (30 in the real model).
inline nlohmann::json smollm2_shape() {
  return {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}}, {"hidden_size", 576},
          {"intermediate_size", 1536}, {"num_attention_heads", 9}, {"num_key_value_heads", 3},
          {"vocab_size", 49152}, {"tie_word_embeddings", true}, {"rms_norm_eps", 1e-5},
          {"rope_theta", 100000.0}, {"max_position_embeddings", 8192}};
}

// AdaLoRA init_r 12 -> target_r 8: steps 1-2 are warm-up, then the budgeting phase with a mask every
// deltaT = 10 steps (total_step 1000, tfinal 20: a benchmark never reaches the final phase).
inline AdapterConfig bench_adalora_config() {
  AdapterConfig c;
  c.peft_type = PeftType::AdaLora;
  c.target_modules = all_projections();
  c.lora_alpha = 16;
  c.init_r = 12;
  c.target_r = 8;
  c.tinit = 2;
  c.tfinal = 20;
  c.deltaT = 10;
  c.total_step = 1000;
  return c;
}

inline AdapterConfig bench_lora_config() {
  AdapterConfig c;
  c.peft_type = PeftType::Lora;
  c.target_modules = all_projections();
  c.lora_alpha = 16;
  c.r = 8;
  return c;
}

}  // namespace peft::bench
