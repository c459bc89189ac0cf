// peft::Tokenizer: loads tokenizer.json and runs its pipeline: added tokens, normalizer,
// pre-tokenizer, model, truncation, post-processor and padding; decode runs the decoder.
#include "peft/text/tokenizer.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "added_tokens.h"
#include "pipeline.h"
#include "unicode.h"

namespace peft {

using namespace peft::text;

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Model> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  AddedVocabulary added;

  struct Truncation {
    size_t max_length;
    bool left, only_second;
  };
  std::optional<Truncation> truncation;
  struct Padding {
    std::optional<size_t> fixed, multiple_of;
    bool left;
    int32_t pad_id;
  };
  std::optional<Padding> padding;

  void load(const json& j, const Where& w);
};

namespace {

constexpr size_t kMaxPaddedLength = size_t(1) << 20;  // tokens

std::vector<AddedToken> read_added_tokens(const json& list, const Where& w) {
  std::vector<AddedToken> tokens;
  if (list.is_null()) return tokens;
  if (!list.is_array()) w.fail("expected an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const json& t = list[i];
    Where tw = w.at(i);
    AddedToken a;
    a.content = get_string(t, "content", tw);
    a.special = get_bool(t, "special", false, tw);
    a.single_word = get_bool(t, "single_word", false, tw);
    a.lstrip = get_bool(t, "lstrip", false, tw);
    a.rstrip = get_bool(t, "rstrip", false, tw);
    a.normalized = get_bool(t, "normalized", !a.special, tw);
    tokens.push_back(std::move(a));
  }
  return tokens;
}

// The stage stored under `key`, or null when the file has none.
template <class Make>
auto optional_component(const json& j, const char* key, const std::string& origin, Make make)
    -> decltype(make(j, Where{})) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return make(*it, Where{origin, key});
}

}  // namespace

void Tokenizer::Impl::load(const json& j, const Where& top) {
  if (!j.is_object()) top.fail("expected a JSON object at the top level");
  auto at = [&](const char* key) { return Where{top.origin, key}; };
  normalizer = optional_component(j, "normalizer", top.origin, make_normalizer);
  pre_tokenizer = optional_component(j, "pre_tokenizer", top.origin, make_pre_tokenizer);
  if (!j.contains("model")) top.fail("missing field 'model'");
  model = make_model(j["model"], at("model"));
  post_processor = optional_component(j, "post_processor", top.origin, make_post_processor);
  decoder = optional_component(j, "decoder", top.origin, make_decoder);

  if (auto it = j.find("truncation"); it != j.end() && !it->is_null()) {
    Where tw = at("truncation");
    Truncation t{};
    int64_t n = get_int(*it, "max_length", tw);
    if (n < 0) tw.at("max_length").fail("expected a non-negative length");
    t.max_length = static_cast<size_t>(n);
    t.left = it->value("direction", "Right") == "Left";
    t.only_second = it->value("strategy", "LongestFirst") == "OnlySecond";
    truncation = t;
  }
  if (auto it = j.find("padding"); it != j.end() && !it->is_null()) {
    Where pw = at("padding");
    Padding p{};
    const json& strategy = require(*it, "strategy", pw);
    if (strategy.is_object() && strategy.contains("Fixed") && strategy["Fixed"].is_number_unsigned())
      p.fixed = strategy["Fixed"].get<size_t>();
    else if (strategy != "BatchLongest") pw.at("strategy").fail("expected \"BatchLongest\" or {\"Fixed\": n}");
    if (auto m = it->find("pad_to_multiple_of"); m != it->end() && m->is_number_unsigned() && m->get<size_t>() > 0)
      p.multiple_of = m->get<size_t>();
    // Padding allocates that many ids on every encode: a length no model takes is refused here.
    for (auto [value, key] : {std::pair{p.fixed, "strategy.Fixed"}, std::pair{p.multiple_of, "pad_to_multiple_of"}})
      if (value && *value > kMaxPaddedLength)
        pw.at(key).fail("padding to " + std::to_string(*value) + " tokens is beyond the limit of " +
                        std::to_string(kMaxPaddedLength));
    p.left = it->value("direction", "Right") == "Left";
    if (auto id = it->find("pad_id"); id != it->end() && !id->is_null()) {
      // A token id (u32 in tokenizers); get<int32_t> of a fraction or a huge number would not say so.
      if (!id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() > INT32_MAX)
        pw.at("pad_id").fail("expected a token id (an integer from 0 to " + std::to_string(INT32_MAX) + "), got " +
                             id->dump());
      p.pad_id = static_cast<int32_t>(id->get<int64_t>());
    }
    padding = p;
  }
  if (auto it = j.find("added_tokens"); it != j.end())
    added.add(read_added_tokens(*it, at("added_tokens")), *model, normalizer.get());
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open tokenizer file: " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  return from_json_string(buf.str(), path);
}

Tokenizer Tokenizer::from_json_string(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
    throw std::runtime_error(origin + ": malformed JSON: " + e.what());
  }
  auto impl = std::make_unique<Impl>();
  try {
    impl->load(j, Where{origin, ""});
  } catch (const json::exception& e) {
    throw std::runtime_error(origin + ": malformed tokenizer.json: " + e.what());
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  if (!is_valid_utf8(text)) throw std::runtime_error("Tokenizer::encode: input is not valid UTF-8");
  const Impl& t = *impl_;
  std::vector<Piece> pieces;
  if (!text.empty()) pieces.push_back(Piece{text, true, char_len(static_cast<unsigned char>(text[0])), -1});

  // Added tokens are split out first: those matched on the raw text, then, once each remaining
  // piece is normalized, those matched on the normalized text.
  t.added.split(pieces, false);
  if (t.normalizer) {
    for (auto& p : pieces)
      if (p.id < 0) t.normalizer->normalize(p);
  }
  t.added.split(pieces, true);
  if (t.pre_tokenizer) t.pre_tokenizer->pre_tokenize(pieces);

  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (auto& p : pieces) {
    if (p.id >= 0) ids.push_back(p.id);
    else t.model->tokenize(p.text, ids);
  }

  if (t.truncation) {
    if (t.truncation->only_second) throw std::runtime_error("Tokenizer::encode: truncation strategy OnlySecond needs a pair of sequences");
    size_t added = add_special_tokens && t.post_processor ? t.post_processor->added_tokens() : 0;
    size_t max = t.truncation->max_length > added ? t.truncation->max_length - added : 0;
    if (ids.size() > max) {
      if (t.truncation->left) ids.erase(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(max));
      else ids.resize(max);
    }
  }
  if (t.post_processor) t.post_processor->process(ids, add_special_tokens);
  if (t.padding) {
    size_t target = t.padding->fixed.value_or(ids.size());
    if (t.padding->multiple_of && target % *t.padding->multiple_of)
      target += *t.padding->multiple_of - target % *t.padding->multiple_of;
    if (ids.size() < target) ids.insert(t.padding->left ? ids.begin() : ids.end(), target - ids.size(), t.padding->pad_id);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto token = id_to_token(id);
    if (!token || (skip_special_tokens && t.added.is_special(*token))) continue;
    tokens.push_back(std::move(*token));
  }
  if (t.decoder) {
    t.decoder->decode_chain(tokens);
    std::string out;
    for (auto& s : tokens) out += s;
    return out;
  }
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) out += ' ';
    out += tokens[i];
  }
  return out;
}

int32_t Tokenizer::vocab_size() const {
  size_t n = impl_->model->vocab_size();
  for (auto& [content, id] : impl_->added.ids())
    if (!impl_->model->token_to_id(content)) ++n;
  return static_cast<int32_t>(n);
}

std::optional<int32_t> Tokenizer::token_to_id(const std::string& token) const {
  if (auto id = impl_->added.token_to_id(token)) return id;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto token = impl_->added.id_to_token(id)) return token;
  return impl_->model->id_to_token(id);
}

std::vector<std::string> Tokenizer::special_tokens() const { return impl_->added.special_tokens(); }

}  // namespace peft
