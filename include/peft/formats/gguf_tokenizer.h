// The tokenizer a GGUF file describes in its tokenizer.ggml.* metadata, as the Hugging Face files
// the text layer reads: tokenizer.json (BPE, byte-level or SentencePiece) and tokenizer_config.json (chat template, special tokens).
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "peft/formats/gguf.h"

namespace peft {

struct GgufTokenizerFiles {
  nlohmann::ordered_json tokenizer;         // tokenizer.json
  nlohmann::ordered_json tokenizer_config;  // tokenizer_config.json
};

// tokenizer.ggml.model "gpt2" (byte-level BPE) with the pre-tokenizer tokenizer.ggml.pre names
// (gpt2/default, smollm, llama-bpe/llama3, qwen2), or "llama" (SentencePiece BPE: merges ranked by
// tokenizer.ggml.scores, <0xNN> byte fallback, U+2581 for spaces and a prefix space as llama.cpp
// tokenizes). Tokens of type CONTROL (and UNKNOWN in SentencePiece) become special added tokens,
// USER_DEFINED ones plain added tokens. Throws naming the file and the key for anything else.
GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& file);

// "gpt2, default, smollm, ...": the tokenizer.ggml.pre values read, for messages.
std::string gguf_supported_pre_tokenizers();

}  // namespace peft
