// TokenizerConfig: the fields of a Hugging Face tokenizer_config.json that the text layer uses
// (chat template and special-token strings), read without the tokenizer itself.
#pragma once
#include <optional>
#include <string>

namespace peft {

struct TokenizerConfig {
  std::string chat_template;             // empty when the file has none
  std::optional<std::string> bos_token;  // the token's text, e.g. "<|begin_of_text|>"
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
};

// Reads tokenizer_config.json. Special tokens may be strings or {"content": ...} objects; a
// chat_template given as a list of named templates yields the one named "default".
// Throws std::runtime_error naming the file when it cannot be read or parsed.
TokenizerConfig read_tokenizer_config(const std::string& path);
TokenizerConfig parse_tokenizer_config(const std::string& json, const std::string& origin = "<string>");

}  // namespace peft
