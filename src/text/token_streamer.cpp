// TokenStreamer: prints generated text as it comes without splitting characters, by decoding a
// sliding window of tokens and emitting the difference once it ends on a character boundary.
#include "peft/text/token_streamer.h"

#include <algorithm>

#include "peft/text/tokenizer.h"

namespace peft {

bool ends_with_partial_utf8(const std::string& s) {
  static const std::string kReplacement = "\xEF\xBF\xBD";
  if (s.size() >= 3 && s.compare(s.size() - 3, 3, kReplacement) == 0) return true;
  // Walk back over continuation bytes to the lead byte of the last character.
  size_t n = 0;
  size_t i = s.size();
  while (i > 0 && n < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) --i, ++n;
  if (i == 0) return n > 0;
  unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  size_t need = lead < 0x80 ? 0 : (lead & 0xE0) == 0xC0 ? 1 : (lead & 0xF0) == 0xE0 ? 2 : (lead & 0xF8) == 0xF0 ? 3 : 0;
  return n < need;
}

TokenStreamer::TokenStreamer(const Tokenizer& tokenizer, std::vector<int32_t> context, bool skip_special_tokens)
    : tokenizer_(&tokenizer), ids_(std::move(context)), skip_special_(skip_special_tokens) {
  // A few tokens of context are enough for spacing; more only costs decoding time.
  read_ = ids_.size();
  prefix_ = ids_.size() > 5 ? ids_.size() - 5 : 0;
}

std::string TokenStreamer::decode_from(size_t begin, size_t end) const {
  return tokenizer_->decode(std::vector<int32_t>(ids_.begin() + begin, ids_.begin() + end), skip_special_);
}

std::string TokenStreamer::put(int32_t token) {
  ids_.push_back(token);
  std::string before = decode_from(prefix_, read_);
  std::string now = decode_from(prefix_, ids_.size());
  if (now.size() <= before.size() || ends_with_partial_utf8(now)) return "";
  // The window's earlier text normally decodes the same; if a decoder changed it, emit what is new
  // after the common prefix.
  size_t common = 0;
  while (common < before.size() && before[common] == now[common]) ++common;
  std::string out = now.substr(common);
  prefix_ = read_;
  read_ = ids_.size();
  return out;
}

std::string TokenStreamer::finish() {
  if (read_ >= ids_.size()) return "";
  std::string before = decode_from(prefix_, read_);
  std::string now = decode_from(prefix_, ids_.size());
  read_ = prefix_ = ids_.size();
  size_t common = 0;
  while (common < before.size() && common < now.size() && before[common] == now[common]) ++common;
  return now.substr(common);
}

}  // namespace peft
