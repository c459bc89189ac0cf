// The stages of a tokenizer.json pipeline (normalizer, pre-tokenizer, model, post-processor,
// decoder) as interfaces, the split they work on, and the JSON reading helpers that build them.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "regex.h"
#include "unicode.h"

namespace peft::text {

using json = nlohmann::json;

// One split of the input (tokenizers' Split over a NormalizedString). Only what the ids depend
// on is kept: the normalized text, and whether the split starts at offset 0 of the original input
// (Metaspace's prepend_scheme "first" asks), with how many leading bytes align to that offset.
struct Piece {
  std::string text;
  bool at_start = false;
  size_t zero_prefix = 0;  // leading bytes of `text` aligned to original offset 0 (when at_start)
  int32_t id = -1;         // an added token already matched: later stages leave it alone
};

Piece slice(const Piece& p, size_t start, size_t end);

// NormalizedString::split: cuts `p` along `matches` according to a SplitDelimiterBehavior,
// appending the non-empty parts to `out`.
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
void split_piece(const Piece& p, const std::vector<Match>& matches, SplitBehavior behavior, std::vector<Piece>& out);

// Rewrites p character by character: f(c, out) appends what c becomes (nothing removes it).
// Output made from characters aligned to original offset 0 stays aligned there.
template <class F>
void transform_chars(Piece& p, F f) {
  std::string out;
  out.reserve(p.text.size() + p.text.size() / 4);
  size_t zero = 0;
  for (size_t i = 0; i < p.text.size();) {
    size_t b = i;
    char32_t c = next_char(p.text, i);
    f(c, out);
    if (b < p.zero_prefix) zero = out.size();
  }
  p.text = std::move(out);
  p.zero_prefix = zero;
}

// Where a component sits in the file, for error messages: "<origin>: <path> ...".
struct Where {
  std::string origin;  // the file name
  std::string path;    // e.g. "pre_tokenizer.pretokenizers[1]"
  Where at(const std::string& key) const { return {origin, path + "." + key}; }
  Where at(size_t index) const { return {origin, path + "[" + std::to_string(index) + "]"}; }
  [[noreturn]] void fail(const std::string& what) const;
  [[noreturn]] void unsupported(const std::string& kind, const std::string& type, const char* supported) const;
};

// JSON accessors that report the file and field on a missing or mistyped value.
const json& require(const json& j, const char* key, const Where& w);
std::string get_string(const json& j, const char* key, const Where& w);
std::optional<std::string> get_optional_string(const json& j, const char* key, const Where& w);
bool get_bool(const json& j, const char* key, bool fallback, const Where& w);
int64_t get_int(const json& j, const char* key, const Where& w);
std::string type_of(const json& j, const Where& w);
char32_t get_char(const json& j, const char* key, const Where& w);  // a one-character string
Pattern get_pattern(const json& j, const Where& w);  // {"String": ...} or {"Regex": ...}
SplitBehavior get_behavior(const json& j, const Where& w);

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(Piece& p) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may transform) every piece that is not an added token.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual void tokenize(const std::string& word, std::vector<int32_t>& ids) const = 0;
  virtual std::optional<int32_t> token_to_id(const std::string& token) const = 0;
  virtual std::optional<std::string> id_to_token(int32_t id) const = 0;
  virtual size_t vocab_size() const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual size_t added_tokens() const = 0;  // for a single sequence
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Factories: build a component from its JSON object, or throw naming the file and component.
std::unique_ptr<Normalizer> make_normalizer(const json& j, const Where& w);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const Where& w);
std::unique_ptr<Model> make_model(const json& j, const Where& w);
std::unique_ptr<PostProcessor> make_post_processor(const json& j, const Where& w);
std::unique_ptr<Decoder> make_decoder(const json& j, const Where& w);

// Model constructors (bpe.cpp, wordpiece.cpp, unigram.cpp).
std::unique_ptr<Model> make_bpe(const json& j, const Where& w);
std::unique_ptr<Model> make_wordpiece(const json& j, const Where& w);
std::unique_ptr<Model> make_wordlevel(const json& j, const Where& w);
std::unique_ptr<Model> make_unigram(const json& j, const Where& w);

}  // namespace peft::text
