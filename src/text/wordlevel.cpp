// The WordLevel model: each pre-tokenized word is looked up whole in the vocabulary, falling
// back to the unknown token.
#include <stdexcept>

#include "pipeline.h"
#include "vocab.h"

namespace peft::text {

namespace {

class WordLevel : public Model {
 public:
  WordLevel(const json& j, const Where& w)
      : vocab_(Vocab::from_json(require(j, "vocab", w), w.at("vocab"))),
        unk_token_(get_optional_string(j, "unk_token", w).value_or("<unk>")) {}

  void tokenize(const std::string& word, std::vector<int32_t>& ids) const override {
    if (auto id = vocab_.find(word)) {
      ids.push_back(*id);
    } else if (auto unk = vocab_.find(unk_token_)) {
      ids.push_back(*unk);
    } else {
      throw std::runtime_error("WordLevel: unk_token '" + unk_token_ + "' is missing from the vocabulary");
    }
  }
  std::optional<int32_t> token_to_id(const std::string& token) const override { return vocab_.find(token); }
  std::optional<std::string> id_to_token(int32_t id) const override { return vocab_.token(id); }
  size_t vocab_size() const override { return vocab_.ids.size(); }

 private:
  Vocab vocab_;
  std::string unk_token_;
};

}  // namespace

std::unique_ptr<Model> make_wordlevel(const json& j, const Where& w) { return std::make_unique<WordLevel>(j, w); }

}  // namespace peft::text
