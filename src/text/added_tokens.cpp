// Added tokens: id assignment as tokenizers' AddedVocabulary, and extraction of their occurrences
// from the input with leftmost-longest matching and the single_word/lstrip/rstrip rules.
#include "added_tokens.h"

#include <algorithm>

#include "unicode.h"

namespace peft::text {

namespace {

// The character before byte `at` (which must be a character boundary).
char32_t char_before(std::string_view s, size_t at) {
  size_t b = at - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  return next_char(s, b);
}

}  // namespace

void AddedVocabulary::Trie::insert(const std::string& s, int32_t id) {
  if (s.empty()) return;
  first_byte[static_cast<unsigned char>(s[0])] = true;
  int node = 0;
  for (unsigned char b : s) {
    uint64_t key = (static_cast<uint64_t>(node) << 8) | b;
    auto it = edges.find(key);
    if (it == edges.end()) {
      it = edges.emplace(key, static_cast<int>(value.size())).first;
      value.push_back(-1);
    }
    node = it->second;
  }
  if (value[node] < 0) value[node] = id;
}

size_t AddedVocabulary::Trie::longest(std::string_view text, size_t at, int32_t& id) const {
  size_t best = 0;
  if (!first_byte[static_cast<unsigned char>(text[at])]) return 0;
  int node = 0;
  for (size_t k = at; k < text.size(); ++k) {
    auto it = edges.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[k]));
    if (it == edges.end()) break;
    node = it->second;
    if (value[node] >= 0) {
      best = k + 1 - at;
      id = value[node];
    }
  }
  return best;
}

void AddedVocabulary::add(const std::vector<AddedToken>& tokens, const Model& model, const Normalizer* normalizer) {
  int32_t next_id = static_cast<int32_t>(model.vocab_size());
  if (!tokens_.empty()) {
    int32_t max_id = 0;
    for (auto& [id, t] : tokens_) max_id = std::max(max_id, id);
    if (max_id >= next_id || model.vocab_size() == 0) next_id = max_id + 1;
  }
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;
    int32_t id;
    if (auto existing = token_to_id(token.content)) id = *existing;
    else if (auto in_model = model.token_to_id(token.content)) id = *in_model;
    else id = next_id++;

    normalized_form_.erase(id);
    if (token.normalized && normalizer) {
      Piece p{token.content, true, char_len(static_cast<unsigned char>(token.content[0])), -1};
      normalizer->normalize(p);
      if (p.text != token.content) normalized_form_[id] = p.text;
    }
    ids_[token.content] = id;
    if (token.special && special_.insert(token.content).second) special_order_.push_back(token.content);
    tokens_[id] = token;
  }
  rebuild();
}

void AddedVocabulary::rebuild() {
  raw_ = Trie();
  normalized_ = Trie();
  std::vector<int32_t> ids;
  for (auto& [id, t] : tokens_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (int32_t id : ids) {
    const AddedToken& t = tokens_[id];
    if (!t.normalized) {
      raw_.insert(t.content, id);
    } else {
      auto n = normalized_form_.find(id);
      normalized_.insert(n != normalized_form_.end() ? n->second : t.content, id);
    }
  }
}

std::optional<int32_t> AddedVocabulary::token_to_id(const std::string& content) const {
  auto it = ids_.find(content);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> AddedVocabulary::id_to_token(int32_t id) const {
  auto n = normalized_form_.find(id);
  if (n != normalized_form_.end()) return n->second;
  auto it = tokens_.find(id);
  if (it == tokens_.end()) return std::nullopt;
  return it->second.content;
}

void AddedVocabulary::split(std::vector<Piece>& pieces, bool normalized_set) const {
  const Trie& trie = normalized_set ? normalized_ : raw_;
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (auto& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    const std::string& s = p.text;
    size_t done = 0;  // end of the last emitted split
    for (size_t at = 0; at < s.size() && !trie.edges.empty();) {
      int32_t id = -1;
      size_t len = trie.longest(s, at, id);
      if (!len) {
        ++at;
        continue;
      }
      size_t start = at, stop = at + len;
      at = stop;
      const AddedToken& t = tokens_.at(id);
      if (t.single_word) {
        bool start_space = start == 0 || !is_rust_word_char(char_before(s, start));
        size_t i = stop;
        bool stop_space = stop == s.size() || !is_rust_word_char(next_char(s, i));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t b = start;
        while (b > 0 && is_whitespace(char_before(s, b))) {
          --b;
          while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        }
        start = std::max(b, done);
      }
      // As tokenizers does, the search goes on from the end of the match itself, so a token found
      // inside the whitespace an rstrip token took overlaps it.
      if (t.rstrip)
        for (size_t i = stop; i < s.size() && is_whitespace(next_char(s, i));) stop = i;
      if (start >= stop) continue;
      if (done < start) out.push_back(slice(p, done, start));
      Piece token = slice(p, start, stop);
      token.id = id;
      out.push_back(std::move(token));
      done = stop;
    }
    if (done == 0 && !s.empty()) {  // untouched: a slice of the whole piece, without the copy
      p.at_start = p.at_start && p.zero_prefix > 0;
      p.zero_prefix = p.at_start ? std::min(p.zero_prefix, s.size()) : 0;
      out.push_back(std::move(p));
    } else if (done < s.size()) {
      out.push_back(slice(p, done, s.size()));
    }
  }
  pieces = std::move(out);
}

}  // namespace peft::text
