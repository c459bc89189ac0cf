// TextEncoder: what a dataset needs from a tokenizer (text to ids, and the bos/eos/pad ids), so
// datasets work with any tokenizer, including a simple byte-level one in tests.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace peft {

class Tokenizer;
struct TokenizerConfig;

struct TextEncoder {
  // Text to ids with no special tokens added; special-token text inside it (e.g. "<|im_end|>" in a
  // rendered chat) becomes the special token's id.
  std::function<std::vector<int32_t>(const std::string&)> encode;
  std::optional<int32_t> bos;  // put before each plain-text example, when set
  std::optional<int32_t> eos;  // put after each plain-text example, when set
  std::optional<int32_t> pad;  // padding id (labels and attention mask hide it either way)
};

// A TextEncoder over `tokenizer`, which must outlive it. bos: the single token the tokenizer's
// post-processor puts before a text, if any (<|begin_of_text|>, <s>, [CLS]); eos: the one it puts
// after (e.g. [SEP]), else the config's eos_token, as fine-tuning appends it; pad: the config's
// pad_token, else eos. (Defined in text_encoder.cpp.)
TextEncoder make_text_encoder(const Tokenizer& tokenizer, const TokenizerConfig& config);

}  // namespace peft
