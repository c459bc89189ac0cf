// Shared pieces of the tokenizer pipeline: slicing and splitting pieces as tokenizers'
// NormalizedString does, error reporting, and JSON accessors used by every component factory.
#include "pipeline.h"

#include <algorithm>
#include <stdexcept>

namespace peft::text {

Piece slice(const Piece& p, size_t start, size_t end) {
  Piece s;
  s.text = p.text.substr(start, end - start);
  s.at_start = p.at_start && start < p.zero_prefix;
  s.zero_prefix = s.at_start ? std::min(end, p.zero_prefix) - start : 0;
  return s;
}

void split_piece(const Piece& p, const std::vector<Match>& matches, SplitBehavior behavior, std::vector<Piece>& out) {
  struct Span {
    size_t start, end;
    bool keep;
  };
  std::vector<Span> spans;
  spans.reserve(matches.size());
  bool previous = false;
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (auto& m : matches) spans.push_back({m.start, m.end, true});
      break;
    case SplitBehavior::Removed:
      for (auto& m : matches) spans.push_back({m.start, m.end, !m.is_match});
      break;
    case SplitBehavior::Contiguous:
      for (auto& m : matches) {
        if (m.is_match == previous && !spans.empty()) spans.back().end = m.end;
        else spans.push_back({m.start, m.end, true});
        previous = m.is_match;
      }
      break;
    case SplitBehavior::MergedWithPrevious:
      for (auto& m : matches) {
        if (m.is_match && !previous && !spans.empty()) spans.back().end = m.end;
        else spans.push_back({m.start, m.end, true});
        previous = m.is_match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
        if (it->is_match && !previous && !spans.empty()) spans.back().start = it->start;
        else spans.push_back({it->start, it->end, true});
        previous = it->is_match;
      }
      std::reverse(spans.begin(), spans.end());
      break;
  }
  // No out.reserve(out.size() + spans.size()): callers run this once per piece into the same `out`, and
  // an exact reserve each time copies all of `out` each time (quadratic in the pieces of a long text).
  for (auto& s : spans) {
    if (s.keep && s.end > s.start) out.push_back(slice(p, s.start, s.end));
  }
}

void Where::fail(const std::string& what) const {
  throw std::runtime_error(origin + ": " + (path.empty() ? "" : path + ": ") + what);
}

void Where::unsupported(const std::string& kind, const std::string& type, const char* supported) const {
  std::string msg = origin + ": " + kind + " type '" + type + "' is not supported; supported: " + supported;
  if (!path.empty() && path != kind) msg += " (at " + path + ")";
  throw std::runtime_error(msg);
}

const json& require(const json& j, const char* key, const Where& w) {
  if (!j.is_object()) w.fail("expected an object");
  auto it = j.find(key);
  if (it == j.end()) w.fail(std::string("missing field '") + key + "'");
  return *it;
}

std::string get_string(const json& j, const char* key, const Where& w) {
  const json& v = require(j, key, w);
  if (!v.is_string()) w.at(key).fail("expected a string");
  return v.get<std::string>();
}

std::optional<std::string> get_optional_string(const json& j, const char* key, const Where& w) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) w.at(key).fail("expected a string or null");
  return it->get<std::string>();
}

bool get_bool(const json& j, const char* key, bool fallback, const Where& w) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) w.at(key).fail("expected true or false");
  return it->get<bool>();
}

int64_t get_int(const json& j, const char* key, const Where& w) {
  const json& v = require(j, key, w);
  if (!v.is_number_integer()) w.at(key).fail("expected an integer");
  return v.get<int64_t>();
}

std::string type_of(const json& j, const Where& w) {
  if (!j.is_object()) w.fail("expected an object");
  return get_string(j, "type", w);
}

char32_t get_char(const json& j, const char* key, const Where& w) {
  std::string s = get_string(j, key, w);
  size_t i = 0;
  if (s.empty() || !is_valid_utf8(s) || (next_char(s, i), i != s.size())) w.at(key).fail("expected a single character");
  i = 0;
  return next_char(s, i);
}

Pattern get_pattern(const json& j, const Where& w) {
  if (j.is_object() && j.size() == 1) {
    auto it = j.begin();
    if (it.value().is_string()) {
      try {
        if (it.key() == "String") return Pattern::literal(it.value().get<std::string>());
        if (it.key() == "Regex") return Pattern::regex(it.value().get<std::string>());
      } catch (const std::runtime_error& e) {
        w.fail(e.what());
      }
    }
  }
  w.fail("expected a pattern {\"String\": ...} or {\"Regex\": ...}");
}

SplitBehavior get_behavior(const json& j, const Where& w) {
  std::string b = j.is_string() ? j.get<std::string>() : "";
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  w.fail("unknown split behavior " + j.dump() +
         "; expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous");
}

std::unique_ptr<Model> make_model(const json& j, const Where& w) {
  if (!j.is_object()) w.fail("expected an object");
  std::string type;
  if (j.contains("type")) {
    type = get_string(j, "type", w);
  } else if (j.contains("merges")) {  // files written before models were tagged
    type = "BPE";
  } else if (j.contains("vocab") && j["vocab"].is_array()) {
    type = "Unigram";
  } else if (j.contains("max_input_chars_per_word")) {
    type = "WordPiece";
  } else {
    type = "WordLevel";
  }
  if (type == "BPE") return make_bpe(j, w);
  if (type == "WordPiece") return make_wordpiece(j, w);
  if (type == "WordLevel") return make_wordlevel(j, w);
  if (type == "Unigram") return make_unigram(j, w);
  w.unsupported("model", type, "BPE, WordPiece, WordLevel, Unigram");
}

}  // namespace peft::text
