// The WordPiece model: greedy longest-match-first subwords with a continuing prefix ("##"),
// the whole word becoming the unknown token when any part cannot be matched or it is too long.
#include <stdexcept>

#include "pipeline.h"
#include "vocab.h"

namespace peft::text {

namespace {

class WordPiece : public Model {
 public:
  WordPiece(const json& j, const Where& w)
      : vocab_(Vocab::from_json(require(j, "vocab", w), w.at("vocab"))),
        unk_token_(get_optional_string(j, "unk_token", w).value_or("[UNK]")),
        prefix_(get_optional_string(j, "continuing_subword_prefix", w).value_or("##")),
        max_chars_(j.contains("max_input_chars_per_word") ? get_int(j, "max_input_chars_per_word", w) : 100) {}

  void tokenize(const std::string& word, std::vector<int32_t>& ids) const override {
    size_t chars = 0;
    for (unsigned char c : word) chars += (c & 0xC0) != 0x80;
    if (static_cast<int64_t>(chars) > max_chars_) {
      ids.push_back(unk_id());
      return;
    }
    size_t first = ids.size();
    std::string candidate;
    for (size_t start = 0; start < word.size();) {
      size_t end = word.size();
      bool found = false;
      while (start < end) {
        candidate.clear();
        if (start > 0) candidate = prefix_;
        candidate.append(word, start, end - start);
        auto it = vocab_.ids.find(candidate);
        if (it != vocab_.ids.end()) {
          ids.push_back(it->second);
          found = true;
          break;
        }
        do --end;  // drop the last character
        while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
      }
      if (!found) {
        ids.resize(first);
        ids.push_back(unk_id());
        return;
      }
      start = end;
    }
  }
  std::optional<int32_t> token_to_id(const std::string& token) const override { return vocab_.find(token); }
  std::optional<std::string> id_to_token(int32_t id) const override { return vocab_.token(id); }
  size_t vocab_size() const override { return vocab_.ids.size(); }

 private:
  int32_t unk_id() const {
    auto id = vocab_.find(unk_token_);
    if (!id) throw std::runtime_error("WordPiece: unk_token '" + unk_token_ + "' is missing from the vocabulary");
    return *id;
  }

  Vocab vocab_;
  std::string unk_token_, prefix_;
  int64_t max_chars_;
};

}  // namespace

std::unique_ptr<Model> make_wordpiece(const json& j, const Where& w) { return std::make_unique<WordPiece>(j, w); }

}  // namespace peft::text
