// Post-processors of tokenizer.json for a single sequence: TemplateProcessing, BertProcessing,
// RobertaProcessing, ByteLevel (ids unchanged) and Sequence.
#include "pipeline.h"

namespace peft::text {

namespace {

// Prefix and suffix ids wrapped around the sequence when special tokens are requested.
class Wrap : public PostProcessor {
 public:
  Wrap(std::vector<int32_t> before, std::vector<int32_t> after) : before_(std::move(before)), after_(std::move(after)) {}
  size_t added_tokens() const override { return before_.size() + after_.size(); }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }

 private:
  std::vector<int32_t> before_, after_;
};

class Identity : public PostProcessor {
 public:
  size_t added_tokens() const override { return 0; }
  void process(std::vector<int32_t>&, bool) const override {}
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  size_t added_tokens() const override {
    size_t n = 0;
    for (auto& p : parts_) n += p->added_tokens();
    return n;
  }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (auto& p : parts_) p->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// ["[SEP]", 102] as BertProcessing/RobertaProcessing store their tokens.
int32_t token_pair_id(const json& j, const char* key, const Where& w) {
  const json& v = require(j, key, w);
  if (!v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_number_integer())
    w.at(key).fail("expected [token, id]");
  return v[1].get<int32_t>();
}

// TemplateProcessing's "single" template reduced to the ids before and after sequence A.
std::unique_ptr<PostProcessor> make_template(const json& j, const Where& w) {
  const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
  if (!specials.is_object()) w.at("special_tokens").fail("expected an object");
  const json& single = require(j, "single", w);
  json pieces = single;
  if (single.is_string()) {  // "[CLS] $A [SEP]"
    pieces = json::array();
    std::string s = single.get<std::string>();
    for (size_t at = 0; at <= s.size();) {
      size_t sp = s.find(' ', at);
      if (sp == std::string::npos) sp = s.size();
      pieces.push_back(s.substr(at, sp - at));
      at = sp + 1;
    }
  }
  if (!pieces.is_array()) w.at("single").fail("expected a template");
  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const json& piece = pieces[i];
    Where pw = w.at("single").at(i);
    std::string special;
    if (piece.is_string()) {
      std::string s = piece.get<std::string>();
      s = s.substr(0, s.find(':'));
      if (!s.empty() && s[0] == '$') {
        seen_sequence = true;
        continue;
      }
      special = s;
    } else if (piece.is_object() && piece.contains("Sequence")) {
      seen_sequence = true;
      continue;
    } else if (piece.is_object() && piece.contains("SpecialToken")) {
      special = get_string(piece["SpecialToken"], "id", pw.at("SpecialToken"));
    } else {
      pw.fail("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    auto it = specials.find(special);
    if (it == specials.end()) w.at("special_tokens").fail("missing special token '" + special + "' used by the template");
    const json& ids = require(*it, "ids", w.at("special_tokens").at(special));
    if (!ids.is_array()) w.at("special_tokens").at(special).fail("expected ids to be an array");
    for (auto& id : ids) {
      if (!id.is_number_integer()) w.at("special_tokens").at(special).fail("expected integer ids");
      (seen_sequence ? after : before).push_back(id.get<int32_t>());
    }
  }
  return std::make_unique<Wrap>(std::move(before), std::move(after));
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const Where& w) {
  std::string type = type_of(j, w);
  if (type == "TemplateProcessing") return make_template(j, w);
  if (type == "BertProcessing" || type == "RobertaProcessing")
    return std::make_unique<Wrap>(std::vector<int32_t>{token_pair_id(j, "cls", w)},
                                  std::vector<int32_t>{token_pair_id(j, "sep", w)});
  if (type == "ByteLevel") return std::make_unique<Identity>();
  if (type == "Sequence") {
    const json& list = require(j, "processors", w);
    if (!list.is_array()) w.at("processors").fail("expected an array");
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < list.size(); ++i) parts.push_back(make_post_processor(list[i], w.at("processors").at(i)));
    return std::make_unique<SequenceProcessor>(std::move(parts));
  }
  w.unsupported("post_processor", type, "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence");
}

}  // namespace peft::text
