// The TextEncoder over a peft::Tokenizer: its encode without special tokens, and the bos/eos/pad ids
// found from its post-processor and tokenizer_config.json.
#include "peft/text/text_encoder.h"

#include <algorithm>

#include "peft/text/tokenizer.h"
#include "peft/text/tokenizer_config.h"

namespace peft {

TextEncoder make_text_encoder(const Tokenizer& tokenizer, const TokenizerConfig& config) {
  TextEncoder enc;
  const Tokenizer* tok = &tokenizer;
  enc.encode = [tok](const std::string& text) { return tok->encode(text, false); };

  // What the post-processor adds around a text: the ids of "a" with special tokens are
  // prefix + plain + suffix.
  const std::vector<int32_t> plain = tokenizer.encode("a", false);
  const std::vector<int32_t> full = tokenizer.encode("a", true);
  const auto at = std::search(full.begin(), full.end(), plain.begin(), plain.end());
  if (!plain.empty() && at != full.end()) {
    const auto prefix = at - full.begin();
    const auto suffix = full.end() - (at + static_cast<std::ptrdiff_t>(plain.size()));
    if (prefix == 1) enc.bos = full.front();
    if (suffix == 1) enc.eos = full.back();
  }
  auto id_of = [&](const std::optional<std::string>& token) -> std::optional<int32_t> {
    return token ? tokenizer.token_to_id(*token) : std::nullopt;
  };
  if (!enc.eos) enc.eos = id_of(config.eos_token);
  enc.pad = id_of(config.pad_token);
  if (!enc.pad) enc.pad = enc.eos;
  return enc;
}

}  // namespace peft
