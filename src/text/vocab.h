// A token <-> id vocabulary read from a tokenizer.json "vocab" object, shared by the models that
// store their vocabulary that way (BPE, WordPiece, WordLevel).
#pragma once
#include <optional>
#include <string>
#include <unordered_map>

#include "pipeline.h"

namespace peft::text {

struct Vocab {
  std::unordered_map<std::string, int32_t> ids;
  std::unordered_map<int32_t, std::string> tokens;

  // Reads {"token": id, ...}; throws naming the file and field on anything else.
  static Vocab from_json(const json& j, const Where& w) {
    if (!j.is_object()) w.fail("expected an object mapping tokens to ids");
    Vocab v;
    v.ids.reserve(j.size());
    v.tokens.reserve(j.size());
    for (auto it = j.begin(); it != j.end(); ++it) {
      const json& id = it.value();
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
        w.fail("id of token '" + it.key() + "' is not a valid id");
      auto n = static_cast<int32_t>(id.get<int64_t>());
      v.ids[it.key()] = n;
      v.tokens[n] = it.key();
    }
    return v;
  }
  std::optional<int32_t> find(const std::string& token) const {
    auto it = ids.find(token);
    if (it == ids.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> token(int32_t id) const {
    auto it = tokens.find(id);
    if (it == tokens.end()) return std::nullopt;
    return it->second;
  }
};

}  // namespace peft::text
