// Added tokens (tokenizer.json "added_tokens"): id assignment, and splitting them out of the
// input before (normalized: false) or after (normalized: true) normalization, as tokenizers does.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "pipeline.h"

namespace peft::text {

struct AddedToken {
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

class AddedVocabulary {
 public:
  // Adds tokens the way tokenizers' AddedVocabulary::add_tokens does: an existing token keeps its
  // id (added first, then model), new ones are numbered from the model's vocabulary size.
  void add(const std::vector<AddedToken>& tokens, const Model& model, const Normalizer* normalizer);

  // Splits every piece that is not yet a token on the tokens whose `normalized` flag equals
  // `normalized_set` (leftmost-longest matching, with single_word/lstrip/rstrip).
  void split(std::vector<Piece>& pieces, bool normalized_set) const;

  std::optional<int32_t> token_to_id(const std::string& content) const;
  std::optional<std::string> id_to_token(int32_t id) const;  // the normalized form when there is one
  bool is_special(const std::string& token) const { return special_.count(token) > 0; }
  size_t size() const { return ids_.size(); }
  const std::unordered_map<std::string, int32_t>& ids() const { return ids_; }
  const std::vector<std::string>& special_tokens() const { return special_order_; }
  bool empty() const { return ids_.empty(); }

 private:
  // A byte trie over the match strings of one set.
  struct Trie {
    std::vector<int32_t> value{-1};  // node -> token id (-1: none)
    std::unordered_map<uint64_t, int> edges;
    bool first_byte[256] = {};  // bytes some token starts with
    void insert(const std::string& s, int32_t id);
    // Longest token starting at text[at]: returns its length and sets id, or 0.
    size_t longest(std::string_view text, size_t at, int32_t& id) const;
  };
  void rebuild();

  std::unordered_map<std::string, int32_t> ids_;
  std::unordered_map<int32_t, AddedToken> tokens_;
  std::unordered_map<int32_t, std::string> normalized_form_;
  std::unordered_set<std::string> special_;
  std::vector<std::string> special_order_;
  Trie raw_, normalized_;
};

}  // namespace peft::text
