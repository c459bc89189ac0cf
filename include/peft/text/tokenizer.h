// Tokenizer: the Hugging Face tokenizer.json pipeline (normalizer, pre-tokenizer, model,
// post-processor, decoder, added tokens) in C++, matching the Rust `tokenizers` library's output.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace peft {

class Tokenizer {
 public:
  // Loads a tokenizer.json; throws std::runtime_error naming the file and the unsupported
  // component (e.g. "pre_tokenizer type 'Foo' is not supported") on anything it cannot build.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json_string(const std::string& json, const std::string& origin = "<string>");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // encode(text, add_special_tokens): as tokenizers' Tokenizer.encode(...).ids.
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = false) const;
  // decode(ids, skip_special_tokens): as tokenizers' Tokenizer.decode.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t vocab_size() const;  // including added tokens
  std::optional<int32_t> token_to_id(const std::string& token) const;
  std::optional<std::string> id_to_token(int32_t id) const;

  // Special tokens declared in tokenizer.json's added_tokens with "special": true.
  std::vector<std::string> special_tokens() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace peft
