// The model families, one source file each (llama.cpp, gpt2.cpp, bert.cpp): what each registers in
// model_family.cpp. Applications use peft/models/model_family.h and build_model / load_model instead.
#pragma once
#include "peft/models/model_family.h"

namespace peft {

ModelFamily llama_family();  // Llama, Mistral, Qwen2 causal LMs
ModelFamily gpt2_family();   // GPT-2 LM head model
ModelFamily bert_family();   // BERT / RoBERTa encoder (+ sequence classifier)

}  // namespace peft
