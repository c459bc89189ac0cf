// The text side of a model directory: tokenizer.json with tokenizer_config.json and the
// end-of-sequence ids that config.json, generation_config.json and the tokenizer declare.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "peft/text/chat_format.h"
#include "peft/text/text_encoder.h"
#include "peft/text/tokenizer.h"
#include "peft/text/tokenizer_config.h"

namespace peft {

class ModelTokenizer {
 public:
  // Reads DIR/tokenizer.json (required: the error names the directory) and DIR/tokenizer_config.json
  // (optional).
  static ModelTokenizer load(const std::string& model_dir);

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
  std::shared_ptr<Tokenizer> tokenizer_;
  TokenizerConfig config_;
};

}  // namespace peft
