// libFuzzer target: a tokenizer.json loaded by peft::Tokenizer::from_json_string, then text encoded (with
// and without special tokens) and ids decoded; load errors must be std::runtime_error naming the part.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "peft/text/tokenizer.h"

// The input is a tokenizer.json, optionally followed by a NUL byte and the text to encode (JSON text never
// holds a NUL). Without one, the JSON itself is the text: it spells the vocabulary and the added tokens.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* begin = reinterpret_cast<const char*>(data);
  const char* nul = static_cast<const char*>(std::memchr(begin, 0, size));
  const std::string json(begin, nul ? nul : begin + size);
  const std::string text = nul ? std::string(nul + 1, begin + size) : json;

  try {
    peft::Tokenizer tok = peft::Tokenizer::from_json_string(json, "tokenizer.json");
    const int32_t vocab = tok.vocab_size();
    PEFT_FUZZ_CHECK(vocab >= 0, std::to_string(vocab));
    for (const std::string& s : {text, std::string("Hello world! \xE4\xBD\xA0\xE5\xA5\xBD  \t\n x")}) {
      for (bool special : {false, true}) {
        std::vector<int32_t> ids;
        try {
          ids = tok.encode(s, special);
        } catch (const std::runtime_error&) {
          continue;  // invalid UTF-8, or a truncation strategy that needs a pair
        }
        (void)tok.decode(ids, false);
        (void)tok.decode(ids, true);
      }
    }
    // Any id, known or not, decodes without failing; every special token has an id.
    std::vector<int32_t> ids = {-1, 0, 1, 2, vocab - 1, vocab, vocab + 1, INT32_MAX, INT32_MIN};
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
    for (int32_t id = 0; id < std::min(vocab, 64); ++id) (void)tok.id_to_token(id);
    for (const std::string& t : tok.special_tokens()) PEFT_FUZZ_CHECK(tok.token_to_id(t).has_value(), t);
  } catch (const std::runtime_error&) {
  }
  return 0;
}
