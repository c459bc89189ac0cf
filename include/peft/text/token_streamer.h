// Incremental detokenization for streaming output: turns tokens into text as they are generated,
// holding back bytes until they form complete UTF-8 characters.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace peft {

class Tokenizer;

// Decodes a short window of tokens each time and emits only the text that the newest token added,
// so decoders that treat the first token or spaces specially (Metaspace, WordPiece) decode as they
// would the whole sequence. Text ending in an unfinished character (a byte-level or byte-fallback
// token that is only part of one) waits for the next token.
class TokenStreamer {
 public:
  // `tokenizer` must outlive the streamer. `context`: tokens before the first one put (the prompt's
  // tail), decoded for spacing only and never emitted.
  explicit TokenStreamer(const Tokenizer& tokenizer, std::vector<int32_t> context = {},
                         bool skip_special_tokens = true);

  std::string put(int32_t token);  // the new complete text ("" while a character is unfinished)
  std::string finish();            // whatever is still held back (possibly with U+FFFD)

 private:
  std::string decode_from(size_t begin, size_t end) const;
  const Tokenizer* tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // window start: decoded only for context
  size_t read_ = 0;    // tokens before this are already emitted
  bool skip_special_;
};

// True when `s` ends in the middle of a UTF-8 sequence or with U+FFFD (a decoder's stand-in for
// bytes that are not yet a character).
bool ends_with_partial_utf8(const std::string& s);

}  // namespace peft
