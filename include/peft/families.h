// Constructors of the model families (one source file each: llama.cpp, gpt2.cpp, bert.cpp).
// Used by the factory in model.cpp; applications call build_model / load_model instead.
#pragma once
#include <memory>

#include "peft/model.h"

namespace peft {

std::shared_ptr<Model> make_llama(const ModelConfig& c);  // Llama, Mistral, Qwen2 causal LMs
std::shared_ptr<Model> make_gpt2(const ModelConfig& c);   // GPT-2 LM head model
std::shared_ptr<Model> make_bert(const ModelConfig& c);   // BERT / RoBERTa encoder (+ classifier)

}  // namespace peft
