// The text side of a model directory: tokenizer.json with tokenizer_config.json and the
// end-of-sequence ids that config.json, generation_config.json and the tokenizer declare.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "peft/text/chat_format.h"
#include "peft/text/text_encoder.h"
#include "peft/text/tokenizer.h"
#include "peft/text/tokenizer_config.h"

namespace peft {

class ModelTokenizer {
 public:
  // Reads DIR/tokenizer.json (required: the error names the directory) and DIR/tokenizer_config.json
  // (optional), or builds both from a .gguf file's tokenizer.ggml.* metadata (formats/gguf_tokenizer.h).
  static ModelTokenizer load(const std::string& model);

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const TokenizerConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  // For datasets; refers to this object, which must outlive it.
  TextEncoder encoder() const { return make_text_encoder(*tokenizer_, config_); }

  // The chat format named by `override_name` (--chat-format), else the one recognised from the
  // chat template. Throws naming --chat-format when there is none to use.
  ChatFormat chat_format(const std::string& override_name = "") const;
  // As chat_format, but for data that may not need one: none when no name is given and the
  // template is missing or not recognised (chat data then says what is missing).
  std::optional<ChatFormat> optional_chat_format(const std::string& override_name = "") const;

  // Throws std::invalid_argument, naming both sizes, when the tokenizer has more ids than the
  // model's embedding has rows (`embedding_rows`: config.json's vocab_size): the tokenizer of another model.
  void check_fits(int64_t embedding_rows) const;

  // Token ids that end generation: config.json's and generation_config.json's eos_token_id (a number
  // or a list) and the tokenizer's eos_token.
  std::set<int64_t> eos_ids() const;

 private:
  ModelTokenizer() = default;
  std::string dir_;
  std::string origin_;                 // where the tokenizer came from, for messages
  std::set<int64_t> declared_eos_;     // a GGUF file's tokenizer.ggml.eos_token_id
  std::shared_ptr<Tokenizer> tokenizer_;
  TokenizerConfig config_;
};

// Puts the model's text files into the directory `dest` (which exists): copies of tokenizer.json,
// tokenizer_config.json, special_tokens_map.json and generation_config.json from a model directory
// (those it has), or the ones a .gguf file's metadata describes. Returns the names written.
std::vector<std::string> write_tokenizer_files(const std::string& model, const std::string& dest);

}  // namespace peft
